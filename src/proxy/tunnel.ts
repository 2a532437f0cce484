// An Upgrade request (WebSocket and the like) on its way to an upstream, and the tunnel it may
// become. Only a 101 Switching Protocols turns the client's connection into a tunnel piped both
// ways. Any other answer is relayed as a plain response and both connections are closed after
// it, and nothing the client sent after its request head ever reaches the upstream before a 101:
// otherwise a client could talk to the upstream past the proxy's routing and forwarding fields
// (request smuggling through an upgrade the upstream did not take).

import net from "node:net";
import type { Upstream } from "./contract.js";
import type { ExchangeHost } from "./exchange.js";
import { endRaw, rawJsonResponse } from "./http.js";
import type { Cuttable, Match, Pool } from "./table.js";

/** What a tunnel needs of the data plane beyond what an exchange needs: its counters. */
export interface TunnelHost extends ExchangeHost {
  readonly tunnels: { open: number; total: number };
}

/** The largest upstream answer head (status line and fields) the tunnel reads. */
export const MAX_UPGRADE_RESPONSE_HEAD_BYTES = 64 * 1024;
const MAX_CHUNK_LINE_BYTES = 4096;

const enum State {
  /** Connecting to the upstream. */
  Connecting,
  /** The request went out; reading the upstream's answer head. */
  Handshake,
  /** Relaying a non-101 answer's body; both connections close after it. */
  Refused,
  /** Switched: bytes piped both ways. */
  Open,
  Closed,
}

const enum Body {
  None,
  Length,
  Chunked,
  UntilClose,
}

const enum Chunk {
  Size,
  Data,
  DataEnd,
  Trailer,
}

/** Response fields that are about one connection, never relayed as they are. */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "proxy-authenticate", "transfer-encoding", "content-length"]);

/** An upgrade request through one pool: one upstream connection, retried once when refused. */
export class Tunnel implements Cuttable {
  readonly plane: TunnelHost;
  readonly pool: Pool;
  readonly client: net.Socket;
  /** What the client sent after its request head: held back until a 101. */
  readonly head: Buffer;
  readonly preamble: string;
  readonly connectMs: number;
  readonly responseMs: number;
  readonly idleMs: number;
  upstream: Upstream;
  upSocket: net.Socket | undefined;
  attempts = 0;
  state = State.Connecting;
  poolIndex = -1;
  private timer: NodeJS.Timeout | undefined;
  /** The upstream's answer head so far, while in Handshake. */
  private pending: Buffer | undefined;
  // A refused upgrade's body framing, as the relayed bytes go by.
  private body = Body.None;
  private remaining = 0;
  private chunk = Chunk.Size;
  /** A chunk-size or trailer line not yet ended by its LF. */
  private line = "";
  /** performance.now() at the request's arrival, until it is counted by series (RouteTable.metrics); -1 once counted, or never to be. */
  private started: number;

  constructor(plane: TunnelHost, match: Match, client: net.Socket, head: Buffer, preamble: string, upstream: Upstream, started = -1) {
    this.plane = plane;
    this.pool = match.pool;
    this.client = client;
    this.head = head;
    this.preamble = preamble;
    this.upstream = upstream;
    this.connectMs = match.timeouts.upstreamConnectMs;
    this.responseMs = match.timeouts.upstreamResponseMs;
    this.idleMs = match.timeouts.tunnelIdleMs;
    this.started = started;
    client.on("close", () => this.close(this.state === State.Open));
    client.on("timeout", () => this.onClientTimeout());
  }

  connect(): void {
    this.attempts++;
    this.state = State.Connecting;
    const up = net.connect({ host: this.upstream.host, port: this.upstream.port, noDelay: true });
    this.upSocket = up;
    this.arm(this.connectMs);
    up.once("connect", () => {
      if (this.upSocket !== up || this.state !== State.Connecting) return;
      this.state = State.Handshake;
      this.arm(this.responseMs);
      up.write(this.preamble, "latin1");
    });
    up.on("data", this.onUpstreamData);
    up.on("error", (err: NodeJS.ErrnoException) => this.onUpstreamError(up, err));
    up.on("close", () => {
      if (this.upSocket === up) this.onUpstreamClose();
    });
  }

