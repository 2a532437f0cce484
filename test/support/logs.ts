// A real logger (log/logger.ts, pino and all) writing into memory, for tests that look at what a
// part of Turquoise logged: each line as written, and parsed.
import { Writable } from "node:stream";
import { createLogger, type Logger } from "../../src/log/logger.js";
import type { LogSettings } from "../../src/log/settings.js";

export interface LogRecord {
  level: string;
  time: string;
  pid: number;
  hostname: string;
  component: string;
  service: string | null;
  event: string;
  message: string;
  data?: Record<string, unknown>;
}

export interface CapturedLog {
  logger: Logger;
  /** Every line written, as text. */
  lines: string[];
  /** Every line, parsed (the format must be json for these). */
  records(): LogRecord[];
  messages(): string[];
}

export function captureLog(component = "test", settings: LogSettings = { level: "debug", format: "json" }, isTTY = false): CapturedLog {
  const lines: string[] = [];
  let partial = "";
  const sink = new Writable({
    write(chunk: Buffer | string, _enc, done) {
      const text = partial + chunk.toString();
      const parts = text.split("\n");
      partial = parts.pop()!;
      lines.push(...parts);
      done();
    },
  });
  Object.assign(sink, { isTTY });
  const logger = createLogger({ component, settings, destination: sink });
  const records = () => lines.map((l) => JSON.parse(l) as LogRecord);
  return { logger, lines, records, messages: () => records().map((r) => r.message) };
}
