// The log settings: turquoise.yml's log section and the environment variables over it. Kept apart
// from the logger so that reading a spec does not load pino.
import { TurquoiseError } from "../errors.js";

export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
/** auto: pretty when the log goes to a terminal, JSON lines otherwise (a file, a pipe). */
export const LOG_FORMATS = ["auto", "json", "pretty"] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];
export const DEFAULT_LOG_LEVEL: LogLevel = "info";
export const DEFAULT_LOG_FORMAT: LogFormat = "auto";
/** Override the spec's log.level and log.format, e.g. for one debugging run; the agent passes them on to the proxy it starts. */
export const LOG_LEVEL_ENV = "TURQUOISE_LOG_LEVEL";
export const LOG_FORMAT_ENV = "TURQUOISE_LOG_FORMAT";

export interface LogSettings {
  level: LogLevel;
  format: LogFormat;
}

export const DEFAULT_LOG_SETTINGS: LogSettings = { level: DEFAULT_LOG_LEVEL, format: DEFAULT_LOG_FORMAT };

/** The spec's settings (defaults when absent) under the environment's overrides; a bad variable is a USAGE error naming it. */
export function logSettings(spec: LogSettings = DEFAULT_LOG_SETTINGS, env: NodeJS.ProcessEnv = process.env): LogSettings {
  return { level: fromEnv(env, LOG_LEVEL_ENV, LOG_LEVELS) ?? spec.level, format: fromEnv(env, LOG_FORMAT_ENV, LOG_FORMATS) ?? spec.format };
}

function fromEnv<T extends string>(env: NodeJS.ProcessEnv, name: string, allowed: readonly T[]): T | undefined {
  const raw = env[name];
  if (raw === undefined || raw === "") return undefined;
  const value = raw.trim().toLowerCase();
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new TurquoiseError("USAGE", `${name} must be one of ${allowed.join(", ")}; got ${JSON.stringify(raw.slice(0, 40))}`);
}

/** What auto means where the log goes. */
export function chooseFormat(format: LogFormat, isTTY: boolean): "json" | "pretty" {
  return format === "auto" ? (isTTY ? "pretty" : "json") : format;
}
