// The client-facing HTTP/1.1 server of the data plane, on plain net (or TLS) sockets: request heads
// read by the strict parser of request-head.ts, bodies framed and checked here, keep-alive and
// pipelined requests answered in order, each small response written in one system call, upgrades
// handed over after the head. It raises the events of Node's http.Server that the data plane
// listens to ("request", "upgrade", "clientError", "timeout", "drop"), with lighter request and
// response objects: Node's server (llhttp, IncomingMessage, ServerResponse) cost the proxy about
// as much CPU per request as everything else it does (docs/benchmarks.md, bench:proxy).

import http from "node:http";
import net from "node:net";
import { writeBytes, writeLatin1 } from "./direct-write.js";
import { CHUNK_SIZE_LINE, equalsLower, FIELD_LINES, flat, headEnd, INVALID_FIELD_CHAR, MAX_CHUNK_EXTENSION_BYTES, MAX_CHUNK_LINE_BYTES, strayLineBreak, TOKEN } from "./http-syntax.js";
import { acceptedReadInto, owned } from "./read-buffer.js";
import { isFault, parseRequestHead, rawHeadersOf, type RequestHead } from "./request-head.js";

/** As Node's http.Server: the largest request head, and how long to wait for one. */
export const DEFAULT_MAX_HEADER_BYTES = http.maxHeaderSize;
/** Unread body bytes a keep-alive connection reads and drops after an answer that did not need them; beyond, it is closed. */
const MAX_DUMP_BYTES = 64 * 1024;
/** Bytes read ahead of the request being answered (pipelined requests, a body nobody reads yet) before reading stops. */
const READ_AHEAD_BYTES = 64 * 1024;
/** Node closes an idle keep-alive connection this long after the timeout it advertises, so that a request sent at the last moment is not met by a close. */
const IDLE_GRACE_MS = 1_000;

const enum State {
  /** Reading (or waiting for) a request head. */
  Head,
  /** Reading the request's body. */
  Body,
  /** The request was read whole: waiting for its answer to go out. */
  Answering,
  /** The answer went out before the body was read: reading it to drop it. */
  Dump,
  /** Handed over (an upgrade) or closed: this object reads nothing more. */
  Gone,
}

const enum Chunk {
  Size,
  Data,
  /** The CR LF after a chunk's data. */
  DataEnd,
  Trailer,
}

/** What the sweeper times on a connection. */
const enum Wait {
  None,
  /** A request head, from its first byte (or the accept): headersTimeout. */
  Head,
  /** A kept-alive connection between requests: keepAliveTimeout, plus grace. */
  Idle,
}

/** A fault in what the client sent, raised as Node raises it: an Error with llhttp's code. */
function clientError(code: string, why: string): NodeJS.ErrnoException {
  return Object.assign(new Error(why), { code });
}

/**
 * The client-facing server. Its settings are read as Node's are: headersTimeout and
 * keepAliveTimeout at each sweep, maxHeaderSize when a connection opens, maxConnections (net's own)
 * at each accept.
 */
export class ClientServer extends net.Server {
  headersTimeout = 60_000;
  keepAliveTimeout = 5_000;
  maxHeaderSize = DEFAULT_MAX_HEADER_BYTES;
  /** Every connection this server reads requests on. */
  readonly conns = new Set<ClientConn>();
  private readonly sweeper: NodeJS.Timeout;
  /** The Date field of every answer, refreshed by the sweeper. */
  date = new Date().toUTCString();
  // keepAliveTail's two texts, and the date and timeout they were made for.
  private tailDate = "";
  private tailTimeoutMs = -1;
  private tailWithDate = "";
  private tailWithoutDate = "";

  constructor(opts: { checkIntervalMs: number }) {
    // Half-open allowed, so that this server decides what a client's FIN means (onEnd), not net.
    super({ noDelay: true, allowHalfOpen: true });
    this.on("connection", (socket: net.Socket) => this.conns.add(new ClientConn(this, socket)));
    this.sweeper = setInterval(() => this.sweep(), opts.checkIntervalMs);
    this.sweeper.unref();
  }

  /** Ends every timed wait that ran out: one timer for all connections, nothing per request. */
  private sweep(): void {
    this.date = new Date().toUTCString();
    const now = performance.now();
    for (const conn of this.conns) conn.check(now);
  }

