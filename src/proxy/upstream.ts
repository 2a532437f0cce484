// The upstream HTTP/1.1 client: keep-alive sockets to every upstream address and the response
// parser that runs on each of them, feeding one ResponseSink (an exchange) at a time.
//
// A small client of its own instead of http.request: with one parser per keep-alive socket and
// listeners attached once per connection, a proxied request costs about half as much CPU as
// through ClientRequest and http.Agent (see bench/proxy.ts).

import http from "node:http";
import net from "node:net";
import type { RouteTimeouts, Upstream } from "./contract.js";
import { DROPPED_RESPONSE_HEADERS, dropConnectionTokenLines } from "./http.js";
import { owned, READ_BUFFER } from "./read-buffer.js";
import { CHUNK_SIZE_LINE, CHUNKED_ONLY, FIELD_LINES, flat, INVALID_FIELD_CHAR, sameBytesAt, MAX_CHUNK_EXTENSION_BYTES, MAX_CHUNK_LINE_BYTES, headEnd, NameTable, strayLineBreak, trimOws, withLastRun } from "./http-syntax.js";

/** What an upstream connection feeds with the response it parses: one proxied exchange. */
export interface ResponseSink {
  readonly method: string;
  /** The request (head and body) went out whole: only then may the socket be reused. */
  readonly requestSent: boolean;
  /** Some body bytes already went to the client, so a whole-body shortcut no longer applies. */
  readonly bodyWritten: boolean;
  /** The route's upstream timeouts, which bound this connection's waits while it serves the exchange. */
  readonly timeouts: RouteTimeouts;
  /** The upstream socket, while paused for a slow client. */
  paused: net.Socket | undefined;
  onConnected(): void;
  onUpstreamDrain(): void;
  /**
   * The response head, checked: `head` its status line (HTTP/1.1) and its field lines as read,
   * hop-by-hop ones left out, each with its CR LF. Returns false when the exchange is over (the
   * client went away or the head was unusable).
   */
  onResponseHead(status: number, head: string, hasLength: boolean, hasDate: boolean): boolean;
  onBody(chunk: Buffer): void;
  /** The whole body at once, `buf` from `start` to `end`: bytes valid only during the call (they may be the read buffer's). */
  onWholeBody(buf: Buffer, start: number, end: number): void;
  onResponseEnd(): void;
  onUpstreamFailure(err: NodeJS.ErrnoException, beforeResponse: boolean): void;
  /** A wait ran out; the connection is already closed and detached. */
  onUpstreamTimeout(phase: UpstreamTimeoutPhase): void;
}

/** Which wait ran out: the handshake, the response head, or the next body read (or write). */
export type UpstreamTimeoutPhase = "connect" | "response" | "idle";

/** A request waiting for a connection to one upstream address. */
export interface ConnWaiter {
  /** A connection is this request's now: idle, new, or freed by another request. */
  onConn(conn: UpstreamConn): void;
  /** No connection came within the queue time; the request is out of the queue. */
  onQueueTimeout(): void;
}

/** A waiter's place in an address's queue; handed back to cancel it. */
export interface QueueTicket {
  readonly waiter: ConnWaiter;
  readonly addr: Address;
  /** performance.now() after which the waiter gives up. */
  readonly deadline: number;
  /** False once served, expired or cancelled: a dead ticket stays in the queue until skipped. */
  live: boolean;
}

/** Everything about one upstream address ("host:port"): its idle sockets, its busy count and its queue. */
interface Address {
  readonly key: string;
  readonly host: string;
  readonly port: number;
  /** Idle sockets, most recently used last: LIFO reuse lets surplus sockets age out. */
  readonly idle: UpstreamConn[];
  /** Sockets serving or connecting for a request, until they are idle or closed: what the cap counts. */
  busy: number;
  /** maxUpstreamConnections as the latest request for this address saw it. */
  cap: number;
  /** Requests waiting for a connection, oldest first (FIFO). */
  queue: QueueTicket[];
  /** The live tickets in queue. */
  waiting: number;
}

/** Idle keep-alive sockets are closed before a Node upstream's 5 s default would close them. */
export const DEFAULT_UPSTREAM_IDLE_MS = 4_000;
/**
 * How often the sweeper checks every busy socket's wait and every queue's deadlines. One timer
 * for the whole proxy instead of one per request: a wait runs out between its limit and its
 * limit plus two sweeps, never before.
 */
