// The logger's lines as a person reads them: on a terminal, and in the tails `up --detach` and the
// proxy spawner show when a start fails. pino-pretty is loaded only then: the proxy's workers and
// commands that read no log never pay for it.
import { createRequire } from "node:module";
import type { DestinationStream } from "pino";
import type { PrettyOptions } from "pino-pretty";

const requireCjs = createRequire(import.meta.url);
type PinoPretty = typeof import("pino-pretty");
let pretty: PinoPretty | undefined;
function prettyModule(): PinoPretty {
  pretty ??= requireCjs("pino-pretty") as PinoPretty;
  return pretty;
}

/** How a line reads to a person: `[time] LEVEL: component service event: message`, the data left out. */
function prettyOptions(colorize: boolean, translateTime = "SYS:HH:MM:ss.l"): PrettyOptions {
  return {
    colorize,
    translateTime,
    messageKey: "message",
    ignore: "pid,hostname,component,service,event,data",
    hideObject: true,
    messageFormat: (log, key) => {
      const head = [log.component, log.service ?? "-", log.event].filter((p) => p !== undefined).join(" ");
      const message = log[key] === undefined ? "" : String(log[key]);
      return head ? `${head}: ${message}` : message;
    },
  };
}

let readable: ((line: string) => string) | undefined;

/**
 * A log line as a person reads it, for the tail `up --detach` shows when the agent fails: a line
 * of this logger as its pretty form (date and time, no colour), any other line (Node's own
 * warnings, a line of an older version) as it is.
 */
export function readableLine(line: string): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return line;
  }
  if (!parsed || typeof parsed !== "object" || !("message" in parsed) || !("level" in parsed)) return line;
  readable ??= prettyModule().prettyFactory(prettyOptions(false, "SYS:yyyy-mm-dd HH:MM:ss.l"));
  return readable(line).trimEnd();
}

/** A stream that writes each JSON line it is given as a readable one, synchronously. */
export function prettyStream(destination: number | NodeJS.WritableStream, colorize: boolean): DestinationStream {
  return prettyModule()({ ...prettyOptions(colorize), destination: destination as number, sync: true });
}

/** Every line of a log's tail made readable. */
export function readableTail(text: string): string {
  return text.split("\n").map(readableLine).join("\n");
}