  /**
   * How a kept-alive answer's head ends (Connection, Keep-Alive, the blank line), with the Date
   * field first when the answer has none: made once per date and timeout rather than per answer.
   */
  keepAliveTail(withDate: boolean): string {
    if (this.tailDate !== this.date || this.tailTimeoutMs !== this.keepAliveTimeout) {
      this.tailDate = this.date;
      this.tailTimeoutMs = this.keepAliveTimeout;
      this.tailWithoutDate = flat(`Connection: keep-alive\r\nKeep-Alive: timeout=${Math.floor(this.keepAliveTimeout / 1000)}\r\n\r\n`);
      this.tailWithDate = flat(`Date: ${this.date}\r\n${this.tailWithoutDate}`);
    }
    return withDate ? this.tailWithDate : this.tailWithoutDate;
  }

  /** Closes the connections that wait for a request, none begun. */
  closeIdleConnections(): void {
    for (const conn of this.conns) if (conn.idle()) conn.socket.destroy();
  }

  closeAllConnections(): void {
    for (const conn of this.conns) conn.socket.destroy();
  }

  override close(cb?: (err?: Error) => void): this {
    clearInterval(this.sweeper);
    return super.close(cb);
  }
}

/** One client connection: its requests one after the other. */
export class ClientConn {
  readonly server: ClientServer;
  readonly socket: net.Socket;
  private readonly maxHeaderBytes: number;
  private state = State.Head;
  /** Bytes read and not yet used. */
  private buf: Buffer | undefined = undefined;
  private req: ClientRequest | undefined = undefined;
  private res: ClientResponse | undefined = undefined;
  /** Content-Length body bytes to go, or the current chunk's. */
  private remaining = 0;
  private chunked = false;
  private chunk = Chunk.Size;
  private trailerBytes = 0;
  private dumped = 0;
  private clientEnded = false;
  /** The last request head read on this connection: the next one's field lines are likely the same. */
  private lastHead: RequestHead | undefined = undefined;
  /**
   * The forwarding fields the data plane wrote for this connection's last request from an
   * untrusted peer, and the Host they were for (null: none yet): the peer does not change.
   */
  forwardedHost: string | undefined | null = null;
  forwarded = "";
  /**
   * The text the data plane last sent upstream for this connection (request line and fields, no
   * blank line), with the head and forwarding fields it was made of: a client that repeats itself
   * gets the same text again, and from its second use on the whole head as bytes.
   */
  sent: SentHead | undefined = undefined;
  /**
   * The head of this connection's last answer written as bytes (ClientResponse.endBytes), with
   * the relayed head and the tail it was made of: the next answer with the same two reuses it.
   */
  answerBase: string | undefined = undefined;
  answerTail: string | undefined = undefined;
  answerBytes: Buffer | undefined = undefined;
  /**
   * Whole answers may go as bytes (endBytes): a plain TCP socket. A TLS socket's write never ends
   * at once (it completes from a later tick), so each would keep endBytes' buffer and need a new one.
   */
  readonly bytesAnswers: boolean;
  /** Upgraded: the socket's reads go to whoever took it, as "data" events. */
  private handedOver = false;
  // The sweeper's view: the data path bumps `step` when a wait starts; the sweeper times it from
  // the first sweep that sees it (a wait runs out between its limit and its limit plus a sweep).
  private wait = Wait.Head;
  private step = 0;
  private seenStep = -1;
  private waitSince = 0;

  constructor(server: ClientServer, socket: net.Socket) {
    this.server = server;
    this.socket = socket;
    this.maxHeaderBytes = server.maxHeaderSize;
    this.bytesAnswers = (socket as { encrypted?: boolean }).encrypted !== true;
    // Plain and TLS sockets alike read into the worker's one buffer (read-buffer.ts), else as a stream.
    if (!acceptedReadInto(socket, this.onRead)) socket.on("data", this.onData);
    socket.on("end", this.onEnd);
    socket.on("error", noop);
    socket.on("close", this.onClose);
  }

  /** Waiting for a request with nothing of it read: safe to close. */
  idle(): boolean {
    return this.state === State.Head && this.buf === undefined;
  }

  check(now: number): void {
    if (this.wait === Wait.None) return;
    if (this.step !== this.seenStep) {
      this.seenStep = this.step;
      this.waitSince = now;
      return;
    }
    const server = this.server;
    if (this.wait === Wait.Head) {
      if (now - this.waitSince < server.headersTimeout) return;
      this.wait = Wait.None;
      this.fail("ERR_HTTP_REQUEST_TIMEOUT", "request head not received in time");
    } else {
      if (now - this.waitSince < server.keepAliveTimeout + IDLE_GRACE_MS) return;
      this.wait = Wait.None;
      if (server.listenerCount("timeout") > 0) server.emit("timeout", this.socket);
      else this.socket.destroy();
    }
  }

