// One proxied request: a client request on its way through one pool to an upstream, with at
// most two attempts, and the response relayed back with backpressure in both directions.

import type net from "node:net";
import type { ClientRequest, ClientResponse } from "./client-server.js";
import type { ProxySettings, ProxyRejectionCounts, Route, RouteTimeouts, ProxyTimeoutCounts, Upstream } from "./contract.js";
import { writeBytes, writeLatin1 } from "./direct-write.js";
import { sendJson } from "./http.js";
import type { Cuttable, Match, Pool, Router } from "./table.js";
import type { ConnWaiter, QueueTicket, ResponseSink, UpstreamConn, UpstreamConnections, UpstreamTimeoutPhase } from "./upstream.js";

/** What an exchange needs of the data plane that runs it. */
export interface ExchangeHost {
  readonly router: Router;
  readonly upstreams: UpstreamConnections;
  /** A failed upstream attempt of a request of `pool` (retried or not), timeouts included: counted proxy-wide and in its series. */
  upstreamFailed(pool: Pool): void;
  /** A request of `pool` sent again to another upstream. */
  retried(pool: Pool): void;
  readonly timeouts: ProxyTimeoutCounts;
  readonly rejected: ProxyRejectionCounts;
  /** Passive detection: a connection to u failed before any response byte. */
  noteFailure(u: Upstream, err: NodeJS.ErrnoException): void;
  /**
   * Holds a request until its pool's route has an instance in rotation again, then routes it afresh
   * (503 after waitMs); `started` as the exchange had it, so that it is counted once, when answered.
   */
  holdForHealthy(req: ClientRequest, res: ClientResponse, pool: Pool, waitMs: number, started: number): void;
}

const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]);

export const kExchange = Symbol("exchange");
/** On a request every instance failed before answering, held for a revert: what the last one did. */
export const kFailedWith = Symbol("failedWith");
export type FailedRequest = ClientRequest & { [kFailedWith]?: string };
export type ExchangeResponse = ClientResponse & { [kExchange]: Exchange };
export type ExchangeRequest = ClientRequest & { [kExchange]: Exchange };

/** One client request on its way through one pool: at most two upstream attempts. */
export class Exchange implements Cuttable, ResponseSink, ConnWaiter {
  readonly plane: ExchangeHost;
  readonly req: ExchangeRequest;
  readonly res: ExchangeResponse;
  readonly method: string;
  readonly route: Route;
  readonly pool: Pool;
  /** The settings of the table the request was routed by. */
  readonly settings: ProxySettings;
  readonly timeouts: RouteTimeouts;
  /** Request line and header fields, without the blank line that ends them. */
  readonly head: string;
  /** The same and its blank line, as bytes, when the data plane has them (a repeated head). */
  headBytes: Buffer | undefined = undefined;
  readonly hasHost: boolean;
  /** 0: no body; 1: Content-Length; 2: chunked (re-chunked as read). */
  readonly bodyFraming: 0 | 1 | 2;
  /** The route's body limit: a Content-Length beyond it never gets here, a chunked body is counted. */
  readonly maxBodyBytes: number;
  bodyBytes = 0;
  upstream: Upstream;
  conn: UpstreamConn | undefined = undefined;
  /** While waiting for a connection to an upstream at its cap. */
  queued: QueueTicket | undefined = undefined;
  attempts = 0;
  responded = false;
  bodyStarted = false;
  requestSent = false;
  bodyWritten = false;
  ended = false;
  /** The upstream socket, while paused because the client reads slower than the upstream writes. */
  paused: net.Socket | undefined = undefined;
  failed = false;
  done = false;
  /** performance.now() at the request's arrival while it is to be counted by series (RouteTable.metrics), else -1. */
  started: number;
  /** A Set-Cookie field the proxy adds to the answer: the canary split's (split.ts). */
  setCookie: string | undefined = undefined;
  poolIndex = -1;

  constructor(plane: ExchangeHost, req: ExchangeRequest, res: ExchangeResponse, match: Match, upstream: Upstream, head: string, hasHost: boolean, bodyFraming: 0 | 1 | 2, started = -1) {
    this.plane = plane;
    this.req = req;
    this.res = res;
    this.method = req.method!;
    this.route = match.route;
    this.pool = match.pool;
    this.settings = match.settings;
    this.timeouts = match.timeouts;
    this.upstream = upstream;
    this.head = head;
    this.hasHost = hasHost;
    this.bodyFraming = bodyFraming;
    this.maxBodyBytes = match.maxBodyBytes;
    this.started = started;
  }

  send(): void {
    this.attempts++;
    const limits = this.settings.limits;
    this.queued = this.plane.upstreams.acquire(this.upstream, this, limits.maxUpstreamConnections, limits.upstreamQueueMs);
  }