  private arm(ms: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.onTimeout(), ms);
  }

  private onTimeout(): void {
    this.timer = undefined;
    if (this.state !== State.Connecting && this.state !== State.Handshake) return;
    this.plane.timeouts.tunnelHandshake++;
    const up = this.upSocket;
    this.upSocket = undefined;
    up?.destroy();
    if (this.state === State.Connecting && this.attempts < 2) {
      const next = this.pool.pick(this.plane.router.unhealthy, this.upstream);
      if (next && next !== this.upstream) {
        this.plane.retried(this.pool);
        this.upstream = next;
        this.connect();
        return;
      }
    }
    // The same answer as a plain request's timeout, so that clients and logs see one shape.
    this.answer(504, { error: "upstream timeout", phase: this.state === State.Connecting ? "connect" : "response", service: this.pool.service });
  }

  private readonly onUpstreamData = (chunk: Buffer): void => {
    if (this.state === State.Handshake) this.onHeadBytes(chunk);
    else if (this.state === State.Refused) this.relay(chunk);
  };

  /** Reads the upstream's answer head; interim answers (100, 103) are skipped. */
  private onHeadBytes(chunk: Buffer): void {
    let buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = undefined;
    for (;;) {
      const end = buf.indexOf("\r\n\r\n", 0, "latin1");
      if (end === -1) {
        if (buf.length > MAX_UPGRADE_RESPONSE_HEAD_BYTES) return this.badAnswer("answer head too large");
        this.pending = buf;
        return;
      }
      if (end > MAX_UPGRADE_RESPONSE_HEAD_BYTES) return this.badAnswer("answer head too large");
      const head = parseHead(buf.toString("latin1", 0, end));
      if (typeof head === "string") return this.badAnswer(head);
      const rest = buf.subarray(end + 4);
      if (head.status === 101) return this.open(head, rest);
      if (head.status >= 200) return this.refuse(head, rest);
      buf = rest;
    }
  }

  /** A 101: the answer goes to the client, then what each side sent so far, then the pipes. */
  private open(head: Head, rest: Buffer): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const up = this.upSocket!;
    const client = this.client;
    this.state = State.Open;
    this.counted(101);
    this.plane.tunnels.open++;
    this.plane.tunnels.total++;
    let text = `HTTP/1.1 101 ${head.reason}\r\n`;
    for (let i = 0; i < head.fields.length; i += 2) text += `${head.fields[i]}: ${head.fields[i + 1]}\r\n`;
    text += `Connection: Upgrade\r\n${head.upgrade === undefined ? "" : `Upgrade: ${head.upgrade}\r\n`}\r\n`;
    client.write(text, "latin1");
    if (rest.length > 0) client.write(rest);
    if (this.head.length > 0) up.write(this.head);
    up.off("data", this.onUpstreamData);
    client.setTimeout(this.idleMs);
    up.pipe(client);
    client.pipe(up);
  }

  /**
   * Anything but a 101: relayed as a plain response with its own framing, after which both
   * connections close. The client's held-back bytes are dropped.
   */
  private refuse(head: Head, rest: Buffer): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.state = State.Refused;
    this.counted(head.status);
    let text = `HTTP/1.1 ${head.status} ${head.reason}\r\n`;
    for (let i = 0; i < head.fields.length; i += 2) text += `${head.fields[i]}: ${head.fields[i + 1]}\r\n`;
    if (head.status === 204 || head.status === 304 || this.preamble.startsWith("HEAD ")) {
      this.body = Body.None;
    } else if (head.transferEncoding !== undefined) {
      // Chunked last: relayed as it comes. Anything else ends when the upstream closes.
      this.body = /(?:^|,)\s*chunked\s*$/i.test(head.transferEncoding) ? Body.Chunked : Body.UntilClose;
      if (this.body === Body.Chunked) text += "Transfer-Encoding: chunked\r\n";
    } else if (head.contentLength !== undefined) {
      this.body = head.contentLength === 0 ? Body.None : Body.Length;
      this.remaining = head.contentLength;
      text += `Content-Length: ${head.contentLength}\r\n`;
    } else {
      this.body = Body.UntilClose;
    }
    this.client.write(`${text}Connection: close\r\n\r\n`, "latin1");
    this.client.setTimeout(this.idleMs);
    if (this.body === Body.None) return this.refused();
    if (rest.length > 0) this.relay(rest);
  }

  /** Passes a refused upgrade's body bytes on, until its framing says it is complete. */
  private relay(chunk: Buffer): void {
    let end = chunk.length;
    let done = false;
    if (this.body === Body.Length) {
      end = Math.min(chunk.length, this.remaining);
      this.remaining -= end;
      done = this.remaining === 0;
    } else if (this.body === Body.Chunked) {
      const r = this.scanChunked(chunk);
      if (r === -2) return this.badAnswer("malformed chunked body");
      if (r >= 0) {
        end = r;
        done = true;
      }
    }
    if (!this.client.write(end === chunk.length ? chunk : chunk.subarray(0, end))) {
      // The client reads slower than the upstream writes.
      const up = this.upSocket;
      up?.pause();
      this.client.once("drain", () => up?.resume());
    }
    if (done) this.refused();
  }

  /** Follows chunked framing; returns where the body ends in chunk, -1 when it goes on, -2 when malformed. */
  private scanChunked(chunk: Buffer): number {
    let pos = 0;
    while (pos < chunk.length) {
      if (this.chunk === Chunk.Data) {
        const n = Math.min(this.remaining, chunk.length - pos);
        pos += n;
        this.remaining -= n;
        if (this.remaining === 0) this.chunk = Chunk.DataEnd;
        continue;
      }
      const nl = chunk.indexOf(10, pos);
      if (nl === -1) {
        this.line += chunk.toString("latin1", pos);
        return this.line.length > MAX_CHUNK_LINE_BYTES ? -2 : -1;
      }
      const line = (this.line + chunk.toString("latin1", pos, nl)).replace(/\r$/, "");
      this.line = "";
      pos = nl + 1;
      if (this.chunk === Chunk.Size) {
        const m = /^[0-9a-fA-F]{1,12}/.exec(line);
        if (!m) return -2;
        this.remaining = parseInt(m[0], 16);
        this.chunk = this.remaining === 0 ? Chunk.Trailer : Chunk.Data;
      } else if (this.chunk === Chunk.DataEnd) {
        if (line !== "") return -2;
        this.chunk = Chunk.Size;
      } else if (line === "") {
        // The empty line after the trailer fields ends the body.
        return pos;
      }
    }
    return -1;
  }

  /** A refused upgrade's answer went out whole: both connections close. */
  private refused(): void {
    this.close(true, false);
    endRaw(this.client);
  }

  private badAnswer(why: string): void {
    this.plane.upstreamFailed(this.pool);
    if (this.state === State.Handshake) {
      this.upSocket?.destroy();
      this.upSocket = undefined;
      this.answer(502, { error: "upstream failed", code: "EPROTO", why });
    } else {
      this.close(false);
    }
  }

  /** Answers the client (nothing went to it yet) and closes both connections. */
  private answer(status: number, body: object): void {
    this.counted(status);
    this.close(false, false);
    endRaw(this.client, rawJsonResponse(status, body));
  }

  private onUpstreamError(up: net.Socket, err: NodeJS.ErrnoException): void {
    if (this.upSocket !== up || this.state === State.Closed) return;
    this.plane.upstreamFailed(this.pool);
    if (this.state === State.Connecting) {
      this.plane.noteFailure(this.upstream, err);
      const next = err.code === "ECONNREFUSED" && this.attempts < 2 ? this.pool.pick(this.plane.router.unhealthy, this.upstream) : undefined;
      if (next) {
        this.plane.retried(this.pool);
        this.upstream = next;
        this.connect();
        return;
      }
    }
    if (this.state === State.Connecting || this.state === State.Handshake) {
      this.upSocket = undefined;
      this.answer(502, { error: "upstream failed", code: err.code ?? err.message });
      return;
    }
    this.close(false);
  }

  private onUpstreamClose(): void {
    switch (this.state) {
      case State.Handshake:
        // Closed without a whole answer head.
        this.upSocket = undefined;
        this.answer(502, { error: "upstream failed", code: "ECONNRESET" });
        return;
      case State.Refused:
        // Until-close bodies end here; a cut-short framed body ends the client's connection too.
        if (this.body === Body.UntilClose) this.refused();
        else this.close(false);
        return;
      case State.Open:
        // The client gets what was already piped before its connection ends.
        this.close(true, false);
        endRaw(this.client);
        return;
      default:
        return;
    }
  }

  /** No byte either way for idleMs (an open tunnel, or a refused answer's body), or a lingering client. */
  private onClientTimeout(): void {
    if (this.state === State.Open) this.plane.timeouts.tunnelIdle++;
    if (this.state !== State.Closed) this.close(this.state === State.Open);
    else this.client.destroy();
  }

  /** `destroyClient` false: the caller ends the client's connection itself, after a last answer. */
  close(ok: boolean, destroyClient = true): void {
    if (this.state === State.Closed) return;
    // Closed before any answer: the client left, or a drain cut it.
    this.counted(0);
    if (this.state === State.Open) this.plane.tunnels.open--;
    this.state = State.Closed;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.upSocket?.destroy();
    if (destroyClient) this.client.destroy();
    this.pool.leave(this, ok);
  }

  cut(): void {
    this.close(false);
  }

  /** Counts the upgrade request once, by its answer (101 included), timed to that answer rather than the tunnel's life. */
  private counted(status: number): void {
    if (this.started < 0) return;
    this.pool.series.record(status, performance.now() - this.started);
    this.started = -1;
  }
}