  private startWait(wait: Wait): void {
    this.wait = wait;
    this.step++;
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.state === State.Gone) return;
    this.buf = this.buf === undefined ? chunk : Buffer.concat([this.buf, chunk]);
    this.run();
  };

  /** onread mode: `view` is READ_BUFFER's, so what is left unread is copied out before the next read. */
  private readonly onRead = (view: Buffer): void => {
    if (this.handedOver) {
      // The socket is an upgrade's now, and its reader (a tunnel) listens for "data" as on any stream.
      this.socket.emit("data", Buffer.from(view));
      return;
    }
    this.onData(view);
    if (this.buf !== undefined) this.buf = owned(this.buf);
  };

  /** Moves through the bytes read as far as the current request lets. */
  private run(): void {
    for (;;) {
      switch (this.state) {
        case State.Head:
          if (!this.readHead()) return;
          break;
        case State.Body:
          if (!this.readBody()) return;
          break;
        case State.Dump:
          if (!this.readBody()) return;
          break;
        case State.Answering:
          // Pipelined bytes wait for the answer; a client that sends far ahead is not read further.
          if (this.buf !== undefined && this.buf.length > READ_AHEAD_BYTES) this.socket.pause();
          return;
        case State.Gone:
          return;
      }
    }
  }

  /** Returns true when a head was read and a request started. */
  private readHead(): boolean {
    let buf = this.buf;
    if (buf === undefined) return false;
    // Empty lines before a request line are skipped (RFC 9112 §2.2), as Node does.
    let start = 0;
    while (start + 1 < buf.length && buf[start] === 13 && buf[start + 1] === 10) start += 2;
    if (start > 0) {
      buf = start === buf.length ? undefined : buf.subarray(start);
      this.buf = buf;
      if (buf === undefined) return false;
    }
    if (this.wait !== Wait.Head) this.startWait(Wait.Head);
    const end = headEnd(buf);
    if (end === -1 || end + 4 > this.maxHeaderBytes) {
      if (buf.length > this.maxHeaderBytes) this.fail("HPE_HEADER_OVERFLOW", "request head too large");
      // A line break alone can never start a valid head: refused now, not when the limit is reached.
      else if (end === -1 && strayLineBreak(buf, 0)) this.fail("HPE_LF_EXPECTED", "CR or LF alone in the request head");
      return false;
    }
    const head = parseRequestHead(buf.toString("latin1", 0, end), this.lastHead);
    if (isFault(head)) {
      this.fail(head.code, head.why);
      return false;
    }
    this.lastHead = head;
    this.buf = end + 4 === buf.length ? undefined : buf.subarray(end + 4);
    this.wait = Wait.None;
    this.start(head);
    return this.state !== State.Gone;
  }

  private start(head: RequestHead): void {
    const server = this.server;
    const socket = this.socket;
    const req = new ClientRequest(this, head);
    if (head.upgrade) {
      // From here the socket is the upgrade handler's, with what the client sent after the head.
      this.state = State.Gone;
      this.detach();
      const rest = this.buf === undefined ? Buffer.alloc(0) : owned(this.buf);
      this.buf = undefined;
      socket.pause();
      if (server.listenerCount("upgrade") > 0) server.emit("upgrade", req, socket, rest);
      else socket.destroy();
      return;
    }
    const res = new ClientResponse(this, req, head.keepAlive && !this.clientEnded);
    this.req = req;
    this.res = res;
    (socket as SocketWithMessage)._httpMessage = res;
    if (head.chunked) {
      this.chunked = true;
      this.chunk = Chunk.Size;
      this.trailerBytes = 0;
      this.state = State.Body;
    } else if (head.contentLength > 0) {
      this.chunked = false;
      this.remaining = head.contentLength;
      this.state = State.Body;
    } else {
      req.complete = true;
      this.state = State.Answering;
    }
    if (head.expect !== undefined && head.expect.toLowerCase() !== "100-continue") {
      // As Node: an expectation the server cannot meet.
      res.shouldKeepAlive = false;
      res.writeHead(417, ["Content-Length", "0"]);
      res.end();
      return;
    }
    server.emit("request", req, res);
  }

  /** Hands body bytes to the request (or drops them); returns true when the body is over. */
  private readBody(): boolean {
    const req = this.req!;
    const dumping = this.state === State.Dump;
    for (;;) {
      const buf = this.buf;
      if (buf === undefined) return false;
      if (!dumping && req.paused) {
        if (buf.length > READ_AHEAD_BYTES) this.socket.pause();
        return false;
      }
      if (!this.chunked) {
        const n = Math.min(this.remaining, buf.length);
        this.buf = n === buf.length ? undefined : buf.subarray(n);
        this.remaining -= n;
        if (!this.deliver(dumping, n === buf.length ? buf : buf.subarray(0, n))) return false;
        if (this.remaining === 0) return this.bodyDone(dumping);
        continue;
      }
      const r = this.readChunked(buf, dumping);
      if (r === 1) return this.bodyDone(dumping);
      if (r === -1) return false;
    }
  }

  /** One step of a chunked body: 0 went on, -1 needs more bytes (or failed), 1 ended. */
  private readChunked(buf: Buffer, dumping: boolean): 0 | 1 | -1 {
    if (this.chunk === Chunk.Data) {
      const n = Math.min(this.remaining, buf.length);
      this.buf = n === buf.length ? undefined : buf.subarray(n);
      this.remaining -= n;
      if (this.remaining === 0) this.chunk = Chunk.DataEnd;
      return this.deliver(dumping, n === buf.length ? buf : buf.subarray(0, n)) ? 0 : -1;
    }
    if (this.chunk === Chunk.DataEnd) {
      if (buf.length < 2) return buf[0] === 13 ? -1 : this.bodyFault("HPE_STRICT", "chunk data not followed by CR LF");
      if (buf[0] !== 13 || buf[1] !== 10) return this.bodyFault("HPE_STRICT", "chunk data not followed by CR LF");
      this.buf = buf.length === 2 ? undefined : buf.subarray(2);
      this.chunk = Chunk.Size;
      return 0;
    }
    const lf = buf.indexOf(10);
    const limit = this.chunk === Chunk.Size ? MAX_CHUNK_LINE_BYTES : this.maxHeaderBytes - this.trailerBytes;
    if (lf === -1) {
      if (buf.length > limit) {
        return this.chunk === Chunk.Size ? this.bodyFault("HPE_CHUNK_EXTENSIONS_OVERFLOW", "chunk extensions too large") : this.bodyFault("HPE_HEADER_OVERFLOW", "trailer too large");
      }
      return strayLineBreak(buf, 0) ? this.bodyFault("HPE_LF_EXPECTED", "CR or LF alone in the chunked body") : -1;
    }
    if (lf === 0 || buf[lf - 1] !== 13) return this.bodyFault("HPE_LF_EXPECTED", "LF without CR in the chunked body");
    const line = buf.toString("latin1", 0, lf - 1);
    if (line.includes("\r")) return this.bodyFault("HPE_LF_EXPECTED", "CR alone in the chunked body");
    this.buf = lf + 1 === buf.length ? undefined : buf.subarray(lf + 1);
    if (this.chunk === Chunk.Size) {
      const m = CHUNK_SIZE_LINE.exec(line);
      if (m === null) return this.bodyFault("HPE_INVALID_CHUNK_SIZE", "malformed chunk size line");
      if (line.length - m[1]!.length > MAX_CHUNK_EXTENSION_BYTES) return this.bodyFault("HPE_CHUNK_EXTENSIONS_OVERFLOW", "chunk extensions too large");
      // 13 hex digits (without leading zeros) is past what a double holds exactly: refused, not wrapped.
      const digits = m[1]!.replace(/^0+(?=.)/, "");
      if (digits.length > 12) return this.bodyFault("HPE_INVALID_CHUNK_SIZE", "chunk size too large");
      this.remaining = parseInt(digits, 16);
      this.chunk = this.remaining === 0 ? Chunk.Trailer : Chunk.Data;
      return 0;
    }
    // Trailer fields: checked as header fields are, counted against the head limit, then dropped.
    if (line === "") return 1;
    this.trailerBytes += lf + 1;
    if (this.trailerBytes > this.maxHeaderBytes) return this.bodyFault("HPE_HEADER_OVERFLOW", "trailer too large");
    FIELD_LINES.lastIndex = 0;
    if (FIELD_LINES.test(`\r\n${line}`)) return this.bodyFault("HPE_INVALID_HEADER_TOKEN", "malformed trailer field");
    return 0;
  }

  private bodyFault(code: string, why: string): -1 {
    this.fail(code, why);
    return -1;
  }

  /** Passes body bytes on; false when the exchange of bytes stopped (the connection was given up). */
  private deliver(dumping: boolean, bytes: Buffer): boolean {
    if (dumping) {
      this.dumped += bytes.length;
      if (this.dumped > MAX_DUMP_BYTES) {
        this.socket.destroy();
        return false;
      }
      return true;
    }
    // Owned: the reader may keep the chunk (an upstream socket's queued write) past this read.
    if (bytes.length > 0) this.req!.emit("data", owned(bytes));
    return this.state !== State.Gone;
  }

  private bodyDone(dumping: boolean): boolean {
    const req = this.req!;
    req.complete = true;
    if (dumping) {
      this.next();
      return this.state === State.Head;
    }
    this.state = State.Answering;
    req.ended = true;
    req.emit("end");
    if (this.res!.finished) this.next();
    return true;
  }

  /** Whether the request's body is still being read and more of it is left than would be dropped after the answer. */
  unreadBodyTooLarge(): boolean {
    return this.state === State.Body && (this.chunked || this.remaining > MAX_DUMP_BYTES);
  }

  /** The answer went out whole (ClientResponse): on to the next request, or the body left to drop. */
  answered(res: ClientResponse): void {
    if (this.res !== res || this.state === State.Gone) return;
    if (!res.shouldKeepAlive || this.clientEnded) {
      this.close();
      return;
    }
    if (this.state === State.Body) {
      // Answered before its body was read (a 404, a 503): dropped if small, else the connection closes.
      if (this.chunked || this.remaining > MAX_DUMP_BYTES) {
        this.close();
        return;
      }
      this.dumped = 0;
      this.state = State.Dump;
      this.run();
      return;
    }
    if (this.state === State.Answering) {
      this.next();
      this.run();
    }
  }

  private next(): void {
    this.req = undefined;
    this.res = undefined;
    (this.socket as SocketWithMessage)._httpMessage = null;
    this.state = State.Head;
    this.startWait(this.buf === undefined ? Wait.Idle : Wait.Head);
    if (this.clientEnded && this.buf === undefined) this.close();
    else if (this.socket.isPaused()) this.socket.resume();
  }

  /** A request's body reader wants bytes again. */
  resumed(): void {
    if (this.state !== State.Body) return;
    if (this.socket.isPaused()) this.socket.resume();
    this.run();
  }

  /** Refuses what the client sent: the data plane answers (400, 408, 431...) and closes the connection. */
  private fail(code: string, why: string): void {
    const socket = this.socket;
    this.state = State.Gone;
    this.wait = Wait.None;
    this.buf = undefined;
    const err = clientError(code, why);
    if (this.server.listenerCount("clientError") > 0) this.server.emit("clientError", err, socket);
    else socket.destroy();
    // The client's half may stay open: whatever the handler did, nothing more is read here.
    if (!socket.destroyed) socket.destroy();
  }

  /** Ends the connection after what was written: the client gets the whole answer, then a FIN. */
  private close(): void {
    this.state = State.Gone;
    this.wait = Wait.None;
    this.buf = undefined;
    this.socket.end();
    // Whatever the client still sends is dropped; one that keeps its side open is cut by the sweeper's grace.
    this.socket.resume();
    this.socket.setTimeout(IDLE_GRACE_MS * 2, () => this.socket.destroy());
  }

  private readonly onEnd = (): void => {
    this.clientEnded = true;
    switch (this.state) {
      case State.Head:
        // A partial head at the end: nobody to answer.
        if (this.buf !== undefined) this.fail("HPE_INVALID_EOF_STATE", "the client closed mid-head");
        else this.close();
        return;
      case State.Gone:
        return;
      default:
        // As Node's server does (its httpAllowHalfOpen is off): a client that shuts its side
        // mid-request has left, and the request is abandoned, not forwarded or answered.
        this.socket.destroy();
    }
  };

  private readonly onClose = (): void => {
    this.server.conns.delete(this);
    const res = this.res;
    if (this.state !== State.Gone) this.state = State.Gone;
    this.wait = Wait.None;
    if (res !== undefined && !res.closed) res.destroyed = true;
    if (res !== undefined) res.emitClose();
  };

  /** The socket is someone else's now (an upgrade). */
  private detach(): void {
    this.server.conns.delete(this);
    this.wait = Wait.None;
    this.handedOver = true;
    const socket = this.socket;
    socket.off("data", this.onData);
    socket.off("end", this.onEnd);
    socket.off("close", this.onClose);
    // Its error listener stays: an error on a socket nobody listens to would end the process.
  }
}

