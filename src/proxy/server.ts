// The built-in proxy: a data plane (public HTTP + WebSocket) and a control plane (loopback HTTP,
// bearer token) in one process. The table reference is swapped synchronously, and each request
// resolves its route and pool once, on arrival, so no request ever mixes two tables.

import { timingSafeEqual } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { writeFileAtomic } from "../util/fs.js";
import type { DrainResult, ProxyStats, Route, RouteTable, Upstream } from "./contract.js";
import { type Cuttable, type Match, type Pool, Router, validateTable } from "./table.js";

export const TABLE_FILE = "proxy-table.json";
export const PROXY_INFO_FILE = "proxy.json";
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;
const MAX_CONTROL_BODY_BYTES = 16 * 1024 * 1024;
/** The longest a GET /events long-poll waits for an event. */
export const MAX_EVENTS_WAIT_MS = 30_000;
/**
 * After a reset, a fresh connection asks whether the upstream is gone: refused, or closed by the
 * upstream within this long without a word from us, means gone; still open means alive.
 */
export const PROBE_WATCH_MS = 100;
const PROBE_CONNECT_TIMEOUT_MS = 1_000;

// RFC 9110 §7.6.1 connection-specific fields, plus Expect (the proxy already answered 100-continue)
// and the X-Forwarded-* fields the proxy sets itself.
const DROPPED_REQUEST_HEADERS = new Set([
  "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
  "proxy-authorization", "proxy-authenticate", "expect",
  "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
]);
const DROPPED_RESPONSE_HEADERS = new Set([
  "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
  "proxy-authenticate",
]);
// A WebSocket handshake must keep Connection and Upgrade.
const DROPPED_UPGRADE_HEADERS = new Set([
  "keep-alive", "proxy-connection", "te", "trailer", "proxy-authorization",
  "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
]);

const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]);

/** What a running proxy process writes to `<stateDir>/proxy.json` once it listens. */
export interface ProxyInfo {
  pid: number;
  listen: { host: string; port: number };
  control: { host: string; port: number };
  startedAt: string;
}

export interface ProxyServerOptions {
  listenHost: string;
  listenPort: number;
  /** The control API never listens anywhere but loopback. */
  controlHost?: "127.0.0.1";
  controlPort?: number;
  stateDir: string;
  token: string;
}

export interface ProxyServer {
  listenHost: string;
  listenPort: number;
  controlHost: string;
  controlPort: number;
  /** The version of the table in use (restored from disk at start, 0 when none). */
  tableVersion(): number;
  /** Stops accepting, lets in-flight requests finish for up to graceMs, then cuts the rest. */
  close(graceMs?: number): Promise<void>;
}

export async function startProxyServer(opts: ProxyServerOptions): Promise<ProxyServer> {
  const controlHost = opts.controlHost ?? "127.0.0.1";
  if (controlHost !== "127.0.0.1") throw new Error(`the proxy control API listens on 127.0.0.1 only, not ${String(controlHost)}`);
  if (opts.token.length === 0) throw new Error("the proxy control token is empty");
  await mkdir(opts.stateDir, { recursive: true });

  const plane = new DataPlane();
  const restored = await loadTable(opts.stateDir);
  if (restored) plane.router.apply(restored);

  const data = http.createServer({ noDelay: true }, plane.onRequest);
  data.on("upgrade", plane.onUpgrade);
  const control = http.createServer(new ControlPlane(plane, opts.stateDir, opts.token).onRequest);

  await listen(data, opts.listenHost, opts.listenPort);
  try {
    await listen(control, controlHost, opts.controlPort ?? 0);
  } catch (e) {
    data.close();
    throw e;
  }

  let closing: Promise<void> | undefined;
  return {
    listenHost: opts.listenHost,
    listenPort: (data.address() as net.AddressInfo).port,
    controlHost,
    controlPort: (control.address() as net.AddressInfo).port,
    tableVersion: () => plane.router.current.version,
    close: (graceMs = DEFAULT_SHUTDOWN_GRACE_MS) => (closing ??= shutdown(plane, data, control, graceMs)),
  };
}

