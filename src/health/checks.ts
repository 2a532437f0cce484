// Health checks with Consul's meaning: one probe gives passing, warning or critical; CheckState
// turns a run of probes into an instance's status; waitHealthy is the deploy's fast readiness wait,
// which gives up early once every instance has given its verdict (see waitHealthy).

import { connect, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import type { HealthSpec } from "../spec/types.js";
import { formatDuration } from "../util/duration.js";

export type CheckStatus = "passing" | "warning" | "critical";

export interface CheckResult {
  status: CheckStatus;
  output: string;
  durationMs: number;
  /**
   * The instance answered (an HTTP status): a failure is then its verdict on itself. Otherwise it
   * did not (refused, timed out): it may still be starting.
   */
  answered?: boolean;
}

export interface CheckRecord extends CheckResult {
  /** Epoch ms when the result was recorded. */
  at: number;
}

/** Deploys probe much faster than the steady-state interval, so readiness is noticed within milliseconds. */
export const DEFAULT_DEPLOY_PROBE_INTERVAL_MS = 25;
export const CHECK_HISTORY_LENGTH = 10;
/** Consul shows this much of a failing response's body. */
const OUTPUT_BODY_CHARS = 200;

/**
 * One probe. An HTTP check when health.http is set, otherwise a TCP connect. A failed check is a
 * result, never an exception. opts.signal cuts a probe short (its result is then critical).
 * opts.connection: an instance's checks in steady state reuse one connection (see CheckConnection).
 */
export async function runHealthCheck(
  target: { host: string; port: number },
  health: HealthSpec,
  opts: { signal?: AbortSignal; connection?: CheckConnection } = {},
): Promise<CheckResult> {
  const startedAt = performance.now();
  const { status, output, answered } =
    health.http !== undefined
      ? await httpCheck(target, health.http, health.timeoutMs, opts.signal, opts.connection)
      : await tcpCheck(target, health.timeoutMs, opts.signal);
  return { status, output, durationMs: Math.round((performance.now() - startedAt) * 100) / 100, ...(answered ? { answered } : {}) };
}

/** A kept connection is used for checks for at most this long, then a fresh one proves the instance still accepts them. */
export const CHECK_CONNECTION_MAX_AGE_MS = 10_000;
/** Nor after it sat idle this long: servers close idle keep-alive connections (Node's after 5 s). */
export const CHECK_CONNECTION_MAX_IDLE_MS = 2_000;
/** A passing answer with a longer body is not read to its end to keep its connection. */
const KEEP_ALIVE_MAX_BODY_BYTES = 64 * 1024;

/**
 * One instance's health-check connection, kept between its checks. At hundreds of checks a second
 * a fresh TCP connection per check was half of the agent's CPU (bench:scale). A kept connection
 * could hide an instance that no longer accepts new ones, so it lives CHECK_CONNECTION_MAX_AGE_MS
 * at most; the proxy, whose every request may open one, notices a refusal at once in between.
 */
export class CheckConnection {
  private socket: Socket | undefined;
  private openedAt = 0;
  private idleSince = 0;

  constructor(private readonly now: () => number = Date.now) {}

  /** The kept socket when it is still young and fresh enough to use; it is the caller's until give() or close. */
  take(): Socket | undefined {
    const socket = this.socket;
    this.socket = undefined;
    if (!socket) return undefined;
    const t = this.now();
    if (socket.destroyed || t - this.openedAt >= CHECK_CONNECTION_MAX_AGE_MS || t - this.idleSince >= CHECK_CONNECTION_MAX_IDLE_MS) {
      socket.destroy();
      return undefined;
    }
    socket.removeAllListeners("data").removeAllListeners("error").removeAllListeners("close");
    return socket;
  }

  opened(): void {
    this.openedAt = this.now();
  }

  /** Keeps a socket whose exchange ended cleanly, for the next check. */
  give(socket: Socket): void {
    this.socket?.destroy();
    socket.removeAllListeners("data").removeAllListeners("end").removeAllListeners("error").removeAllListeners("close").removeAllListeners("connect");
    // Idle: whatever the server says or does now only ends the connection.
    socket.on("error", () => socket.destroy());
    socket.on("data", () => socket.destroy());
    socket.on("close", () => { if (this.socket === socket) this.socket = undefined; });
    this.idleSince = this.now();
    this.socket = socket;
  }

  close(): void {
    this.socket?.destroy();
    this.socket = undefined;
  }
}

/**
 * One GET, read only as far as the verdict needs: the status line for a 2xx, the start of the body
 * otherwise; with a connection to keep, a passing answer is read to its end so the next check can
 * reuse it. A small HTTP/1.1 reader of its own instead of http.get: at hundreds of checks a second,
 * ClientRequest, a throwaway Agent and a parser per check were about half of the agent's CPU
 * (bench:scale), as they were of the proxy's before it got its own client.
 */
function httpCheck(
  target: { host: string; port: number },
  rawPath: string,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  connection?: CheckConnection,
): Promise<{ status: CheckStatus; output: string; answered?: boolean }> {
  const path = rawPath.startsWith("/") ? rawPath : `/${rawPath}`;
  const authority = `${hostForUrl(target.host)}:${target.port}`;
  const url = `http://${authority}${path}`;
  const startedAt = Date.now();
  const kept = connection?.take();
  return new Promise((resolve) => {
    let settled = false;
    let answered = false;
    let received = false;
    let pending: Buffer = EMPTY;
    /** The final response's head, once read: only a non-passing answer, or one on a kept connection, gets that far. */
    let head: { line: string; status: CheckStatus; framing: BodyFraming; close: boolean } | undefined;
    const finish = (status: CheckStatus, output: string, reusable = false) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      if (reusable && connection) connection.give(socket);
      else socket.destroy();
      resolve(answered ? { status, output, answered } : { status, output });
    };
    /** A kept connection the server had closed meanwhile says nothing of the instance: ask again on a fresh one. */
    const retryFresh = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      socket.destroy();
      resolve(httpCheck(target, rawPath, Math.max(1, timeoutMs - (Date.now() - startedAt)), signal, connection));
    };
    const finishWithBody = (ended: boolean) => {
      const { body, complete } = readBody(head!.framing, pending);
      if (head!.status === "passing") {
        // Only a connection kept for reuse reads a passing body, and only to find where it ends.
        if (complete) finish(head!.status, head!.line, !head!.close && !ended && endsExactly(head!.framing, pending));
        else if (ended || body.length > KEEP_ALIVE_MAX_BODY_BYTES) finish(head!.status, head!.line);
        return;
      }
      const text = body.toString("utf8");
      if (text.length >= OUTPUT_BODY_CHARS) finish(head!.status, `${head!.line}: ${text.slice(0, OUTPUT_BODY_CHARS)}`);
      else if (complete || ended) finish(head!.status, text ? `${head!.line}: ${text}` : head!.line);
    };
    const read = (ended: boolean) => {
      while (!head) {
        const lineEnd = pending.indexOf("\r\n");
        if (lineEnd < 0) {
          if (pending.length > MAX_RESPONSE_HEAD_BYTES) return finish("critical", `GET ${url}: the response head is over ${MAX_RESPONSE_HEAD_BYTES} bytes`);
          if (ended) return finish("critical", `GET ${url}: the connection closed ${pending.length ? "in the middle of the response head" : "before a response"}`);
          return;
        }
        const statusLine = pending.toString("latin1", 0, lineEnd);
        const m = STATUS_LINE.exec(statusLine);
        if (!m) return finish("critical", `GET ${url}: not an HTTP response: ${JSON.stringify(statusLine.slice(0, 80))}`);
        const code = Number(m[1]);
        // The app is up and gave its verdict: the deploy's wait may stop early on it.
        answered = true;
        const line = `HTTP ${code} ${m[2] ?? ""}`.trimEnd();
        const status: CheckStatus = code >= 200 && code < 300 ? "passing" : code === 429 ? "warning" : "critical";
        // The verdict is in the status line; the rest of a passing answer is read only to keep its connection.
        if (status === "passing" && !connection) return finish(status, line);
        const headEnd = pending.indexOf("\r\n\r\n");
        if (headEnd < 0) {
          if (pending.length > MAX_RESPONSE_HEAD_BYTES) return finish("critical", `GET ${url}: the response head is over ${MAX_RESPONSE_HEAD_BYTES} bytes`);
          if (ended) return finish(status, line);
          return;
        }
        const fields = pending.toString("latin1", lineEnd + 2, headEnd);
        pending = pending.subarray(headEnd + 4);
        // An interim answer (100 Continue, 103 Early Hints): the real one follows, as http.get reads it.
        if (code >= 100 && code < 200 && code !== 101) continue;
        const framing: BodyFraming = code === 101 || code === 204 || code === 304 ? { kind: "none" } : bodyFraming(fields);
        head = { line, status, framing, close: code === 101 || framing.kind === "close" || /^connection:[^\r\n]*close/im.test(fields) };
      }
      finishWithBody(ended);
    };
    const socket = kept ?? connect({ host: target.host, port: target.port });
    const request = `GET ${path} HTTP/1.1\r\nHost: ${authority}\r\n${connection ? "" : "Connection: close\r\n"}\r\n`;
    if (kept) socket.write(request, "latin1");
    else socket.on("connect", () => {
      connection?.opened();
      socket.write(request, "latin1");
    });
    socket.on("data", (chunk: Buffer) => {
      received = true;
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      read(false);
    });
    socket.on("end", () => (kept && !received ? retryFresh() : read(true)));
    // After the head of a failing answer, a broken connection still reports that answer, with what came of its body.
    socket.on("error", (e) => (kept && !received ? retryFresh() : head ? finishWithBody(true) : finish("critical", `GET ${url}: ${e.message}`)));
    socket.on("close", () => (kept && !received ? retryFresh() : head ? finishWithBody(true) : finish("critical", `GET ${url}: the connection closed before a response`)));
    // A whole-request deadline: the socket timeout alone would let a slow trickle run forever.
    const timer = setTimeout(() => finish("critical", `GET ${url}: timed out after ${formatDuration(timeoutMs)}`), timeoutMs);
    const onAbort = () => finish("critical", `GET ${url}: aborted`);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
  });
}