type SocketWithMessage = net.Socket & { _httpMessage?: ClientResponse | null };

type Listener = (...args: any[]) => void;

/**
 * The part of EventEmitter that requests and answers need (on, once, off, emit; listeners called
 * with the object as `this`), with no storage until the first listener: most requests are never
 * listened to, and an EventEmitter's construction cost as much as the rest of both objects.
 */
export class Events {
  /** Event, listener, once: in turn, in the order they were added. */
  private listeners: (string | Listener | boolean)[] | undefined = undefined;

  on(event: string, listener: Listener): this {
    (this.listeners ??= []).push(event, listener, false);
    return this;
  }

  once(event: string, listener: Listener): this {
    (this.listeners ??= []).push(event, listener, true);
    return this;
  }

  /** Removes the listener added last for the event, as EventEmitter does. */
  off(event: string, listener: Listener): this {
    const l = this.listeners;
    if (l !== undefined) {
      for (let i = l.length - 3; i >= 0; i -= 3) {
        if (l[i] === event && l[i + 1] === listener) {
          l.splice(i, 3);
          break;
        }
      }
    }
    return this;
  }

  removeListener(event: string, listener: Listener): this {
    return this.off(event, listener);
  }

  listenerCount(event: string): number {
    let n = 0;
    const l = this.listeners;
    if (l !== undefined) for (let i = 0; i < l.length; i += 3) if (l[i] === event) n++;
    return n;
  }