export const SWEEP_MS = 100;
/** Idle keep-alive sockets are looked at every this many sweeps (500 ms). */
const IDLE_SWEEP_EVERY = 5;
const MAX_IDLE_PER_ADDRESS = 256;
/**
 * Node's limit (16 KiB unless --max-http-header-size says otherwise), so that the proxy takes no
 * head Node's client would refuse. Node counts names, values and the status line; the proxy counts
 * every byte, so a head within a few bytes per line of the limit is refused here alone.
 */
const MAX_RESPONSE_HEAD_BYTES = http.maxHeaderSize;
const SMALL_BODY_BYTES = 16 * 1024;

/** RFC 9112 §4: version, SP, three digits, then the end or SP and a reason phrase without CR or LF. */
const STATUS_LINE = /^HTTP\/1\.[01] \d{3}(?: [^\r\n]*)?$/;
/** Connection tokens as Node reads them: a trailing HTAB makes another token. */
const CLOSE_TOKEN = /(?:^|,)[ \t]*close *(?:,|$)/i;
const KEEP_ALIVE_TOKEN = /(?:^|,)[ \t]*keep-alive *(?:,|$)/i;
/** Node's Content-Length syntax: digits after optional SP or HTAB, then nothing but SP. */
const CONTENT_LENGTH = /^[ \t]*(\d+) *$/;

/** The response fields the parser acts on: the hop-by-hop ones it drops, Content-Length, and Date (kept, but then not added). */
const SPECIAL_NAMES = new NameTable([...DROPPED_RESPONSE_HEADERS, "content-length", "date"]);

/** A final response head as read, with what it says for every request it may answer. */
interface FinalHead {
  /** The head's bytes, from its status line to its blank line. */
  bytes: Buffer;
  status: number;
  /**
   * What the client gets of it: the status line (HTTP/1.1, the standard reason phrase when the
   * upstream's cannot be written) and the field lines as read, the hop-by-hop ones left out.
   */
  relayed: string;
  /** `relayed` was made flat, as it is once the head repeats. */
  flat: boolean;
  hasDate: boolean;
  /** -1: none. */
  contentLength: number;
  chunked: boolean;
  /** The upstream closes the connection after this response. */
  connectionClose: boolean;
}

/** readHead's answer for a 1xx head, which is dropped. */
const INTERIM = Symbol("interim");
const EMPTY = Buffer.alloc(0);

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
  /** The CR, then the LF, after a chunk's data. */
  DataCR,
  DataLF,
  Trailer,
}

/** What a busy socket waits for, each bounded by one of the route's timeouts. */
const enum Wait {
  None,
  /** The TCP handshake: upstreamConnectMs. */
  Connect,
  /** The response head, once the request went out whole: upstreamResponseMs. */
  Response,
  /** The next read of the response body, or the next write of the request body: upstreamIdleMs. */
  Idle,
}

/**
 * Keep-alive sockets to every upstream address, shared by all pools; at most maxUpstreamConnections
 * busy ones per address, with a FIFO queue of requests beyond that; and the sweeper that ends
 * every wait that ran out.
 */
export class UpstreamConnections {
  private readonly addresses = new Map<string, Address>();
  /** Each upstream's "host:port", made once per route table rather than once per request. */
  private readonly keys = new WeakMap<Upstream, string>();
  /** Every socket not yet closed, busy or idle: what the sweeper walks. Changes only on open and close, not per request. */
  private readonly open = new Set<UpstreamConn>();
  private readonly sweeper: NodeJS.Timeout;
  private sweeps = 0;

  constructor() {
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweeper.unref();
  }

  /**
   * Hands `waiter` a connection to u at once when u has fewer than `cap` busy ones and nobody
   * waits before it; otherwise queues it for up to queueMs and returns its ticket.
   */
  acquire(u: Upstream, waiter: ConnWaiter, cap: number, queueMs: number): QueueTicket | undefined {
    let key = this.keys.get(u);
    if (key === undefined) this.keys.set(u, (key = `${u.host}:${u.port}`));
    let addr = this.addresses.get(key);
    if (!addr) this.addresses.set(key, (addr = { key, host: u.host, port: u.port, idle: [], busy: 0, cap, queue: [], waiting: 0 }));
    addr.cap = cap;
    if (addr.busy < cap && addr.waiting === 0) {
      waiter.onConn(this.take(addr));
      return undefined;
    }
    const ticket: QueueTicket = { waiter, addr, deadline: performance.now() + queueMs, live: true };
    addr.queue.push(ticket);
    addr.waiting++;
    // A new table may have raised the cap: the queue moves first, in order.
    this.serve(addr);
    return ticket.live ? ticket : undefined;
  }