interface Head {
  status: number;
  reason: string;
  /** The fields to relay, names and values in turn: hop-by-hop ones and those Connection names left out. */
  fields: string[];
  upgrade: string | undefined;
  transferEncoding: string | undefined;
  contentLength: number | undefined;
}

/** Parses an answer head (without its blank line), or says what is wrong with it. */
export function parseHead(text: string): Head | string {
  const lines = text.split("\r\n");
  const statusLine = lines[0]!;
  const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(statusLine);
  if (!m) return "malformed status line";
  const head: Head = { status: Number(m[1]), reason: m[2] ?? "", fields: [], upgrade: undefined, transferEncoding: undefined, contentLength: undefined };
  let connection = "";
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(":");
    if (colon <= 0 || !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(line.slice(0, colon))) return "malformed header field";
    const name = line.slice(0, colon);
    const value = line.slice(colon + 1).trim();
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower)) {
      if (lower === "connection") connection += `,${value.toLowerCase()}`;
      else if (lower === "upgrade") head.upgrade = head.upgrade === undefined ? value : `${head.upgrade}, ${value}`;
      else if (lower === "transfer-encoding") head.transferEncoding = head.transferEncoding === undefined ? value : `${head.transferEncoding}, ${value}`;
      else if (lower === "content-length") {
        const n = /^\d{1,15}$/.test(value) ? Number(value) : NaN;
        if (Number.isNaN(n) || (head.contentLength !== undefined && head.contentLength !== n)) return "invalid Content-Length";
        head.contentLength = n;
      }
      continue;
    }
    head.fields.push(name, value);
  }
  if (connection !== "") {
    const named = new Set(connection.split(",").map((t) => t.trim()));
    let w = 0;
    for (let r = 0; r < head.fields.length; r += 2) {
      if (named.has(head.fields[r]!.toLowerCase())) continue;
      head.fields[w++] = head.fields[r]!;
      head.fields[w++] = head.fields[r + 1]!;
    }
    head.fields.length = w;
  }
  return head;
}