  /** Calls the event's listeners as they were when it was emitted, once-listeners removed first. */
  emit(event: string, ...args: unknown[]): boolean {
    const l = this.listeners;
    if (l === undefined) return false;
    let called: Listener[] | undefined;
    for (let i = 0; i < l.length; ) {
      if (l[i] !== event) {
        i += 3;
        continue;
      }
      (called ??= []).push(l[i + 1] as Listener);
      if (l[i + 2] === true) l.splice(i, 3);
      else i += 3;
    }
    if (called === undefined) return false;
    for (const fn of called) fn.apply(this, args);
    return true;
  }
}

/** A client's request: its head, and its body as "data" and "end" events once someone listens. */
export class ClientRequest extends Events {
  readonly conn: ClientConn;
  readonly socket: net.Socket;
  readonly method: string;
  readonly url: string;
  readonly httpVersionMinor: 0 | 1;
  /** The head as parsed: what the data plane routes and forwards by. */
  readonly head: RequestHead;
  /** The body was read whole (or there is none). */
  complete = false;
  /** No body bytes are handed out until someone listens for them (as a Readable), or after pause(). */
  paused = true;
  /** "end" was emitted. */
  ended = false;
  private headersObject: Record<string, string> | undefined = undefined;
  private rawHeadersList: string[] | undefined = undefined;