  /** Takes a waiter out of its queue (its client went away). */
  cancel(ticket: QueueTicket): void {
    if (!ticket.live) return;
    ticket.live = false;
    ticket.addr.waiting--;
  }

  /** A reusable socket is done with its exchange: idle now, or straight to the next waiter. */
  release(conn: UpstreamConn): void {
    const addr = conn.addr;
    if (addr.idle.length >= MAX_IDLE_PER_ADDRESS) {
      // Still counted busy until closed: the cap is about sockets that exist.
      conn.socket.destroy();
      return;
    }
    conn.busy = false;
    addr.busy--;
    conn.idleSince = Date.now();
    addr.idle.push(conn);
    if (addr.waiting !== 0) this.serve(addr);
  }

  /** The socket closed: it no longer counts, idle or busy, and its place goes to the next waiter. */
  closed(conn: UpstreamConn): void {
    this.open.delete(conn);
    const addr = conn.addr;
    if (conn.busy) {
      conn.busy = false;
      addr.busy--;
      if (addr.waiting !== 0) this.serve(addr);
    } else {
      const i = addr.idle.indexOf(conn);
      if (i !== -1) addr.idle.splice(i, 1);
    }
  }

  closeIdle(host: string, port: number): void {
    const addr = this.addresses.get(`${host}:${port}`);
    if (!addr) return;
    const idle = addr.idle.splice(0);
    for (const conn of idle) conn.socket.destroy();
  }

  /** A busy socket for addr: the most recently used idle one, or a new one. */
  private take(addr: Address): UpstreamConn {
    let conn: UpstreamConn | undefined;
    for (conn = addr.idle.pop(); conn; conn = addr.idle.pop()) {
      // The upstream may have closed it a moment ago, before its 'close' event ran.
      if (!conn.socket.destroyed && conn.socket.readable) break;
      conn.socket.destroy();
    }
    if (!conn) {
      conn = new UpstreamConn(this, addr);
      this.open.add(conn);
    }
    conn.busy = true;
    addr.busy++;
    return conn;
  }

  /** Gives free places under the cap to the oldest waiters. */
  private serve(addr: Address): void {
    const queue = addr.queue;
    while (addr.waiting !== 0 && addr.busy < addr.cap) {
      const ticket = queue.shift();
      if (!ticket) break;
      if (!ticket.live) continue;
      ticket.live = false;
      addr.waiting--;
      ticket.waiter.onConn(this.take(addr));
    }
    if (addr.waiting === 0) queue.length = 0;
  }

  private sweep(): void {
    const now = performance.now();
    for (const conn of this.open) conn.check(now);
    for (const addr of this.addresses.values()) if (addr.queue.length !== 0) this.expire(addr, now);
    if (++this.sweeps % IDLE_SWEEP_EVERY === 0) this.sweepIdle();
  }

  /** Ends the waits of the tickets past their deadline (and drops dead tickets). */
  private expire(addr: Address, now: number): void {
    const queue = addr.queue;
    let expired: QueueTicket[] | undefined;
    let kept = 0;
    for (let i = 0; i < queue.length; i++) {
      const ticket = queue[i]!;
      if (!ticket.live) continue;
      if (ticket.deadline <= now) {
        ticket.live = false;
        addr.waiting--;
        (expired ??= []).push(ticket);
      } else {
        queue[kept++] = ticket;
      }
    }
    queue.length = kept;
    // After the queue is consistent: a waiter's answer may come back here (its client closing).
    if (expired) for (const ticket of expired) ticket.waiter.onQueueTimeout();
  }