  onConn(conn: UpstreamConn): void {
    this.queued = undefined;
    this.conn = conn;
    conn.attach(this);
  }

  /** The upstream stayed at its cap for the whole queue time: busy, try again in a second. */
  onQueueTimeout(): void {
    this.queued = undefined;
    if (this.done) return;
    this.plane.rejected.upstreamQueue++;
    this.failed = true;
    sendJsonWith(this.res, 503, ["Retry-After", "1"], { error: "upstream busy", service: this.route.service });
  }

  /** The socket is connected: nothing was written before, so a refused connection lost nothing. */
  onConnected(): void {
    const socket = this.conn!.socket;
    const u = this.upstream;
    const head = this.hasHost ? this.head : `${this.head}Host: ${u.host}:${u.port}\r\n`;
    if (this.bodyFraming === 0) {
      const bytes = this.headBytes;
      // Without the client's Host the head names the upstream: only the text is right then.
      if (bytes !== undefined && this.hasHost) writeBytes(socket, bytes);
      else writeLatin1(socket, `${head}\r\n`);
      this.requestSent = true;
      this.conn!.awaitResponse();
      return;
    }
    this.bodyStarted = true;
    this.conn!.awaitBody();
    socket.write(this.bodyFraming === 2 ? `${head}Transfer-Encoding: chunked\r\n\r\n` : `${head}\r\n`, "latin1");
    const req = this.req;
    req[kExchange] = this;
    req.on("data", onClientBody);
    req.on("end", onClientBodyEnd);
  }

  onUpstreamDrain(): void {
    if (this.bodyStarted && !this.requestSent) {
      this.conn?.touch();
      this.req.resume();
    }
  }

  /** Returns false when the exchange is over (the client went away). */
  onResponseHead(status: number, head: string, hasLength: boolean, hasDate: boolean): boolean {
    this.responded = true;
    if (status >= 500) this.pool.errors5xx++;
    if (this.done) {
      this.conn?.abandon();
      return false;
    }
    // The upstream parser checked the status line and every field (FIELD_LINES) already.
    this.res.relayHead(status, this.setCookie === undefined ? head : `${head}Set-Cookie: ${this.setCookie}\r\n`, hasLength, hasDate);
    this.conn?.awaitBody();
    return true;
  }

  onBody(chunk: Buffer): void {
    this.bodyWritten = true;
    if (!this.res.write(chunk) && !this.paused) {
      this.paused = this.conn!.socket;
      this.paused.pause();
      this.res.once("drain", onClientDrain);
    }
  }

  onWholeBody(buf: Buffer, start: number, end: number): void {
    this.bodyWritten = true;
    this.ended = true;
    this.res.endBytes(buf, start, end);
  }

  onResponseEnd(): void {
    this.conn = undefined;
    if (!this.ended) this.res.end();
  }

  onUpstreamFailure(err: NodeJS.ErrnoException, beforeResponse: boolean): void {
    this.conn = undefined;
    const plane = this.plane;
    // Before the retry below picks: a refused upstream must not be picked again, by anyone.
    if (beforeResponse && !this.responded) plane.noteFailure(this.upstream, err);
    if (this.done) return;
    plane.upstreamFailed(this.pool);
    if (beforeResponse && !this.responded && this.retryable(err)) {
      const next = this.attempts < 2 ? this.pool.pick(plane.router.unhealthy, this.upstream) : undefined;
      if (next) {
        plane.retried(this.pool);
        this.upstream = next;
        this.send();
        return;
      }
      // No instance of the pool left to try (a release whose instances crash together): a request
      // without a body waits, as a request that finds none does, for the revert or a replacement.
      if (this.bodyFraming === 0 && !this.res.headersSent) {
        plane.retried(this.pool);
        this.failed = true;
        // The request goes on, held: it is counted when it is answered, not here.
        const started = this.started;
        this.started = -1;
        this.finish(false);
        this.res.off("close", onClientClose);
        // If nothing comes back in time, the answer is the failure it met, not "no healthy instance".
        (this.req as FailedRequest)[kFailedWith] = err.code ?? err.message;
        plane.holdForHealthy(this.req, this.res, this.pool, this.settings.limits.upstreamQueueMs, started);
        return;
      }
    }
    this.failed = true;
    const res = this.res;
    if (res.headersSent) res.destroy();
    else sendJson(res, 502, { error: "upstream failed", service: this.route.service, code: err.code ?? err.message });
  }