const EMPTY = Buffer.alloc(0);
/** Beyond this, a response head is not one a health endpoint sends (Node's own limit is 16 KiB too). */
const MAX_RESPONSE_HEAD_BYTES = 16 * 1024;
const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/;

/** How a response's body ends: at a length, at the last chunk, with the connection, or it has none. */
type BodyFraming = { kind: "length"; length: number } | { kind: "chunked" } | { kind: "close" } | { kind: "none" };

function bodyFraming(fields: string): BodyFraming {
  if (/^transfer-encoding:[^\r\n]*chunked/im.test(fields)) return { kind: "chunked" };
  const length = /^content-length:[ \t]*(\d+)[ \t]*$/im.exec(fields);
  return length ? { kind: "length", length: Number(length[1]) } : { kind: "close" };
}

/** The body bytes received so far (de-chunked), whether the body is complete, and for a whole chunked one, where its framing ends. */
function readBody(framing: BodyFraming, data: Buffer): { body: Buffer; complete: boolean; end?: number } {
  switch (framing.kind) {
    case "none":
      return { body: EMPTY, complete: true };
    case "length":
      return { body: data.subarray(0, framing.length), complete: data.length >= framing.length };
    case "close":
      return { body: data, complete: false };
    case "chunked": {
      const parts: Buffer[] = [];
      let pos = 0;
      for (;;) {
        const sizeEnd = data.indexOf("\r\n", pos);
        if (sizeEnd < 0) return { body: Buffer.concat(parts), complete: false };
        const size = parseInt(data.toString("latin1", pos, sizeEnd), 16);
        if (!Number.isFinite(size) || size === 0) {
          // After the last chunk: optional trailer fields, then an empty line.
          const trailerEnd = data.indexOf("\r\n\r\n", sizeEnd);
          return { body: Buffer.concat(parts), complete: true, ...(size === 0 && trailerEnd >= 0 ? { end: trailerEnd + 4 } : {}) };
        }
        const start = sizeEnd + 2;
        parts.push(data.subarray(start, Math.min(start + size, data.length)));
        if (start + size + 2 > data.length) return { body: Buffer.concat(parts), complete: false };
        pos = start + size + 2;
      }
    }
  }
}

