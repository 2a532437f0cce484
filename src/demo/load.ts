// A bounded keep-alive load generator: GETs and POSTs through the proxy, counting every failure
// (non-2xx, reset, timeout) and which release answered. Used by the demo, tests and benchmarks.
import http from "node:http";

export interface LoadOptions {
  /** e.g. http://127.0.0.1:8080 */
  baseUrl: string;
  /** Host header, for host-routed services. */
  host?: string;
  path?: string;
  concurrency?: number;
  /** Every Nth request is a POST of a new book; 0 for GETs only. */
  postEvery?: number;
  /** Hard bounds: the loop stops at whichever comes first. */
  maxRequests?: number;
  maxDurationMs?: number;
  timeoutMs?: number;
  /** Keep every request's start (epoch ms) and latency, so a bench can take percentiles over any window. */
  timeline?: boolean;
  /**
   * Simulate this many users, as a canary sees them: each from its own loopback address
   * (127.0.<n>.<n>, see userAddress) with its own keep-alive connection and cookie jar.
   */
  users?: number;
}

/** The loopback address of simulated user i: anywhere in 127.0.0.0/8 answers on Linux. */
export function userAddress(i: number): string {
  return `127.0.${1 + ((i >> 8) % 254)}.${1 + (i % 254)}`;
}

interface User {
  agent: http.Agent;
  /** The cookies the proxy set, as the Cookie field to send back. */
  cookies: Map<string, string>;
}

export interface LoadReport {
  total: number;
  ok: number;
  failed: number;
  failures: Record<string, number>;
  byRelease: Record<string, number>;
  /** Titles of books whose POST was acknowledged with 201. */
  acknowledgedWrites: string[];
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  durationMs: number;
  requestsPerSecond: number;
  /** With opts.timeline: [start epoch ms, latency ms, 1 ok / 0 failed] for each request. */
  timeline?: Array<[number, number, number]>;
}

export const DEFAULT_LOAD_LIMITS = { maxRequests: 2_000_000, maxDurationMs: 10 * 60_000 };

export class LoadGenerator {
  private readonly agent: http.Agent;
  private readonly latencies: number[] = [];
  private readonly timeline: Array<[number, number, number]> = [];
  private readonly failures: Record<string, number> = {};
  private readonly byRelease: Record<string, number> = {};
  private readonly acked: string[] = [];
  private total = 0;
  private ok = 0;
  private stopping = false;
  private startedAt = 0;
  private workers: Promise<void>[] = [];
  private readonly o: Required<Omit<LoadOptions, "host" | "users">> & { host?: string; users?: number };
  private readonly users: User[] = [];

  constructor(opts: LoadOptions) {
    this.o = { path: "/api/v1/books", concurrency: 8, postEvery: 5, timeoutMs: 5_000, timeline: false, ...DEFAULT_LOAD_LIMITS, ...opts };
    this.agent = new http.Agent({ keepAlive: true, maxSockets: this.o.concurrency });
    for (let i = 0; i < (this.o.users ?? 0); i++) this.users.push({ agent: new http.Agent({ keepAlive: true, maxSockets: 1, localAddress: userAddress(i) }), cookies: new Map() });
  }

  private destroyAgents(): void {
    this.agent.destroy();
    for (const u of this.users) u.agent.destroy();
  }

  start(): this {
    this.startedAt = performance.now();
    this.workers = Array.from({ length: this.o.concurrency }, (_, w) => this.worker(w));
    return this;
  }

  async stop(): Promise<LoadReport> {
    this.stopping = true;
    await Promise.all(this.workers);
    this.destroyAgents();
    return this.report();
  }

  /** Resolves when a bound (request count or duration) ends the run. */
  async done(): Promise<LoadReport> {
    await Promise.all(this.workers);
    this.destroyAgents();
    return this.report();
  }

  report(): LoadReport {
    const sorted = Float64Array.from(this.latencies).sort();
    const pct = (p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! : 0);
    const durationMs = performance.now() - this.startedAt;
    return {
      total: this.total, ok: this.ok, failed: this.total - this.ok, failures: { ...this.failures }, byRelease: { ...this.byRelease },
      acknowledgedWrites: [...this.acked], p50Ms: round(pct(0.5)), p99Ms: round(pct(0.99)), maxMs: round(sorted[sorted.length - 1] ?? 0),
      durationMs: Math.round(durationMs), requestsPerSecond: Math.round((this.total / durationMs) * 1000),
      ...(this.o.timeline ? { timeline: [...this.timeline] } : {}),
    };
  }

  private async worker(w: number): Promise<void> {
    let n = 0;
    while (!this.stopping && this.total < this.o.maxRequests && performance.now() - this.startedAt < this.o.maxDurationMs) {
      n++;
      const post = this.o.postEvery > 0 && n % this.o.postEvery === 0;
      const title = post ? `book-${w}-${n}-${Date.now().toString(36)}` : "";
      const t0 = performance.now();
      this.total++;
      // Worker w serves users w, w + concurrency, ... in turn.
      const user = this.users.length ? this.users[(w + (n - 1) * this.o.concurrency) % this.users.length] : undefined;
      const r = await this.request(post ? "POST" : "GET", post ? JSON.stringify({ title, author: "load" }) : undefined, user);
      this.latencies.push(performance.now() - t0);
      if (this.o.timeline) this.timeline.push([Math.round(performance.timeOrigin + t0), round(performance.now() - t0), r.ok ? 1 : 0]);
      if (r.ok) {
        this.ok++;
        this.byRelease[r.release] = (this.byRelease[r.release] ?? 0) + 1;
        if (post) this.acked.push(title);
      } else {
        this.failures[r.reason] = (this.failures[r.reason] ?? 0) + 1;
      }
    }
  }

  private request(method: string, body?: string, user?: User): Promise<{ ok: true; release: string } | { ok: false; reason: string }> {
    return new Promise((resolve) => {
      const url = new URL(this.o.path, this.o.baseUrl);
      const headers: Record<string, string> = { ...(this.o.host ? { host: this.o.host } : {}) };
      if (body) Object.assign(headers, { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) });
      if (user?.cookies.size) headers.cookie = [...user.cookies].map(([k, v]) => `${k}=${v}`).join("; ");
      const req = http.request(url, { method, agent: user?.agent ?? this.agent, headers, timeout: this.o.timeoutMs }, (res) => {
        if (user) for (const c of res.headers["set-cookie"] ?? []) keepCookie(user.cookies, c);
        res.resume();
        res.on("end", () => {
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) resolve({ ok: true, release: String(res.headers["x-release"] ?? "unknown") });
          else resolve({ ok: false, reason: `HTTP ${status}` });
        });
        res.on("error", (e) => resolve({ ok: false, reason: errCode(e) }));
      });
      req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "TIMEOUT" })));
      req.on("error", (e) => resolve({ ok: false, reason: errCode(e) }));
      req.end(body);
    });
  }
}

function errCode(e: Error): string {
  return (e as NodeJS.ErrnoException).code ?? e.message;
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

/** Keeps a Set-Cookie's name and value (attributes ignored: one host, one path). */
function keepCookie(jar: Map<string, string>, setCookie: string): void {
  const pair = setCookie.split(";", 1)[0]!;
  const eq = pair.indexOf("=");
  if (eq > 0) jar.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
}
