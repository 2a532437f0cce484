// One proxied request: a client request on its way through one pool to an upstream, with at
// most two attempts, and the response relayed back with backpressure in both directions.

import type http from "node:http";
import type net from "node:net";
import type { Route, Upstream } from "./contract.js";
import { errorText, sendJson } from "./http.js";
import type { Cuttable, Match, Pool, Router } from "./table.js";
import type { ResponseSink, UpstreamConn, UpstreamConnections } from "./upstream.js";

/** What an exchange needs of the data plane that runs it. */
export interface ExchangeHost {
  readonly router: Router;
  readonly upstreams: UpstreamConnections;
  upstreamErrors: number;
  retries: number;
  readonly rejected: { bodyTooLarge: number };
  /** Passive detection: a connection to u failed before any response byte. */
  noteFailure(u: Upstream, err: NodeJS.ErrnoException): void;
}

const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]);

export const kExchange = Symbol("exchange");
export type ExchangeResponse = http.ServerResponse & { [kExchange]: Exchange };
export type ExchangeRequest = http.IncomingMessage & { [kExchange]: Exchange };

/** One client request on its way through one pool: at most two upstream attempts. */
export class Exchange implements Cuttable, ResponseSink {
  readonly plane: ExchangeHost;
  readonly req: ExchangeRequest;
  readonly res: ExchangeResponse;
  readonly method: string;
  readonly route: Route;
  readonly pool: Pool;
  /** Request line and header fields, without the blank line that ends them. */
  readonly head: string;
  readonly hasHost: boolean;
  /** 0: no body; 1: Content-Length; 2: chunked (re-chunked as read). */
  readonly bodyFraming: 0 | 1 | 2;
  /** The route's body limit: a Content-Length beyond it never gets here, a chunked body is counted. */
  readonly maxBodyBytes: number;
  bodyBytes = 0;
  upstream: Upstream;
  conn: UpstreamConn | undefined = undefined;
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

  constructor(plane: ExchangeHost, req: ExchangeRequest, res: ExchangeResponse, match: Match, upstream: Upstream, head: string, hasHost: boolean, bodyFraming: 0 | 1 | 2) {
    this.plane = plane;
    this.req = req;
    this.res = res;
    this.method = req.method!;
    this.route = match.route;
    this.pool = match.pool;
    this.upstream = upstream;
    this.head = head;
    this.hasHost = hasHost;
    this.bodyFraming = bodyFraming;
    this.maxBodyBytes = match.maxBodyBytes;
  }

  send(): void {
    this.attempts++;
    const conn = this.plane.upstreams.acquire(this.upstream);
    this.conn = conn;
    conn.attach(this);
  }

  /** The socket is connected: nothing was written before, so a refused connection lost nothing. */
  onConnected(): void {
    const socket = this.conn!.socket;
    const u = this.upstream;
    const head = this.hasHost ? this.head : `${this.head}Host: ${u.host}:${u.port}\r\n`;
    if (this.bodyFraming === 0) {
      socket.write(`${head}\r\n`, "latin1");
      this.requestSent = true;
      return;
    }
    this.bodyStarted = true;
    socket.write(this.bodyFraming === 2 ? `${head}Transfer-Encoding: chunked\r\n\r\n` : `${head}\r\n`, "latin1");
    const req = this.req;
    req[kExchange] = this;
    req.on("data", onClientBody);
    req.on("end", onClientBodyEnd);
  }

  onUpstreamDrain(): void {
    if (this.bodyStarted && !this.requestSent) this.req.resume();
  }

  /** Returns false when the exchange is over (the client went away or the head was unusable). */
  onResponseHead(status: number, reason: string, headers: string[]): boolean {
    this.responded = true;
    const res = this.res;
    if (this.done) {
      this.conn?.abandon();
      return false;
    }
    try {
      res.writeHead(status, reason, headers);
    } catch (e) {
      this.conn?.abandon();
      this.onUpstreamFailure(Object.assign(new Error(`upstream sent an invalid header: ${errorText(e)}`), { code: "EPROTO" }), false);
      return false;
    }
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

  onWholeBody(body: string): void {
    this.bodyWritten = true;
    this.ended = true;
    this.res.end(body, "latin1");
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
    plane.upstreamErrors++;
    if (beforeResponse && !this.responded && this.attempts < 2 && this.retryable(err)) {
      const next = this.pool.pick(plane.router.unhealthy, this.upstream);
      if (next) {
        plane.retries++;
        this.upstream = next;
        this.send();
        return;
      }
    }
    this.failed = true;
    const res = this.res;
    if (res.headersSent) res.destroy();
    else sendJson(res, 502, { error: "upstream failed", service: this.route.service, code: err.code ?? err.message });
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
    if (!ok && this.conn) {
      this.conn.abandon();
      this.conn = undefined;
    }
    this.pool.leave(this, ok);
  }
}

function onClientBody(this: ExchangeRequest, chunk: Buffer): void {
  const ex = this[kExchange];
  const socket = ex.conn?.socket;
  if (!socket) return;
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