  /**
   * A wait on the upstream ran out (the socket is closed already). A connect timeout is retried
   * like a refusal, since nothing was sent, but proves nothing about the upstream's health.
   */
  onUpstreamTimeout(phase: UpstreamTimeoutPhase): void {
    this.conn = undefined;
    const plane = this.plane;
    if (phase === "connect") plane.timeouts.upstreamConnect++;
    else if (phase === "response") plane.timeouts.upstreamResponse++;
    else plane.timeouts.upstreamIdle++;
    if (this.done) return;
    plane.upstreamFailed(this.pool);
    if (phase === "connect" && this.attempts < 2) {
      const next = this.pool.pick(plane.router.unhealthy, this.upstream);
      // Not the same one again: it just had the whole connect time.
      if (next && next !== this.upstream) {
        plane.retried(this.pool);
        this.upstream = next;
        this.send();
        return;
      }
    }
    this.failed = true;
    const res = this.res;
    const service = this.route.service;
    if (res.headersSent) res.destroy();
    else if (phase !== "idle" || this.requestSent) sendJson(res, 504, { error: "upstream timeout", phase, service });
    // Cut mid-body, the client connection is in no state for another request.
    else if (this.req.isPaused()) sendJsonWith(res, 504, ["Connection", "close"], { error: "upstream timeout", phase, service });
    // Not paused for the upstream: it was the client that stopped sending.
    else sendJsonWith(res, 408, ["Connection", "close"], { error: "request body timeout", service });
  }

  /** Safe to resend only when the upstream cannot have acted on the request. */
  private retryable(err: NodeJS.ErrnoException): boolean {
    if (err.code === "ECONNREFUSED") return true;
    if (err.code === "ECONNRESET" || err.code === "EPIPE") return !this.bodyStarted && IDEMPOTENT.has(this.method);
    return false;
  }

  /**
   * A chunked body outgrew the route's limit: the upstream, which has part of it, loses its
   * connection; the client gets a 413 if nothing was answered yet, and its connection is closed.
   */
  rejectBody(): void {
    this.plane.rejected.bodyTooLarge++;
    const req = this.req;
    req.off("data", onClientBody);
    req.off("end", onClientBodyEnd);
    // Read and dropped until the connection closes after the answer.
    req.resume();
    this.failed = true;
    this.conn?.abandon();
    this.conn = undefined;
    const res = this.res;
    if (res.headersSent) res.destroy();
    else sendJson(res, 413, { error: "request body too large", limit: this.maxBodyBytes }, true);
  }

  cut(): void {
    this.failed = true;
    this.finish(false);
    this.req.socket.destroy();
  }

  finish(ok: boolean): void {
    if (this.done) return;
    this.done = true;
    // Counted by the status the client got, whatever became of the body; 0: nothing was answered.
    if (this.started >= 0) this.pool.series.record(this.res.headersSent ? this.res.statusCode : 0, performance.now() - this.started);
    if (this.queued) {
      this.plane.upstreams.cancel(this.queued);
      this.queued = undefined;
    }
    if (!ok && this.conn) {
      this.conn.abandon();
      this.conn = undefined;
    }
    this.pool.leave(this, ok);
  }
}

function onClientBody(this: ExchangeRequest, chunk: Buffer): void {
  const ex = this[kExchange];
  const conn = ex.conn;
  if (!conn) return;
  const socket = conn.socket;
  conn.touch();
  let flushed: boolean;
  if (ex.bodyFraming === 2) {
    if ((ex.bodyBytes += chunk.length) > ex.maxBodyBytes) return ex.rejectBody();
    socket.cork();
    socket.write(`${chunk.length.toString(16)}\r\n`, "latin1");
    socket.write(chunk);
    flushed = socket.write("\r\n", "latin1");
    socket.uncork();
  } else {
    flushed = socket.write(chunk);
  }
  if (!flushed) this.pause();
}

function onClientBodyEnd(this: ExchangeRequest): void {
  const ex = this[kExchange];
  const socket = ex.conn?.socket;
  if (!socket) return;
  if (ex.bodyFraming === 2) socket.write("0\r\n\r\n", "latin1");
  ex.requestSent = true;
  if (!ex.responded) ex.conn!.awaitResponse();
}

function onClientDrain(this: ExchangeResponse): void {
  const ex = this[kExchange];
  ex.paused?.resume();
  ex.paused = undefined;
}

export function onClientClose(this: ExchangeResponse): void {
  const ex = this[kExchange];
  ex.finish(this.writableFinished && !ex.failed);
}

/** sendJson with extra header fields (Retry-After, Connection: close). */
function sendJsonWith(res: ClientResponse, status: number, extra: string[], body: object): void {
  const text = JSON.stringify(body);
  res.writeHead(status, ["Content-Type", "application/json", "Content-Length", String(Buffer.byteLength(text)), ...extra]);
  res.end(text);
}