function listen(server: http.Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

async function shutdown(plane: DataPlane, data: http.Server, control: http.Server, graceMs: number): Promise<void> {
  const dataClosed = new Promise<void>((resolve) => data.close(() => resolve()));
  control.close();
  control.closeAllConnections();
  const deadline = Date.now() + graceMs;
  while (plane.inFlight() > 0 && Date.now() < deadline) {
    data.closeIdleConnections();
    await sleep(25);
  }
  plane.cutAll();
  data.closeAllConnections();
  await dataClosed;
  plane.upstreams.destroy();
  plane.stopProbes();
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------------------------
// Upstream connections
//
// A small HTTP/1.1 client of its own instead of http.request: with one parser per keep-alive
// socket and listeners attached once per connection, a proxied request costs about half as much
// CPU as through ClientRequest and http.Agent (see bench/proxy.ts).

/** Idle keep-alive sockets are closed before a Node upstream's 5 s default would close them. */
export const DEFAULT_UPSTREAM_IDLE_MS = 4_000;
const MAX_IDLE_PER_ADDRESS = 256;
const MAX_RESPONSE_HEAD_BYTES = 64 * 1024;
const SMALL_BODY_BYTES = 16 * 1024;

const enum Phase {
  /** Waiting for (more of) the status line and header fields. */
  Head,
  /** Content-Length body: `remaining` bytes to go. */
  Length,
  Chunked,
  /** No framing: the body ends when the upstream closes. */
  UntilClose,
}

const enum ChunkPhase {
  Size,
  Data,
  DataEnd,
  Trailer,
}

/** Keep-alive sockets to every upstream address, shared by all pools. */
class UpstreamConnections {
  /** Idle sockets by "host:port", most recently used last: LIFO reuse lets surplus sockets age out. */
  private readonly idle = new Map<string, UpstreamConn[]>();
  private readonly sweeper: NodeJS.Timeout;

  constructor() {
    this.sweeper = setInterval(() => this.sweep(), 500);
    this.sweeper.unref();
  }

  acquire(u: Upstream): UpstreamConn {
    const key = `${u.host}:${u.port}`;
    const list = this.idle.get(key);
    if (list) {
      for (let conn = list.pop(); conn; conn = list.pop()) {
        // The upstream may have closed it a moment ago, before its 'close' event ran.
        if (!conn.socket.destroyed && conn.socket.readable) return conn;
        conn.socket.destroy();
      }
    }
    return new UpstreamConn(this, key, u.host, u.port);
  }

  release(conn: UpstreamConn): void {
    let list = this.idle.get(conn.key);
    if (!list) this.idle.set(conn.key, (list = []));
    if (list.length >= MAX_IDLE_PER_ADDRESS) {
      conn.socket.destroy();
      return;
    }
    conn.idleSince = Date.now();
    list.push(conn);
  }

  forget(conn: UpstreamConn): void {
    const list = this.idle.get(conn.key);
    const i = list ? list.indexOf(conn) : -1;
    if (i !== -1) list!.splice(i, 1);
  }

  closeIdle(host: string, port: number): void {
    const key = `${host}:${port}`;
    const list = this.idle.get(key);
    if (!list) return;
    this.idle.delete(key);
    for (const conn of list) conn.socket.destroy();
  }

  private sweep(): void {
    const now = Date.now();
    for (const [key, list] of this.idle) {
      for (let i = list.length - 1; i >= 0; i--) {
        const conn = list[i]!;
        if (now - conn.idleSince >= conn.idleLimitMs) {
          list.splice(i, 1);
          conn.socket.destroy();
        }
      }
      if (list.length === 0) this.idle.delete(key);
    }
  }

  destroy(): void {
    clearInterval(this.sweeper);
    for (const list of this.idle.values()) for (const conn of list) conn.socket.destroy();
    this.idle.clear();
  }
}

/** One socket to an upstream, with the response parser for the exchange it currently serves. */
class UpstreamConn {
  readonly owner: UpstreamConnections;
  /** "host:port" */
  readonly key: string;
  readonly socket: net.Socket;
  connected = false;
  ex: Exchange | undefined = undefined;
  idleSince = 0;
  idleLimitMs = DEFAULT_UPSTREAM_IDLE_MS;
  /** The last Keep-Alive header seen, so that the same hint is not parsed on every response. */
  private keepAliveHint = "";
  private error: NodeJS.ErrnoException | undefined = undefined;

  // Parser state, reset for each response.
  private phase = Phase.Head;
  private pending: Buffer | undefined = undefined;
  private remaining = 0;
  private chunkPhase = ChunkPhase.Size;
  private line = "";
  private keepAlive = true;
  private responseStarted = false;

  constructor(owner: UpstreamConnections, key: string, host: string, port: number) {
    this.owner = owner;
    this.key = key;
    this.socket = net.connect({ host, port, noDelay: true });
    this.socket.on("connect", () => {
      this.connected = true;
      this.ex?.onConnected();
    });
    this.socket.on("data", (chunk: Buffer) => this.onData(chunk));
    this.socket.on("drain", () => this.ex?.onUpstreamDrain());
    this.socket.on("error", (err: NodeJS.ErrnoException) => (this.error = err));
    this.socket.on("close", () => this.onClose());
  }

  attach(ex: Exchange): void {
    this.ex = ex;
    this.phase = Phase.Head;
    this.pending = undefined;
    this.keepAlive = true;
    this.responseStarted = false;
    if (this.connected) ex.onConnected();
  }

  /** Stops serving `ex` for good: the socket is closed since its stream is now undefined. */
  abandon(): void {
    this.ex = undefined;
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    const ex = this.ex;
    if (!ex) {
      // Bytes from an idle upstream answer nothing we asked: the stream can't be trusted.
      this.socket.destroy();
      return;
    }
    this.responseStarted = true;
    let buf = chunk;
    let pos = 0;
    if (this.pending) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = undefined;
    }
    while (pos < buf.length && this.ex === ex) {
      switch (this.phase) {
        case Phase.Length: {
          const n = Math.min(this.remaining, buf.length - pos);
          this.remaining -= n;
          if (this.remaining === 0 && !ex.bodyWritten && n <= SMALL_BODY_BYTES) {
            // A whole small body at once: as a latin1 string, Node sends it and the head in one write.
            ex.onWholeBody(buf.toString("latin1", pos, pos + n));
            return this.complete(ex, pos + n < buf.length);
          }
          ex.onBody(pos === 0 && n === buf.length ? buf : buf.subarray(pos, pos + n));
          pos += n;
          if (this.remaining === 0) return this.complete(ex, pos < buf.length);
          break;
        }
        case Phase.Chunked:
          pos = this.parseChunked(ex, buf, pos);
          if (pos < 0) return;
          break;
        case Phase.UntilClose:
          ex.onBody(pos === 0 ? buf : buf.subarray(pos));
          return;
        case Phase.Head:
          pos = this.parseHead(ex, buf, pos);
          if (pos < 0) return;
          break;
      }
    }
  }

  /** Returns where the body starts in buf, or -1 when the head is incomplete or the answer is bad. */
  private parseHead(ex: Exchange, buf: Buffer, start: number): number {
    const end = buf.indexOf("\r\n\r\n", start, "latin1");
    if (end === -1) {
      if (buf.length - start > MAX_RESPONSE_HEAD_BYTES) this.protocolError(ex, "response head too large");
      else this.pending = start === 0 ? buf : buf.subarray(start);
      return -1;
    }
    const lines = buf.toString("latin1", start, end).split("\r\n");
    const statusLine = lines[0]!;
    const status = Number(statusLine.slice(9, 12));
    if (!statusLine.startsWith("HTTP/1.") || !(status >= 100 && status <= 999) || (statusLine.length > 12 && statusLine.charCodeAt(12) !== 32)) {
      this.protocolError(ex, "malformed status line");
      return -1;
    }
    const http10 = statusLine.charCodeAt(7) === 48; /* 0 */
    if (status >= 100 && status < 200) {
      if (status === 101) {
        this.protocolError(ex, "unexpected 101 Switching Protocols");
        return -1;
      }
      // Interim answers (100 Continue, 103 Early Hints) are dropped; the final one follows.
      return end + 4;
    }
    const headers: string[] = [];
    let contentLength = -1;
    let chunked = false;
    let connectionClose = http10;
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!;
      const colon = line.indexOf(":");
      if (colon <= 0 || line.charCodeAt(0) === 32 || line.charCodeAt(0) === 9) {
        this.protocolError(ex, "malformed header field");
        return -1;
      }
      const name = line.slice(0, colon);
      const value = line.slice(colon + 1).trim();
      const lower = name.toLowerCase();
      if (DROPPED_RESPONSE_HEADERS.has(lower)) {
        if (lower === "transfer-encoding") chunked = /(?:^|,)\s*chunked\s*$/i.test(value);
        else if (lower === "connection") {
          const v = value.toLowerCase();
          if (v.includes("close")) connectionClose = true;
          else if (http10 && v.includes("keep-alive")) connectionClose = false;
        } else if (lower === "keep-alive" && value !== this.keepAliveHint) {
          this.keepAliveHint = value;
          this.idleLimitMs = keepAliveHintMs(value);
        }
        continue;
      }
      if (lower === "content-length") {
        const n = /^\d+$/.test(value) ? Number(value) : NaN;
        if (Number.isNaN(n) || (contentLength !== -1 && contentLength !== n)) {
          this.protocolError(ex, "invalid Content-Length");
          return -1;
        }
        if (contentLength !== -1) continue;
        contentLength = n;
      }
      headers.push(name, value);
    }
    this.keepAlive = !connectionClose;
    const bodyless = ex.method === "HEAD" || status === 204 || status === 304;
    if (!ex.onResponseHead(status, statusLine.slice(13), headers)) return -1;
    if (bodyless || (contentLength === 0 && !chunked)) {
      this.complete(ex, end + 4 < buf.length);
      return -1;
    }
    if (chunked) {
      this.phase = Phase.Chunked;
      this.chunkPhase = ChunkPhase.Size;
      this.line = "";
    } else if (contentLength > 0) {
      this.phase = Phase.Length;
      this.remaining = contentLength;
    } else {
      this.phase = Phase.UntilClose;
      this.keepAlive = false;
    }
    return end + 4;
  }

  /** Decodes chunked framing from buf[pos..]; returns the next position, or -1 when done with buf. */
  private parseChunked(ex: Exchange, buf: Buffer, pos: number): number {
    while (pos < buf.length) {
      if (this.chunkPhase === ChunkPhase.Data) {
        const n = Math.min(this.remaining, buf.length - pos);
        ex.onBody(buf.subarray(pos, pos + n));
        if (this.ex !== ex) return -1;
        pos += n;
        this.remaining -= n;
        if (this.remaining === 0) this.chunkPhase = ChunkPhase.DataEnd;
        continue;
      }
      const nl = buf.indexOf(10, pos);
      if (nl === -1) {
        this.line += buf.toString("latin1", pos);
        if (this.line.length > 4096) this.protocolError(ex, "chunk line too long");
        return -1;
      }
      const line = (this.line + buf.toString("latin1", pos, nl)).replace(/\r$/, "");
      this.line = "";
      pos = nl + 1;
      if (this.chunkPhase === ChunkPhase.Size) {
        const m = /^[0-9a-fA-F]{1,12}/.exec(line);
        if (!m) {
          this.protocolError(ex, "malformed chunk size");
          return -1;
        }
        this.remaining = parseInt(m[0], 16);
        this.chunkPhase = this.remaining === 0 ? ChunkPhase.Trailer : ChunkPhase.Data;
      } else if (this.chunkPhase === ChunkPhase.DataEnd) {
        if (line !== "") {
          this.protocolError(ex, "missing CRLF after chunk");
          return -1;
        }
        this.chunkPhase = ChunkPhase.Size;
      } else if (line === "") {
        // Trailer fields are dropped: the client's response is re-chunked without them.
        this.complete(ex, pos < buf.length);
        return -1;
      }
    }
    return pos;
  }

  private complete(ex: Exchange, extraBytes: boolean): void {
    this.ex = undefined;
    const reusable = this.keepAlive && !extraBytes && ex.requestSent;
    ex.onResponseEnd();
    if (reusable) {
      // Paused for a slow client: the response is complete, so the socket reads freely again.
      if (ex.paused === this.socket) {
        ex.paused = undefined;
        this.socket.resume();
      }
      this.owner.release(this);
    } else {
      this.socket.destroy();
    }
  }

  private protocolError(ex: Exchange, why: string): void {
    this.abandon();
    ex.onUpstreamFailure(Object.assign(new Error(`upstream sent a bad response: ${why}`), { code: "EPROTO" }), false);
  }

  private onClose(): void {
    const ex = this.ex;
    this.ex = undefined;
    if (!ex) {
      this.owner.forget(this);
      return;
    }
    if (this.phase === Phase.UntilClose && !this.error) {
      ex.onResponseEnd();
      return;
    }
    const err = this.error ?? Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });
    ex.onUpstreamFailure(err, !this.responseStarted);
  }
}