/** Whether data is one whole body and nothing after it: only then is the connection's next byte the next response's. */
function endsExactly(framing: BodyFraming, data: Buffer): boolean {
  switch (framing.kind) {
    case "none":
      return data.length === 0;
    case "length":
      return data.length === framing.length;
    case "chunked":
      return readBody(framing, data).end === data.length;
    case "close":
      return false;
  }
}

function tcpCheck(
  target: { host: string; port: number },
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<{ status: CheckStatus; output: string; answered?: boolean }> {
  const address = `${hostForUrl(target.host)}:${target.port}`;
  return new Promise((resolve) => {
    let settled = false;
    const finish = (status: CheckStatus, output: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      socket.destroy();
      resolve({ status, output });
    };
    const socket = connect({ host: target.host, port: target.port });
    socket.on("connect", () => finish("passing", `TCP connect ${address}: Success`));
    socket.on("error", (e) => finish("critical", `TCP connect ${address}: ${e.message}`));
    const timer = setTimeout(() => finish("critical", `TCP connect ${address}: timed out after ${formatDuration(timeoutMs)}`), timeoutMs);
    const onAbort = () => finish("critical", `TCP connect ${address}: aborted`);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function hostForUrl(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

/**
 * The status of one instance's check, with Consul's thresholds:
 * - a new check starts critical, as in Consul, so nothing is routed before it has proved itself;
 * - successBeforePassing consecutive passing results turn it passing;
 * - failuresBeforeCritical consecutive non-passing results (warning or critical) take it out of
 *   passing; it then shows the latest result's status, so a run of 429s reads warning and a run
 *   ending in a 500 reads critical;
 * - before a threshold is reached the status stays what it was.
 */
export class CheckState {
  private current: CheckStatus = "critical";
  /** The last CHECK_HISTORY_LENGTH results, oldest first. */
  readonly history: CheckRecord[] = [];
  private readonly successBeforePassing: number;
  private readonly failuresBeforeCritical: number;
  private successes = 0;
  private failures = 0;

  /** initial: "passing" for an instance a deploy already proved healthy. */
  constructor(thresholds: Pick<HealthSpec, "successBeforePassing" | "failuresBeforeCritical">, initial: CheckStatus = "critical") {
    this.current = initial;
    this.successBeforePassing = Math.max(1, thresholds.successBeforePassing);
    this.failuresBeforeCritical = Math.max(1, thresholds.failuresBeforeCritical);
  }

  get status(): CheckStatus {
    return this.current;
  }

  get lastResult(): CheckRecord | undefined {
    return this.history[this.history.length - 1];
  }

  /** Returns whether the status changed. */
  record(result: CheckResult, at = Date.now()): boolean {
    this.history.push({ at, status: result.status, output: result.output, durationMs: result.durationMs });
    if (this.history.length > CHECK_HISTORY_LENGTH) this.history.shift();

    const previous = this.current;
    if (result.status === "passing") {
      this.successes++;
      this.failures = 0;
      if (this.successes >= this.successBeforePassing) this.current = "passing";
    } else {
      this.failures++;
      this.successes = 0;
      if (this.failures >= this.failuresBeforeCritical) this.current = result.status;
    }
    return this.current !== previous;
  }
}

export interface HealthTarget {
  id: string;
  host: string;
  port: number;
}

export type WaitHealthyResult =
  | { ok: true; readyAtMs: Record<string, number> }
  | { ok: false; failing: { id: string; status: CheckStatus; output: string; listening?: string }[]; reason: "timeout" | "exited" | "unhealthy" | "misdirected" | "aborted" };

/**
 * Where an instance that does not answer its check listens instead, when it listens somewhere (an
 * app that ignores its PORT): undefined while it listens nowhere (still starting) or where it should.
 */
export type ListeningElsewhere = (id: string) => Promise<string | undefined>;

/**
 * Probes every target until each has passed successBeforePassing consecutive checks. Stops early
 * when the deadline (epoch ms) passes, the signal aborts, isAlive reports an instance gone
 * ("exited"), or every target not yet passing has answered its check with a critical status (an
 * HTTP 500, say) for failuresBeforeCritical × intervalMs without a break ("unhealthy"): the app is
 * up and says it is not well, which waiting out the deadline will not change. A target that does
 * not answer (refused: not listening yet; timed out) is still starting, and is waited for, unless
 * listeningElsewhere finds it listening on another address after the same time ("misdirected"):
 * an app that ignores its PORT will not start answering there either.
 * readyAtMs: per target, ms from the start of the wait until it turned passing. failing: the
 * targets that had not turned passing, with their last output.
 */
export async function waitHealthy(
  targets: HealthTarget[],
  health: HealthSpec,
  opts: { deadline: number; probeIntervalMs?: number; signal?: AbortSignal; isAlive?: (id: string) => boolean; listeningElsewhere?: ListeningElsewhere },
): Promise<WaitHealthyResult> {
  const startedAt = Date.now();
  const probeIntervalMs = opts.probeIntervalMs ?? DEFAULT_DEPLOY_PROBE_INTERVAL_MS;
  const states = new Map(targets.map((t) => [t.id, new CheckState(health)]));
  const readyAtMs: Record<string, number> = {};
  const exited = new Set<string>();
  // Ends every probe loop, and any probe in flight, as soon as the outcome is known.
  const done = new AbortController();

  let outcome: "ready" | "timeout" | "exited" | "unhealthy" | "misdirected" | "aborted" | undefined;
  let settle!: () => void;
  const settled = new Promise<void>((resolve) => (settle = resolve));
  const finish = (o: NonNullable<typeof outcome>) => {
    if (outcome) return;
    outcome = o;
    done.abort();
    settle();
  };

  const onAbort = () => finish("aborted");
  const timer = setTimeout(() => finish("timeout"), Math.max(0, opts.deadline - Date.now()));
  if (opts.signal?.aborted) finish("aborted");
  else opts.signal?.addEventListener("abort", onAbort, { once: true });

  // The verdict takes as long as the steady-state monitor's would: failures_before_critical checks, one interval apart.
  const verdictAfterMs = Math.max(1, health.failuresBeforeCritical) * health.intervalMs;
  /** Per target: since when every result has been a critical answer (none while it is not answering). */
  const criticalSince = new Map<string, number>();
  const condemned = new Set<string>();
  /** Per target: since when it has not answered, and when the runtime was last asked where it listens. */
  const silentSince = new Map<string, number>();
  const askedAt = new Map<string, number>();
  /** Targets found listening elsewhere, with where. */
  const elsewhere = new Map<string, string>();
  const judge = () => {
    const pending = targets.filter((t) => !(t.id in readyAtMs));
    if (pending.length > 0 && pending.every((t) => condemned.has(t.id))) finish(pending.some((t) => elsewhere.has(t.id)) ? "misdirected" : "unhealthy");
  };
  const lookElsewhere = async (id: string) => {
    const now = Date.now();
    const since = silentSince.get(id) ?? now;
    silentSince.set(id, since);
    // Asked once the check would have condemned an answering instance, then once an interval: it reads /proc or asks Docker.
    if (!opts.listeningElsewhere || now - since < verdictAfterMs || now - (askedAt.get(id) ?? 0) < health.intervalMs) return;
    askedAt.set(id, now);
    const where = await opts.listeningElsewhere(id).catch(() => undefined);
    if (where === undefined || done.signal.aborted) return;
    elsewhere.set(id, where);
    condemned.add(id);
    judge();
  };

  const probeUntilPassing = async (target: HealthTarget) => {
    const state = states.get(target.id)!;
    while (!done.signal.aborted) {
      // A probe must not run past the deadline just because the check's own timeout is longer.
      const timeoutMs = Math.max(1, Math.min(health.timeoutMs, opts.deadline - Date.now()));
      const result = await runHealthCheck(target, { ...health, timeoutMs }, { signal: done.signal });
      if (done.signal.aborted) return;
      state.record(result);
      if (state.status === "passing") {
        condemned.delete(target.id);
        readyAtMs[target.id] = Date.now() - startedAt;
        if (Object.keys(readyAtMs).length === targets.length) finish("ready");
        else judge();
        return;
      }
      if (result.status === "critical" && result.answered) {
        silentSince.delete(target.id);
        const since = criticalSince.get(target.id) ?? Date.now();
        criticalSince.set(target.id, since);
        if (Date.now() - since >= verdictAfterMs && state.status === "critical") condemned.add(target.id);
        judge();
      } else if (!result.answered) {
        criticalSince.delete(target.id);
        if (!elsewhere.has(target.id)) await lookElsewhere(target.id);
      } else {
        criticalSince.delete(target.id);
        silentSince.delete(target.id);
        condemned.delete(target.id);
      }
      await sleep(probeIntervalMs, undefined, { signal: done.signal }).catch(() => {});
    }
  };

  // Apart from the probes, which may hang up to their timeout: a dead instance fails the wait at once,
  // even one that had already turned passing.
  const isAlive = opts.isAlive;
  const sweepExited = () => {
    if (!isAlive) return;
    for (const t of targets) if (!isAlive(t.id)) exited.add(t.id);
    if (exited.size > 0) finish("exited");
  };
  const sweeper = isAlive ? setInterval(sweepExited, probeIntervalMs) : undefined;
  sweepExited();

  if (targets.length === 0) finish("ready");
  for (const target of targets) void probeUntilPassing(target);
  await settled;
  clearTimeout(timer);
  clearInterval(sweeper);
  opts.signal?.removeEventListener("abort", onAbort);

  if (outcome === "ready") return { ok: true, readyAtMs };
  const failing = targets
    .filter((t) => !(t.id in readyAtMs) || exited.has(t.id))
    .map((t) => {
      const state = states.get(t.id)!;
      if (exited.has(t.id)) return { id: t.id, status: "critical" as const, output: "the instance exited" };
      const where = elsewhere.get(t.id);
      return { id: t.id, status: state.status, output: state.lastResult?.output ?? "no check had finished yet", ...(where ? { listening: where } : {}) };
    });
  return { ok: false, failing, reason: outcome! };
}

/** Why a wait for health failed, in one line for a deploy's error; the failing instances' outputs come after it. */
export function whyNotHealthy(r: Extract<WaitHealthyResult, { ok: false }>, health: HealthSpec, deployTimeoutMs: number): string {
  switch (r.reason) {
    case "exited":
      return "an instance exited before it was healthy";
    case "timeout":
      return `not healthy within deploy_timeout (${formatDuration(deployTimeoutMs)})`;
    case "unhealthy": {
      const answers = [...new Set(r.failing.map((f) => f.output))];
      return `unhealthy: the check answered ${answers.join("; ")} for ${health.failuresBeforeCritical} × ${formatDuration(health.intervalMs)} (failures_before_critical × interval), so the deploy did not wait out deploy_timeout (${formatDuration(deployTimeoutMs)})`;
    }
    case "misdirected": {
      const f = r.failing.find((x) => x.listening)!;
      return `not listening where its check goes: ${f.id} is ${f.listening}. An app must listen on the port Turquoise gives it in $PORT (and on $HOST), so the deploy did not wait out deploy_timeout (${formatDuration(deployTimeoutMs)})`;
    }
    case "aborted":
      return "aborted";
  }
}