  constructor(conn: ClientConn, head: RequestHead) {
    super();
    this.conn = conn;
    this.socket = conn.socket;
    this.method = head.method;
    this.url = head.url;
    this.httpVersionMinor = head.versionMinor;
    this.head = head;
  }

  /** The fields' names and values in turn, as Node's: built when first asked for (the data plane reads `head`). */
  get rawHeaders(): string[] {
    return (this.rawHeadersList ??= rawHeadersOf(this.head.text));
  }

  get httpVersion(): string {
    return this.httpVersionMinor === 1 ? "1.1" : "1.0";
  }

  /** The fields by lowercase name (repeated ones joined with ", "), built when first asked for. */
  get headers(): Record<string, string> {
    if (this.headersObject === undefined) {
      const h: Record<string, string> = Object.create(null);
      const raw = this.rawHeaders;
      for (let i = 0; i < raw.length; i += 2) {
        const name = raw[i]!.toLowerCase();
        h[name] = h[name] === undefined ? raw[i + 1]! : `${h[name]}, ${raw[i + 1]!}`;
      }
      this.headersObject = h;
    }
    return this.headersObject;
  }

  override on(event: string, listener: Listener): this {
    super.on(event, listener);
    // As a Readable: listening for data starts the flow, on the next tick.
    if (event === "data" && this.paused) process.nextTick(() => this.resume());
    return this;
  }

  pause(): this {
    this.paused = true;
    return this;
  }

  resume(): this {
    if (!this.paused) return this;
    this.paused = false;
    // As a Readable: a request without a body ends as soon as it is read.
    if (this.complete && !this.ended) {
      this.ended = true;
      this.emit("end");
      return this;
    }
    this.conn.resumed();
    return this;
  }

  isPaused(): boolean {
    return this.paused;
  }
}

/**
 * The answer to one request: a head written with its first body bytes, a small answer in one
 * write. What the data plane uses of ServerResponse, with the same names.
 */
export class ClientResponse extends Events {
  readonly conn: ClientConn;
  readonly req: ClientRequest;
  statusCode = 200;
  shouldKeepAlive: boolean;
  headersSent = false;
  writableEnded = false;
  writableFinished = false;
  /** The connection failed or was cut before the answer went out whole. */
  destroyed = false;
  /** The head, not yet written: it goes out with the first body bytes. */
  private head: string | undefined = undefined;
  private chunked = false;
  private noBody = false;
  private extra: string[] | undefined = undefined;
  /** A head that is a relayed head and the keep-alive tail, nothing else: the two (for endBytes). */
  private relayBase: string | undefined = undefined;
  private relayTail: string | undefined = undefined;
  closed = false;

  constructor(conn: ClientConn, req: ClientRequest, keepAlive: boolean) {
    super();
    this.conn = conn;
    this.req = req;
    this.shouldKeepAlive = keepAlive;
  }

  get finished(): boolean {
    return this.writableFinished;
  }

  get socket(): net.Socket {
    return this.conn.socket;
  }

