// The one logger of the agent and the proxy: pino writing JSON lines (time, level, component,
// service, event, message, data), or pino-pretty's lines on a terminal, secrets scrubbed by the
// logger itself (scrub.ts) whatever field or message they come in.
import os from "node:os";
import tty from "node:tty";
import pino from "pino";
import { componentOf, levelOf } from "./events.js";
import { prettyStream } from "./pretty.js";
import { Scrubber } from "./scrub.js";
import { chooseFormat, DEFAULT_LOG_SETTINGS, type LogLevel, type LogSettings } from "./settings.js";

/** Extra facts of a line: the service it is about, and anything else, which goes under `data`. */
export interface LogFields {
  service?: string | null;
  data?: Record<string, unknown>;
}

export interface Logger {
  readonly component: string;
  /** The secrets this logger (and every logger sharing its destination) keeps out. */
  readonly scrubber: Scrubber;
  debug(event: string, message: string, fields?: LogFields): void;
  info(event: string, message: string, fields?: LogFields): void;
  warn(event: string, message: string, fields?: LogFields): void;
  error(event: string, message: string, fields?: LogFields): void;
  isEnabled(level: LogLevel): boolean;
  /** An agent event, under the component and at the level its type implies (events.ts). */
  event(service: string | null, type: string, message: string, data?: Record<string, unknown>): void;
  /** The same destination and secrets, for another component. */
  child(component: string): Logger;
}

export interface LoggerOptions {
  component: string;
  settings?: LogSettings;
  /** A file descriptor (2: stderr, the default) or a stream. */
  destination?: number | NodeJS.WritableStream;
}

export function createLogger(opts: LoggerOptions): Logger {
  const settings = opts.settings ?? DEFAULT_LOG_SETTINGS;
  const destination = opts.destination ?? 2;
  const isTTY = typeof destination === "number" ? tty.isatty(destination) : (destination as { isTTY?: boolean }).isTTY === true;
  const format = chooseFormat(settings.format, isTTY);
  const scrubber = new Scrubber();
  // Synchronous writes: the line before a crash or an exit is the one that says why.
  const stream: pino.DestinationStream =
    format === "pretty"
      ? prettyStream(destination, isTTY && !process.env.NO_COLOR)
      : typeof destination === "number"
        ? pino.destination({ dest: destination, sync: true })
        : (destination as pino.DestinationStream);
  const root = pino(
    {
      level: settings.level,
      messageKey: "message",
      base: { pid: process.pid, hostname: os.hostname() },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: {
        level: (label) => ({ level: label }),
        // The scrubbing is pino's own: the fields here, the message in logMethod.
        log: (obj) => scrubber.fields(obj) as Record<string, unknown>,
        bindings: (bindings) => scrubber.fields(bindings) as Record<string, unknown>,
      },
      hooks: {
        logMethod(args, method) {
          const [first, ...rest] = args as unknown[];
          if (typeof first === "string") return method.apply(this, [scrubber.message(first), ...rest] as Parameters<typeof method>);
          if (typeof rest[0] === "string") return method.apply(this, [first, scrubber.message(rest[0]), ...rest.slice(1)] as Parameters<typeof method>);
          return method.apply(this, args);
        },
      },
    },
    stream,
  );
  const children = new Map<string, Logger>();
  const child = (component: string): Logger => {
    let l = children.get(component);
    if (!l) children.set(component, (l = new PinoLogger(root.child({ component }), component, scrubber, child)));
    return l;
  };
  return child(opts.component);
}

class PinoLogger implements Logger {
  constructor(
    private readonly p: pino.Logger,
    readonly component: string,
    readonly scrubber: Scrubber,
    private readonly childOf: (component: string) => Logger,
  ) {}

  debug(event: string, message: string, fields?: LogFields): void {
    this.write("debug", event, message, fields);
  }

  info(event: string, message: string, fields?: LogFields): void {
    this.write("info", event, message, fields);
  }

  warn(event: string, message: string, fields?: LogFields): void {
    this.write("warn", event, message, fields);
  }

  error(event: string, message: string, fields?: LogFields): void {
    this.write("error", event, message, fields);
  }

  isEnabled(level: LogLevel): boolean {
    return this.p.isLevelEnabled(level);
  }

  event(service: string | null, type: string, message: string, data: Record<string, unknown> = {}): void {
    const component = componentOf(type);
    const target = component === this.component ? this : (this.child(component) as PinoLogger);
    target.write(levelOf(type), type, message, { service, data });
  }

  child(component: string): Logger {
    return this.childOf(component);
  }

  private write(level: LogLevel, event: string, message: string, fields: LogFields = {}): void {
    // Nothing to build for a level that is off: debug lines cost nothing in production.
    if (!this.p.isLevelEnabled(level)) return;
    const data = fields.data && Object.keys(fields.data).length > 0 ? { data: fields.data } : {};
    // service and event come before the message: a person reading the JSON sees what it is about first.
    const service = fields.service == null ? null : this.scrubber.message(fields.service);
    this.p[level]({ service, event: this.scrubber.message(event), ...data }, message);
  }
}