  private sweepIdle(): void {
    const now = Date.now();
    for (const [key, addr] of this.addresses) {
      const list = addr.idle;
      for (let i = list.length - 1; i >= 0; i--) {
        const conn = list[i]!;
        if (now - conn.idleSince >= conn.idleLimitMs) {
          list.splice(i, 1);
          conn.socket.destroy();
        }
      }
      if (list.length === 0 && addr.busy === 0 && addr.waiting === 0) this.addresses.delete(key);
    }
  }

  /** Sockets to upstreams open now, busy or idle. */
  get openCount(): number {
    return this.open.size;
  }

  destroy(): void {
    clearInterval(this.sweeper);
    for (const addr of this.addresses.values()) for (const conn of addr.idle) conn.socket.destroy();
    this.addresses.clear();
  }
}

/** One socket to an upstream, with the response parser for the exchange it currently serves. */
export class UpstreamConn {
  readonly owner: UpstreamConnections;
  readonly addr: Address;
  /** "host:port" */
  readonly key: string;
  readonly socket: net.Socket;
  connected = false;
  ex: ResponseSink | undefined = undefined;
  /** Serving or connecting for a request: counted against the address's cap until idle or closed. */
  busy = false;
  idleSince = 0;
  idleLimitMs = DEFAULT_UPSTREAM_IDLE_MS;
  // The current wait. The data path only bumps `activity` (no clock read, no timer); the sweeper
  // notices when it stops moving and times the quiet from there.
  private wait = Wait.None;
  private activity = 0;
  private seenActivity = 0;
  private quietSince = 0;
  /** The last Keep-Alive header seen, so that the same hint is not parsed on every response. */
  private keepAliveHint = "";
  /** The last final head this connection read. */
  private lastHead: FinalHead | undefined = undefined;
  private error: NodeJS.ErrnoException | undefined = undefined;

  // Parser state, reset for each response.
  private phase = Phase.Head;
  private pending: Buffer | undefined = undefined;
  private remaining = 0;
  private chunkPhase = ChunkPhase.Size;
  private line = "";
  private trailerBytes = 0;
  private keepAlive = true;
  private responseStarted = false;

  constructor(owner: UpstreamConnections, addr: Address) {
    this.owner = owner;
    this.addr = addr;
    this.key = addr.key;
    // Reads land in the worker's one read buffer (read-buffer.ts): every byte kept past the callback is copied out first.
    this.socket = net.connect({ host: addr.host, port: addr.port, noDelay: true, onread: { buffer: READ_BUFFER, callback: this.onRead } });
    this.socket.on("connect", () => {
      this.connected = true;
      this.wait = Wait.None;
      this.ex?.onConnected();
    });
    this.socket.on("drain", () => this.ex?.onUpstreamDrain());
    this.socket.on("error", (err: NodeJS.ErrnoException) => (this.error = err));
    this.socket.on("close", () => this.onClose());
  }

  attach(ex: ResponseSink): void {
    this.ex = ex;
    this.phase = Phase.Head;
    this.pending = undefined;
    this.keepAlive = true;
    this.responseStarted = false;
    if (this.connected) {
      this.wait = Wait.None;
      ex.onConnected();
    } else {
      this.startWait(Wait.Connect);
    }
  }

  private readonly onRead = (n: number, buf: Buffer): boolean => {
    // Only body reads move an idle wait along; a trickled head does not stretch the response wait.
    if (this.wait === Wait.Idle) this.activity++;
    this.onData(buf.subarray(0, n));
    return true;
  };

  /** Stops serving `ex` for good: the socket is closed since its stream is now undefined. */
  abandon(): void {
    this.ex = undefined;
    this.wait = Wait.None;
    this.socket.destroy();
  }

  /** The request went out whole: the response head is due within upstreamResponseMs. */
  awaitResponse(): void {
    this.startWait(Wait.Response);
  }

  /** A body is moving (the request's out, or the response's in): each step is due within upstreamIdleMs. */
  awaitBody(): void {
    this.startWait(Wait.Idle);
  }

  /** A step of a body: a request body chunk written, or the upstream took what was written. */
  touch(): void {
    this.activity++;
  }

  private startWait(wait: Wait): void {
    this.wait = wait;
    this.activity++;
  }