  /** A field added to the head writeHead writes (HSTS). */
  setHeader(name: string, value: string): this {
    (this.extra ??= []).push(name, value);
    return this;
  }

  /**
   * As ServerResponse's, with the fields as a flat [name, value, ...] array; throws on a field that
   * cannot be written.
   */
  writeHead(status: number, reasonOrFields?: string | string[], maybeFields?: string[]): this {
    if (this.headersSent) throw new Error("the answer's head was already written");
    const reason = typeof reasonOrFields === "string" ? reasonOrFields : http.STATUS_CODES[status] ?? "";
    const fields = typeof reasonOrFields === "string" ? maybeFields ?? [] : reasonOrFields ?? [];
    if (!(status >= 100 && status <= 999) || INVALID_FIELD_CHAR.test(reason)) throw new Error(`invalid status ${status} ${reason}`);
    let text = `HTTP/1.1 ${status} ${reason}\r\n`;
    let length = false;
    let date = false;
    for (let i = 0; i < fields.length; i += 2) {
      const name = fields[i]!;
      const value = fields[i + 1]!;
      if (!TOKEN.test(name)) throw new Error(`invalid header name ${JSON.stringify(name)}`);
      if (INVALID_FIELD_CHAR.test(value)) throw new Error(`invalid character in header ${name}`);
      if (equalsLower(name, "content-length")) length = true;
      else if (equalsLower(name, "date")) date = true;
      else if (equalsLower(name, "connection") && /(?:^|,)\s*close\s*(?:,|$)/i.test(value)) {
        this.shouldKeepAlive = false;
        continue;
      }
      text += `${name}: ${value}\r\n`;
    }
    return this.endHead(text, status, length, date);
  }

  /**
   * writeHead for a head relayed from an upstream, whose parser checked it: `head` is the status
   * line and the field lines as read (each with its CR LF), the hop-by-hop ones left out.
   */
  relayHead(status: number, head: string, hasLength: boolean, hasDate: boolean): this {
    if (this.headersSent) throw new Error("the answer's head was already written");
    return this.endHead(head, status, hasLength, hasDate, true);
  }

  /** The fields every answer's head ends with (the proxy's own, Date, framing, Connection), after `text`. */
  private endHead(text: string, status: number, length: boolean, date: boolean, relayed = false): this {
    const extra = this.extra;
    if (extra !== undefined) for (let i = 0; i < extra.length; i += 2) text += `${extra[i]}: ${extra[i + 1]}\r\n`;
    this.noBody = this.req.method === "HEAD" || status === 204 || status === 304 || status < 200;
    if (!length && !this.noBody) {
      // HTTP/1.0 has no chunked coding: the end of the connection ends the body.
      if (this.req.httpVersionMinor === 1) {
        this.chunked = true;
        text += "Transfer-Encoding: chunked\r\n";
      } else {
        this.shouldKeepAlive = false;
      }
    }
    // A body left unread beyond what would be dropped: the connection ends after this answer, and says so.
    if (this.shouldKeepAlive && this.conn.unreadBodyTooLarge()) this.shouldKeepAlive = false;
    const server = this.conn.server;
    if (this.shouldKeepAlive) {
      const tail = server.keepAliveTail(!date);
      if (relayed && extra === undefined && !this.chunked) {
        this.relayBase = text;
        this.relayTail = tail;
      }
      text += tail;
    } else text += date ? "Connection: close\r\n\r\n" : `Date: ${server.date}\r\nConnection: close\r\n\r\n`;
    this.statusCode = status;
    this.head = text;
    this.headersSent = true;
    return this;
  }

  writeContinue(): void {
    if (!this.headersSent) this.conn.socket.write("HTTP/1.1 100 Continue\r\n\r\n", "latin1");
  }

  /** A body chunk; false when the client's socket is full (a "drain" follows). */
  write(chunk: Buffer | string, encoding: BufferEncoding = "utf8"): boolean {
    if (this.writableEnded || this.destroyed) return false;
    if (!this.headersSent) this.writeHead(this.statusCode);
    const socket = this.conn.socket;
    const head = this.head;
    this.head = undefined;
    if (this.noBody || chunk.length === 0) return head === undefined ? true : socket.write(head, "latin1");
    let ok: boolean;
    socket.cork();
    if (head !== undefined) socket.write(head, "latin1");
    if (this.chunked) {
      const n = typeof chunk === "string" ? Buffer.byteLength(chunk, encoding) : chunk.length;
      socket.write(`${n.toString(16)}\r\n`, "latin1");
      socket.write(chunk, encoding);
      ok = socket.write("\r\n", "latin1");
    } else {
      ok = socket.write(chunk, encoding);
    }
    socket.uncork();
    if (!ok) socket.once("drain", () => this.emit("drain"));
    return ok;
  }

