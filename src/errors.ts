// Every error Turquoise raises on purpose carries a code. The CLI maps codes to exit codes here,
// in one place; nothing else calls process.exit with a number of its own.

export const EXIT_CODES = {
  OK: 0,
  INTERNAL: 1,
  USAGE: 2,
  SPEC_INVALID: 3,
  NOT_FOUND: 4,
  LOCKED: 5,
  DEPLOY_FAILED: 6,
  AGENT_UNREACHABLE: 7,
  UNAUTHORIZED: 8,
  CONFLICT: 9,
  PLAN_REFUSED: 10,
  MIGRATION_FAILED: 11,
  /** A runtime's engine (the Docker daemon) does not answer. */
  RUNTIME_UNAVAILABLE: 12,
  /** The token is good, but its scope does not cover the call; or the key is the agent's own. */
  FORBIDDEN: 13,
  /** `down` found instances of this agent still running after it stopped them: it says which. */
  STOP_INCOMPLETE: 14,
  /** A flow lost its deploy lock (it ran out, or another took it): it stopped, and recovery takes over. */
  LOCK_LOST: 15,
  /** The state store (etcd) did not answer within its timeout, or refused the agent's credentials: nothing was decided. */
  STATE_UNAVAILABLE: 16,
  /** Several agents share the store and this one does not lead: the error names the leader's API. */
  NOT_LEADER: 17,
  /** A cap on what the agent holds open at once, for one token or in all (event streams), is reached: retry after a while. */
  LIMIT_REACHED: 18,
} as const;

export type ErrorCode = keyof typeof EXIT_CODES;

/** The error code behind an exit code (a child turquoise process's), INTERNAL when unknown. */
export function codeForExit(exitCode: number): ErrorCode {
  return (Object.entries(EXIT_CODES).find(([, n]) => n === exitCode)?.[0] ?? "INTERNAL") as ErrorCode;
}

export interface ErrorDetail {
  file?: string;
  line?: number;
  column?: number;
  path?: string;
  message: string;
}

export class TurquoiseError extends Error {
  readonly code: ErrorCode;
  readonly details: ErrorDetail[];
  readonly data: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, opts: { details?: ErrorDetail[]; data?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "TurquoiseError";
    this.code = code;
    this.details = opts.details ?? [];
    this.data = opts.data ?? {};
  }

  get exitCode(): number {
    // A code that came over the wire may be one this version does not know.
    return EXIT_CODES[this.code] ?? EXIT_CODES.INTERNAL;
  }

  toJSON(): Record<string, unknown> {
    // data never overrides the code or the message: a driver's own "code" (ECONNREFUSED) stays in data.
    return { ...this.data, code: this.code, message: this.message, details: this.details };
  }
}

export function isTurquoiseError(e: unknown): e is TurquoiseError {
  return e instanceof TurquoiseError;
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * A certificate or key file the proxy cannot serve: unreadable, no PEM in it, a key that belongs
 * to another certificate, a host the certificate does not name. The message names the file and
 * never quotes what is in it.
 */
export class CertificateError extends Error {
  readonly file: string;
  /** Which half is wrong: the certificate chain, or its private key (they may share one file). */
  readonly part: "certificate" | "key";

  constructor(file: string, message: string, part: "certificate" | "key" = "certificate") {
    super(`${file}: ${message}`);
    this.name = "CertificateError";
    this.file = file;
    this.part = part;
  }
}