  /**
   * Called by the sweeper: ends the exchange's wait when it has been quiet for its limit. An idle
   * wait keeps running while the socket is paused for a slow client, as nginx's send_timeout
   * would: a client that takes nothing for upstreamIdleMs would otherwise hold this connection
   * (and a place under the cap) for as long as it likes.
   */
  check(now: number): void {
    const ex = this.ex;
    if (this.wait === Wait.None || !ex) return;
    if (this.activity !== this.seenActivity) {
      // Something happened since the last sweep: the quiet starts now at the earliest.
      this.seenActivity = this.activity;
      this.quietSince = now;
      return;
    }
    const t = ex.timeouts;
    const wait = this.wait;
    const limitMs = wait === Wait.Connect ? t.upstreamConnectMs : wait === Wait.Response ? t.upstreamResponseMs : t.upstreamIdleMs;
    if (now - this.quietSince < limitMs) return;
    // Never back to the idle pool: a late answer on this socket would be taken for the next one's.
    this.abandon();
    ex.onUpstreamTimeout(wait === Wait.Connect ? "connect" : wait === Wait.Response ? "response" : "idle");
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
            // A whole small body at once: it goes out with the head in one write.
            ex.onWholeBody(buf, pos, pos + n);
            return this.complete(ex, pos + n < buf.length);
          }
          ex.onBody(copyOut(buf, pos, pos + n));
          pos += n;
          if (this.remaining === 0) return this.complete(ex, pos < buf.length);
          break;
        }
        case Phase.Chunked:
          pos = this.parseChunked(ex, buf, pos);
          if (pos < 0) return;
          break;
        case Phase.UntilClose:
          ex.onBody(copyOut(buf, pos, buf.length));
          return;
        case Phase.Head:
          pos = this.parseHead(ex, buf, pos);
          if (pos < 0) return;
          break;
      }
    }
  }

  /** Returns where the body starts in buf, or -1 when the head is incomplete or the answer is bad. */
  private parseHead(ex: ResponseSink, buf: Buffer, start: number): number {
    // Empty lines before a status line are skipped, as Node does (RFC 9112 §2.2's robustness).
    while (buf[start] === 13 /* CR */ || buf[start] === 10 /* LF */) start++;
    if (start === buf.length) return -1;
    const end = headEnd(buf, start);
    if (end === -1) {
      // Node fails a head at its first bad byte; waiting for a CR LF CR LF that a bare-LF upstream
      // never sends would hold the exchange until the upstream closes.
      if (buf.length - start > MAX_RESPONSE_HEAD_BYTES) this.protocolError(ex, "response head too large");
      else if (strayLineBreak(buf, start)) this.protocolError(ex, "CR or LF alone in the head");
      else if (!statusLineSoFar(buf, start)) this.protocolError(ex, "malformed status line");
      else this.pending = copyOut(buf, start, buf.length);
      return -1;
    }
    if (end + 4 - start > MAX_RESPONSE_HEAD_BYTES) {
      this.protocolError(ex, "response head too large");
      return -1;
    }
    // An upstream repeats its heads (all but Date, which changes once a second): a head the same,
    // byte for byte, as the last final one on this connection reads as that one did.
    let head = this.lastHead;
    if (head === undefined || head.bytes.length !== end + 4 - start || !sameBytesAt(buf, start, head.bytes)) {
      const read = this.readHead(ex, buf.toString("latin1", start, end));
      if (read === undefined) return -1;
      if (read === INTERIM) return end + 4;
      // A copy of its own: buf may be a head joined with the body read after it (Buffer.concat).
      read.bytes = Buffer.from(buf.subarray(start, end + 4));
      this.lastHead = head = read;
    } else if (!head.flat) {
      // Made of pieces of the head's text: a tree that every write of the answer would walk again.
      head.relayed = flat(head.relayed);
      head.flat = true;
    }
    const { status, contentLength, chunked } = head;
    const bodyless = ex.method === "HEAD" || status === 204 || status === 304;
    // A bodyless answer whose head announces a body (a HEAD's Content-Length, mostly) leaves the
    // socket unused after it: should the upstream send that body anyway, the next exchange on the
    // socket would read it as its answer. A HEAD costs a new connection; no desync can.
    this.keepAlive = !head.connectionClose && !(bodyless && (contentLength > 0 || chunked));
    if (!ex.onResponseHead(status, head.relayed, contentLength !== -1, head.hasDate)) return -1;
    if (bodyless || (contentLength === 0 && !chunked)) {
      this.complete(ex, end + 4 < buf.length);
      return -1;
    }
    if (chunked) {
      this.phase = Phase.Chunked;
      this.chunkPhase = ChunkPhase.Size;
      this.line = "";
      this.trailerBytes = 0;
    } else if (contentLength > 0) {
      this.phase = Phase.Length;
      this.remaining = contentLength;
    } else {
      this.phase = Phase.UntilClose;
      this.keepAlive = false;
    }
    return end + 4;
  }

  /**
   * Reads a whole head's text (status line and field lines, without the blank line) for what does
   * not depend on the request: INTERIM for a 1xx to drop, undefined when refused (and reported).
   */
  private readHead(ex: ResponseSink, text: string): FinalHead | typeof INTERIM | undefined {
    const statusEnd = text.indexOf("\r\n");
    const statusLine = statusEnd === -1 ? text : text.slice(0, statusEnd);
    // Deliberately stricter than Node, which also takes HTTP/0.9, HTTP/2.0, RTSP and ICE status
    // lines and codes below 100: the proxy speaks HTTP/1.x, and Node's server cannot relay 0xx.
    if (!STATUS_LINE.test(statusLine) || statusLine.charCodeAt(9) === 48 /* 0 */) {
      this.protocolError(ex, "malformed status line");
      return undefined;
    }
    // Checked here, not only by Node's server on relay: hop-by-hop fields are never relayed, and a
    // bare LF inside one (a line Node splits in two) must not pass. obs-fold fails as no token,
    // as Node refuses it (RFC 9112 §5.2 lets a proxy).
    FIELD_LINES.lastIndex = statusLine.length;
    if (FIELD_LINES.test(text)) {
      this.protocolError(ex, "malformed header field");
      return undefined;
    }
    // Three digits (STATUS_LINE): read from their codes, without a string to convert.
    const status = statusLine.charCodeAt(9) * 100 + statusLine.charCodeAt(10) * 10 + statusLine.charCodeAt(11) - 5328;
    const http10 = statusLine.charCodeAt(7) === 48; /* 0 */
    if (status === 101) {
      this.protocolError(ex, "unexpected 101 Switching Protocols");
      return undefined;
    }
    const interim = status < 200;
    /** The field lines relayed to the client, as read: runs of lines between the dropped ones. */
    let fields = "";
    let hasDate = false;
    let contentLength = -1;
    let chunked = false;
    /** Transfer-Encoding fields with a value (Node ignores empty ones). */
    let transferEncodings = 0;
    let closeToken = false;
    let keepAliveToken = false;
    let connection: string | undefined;
    const first = statusEnd === -1 ? text.length : statusEnd + 2;
    let run = first;
    // Field lines by their bounds in text (FIELD_LINES passed: each has a colon), with no string per field.
    for (let at = first; at < text.length; ) {
      let eol = text.indexOf("\r\n", at);
      if (eol === -1) eol = text.length;
      const lineStart = at;
      at = eol + 2;
      const colon = text.indexOf(":", lineStart);
      const lower = SPECIAL_NAMES.find(text, lineStart, colon);
      if (lower === undefined) continue;
      if (lower === "date") {
        hasDate = true;
        continue;
      }
      if (lower === "content-length") {
        // A repeat is refused even with the same value, as Node does: one reading for every hop.
        const m = CONTENT_LENGTH.exec(text.slice(colon + 1, eol));
        if (contentLength !== -1 || !m || exceedsUint64(m[1]!, 10)) {
          this.protocolError(ex, "invalid Content-Length");
          return undefined;
        }
        // Past 2^53 the count is inexact, but no such body ever ends before the upstream closes.
        contentLength = Number(m[1]);
        // Relayed without the OWS around its value, whatever the upstream wrote: one reading for every hop.
        if (eol - colon !== m[1]!.length + 2 || text.charCodeAt(colon + 1) !== 32) {
          fields += `${text.slice(run, colon)}: ${m[1]}\r\n`;
          run = at;
        }
        continue;
      }
      // A hop-by-hop field: the run of relayed lines ends before it.
      if (lineStart > run) fields += text.slice(run, lineStart);
      run = at;
      if (lower === "transfer-encoding") {
        // Node refuses a Transfer-Encoding after a Content-Length even when empty (before one, it
        // ignores an empty one): the check below sees only fields with a value.
        if (contentLength !== -1) {
          this.protocolError(ex, "Content-Length with Transfer-Encoding");
          return undefined;
        }
        if (trimOws(text, colon + 1, eol) !== "") {
          transferEncodings++;
          chunked = CHUNKED_ONLY.test(text.slice(colon + 1, eol));
        }
      } else if (lower === "connection" || lower === "proxy-connection") {
        // Node (llhttp) reads Proxy-Connection's close and keep-alive as Connection's, so an
        // HTTP/1.0 interim answer with "Proxy-Connection: keep-alive" leaves the connection open.
        const raw = text.slice(colon + 1, eol);
        // What nearly every upstream sends, without the regular expressions or a token list.
        if (raw === " keep-alive") keepAliveToken = true;
        else if (raw === " close") closeToken = true;
        else {
          if (CLOSE_TOKEN.test(raw)) closeToken = true;
          if (KEEP_ALIVE_TOKEN.test(raw)) keepAliveToken = true;
          // Only Connection names fields for this hop (RFC 9110 §7.6.1).
          if (lower === "connection") {
            const value = trimOws(raw, 0);
            connection = connection === undefined ? value : `${connection}, ${value}`;
          }
        }
      } else if (lower === "keep-alive" && !interim) {
        const value = trimOws(text, colon + 1, eol);
        if (value !== this.keepAliveHint) {
          this.keepAliveHint = value;
          this.idleLimitMs = keepAliveHintMs(value);
        }
      }
    }
    fields = withLastRun(text, first, run, fields);
    // Both framings at once is how responses get smuggled: which one each hop believes decides where
    // the next response starts. RFC 9112 §6.3 lets a proxy refuse it, as Node's parser does.
    if (transferEncodings > 0 && contentLength !== -1) {
      this.protocolError(ex, "Content-Length with Transfer-Encoding");
      return undefined;
    }
    // As Node decides whether a connection outlives its response (llhttp_should_keep_alive).
    const connectionClose = http10 ? !keepAliveToken : closeToken;
    // Interim answers (100 Continue, 103 Early Hints) are dropped, once Node would take them too;
    // they have no body, so their transfer coding does not matter. The final answer follows, but
    // not on a connection the interim answer closed: Node fails whatever comes after it.
    if (interim) {
      if (connectionClose) {
        this.protocolError(ex, "interim answer closing the connection");
        return undefined;
      }
      return INTERIM;
    }
    // Deliberately stricter than Node, which takes any list: the proxy drops Transfer-Encoding and
    // re-chunks what it relays, so it can only undo chunked. Any other coding (gzip, identity), a
    // list or a repeated field would reach the client undeclared, or be read until close where
    // another hop reads it as chunked. nginx refuses these too.
    if (transferEncodings > 1 || (transferEncodings === 1 && !chunked)) {
      this.protocolError(ex, "Transfer-Encoding other than chunked");
      return undefined;
    }
    // RFC 9110 §7.6.1: the fields Connection names are for this hop only, as on the request path.
    if (connection !== undefined) {
      fields = dropConnectionTokenLines(fields, connection);
      // Connection may name Date: then the client gets the proxy's.
      if (hasDate) hasDate = /(?:^|\n)date:/i.test(fields);
    }
    let reason = statusLine.slice(13);
    // Node's parser takes control characters in a reason phrase, which Node's server refuses to
    // write: such a phrase gives way to the standard one (RFC 9112 §4: clients ignore it anyway).
    if (INVALID_FIELD_CHAR.test(reason)) reason = http.STATUS_CODES[status] ?? "";
    return { bytes: EMPTY, status, relayed: `HTTP/1.1 ${status} ${reason}\r\n${fields}`, flat: false, hasDate, contentLength, chunked, connectionClose };
  }

  /** Decodes chunked framing from buf[pos..]; returns the next position, or -1 when done with buf. */
  private parseChunked(ex: ResponseSink, buf: Buffer, pos: number): number {
    while (pos < buf.length) {
      if (this.chunkPhase === ChunkPhase.Data) {
        const n = Math.min(this.remaining, buf.length - pos);
        ex.onBody(copyOut(buf, pos, pos + n));
        if (this.ex !== ex) return -1;
        pos += n;
        this.remaining -= n;
        if (this.remaining === 0) this.chunkPhase = ChunkPhase.DataCR;
        continue;
      }
      if (this.chunkPhase === ChunkPhase.DataCR || this.chunkPhase === ChunkPhase.DataLF) {
        // Byte by byte: Node fails at the first wrong one, where reading a line waits for an LF.
        const cr = this.chunkPhase === ChunkPhase.DataCR;
        if (buf[pos] !== (cr ? 13 : 10)) {
          this.protocolError(ex, "missing CR LF after chunk data");
          return -1;
        }
        pos++;
        this.chunkPhase = cr ? ChunkPhase.DataLF : ChunkPhase.Size;
        continue;
      }
      const nl = buf.indexOf(10, pos);
      if (nl === -1) {
        this.line += buf.toString("latin1", pos);
        if (this.line.length > MAX_CHUNK_LINE_BYTES) this.protocolError(ex, "chunk line too long");
        return -1;
      }
      let line = this.line + buf.toString("latin1", pos, nl);
      this.line = "";
      pos = nl + 1;
      // Node wants CR LF; a hop that takes a bare LF here reads a different body than one that doesn't.
      if (line.charCodeAt(line.length - 1) !== 13 /* CR */ || line.length > MAX_CHUNK_LINE_BYTES) {
        this.protocolError(ex, "malformed chunk line");
        return -1;
      }
      line = line.slice(0, -1);
      if (this.chunkPhase === ChunkPhase.Size) {
        // The size was read as its first 12 hex digits, whatever followed: 13 zeros and a 5 made 0,
        // the last chunk, and the body's rest was taken for trailers.
        const m = CHUNK_SIZE_LINE.exec(line);
        if (!m || exceedsUint64(m[1]!, 16) || line.length - m[1]!.length > MAX_CHUNK_EXTENSION_BYTES) {
          this.protocolError(ex, "malformed chunk size");
          return -1;
        }
        this.remaining = parseInt(m[1]!, 16);
        this.chunkPhase = this.remaining === 0 ? ChunkPhase.Trailer : ChunkPhase.Data;
      } else if (line === "") {
        this.complete(ex, pos < buf.length);
        return -1;
      } else {
        // Trailer fields are dropped (the client's response is re-chunked without them), but read as
        // Node reads them: well-formed, no Content-Length, 16 KiB at most, counted apart from the head.
        this.trailerBytes += line.length + 2;
        FIELD_LINES.lastIndex = 0;
        if (this.trailerBytes > MAX_RESPONSE_HEAD_BYTES || FIELD_LINES.test(`\r\n${line}`) || line.slice(0, line.indexOf(":")).toLowerCase() === "content-length") {
          this.protocolError(ex, "malformed trailer field");
          return -1;
        }
      }
    }
    return pos;
  }

  private complete(ex: ResponseSink, extraBytes: boolean): void {
    this.ex = undefined;
    this.wait = Wait.None;
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

  private protocolError(ex: ResponseSink, why: string): void {
    this.abandon();
    ex.onUpstreamFailure(Object.assign(new Error(`upstream sent a bad response: ${why}`), { code: "EPROTO" }), false);
  }

  private onClose(): void {
    const ex = this.ex;
    this.ex = undefined;
    this.wait = Wait.None;
    this.owner.closed(this);
    if (!ex) return;
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

/** s from `from` without leading and trailing SP and HTAB: String.trim() also strips NBSP, which is field content. */
/** Whether the status line of an unfinished head is well-formed, once its CR LF has come. */
function statusLineSoFar(buf: Buffer, start: number): boolean {
  const lf = buf.indexOf(10, start);
  return lf === -1 || STATUS_LINE.test(buf.toString("latin1", start, lf - 1));
}

/** Whether digits in base 10 or 16 are past 2^64 - 1, where Node's parser stops counting. */
function exceedsUint64(digits: string, base: 10 | 16): boolean {
  let i = 0;
  while (i < digits.length - 1 && digits.charCodeAt(i) === 48 /* 0 */) i++;
  const n = digits.length - i;
  if (base === 16) return n > 16;
  return n > 20 || (n === 20 && digits.slice(i) > "18446744073709551615");
}

/** Bytes of a read that outlive it, in memory of their own: READ_BUFFER is overwritten by the next read. */
function copyOut(buf: Buffer, start: number, end: number): Buffer {
  return owned(buf.subarray(start, end));
}