  /** The last of the answer; a string body with a pending head goes out in one write. */
  end(chunk?: Buffer | string, encoding: BufferEncoding = "utf8"): this {
    if (this.writableEnded || this.destroyed) return this;
    if (!this.headersSent) {
      // As Node: an answer ended at once gets a Content-Length rather than chunks.
      const n = chunk === undefined ? 0 : typeof chunk === "string" ? Buffer.byteLength(chunk, encoding) : chunk.length;
      this.writeHead(this.statusCode, ["Content-Length", String(n)]);
    }
    this.writableEnded = true;
    const socket = this.conn.socket;
    const head = this.head ?? "";
    this.head = undefined;
    const body = this.noBody || chunk === undefined || chunk.length === 0 ? undefined : chunk;
    // A closure only where socket.write takes the callback; writeLatin1 passes the answer along.
    const done = (err?: Error | null): void => {
      if (!err) this.onFlushed();
    };
    if (this.chunked) {
      if (body === undefined) socket.write(`${head}0\r\n\r\n`, "latin1", done);
      else if (typeof body === "string" && (encoding === "latin1" || encoding === "ascii")) {
        socket.write(`${head}${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`, "latin1", done);
      } else {
        socket.cork();
        const n = typeof body === "string" ? Buffer.byteLength(body, encoding) : body.length;
        socket.write(`${head}${n.toString(16)}\r\n`, "latin1");
        socket.write(body, encoding);
        socket.write("\r\n0\r\n\r\n", "latin1", done);
        socket.uncork();
      }
    } else if (body === undefined) {
      if (head !== "") writeLatin1(socket, head, flushed, this);
      else process.nextTick(flushed, this);
    } else if (typeof body === "string" && (encoding === "latin1" || encoding === "ascii")) {
      writeLatin1(socket, head + body, flushed, this);
    } else if (head === "") {
      socket.write(body, encoding, done);
    } else {
      socket.cork();
      socket.write(head, "latin1");
      socket.write(body, encoding, done);
      socket.uncork();
    }
    return this;
  }

  /**
   * end() with the whole body as bytes, buf from start to end, valid only during the call (a view
   * of the read buffer). After a relayed head, head and body go out as one write of bytes: the
   * head's bytes are the last answer's when its relayed head and tail are the same, the body is
   * copied once, into a buffer reused while each write completes at once.
   */
  endBytes(buf: Buffer, start: number, end: number): this {
    const base = this.relayBase;
    const tail = this.relayTail;
    const n = end - start;
    if (base === undefined || tail === undefined || this.head === undefined || this.writableEnded || this.destroyed || this.noBody || n === 0 || !this.conn.bytesAnswers) {
      return this.end(buf.toString("latin1", start, end), "latin1");
    }
    const conn = this.conn;
    let head = conn.answerBytes;
    if (head === undefined || conn.answerBase !== base || conn.answerTail !== tail) {
      head = Buffer.from(base + tail, "latin1");
      conn.answerBase = base;
      conn.answerTail = tail;
      conn.answerBytes = head;
    }
    const total = head.length + n;
    if (total > answerBuffer.length) return this.end(buf.toString("latin1", start, end), "latin1");
    this.writableEnded = true;
    this.head = undefined;
    answerBuffer.set(head, 0);
    buf.copy(answerBuffer, head.length, start, end);
    // Not written whole at once: the socket keeps these bytes until it has written them.
    if (!writeBytes(conn.socket, answerBuffer.subarray(0, total), flushed, this)) answerBuffer = Buffer.allocUnsafeSlow(ANSWER_BUFFER_BYTES);
    return this;
  }

  /** The whole answer is with the kernel. */
  onFlushed(): void {
    if (this.destroyed) return;
    this.writableFinished = true;
    // Closed before the connection moves on: the exchange leaves its pool before the next request enters one.
    this.emitClose();
    this.conn.answered(this);
  }

  /** "close", once: after the answer went out, or when the connection ended before. */
  emitClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.emit("close");
  }

  destroy(): void {
    this.destroyed = true;
    this.conn.socket.destroy();
  }
}

/** What ClientConn.sent holds. */
export interface SentHead {
  head: RequestHead;
  forwarding: string;
  text: string;
  /** `text` and the blank line that ends a head, as bytes: made when the text is used again. */
  bytes: Buffer | undefined;
}


/** Where endBytes puts a head and its body: the upstream's whole small bodies and a head fit. */
const ANSWER_BUFFER_BYTES = 24 * 1024;
let answerBuffer = Buffer.allocUnsafeSlow(ANSWER_BUFFER_BYTES);

function flushed(res: ClientResponse): void {
  res.onFlushed();
}

function noop(): void {}