/** "timeout=5, max=100" → 4000: a second of margin before the upstream closes its side. */
function keepAliveHintMs(value: string): number {
  const m = /timeout=(\d+)/i.exec(value);
  if (!m) return DEFAULT_UPSTREAM_IDLE_MS;
  return Math.max(0, Math.min(DEFAULT_UPSTREAM_IDLE_MS, (Number(m[1]) - 1) * 1_000));
}

// ---------------------------------------------------------------------------------------------
// Data plane

const kExchange = Symbol("exchange");
type ExchangeResponse = http.ServerResponse & { [kExchange]: Exchange };
type ExchangeRequest = http.IncomingMessage & { [kExchange]: Exchange };

/** One client request on its way through one pool: at most two upstream attempts. */
class Exchange implements Cuttable {
  readonly plane: DataPlane;
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

  constructor(plane: DataPlane, req: ExchangeRequest, res: ExchangeResponse, match: Match, upstream: Upstream, head: string, hasHost: boolean, bodyFraming: 0 | 1 | 2) {
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

function onClientClose(this: ExchangeResponse): void {
  const ex = this[kExchange];
  ex.finish(this.writableFinished && !ex.failed);
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A WebSocket (or other Upgrade) connection piped between client and upstream. */
class Tunnel implements Cuttable {
  readonly plane: DataPlane;
  readonly pool: Pool;
  readonly client: net.Socket;
  readonly head: Buffer;
  readonly preamble: string;
  upstream: Upstream;
  upSocket: net.Socket | undefined;
  attempts = 0;
  connected = false;
  closed = false;

  constructor(plane: DataPlane, pool: Pool, client: net.Socket, head: Buffer, preamble: string, upstream: Upstream) {
    this.plane = plane;
    this.pool = pool;
    this.client = client;
    this.head = head;
    this.preamble = preamble;
    this.upstream = upstream;
  }

  connect(): void {
    this.attempts++;
    const up = net.connect({ host: this.upstream.host, port: this.upstream.port, noDelay: true });
    this.upSocket = up;
    up.once("connect", () => {
      this.connected = true;
      up.write(this.preamble);
      if (this.head.length > 0) up.write(this.head);
      up.pipe(this.client);
      this.client.pipe(up);
    });
    up.on("error", (err: NodeJS.ErrnoException) => this.onUpstreamError(up, err));
    up.on("close", () => {
      if (this.upSocket === up && this.connected) this.close(true);
    });
  }

  private onUpstreamError(up: net.Socket, err: NodeJS.ErrnoException): void {
    if (this.upSocket !== up || this.closed) return;
    this.plane.upstreamErrors++;
    if (!this.connected) {
      this.plane.noteFailure(this.upstream, err);
      const next = err.code === "ECONNREFUSED" && this.attempts < 2 ? this.pool.pick(this.plane.router.unhealthy, this.upstream) : undefined;
      if (next) {
        this.plane.retries++;
        this.upstream = next;
        this.connect();
        return;
      }
      const body = JSON.stringify({ error: "upstream failed", code: err.code ?? err.message });
      this.client.end(`HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      this.close(false);
      return;
    }
    this.close(false);
  }

  close(ok: boolean): void {
    if (this.closed) return;
    this.closed = true;
    this.upSocket?.destroy();
    if (ok || this.connected) this.client.destroy();
    this.pool.leave(this, ok);
  }

  cut(): void {
    this.client.destroy();
    this.close(false);
  }
}

class DataPlane {
  readonly router = new Router();
  readonly upstreams = new UpstreamConnections();
  requests = 0;
  upstreamErrors = 0;
  retries = 0;
  /** Probes in flight by upstream id, each with the function that ends it without a verdict. */
  private readonly probes = new Map<string, () => void>();

  readonly onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    this.requests++;
    const raw = req.rawHeaders;
    const headers: string[] = [];
    let host: string | undefined;
    let xff: string | undefined;
    let connection: string | undefined;
    let bodyFraming: 0 | 1 | 2 = 0;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
      const value = raw[i + 1]!;
      const lower = name.toLowerCase();
      if (DROPPED_REQUEST_HEADERS.has(lower)) {
        if (lower === "x-forwarded-for") xff = xff === undefined ? value : `${xff}, ${value}`;
        else if (lower === "transfer-encoding") bodyFraming = 2;
        else if (lower === "connection") connection = value;
        continue;
      }
      if (lower === "host") host = value;
      else if (lower === "content-length" && value !== "0" && bodyFraming === 0) bodyFraming = 1;
      headers.push(name, value);
    }
    const url = req.url ?? "/";
    const match = this.router.current.lookup(host, url);
    if (!match) {
      sendJson(res, 404, { error: "no route", host: host ?? null, path: url });
      return;
    }
    const upstream = match.pool.pick(this.router.unhealthy);
    if (!upstream) {
      sendJson(res, 503, { error: "no healthy instance", service: match.route.service });
      return;
    }
    if (connection !== undefined) dropConnectionTokens(headers, connection);
    let head = `${req.method} ${url} HTTP/1.1\r\n`;
    for (let i = 0; i < headers.length; i += 2) {
      // Node's parser already de-chunked the body; it goes out re-chunked, without a length.
      if (bodyFraming === 2 && headers[i]!.length === 14 && headers[i]!.toLowerCase() === "content-length") continue;
      head += `${headers[i]}: ${headers[i + 1]}\r\n`;
    }
    const remote = clientAddress(req.socket);
    head += `X-Forwarded-For: ${xff === undefined ? remote : `${xff}, ${remote}`}\r\nX-Forwarded-Proto: http\r\n`;
    if (host !== undefined) head += `X-Forwarded-Host: ${host}\r\n`;

    const ex = new Exchange(this, req as ExchangeRequest, res as ExchangeResponse, match, upstream, head, host !== undefined, bodyFraming);
    match.pool.enter(ex);
    ex.res[kExchange] = ex;
    res.on("close", onClientClose);
    ex.send();
  };

  readonly onUpgrade = (req: http.IncomingMessage, client: net.Socket, head: Buffer): void => {
    this.requests++;
    client.setNoDelay(true);
    client.on("error", noop);
    const raw = req.rawHeaders;
    const url = req.url ?? "/";
    let host: string | undefined;
    let xff: string | undefined;
    let preamble = `${req.method} ${url} HTTP/1.1\r\n`;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
      const value = raw[i + 1]!;
      const lower = name.toLowerCase();
      if (lower === "x-forwarded-for") xff = xff === undefined ? value : `${xff}, ${value}`;
      if (DROPPED_UPGRADE_HEADERS.has(lower)) continue;
      if (lower === "host") host = value;
      preamble += `${name}: ${value}\r\n`;
    }
    const match = this.router.current.lookup(host, url);
    if (!match) return rejectUpgrade(client, 404, { error: "no route", host: host ?? null, path: url });
    const upstream = match.pool.pick(this.router.unhealthy);
    if (!upstream) return rejectUpgrade(client, 503, { error: "no healthy instance", service: match.route.service });
    const remote = clientAddress(client);
    preamble += `X-Forwarded-For: ${xff === undefined ? remote : `${xff}, ${remote}`}\r\nX-Forwarded-Proto: http\r\n`;
    if (host !== undefined) preamble += `X-Forwarded-Host: ${host}\r\n`;
    preamble += "\r\n";
    const tunnel = new Tunnel(this, match.pool, client, head, preamble, upstream);
    match.pool.enter(tunnel);
    client.on("close", () => tunnel.close(tunnel.connected));
    tunnel.connect();
  };

  async drain(poolId: string, timeoutMs: number): Promise<DrainResult> {
    const started = performance.now();
    const pool = this.router.pools.get(poolId);
    if (!pool) return { poolId, completed: 0, cut: 0, durationMs: 0 };
    const finishedBefore = pool.finished;
    const idle = await pool.whenIdle(timeoutMs);
    let cut = 0;
    if (!idle) {
      for (const item of [...pool.active]) {
        item.cut();
        cut++;
      }
    }
    const completed = pool.finished - finishedBefore - cut;
    this.closeIdleSockets(pool);
    this.router.release(pool);
    return { poolId, completed, cut, durationMs: Math.round(performance.now() - started) };
  }

  /** Idle keep-alive sockets to a drained pool's upstreams would otherwise pin the old instances. */
  private closeIdleSockets(pool: Pool): void {
    for (const u of pool.upstreams) {
      if (this.router.addressInUse(u.host, u.port, pool)) continue;
      this.upstreams.closeIdle(u.host, u.port);
    }
  }

  inFlight(): number {
    let n = 0;
    for (const pool of this.router.pools.values()) n += pool.inFlight;
    return n;
  }

  cutAll(): void {
    for (const pool of this.router.pools.values()) for (const item of [...pool.active]) item.cut();
  }

  stats(): ProxyStats {
    return {
      tableVersion: this.router.current.version,
      pools: [...this.router.pools.values()].map((p) => p.stats()),
      requests: this.requests,
      upstreamErrors: this.upstreamErrors,
      retries: this.retries,
      down: this.router.downList(),
    };
  }

  /**
   * Passive detection, for a connection that failed before any response byte. A refusal proves
   * that nothing listens: the upstream leaves rotation at once. A reset or a hang-up does not: a
   * keep-alive socket the upstream closed a moment ago, or one handler that crashed, look the
   * same. Since only the agent brings an upstream back, a reset first asks a fresh connection.
   */
  noteFailure(u: Upstream, err: NodeJS.ErrnoException): void {
    const code = err.code;
    if (code === "ECONNREFUSED") this.router.markDown(u.id, "refused");
    else if (code === "ECONNRESET" || code === "EPIPE") this.probe(u);
  }

  private probe(u: Upstream): void {
    if (this.router.unhealthy.has(u.id) || this.probes.has(u.id)) return;
    const socket = net.connect({ host: u.host, port: u.port });
    let connected = false;
    let ended = false;
    let error: NodeJS.ErrnoException | undefined;
    // Ended by us: the upstream is alive, or did not answer in time, which proves nothing either.
    const end = (): void => {
      ended = true;
      socket.destroy();
    };
    let timer = setTimeout(end, PROBE_CONNECT_TIMEOUT_MS).unref();
    this.probes.set(u.id, end);
    socket.once("connect", () => {
      connected = true;
      clearTimeout(timer);
      timer = setTimeout(end, PROBE_WATCH_MS).unref();
    });
    socket.on("error", (e: NodeJS.ErrnoException) => (error = e));
    socket.on("close", () => {
      clearTimeout(timer);
      if (this.probes.get(u.id) === end) this.probes.delete(u.id);
      if (ended) return;
      if (connected || error?.code === "ECONNREFUSED" || error?.code === "ECONNRESET") this.router.markDown(u.id, "reset");
    });
    // Flowing, so that the upstream's FIN is seen even though nothing is read.
    socket.resume();
  }

  stopProbes(): void {
    for (const end of [...this.probes.values()]) end();
    this.probes.clear();
  }
}

/** Removes the fields a Connection header names (RFC 9110 §7.6.1). */
function dropConnectionTokens(headers: string[], connection: string): void {
  const named = new Set<string>();
  for (const token of connection.split(",")) {
    const t = token.trim().toLowerCase();
    if (t !== "" && t !== "close" && t !== "keep-alive") named.add(t);
  }
  if (named.size === 0) return;
  let w = 0;
  for (let r = 0; r < headers.length; r += 2) {
    if (named.has(headers[r]!.toLowerCase())) continue;
    headers[w++] = headers[r]!;
    headers[w++] = headers[r + 1]!;
  }
  headers.length = w;
}

function noop(): void {}

/** The client's IP as nginx's $remote_addr shows it: IPv4 clients of a dual-stack socket unmapped. */
function clientAddress(socket: net.Socket): string {
  const address = socket.remoteAddress ?? "";
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

function sendJson(res: http.ServerResponse, status: number, body: object): void {
  const text = JSON.stringify(body);
  res.writeHead(status, ["Content-Type", "application/json", "Content-Length", String(Buffer.byteLength(text))]);
  res.end(text);
}

function rejectUpgrade(client: net.Socket, status: number, body: object): void {
  const text = JSON.stringify(body);
  const reason = http.STATUS_CODES[status] ?? "";
  client.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`);
}

// ---------------------------------------------------------------------------------------------
// Control plane

class ControlPlane {
  private readonly plane: DataPlane;
  private readonly stateDir: string;
  private readonly expectedAuth: Buffer;
  /** Table writes run one at a time so the file and the live table never disagree. */
  private applying: Promise<unknown> = Promise.resolve();

  constructor(plane: DataPlane, stateDir: string, token: string) {
    this.plane = plane;
    this.stateDir = stateDir;
    this.expectedAuth = Buffer.from(`Bearer ${token}`);
  }

  readonly onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    if (!this.authorized(req.headers.authorization)) {
      req.resume();
      sendJson(res, 401, { error: "unauthorized", message: "the proxy control API needs Authorization: Bearer <token>" });
      return;
    }
    this.route(req, res).catch((e: unknown) => {
      const status = e instanceof HttpError ? e.status : 500;
      if (!res.headersSent) sendJson(res, status, { error: e instanceof Error ? e.message : String(e) });
      else res.destroy();
    });
  };

  private authorized(header: string | undefined): boolean {
    if (header === undefined) return false;
    const given = Buffer.from(header);
    return given.length === this.expectedAuth.length && timingSafeEqual(given, this.expectedAuth);
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const key = `${req.method} ${(req.url ?? "/").split("?")[0]}`;
    switch (key) {
      case "GET /health":
        req.resume();
        return sendJson(res, 200, { ok: true, pid: process.pid, tableVersion: this.plane.router.current.version });
      case "GET /stats":
        req.resume();
        return sendJson(res, 200, this.plane.stats());
      case "GET /table":
        req.resume();
        return sendJson(res, 200, this.plane.router.current.source);
      case "PUT /table": {
        const table = await readJson(req);
        const problem = validateTable(table);
        if (problem) throw new HttpError(400, `invalid route table: ${problem}`);
        const result = await this.applyTable(table as RouteTable);
        return sendJson(res, 200, result);
      }
      case "POST /drain": {
        const body = (await readJson(req)) as { poolId?: unknown; timeoutMs?: unknown };
        if (typeof body?.poolId !== "string") throw new HttpError(400, "poolId must be a string");
        if (typeof body.timeoutMs !== "number" || !(body.timeoutMs >= 0)) throw new HttpError(400, "timeoutMs must be a number ≥ 0");
        return sendJson(res, 200, await this.plane.drain(body.poolId, body.timeoutMs));
      }
      case "POST /upstreams/health": {
        const body = (await readJson(req)) as { id?: unknown; healthy?: unknown };
        if (typeof body?.id !== "string" || typeof body.healthy !== "boolean") throw new HttpError(400, "body must be {id: string, healthy: boolean}");
        // Healthy clears any mark, the proxy's own included: only the agent's check brings an upstream back.
        if (body.healthy) this.plane.router.markUp(body.id);
        else this.plane.router.markDown(body.id, "marked");
        return sendJson(res, 200, { id: body.id, healthy: body.healthy });
      }
      case "GET /events": {
        req.resume();
        const query = new URL(req.url ?? "/", "http://control").searchParams;
        const after = queryInteger(query, "after");
        const waitMs = queryInteger(query, "wait");
        return this.events(res, after, Math.min(waitMs, MAX_EVENTS_WAIT_MS));
      }
      default:
        req.resume();
        throw new HttpError(404, `no such control endpoint: ${key}`);
    }
  }

  /** Answers with the events after `after` as soon as there is one, or with none after waitMs. */
  private events(res: http.ServerResponse, after: number, waitMs: number): void {
    const log = this.plane.router.events;
    const ready = log.since(after);
    if (ready.events.length !== 0 || waitMs === 0) return sendJson(res, 200, ready);
    const answer = (): void => {
      clearTimeout(timer);
      unsubscribe();
      if (!res.destroyed && !res.writableEnded) sendJson(res, 200, log.since(after));
    };
    const timer = setTimeout(answer, waitMs);
    const unsubscribe = log.subscribe(answer);
    res.once("close", () => {
      clearTimeout(timer);
      unsubscribe();
    });
  }

  /** Persists first, then swaps: an acknowledged table is both live and on disk. */
  private applyTable(table: RouteTable): Promise<{ applied: boolean; version: number }> {
    const run = async (): Promise<{ applied: boolean; version: number }> => {
      const router = this.plane.router;
      if (table.version < router.current.version) return { applied: false, version: router.current.version };
      await writeFileAtomic(path.join(this.stateDir, TABLE_FILE), JSON.stringify(table));
      router.apply(table);
      return { applied: true, version: table.version };
    };
    const next = this.applying.then(run, run);
    this.applying = next.catch(noop);
    return next;
  }
}

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** A non-negative integer query parameter, 0 when absent. */
function queryInteger(query: URLSearchParams, name: string): number {
  const text = query.get(name);
  if (text === null || text === "") return 0;
  if (!/^\d{1,15}$/.test(text)) throw new HttpError(400, `${name} must be a non-negative integer`);
  return Number(text);
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_CONTROL_BODY_BYTES) throw new HttpError(413, "body too large");
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new HttpError(400, "body is not valid JSON");
  }
}

// ---------------------------------------------------------------------------------------------
// Persistence

/** The last acknowledged table, or undefined when there is none (or it cannot be read). */
export async function loadTable(stateDir: string): Promise<RouteTable | undefined> {
  let text: string;
  try {
    text = await readFile(path.join(stateDir, TABLE_FILE), "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  const table: unknown = JSON.parse(text);
  const problem = validateTable(table);
  if (problem) throw new Error(`${path.join(stateDir, TABLE_FILE)}: invalid route table: ${problem}`);
  return table as RouteTable;
}
