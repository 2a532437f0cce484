// GET load that tells connection failures apart: refused (nothing accepted the connection) from
// reset (an accepted connection died under a request). Each client either opens a fresh connection
// per request or keeps one alive. Bounded in requests and time, for benchmarks and tests alike.

import http from "node:http";

export interface ConnectionLoadOptions {
  url: string;
  /** Requests in flight at once. */
  concurrency: number;
  /** true: every client keeps its connection; false: a new connection per request. */
  keepAlive: boolean;
  /** A request with no answer after this long counts as a timeout (and is abandoned). */
  timeoutMs?: number;
  /** The load stops by itself after this many requests or this long, whichever comes first. */
  maxRequests?: number;
  maxDurationMs?: number;
}

export interface LoadCounts {
  /** Answered with a 2xx. */
  ok: number;
  /** Answered with anything else. */
  badStatus: number;
  /** ECONNREFUSED: nothing listened. */
  refused: number;
  /** ECONNRESET, EPIPE, a hang-up: the connection died with a request on it. */
  reset: number;
  timeout: number;
  other: number;
  /** Responses that said Connection: close. */
  closeAnswers: number;
  /** Requests started. */
  started: number;
}

export const DEFAULT_LOAD_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_REQUESTS = 2_000_000;
const DEFAULT_MAX_DURATION_MS = 5 * 60_000;

interface Watch {
  after: number;
  resolve(atMs: number): void;
}

export class ConnectionLoad {
  private readonly opts: Required<ConnectionLoadOptions>;
  private readonly agent: http.Agent | false;
  private readonly tally: LoadCounts = { ok: 0, badStatus: 0, refused: 0, reset: 0, timeout: 0, other: 0, closeAnswers: 0, started: 0 };
  /** Error codes seen outside the classes above, for the report. */
  readonly otherCodes: Record<string, number> = {};
  private inFlightNow = 0;
  private stopping = false;
  private startedAt = 0;
  private clients: Promise<void>[] = [];
  private watches: Watch[] = [];
  /** The slowest answer, in ms. */
  maxLatencyMs = 0;

  constructor(opts: ConnectionLoadOptions) {
    this.opts = { timeoutMs: DEFAULT_LOAD_TIMEOUT_MS, maxRequests: DEFAULT_MAX_REQUESTS, maxDurationMs: DEFAULT_MAX_DURATION_MS, ...opts };
    this.agent = opts.keepAlive ? new http.Agent({ keepAlive: true, maxSockets: opts.concurrency }) : false;
  }

  start(): this {
    this.startedAt = performance.now();
    this.clients = Array.from({ length: this.opts.concurrency }, () => this.client());
    return this;
  }

  /** A copy of the counts so far. */
  counts(): LoadCounts {
    return { ...this.tally };
  }

  /** Requests sent and not yet answered or failed. */
  get inFlight(): number {
    return this.inFlightNow;
  }

  /**
   * Resolves with the time (performance.now()) at which the first request started after
   * `afterMs` was answered 2xx: when the target served again after an event at afterMs.
   */
  servedAfter(afterMs: number): Promise<number> {
    return new Promise((resolve) => this.watches.push({ after: afterMs, resolve }));
  }

  async stop(): Promise<LoadCounts> {
    this.stopping = true;
    await Promise.all(this.clients);
    if (this.agent) this.agent.destroy();
    return this.counts();
  }

  private async client(): Promise<void> {
    const { maxRequests, maxDurationMs } = this.opts;
    while (!this.stopping && this.tally.started < maxRequests && performance.now() - this.startedAt < maxDurationMs) {
      await this.once();
    }
  }

  private once(): Promise<void> {
    this.tally.started++;
    this.inFlightNow++;
    const sentAt = performance.now();
    return new Promise((resolve) => {
      let settled = false;
      const settle = (kind: keyof LoadCounts | undefined, code?: string): void => {
        if (settled) return;
        settled = true;
        this.inFlightNow--;
        if (kind) this.tally[kind]++;
        if (kind === "other") this.otherCodes[code ?? "?"] = (this.otherCodes[code ?? "?"] ?? 0) + 1;
        resolve();
      };
      const req = http.get(this.opts.url, { agent: this.agent, timeout: this.opts.timeoutMs }, (res) => {
        res.resume();
        res.on("error", (e: NodeJS.ErrnoException) => settle(classify(e.code), e.code));
        res.on("end", () => {
          const now = performance.now();
          this.maxLatencyMs = Math.max(this.maxLatencyMs, now - sentAt);
          if (res.headers.connection === "close") this.tally.closeAnswers++;
          const ok = res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300;
          if (ok && this.watches.length !== 0) this.notify(sentAt, now);
          settle(ok ? "ok" : "badStatus");
        });
      });
      req.on("timeout", () => {
        req.destroy();
        settle("timeout");
      });
      req.on("error", (e: NodeJS.ErrnoException) => settle(classify(e.code), e.code));
    });
  }

  private notify(sentAt: number, now: number): void {
    const due = this.watches.filter((w) => sentAt >= w.after);
    if (due.length === 0) return;
    this.watches = this.watches.filter((w) => sentAt < w.after);
    for (const w of due) w.resolve(now);
  }
}

function classify(code: string | undefined): keyof LoadCounts {
  if (code === "ECONNREFUSED") return "refused";
  if (code === "ECONNRESET" || code === "EPIPE") return "reset";
  return "other";
}

/** The counts between two snapshots. */
export function countsSince(before: LoadCounts, after: LoadCounts): LoadCounts {
  const out = { ...after };
  for (const k of Object.keys(out) as (keyof LoadCounts)[]) out[k] = after[k] - before[k];
  return out;
}
