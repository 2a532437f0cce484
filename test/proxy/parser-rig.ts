// The rig for the upstream-parser tests: Node's http client as the oracle for an upstream byte
// stream, the proxy fed the same bytes by a raw upstream, and the judge that compares the two.

import http from "node:http";
import net from "node:net";
import { DROPPED_RESPONSE_HEADERS } from "../../src/proxy/http.js";
import { type TestProxy, route, startTestProxy, tableWith } from "./helpers.js";

/** A field line as a strict client reads one: name, colon, OWS, value without OWS at either end, OWS. */
const FIELD_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[\t ]*((?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?)[\t ]*$/;

/** What the upstream answers to the first request of a case. */
export interface Script {
  method: "GET" | "HEAD";
  /** The response bytes (latin1 strings), in the pieces the upstream writes, a tick apart. */
  pieces: string[];
  /**
   * The last piece waits for the next request on the same upstream connection (or 20 ms): a body
   * smuggled behind a bodyless answer reaches a proxy that reused the socket as its next answer.
   */
  holdLast?: boolean;
}

export type NodeVerdict =
  | { kind: "response"; status: number; headers: string[]; body: Buffer; needsEof: boolean }
  | { kind: "error"; detail: string };

/** Neither Node nor the proxy takes this long on a loopback case, even on a busy machine: a hang. */
const ORACLE_HANG_MS = 5_000;
const CASE_DEADLINE_MS = 5_000;
/** The known-good answer to every second request, so that a smuggled answer cannot pass for it. */
const secondBody = (id: number): string => `second answer for case ${id}`;

function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Node's http client as the oracle: what it makes of the bytes, written at once. When Node has
 * read all of them and still waits, the upstream closes, and `needsEof` says the verdict took EOF.
 */
class NodeOracle {
  private readonly server: net.Server;
  private port = 0;
  private current: { bytes: Buffer; written: () => void; socket?: net.Socket } | undefined;

  private constructor() {
    this.server = net.createServer((socket) => {
      socket.on("error", () => {});
      let head = "";
      const onData = (d: Buffer): void => {
        head += d.toString("latin1");
        if (!head.includes("\r\n\r\n") || !this.current) return;
        socket.off("data", onData);
        this.current.socket = socket;
        socket.write(this.current.bytes);
        this.current.written();
      };
      socket.on("data", onData);
    });
  }

  static async start(): Promise<NodeOracle> {
    const o = new NodeOracle();
    await new Promise<void>((resolve) => o.server.listen(0, "127.0.0.1", resolve));
    o.port = (o.server.address() as net.AddressInfo).port;
    return o;
  }

  verdict(bytes: Buffer, method: string): Promise<NodeVerdict> {
    return new Promise((resolve) => {
      let settled = false;
      let needsEof = false;
      let received = 0;
      let res: http.IncomingMessage | undefined;
      const chunks: Buffer[] = [];
      const settle = (v: NodeVerdict): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.current?.socket?.destroy();
        this.current = undefined;
        req.destroy();
        resolve(v);
      };
      const settleResponse = (): void =>
        settle({ kind: "response", status: res!.statusCode!, headers: res!.rawHeaders, body: Buffer.concat(chunks), needsEof });
      // Node's own 'data' listener ran first: everything received has been parsed.
      const quiet = async (): Promise<void> => {
        await tick();
        await tick();
        if (settled || res?.complete) return;
        needsEof = true;
        this.current?.socket?.end();
      };
      const timer = setTimeout(() => settle({ kind: "error", detail: "hang" }), ORACLE_HANG_MS);
      this.current = { bytes, written: () => void (bytes.length === 0 && quiet()) };
      const req = http.request({ host: "127.0.0.1", port: this.port, method, path: "/", agent: false }, (r) => {
        res = r;
        r.on("data", (c: Buffer) => chunks.push(c));
        r.on("end", () => (r.complete ? settleResponse() : settle({ kind: "error", detail: "incomplete" })));
        r.on("error", (e: NodeJS.ErrnoException) => settle({ kind: "error", detail: `after head: ${e.code ?? e.message}` }));
      });
      req.on("socket", (s) =>
        s.on("data", (d: Buffer) => {
          received += d.length;
          if (received >= bytes.length) void quiet();
        }),
      );
      // A 101 with Upgrade and Connection: upgrade switches protocols, which Node accepts.
      req.on("upgrade", (r: http.IncomingMessage) => settle({ kind: "response", status: r.statusCode!, headers: r.rawHeaders, body: Buffer.alloc(0), needsEof: false }));
      req.on("error", (e: NodeJS.ErrnoException) => {
        // Bytes after a complete response fail the connection, not the response.
        if (res?.complete) setImmediate(settleResponse);
        else settle({ kind: "error", detail: `${e.code ?? ""} ${e.message}` });
      });
      req.end();
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

export type ClientResponse =
  | { kind: "response"; status: number; headers: string[]; body: Buffer }
  | { kind: "broken"; detail: string; status?: number };

/** A client connection to the proxy that reads its answers byte by byte, strictly. */
class RawClient {
  readonly socket: net.Socket;
  private buf = Buffer.alloc(0);
  closed = false;
  private wake: (() => void) | undefined;

  constructor(port: number) {
    this.socket = net.connect({ host: "127.0.0.1", port });
    this.socket.on("data", (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake?.();
    });
    this.socket.on("error", () => {});
    this.socket.on("close", () => {
      this.closed = true;
      this.wake?.();
    });
  }

  /** Whatever arrived that no response has claimed. */
  take(): Buffer {
    const b = this.buf;
    this.buf = Buffer.alloc(0);
    return b;
  }

  private async more(deadline: number): Promise<void> {
    if (this.closed) throw new Error("closed");
    const wait = deadline - Date.now();
    if (wait <= 0) throw new Error("hang");
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, wait);
      this.wake = () => {
        clearTimeout(t);
        this.wake = undefined;
        resolve();
      };
    });
  }

  private async until(marker: string, deadline: number): Promise<string> {
    for (;;) {
      const i = this.buf.indexOf(marker, 0, "latin1");
      if (i !== -1) {
        const s = this.buf.toString("latin1", 0, i);
        this.buf = this.buf.subarray(i + marker.length);
        return s;
      }
      await this.more(deadline);
    }
  }

  private async bytes(n: number, deadline: number): Promise<Buffer> {
    while (this.buf.length < n) await this.more(deadline);
    const b = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return b;
  }

  async response(method: string, deadline: number): Promise<ClientResponse> {
    let status: number | undefined;
    try {
      const head = await this.until("\r\n\r\n", deadline);
      const [statusLine, ...lines] = head.split("\r\n");
      const m = /^HTTP\/1\.1 (\d{3})(?: |$)/.exec(statusLine!);
      if (!m) return { kind: "broken", detail: `bad status line from the proxy: ${JSON.stringify(statusLine)}` };
      status = Number(m[1]);
      const headers: string[] = [];
      for (const line of lines) {
        // RFC 9112 §5.1: a token, a colon, the value between optional SP and HTAB, which a
        // recipient drops: the proxy relays the upstream's field lines as they were written.
        const m = FIELD_LINE.exec(line);
        if (!m) return { kind: "broken", status, detail: `bad header line from the proxy: ${JSON.stringify(line)}` };
        headers.push(m[1]!, m[2]!);
      }
      const get = (name: string): string[] => headers.filter((_, i) => i % 2 === 1 && headers[i - 1]!.toLowerCase() === name);
      let body: Buffer;
      if (method === "HEAD" || status === 204 || status === 304) {
        body = Buffer.alloc(0);
      } else if (get("transfer-encoding").length > 0) {
        if (get("transfer-encoding").join() !== "chunked" || get("content-length").length > 0) {
          return { kind: "broken", status, detail: `ambiguous framing from the proxy: ${JSON.stringify(headers)}` };
        }
        const parts: Buffer[] = [];
        for (;;) {
          const sizeLine = await this.until("\r\n", deadline);
          if (!/^[0-9a-f]+$/.test(sizeLine)) return { kind: "broken", status, detail: `bad chunk size from the proxy: ${JSON.stringify(sizeLine)}` };
          const size = parseInt(sizeLine, 16);
          if (size === 0) break;
          parts.push(Buffer.from(await this.bytes(size, deadline)));
          if ((await this.bytes(2, deadline)).toString("latin1") !== "\r\n") return { kind: "broken", status, detail: "no CRLF after a chunk from the proxy" };
        }
        if ((await this.until("\r\n", deadline)) !== "") return { kind: "broken", status, detail: "trailers from the proxy" };
        body = Buffer.concat(parts);
      } else if (get("content-length").length > 0) {
        const lengths = get("content-length");
        if (lengths.length !== 1 || !/^\d+$/.test(lengths[0]!)) return { kind: "broken", status, detail: `bad Content-Length from the proxy: ${lengths.join()}` };
        body = Buffer.from(await this.bytes(Number(lengths[0]), deadline));
      } else {
        while (!this.closed) await this.more(deadline);
        body = this.take();
      }
      return { kind: "response", status, headers, body };
    } catch (e) {
      return { kind: "broken", status, detail: (e as Error).message };
    }
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export interface ProxyOutcome {
  first: ClientResponse;
  second: ClientResponse;
  /** Bytes the proxy sent on the client connection after the first response: a desync. */
  afterFirst: string;
  afterSecond: string;
  sameClientConnection: boolean;
}

/** The proxy with one route to a raw upstream that plays scripts, and clients that send two requests. */
export class ParserRig {
  private readonly scripts = new Map<number, { script: Script; close: boolean }>();
  private seq = 0;
  private upstream!: net.Server;
  private readonly sockets = new Set<net.Socket>();
  /** Upstream connections that carried a request. */
  private readonly asked = new Set<net.Socket>();
  proxy!: TestProxy;
  private proxyPort = 0;
  private oracle!: NodeOracle;

  static async start(): Promise<ParserRig> {
    const rig = new ParserRig();
    rig.oracle = await NodeOracle.start();
    rig.upstream = net.createServer((s) => rig.serve(s));
    await new Promise<void>((resolve) => rig.upstream.listen(0, "127.0.0.1", resolve));
    const port = (rig.upstream.address() as net.AddressInfo).port;
    rig.proxy = await startTestProxy();
    rig.proxyPort = Number(new URL(rig.proxy.base).port);
    // (Almost) no wait for a revert: a case whose upstream fails before answering is answered 502 at once,
    // as the oracle's client sees the failure at once.
    await rig.proxy.proxy.apply(tableWith(1, { limits: { upstreamQueueMs: 1 } }, route("fuzz", "fuzz:1", [{ id: "raw", host: "127.0.0.1", port }])));
    return rig;
  }

  private serve(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on("close", () => {
      this.sockets.delete(socket);
      this.asked.delete(socket);
    });
    socket.on("error", () => {});
    let inbox = "";
    let chain = Promise.resolve();
    let held: string | undefined;
    const flushHeld = (): void => {
      if (held !== undefined && !socket.destroyed) socket.write(held, "latin1");
      held = undefined;
    };
    socket.on("data", (d: Buffer) => {
      inbox += d.toString("latin1");
      for (let end = inbox.indexOf("\r\n\r\n"); end !== -1; end = inbox.indexOf("\r\n\r\n")) {
        const path = inbox.slice(0, end).split(" ")[1] ?? "";
        this.asked.add(socket);
        inbox = inbox.slice(end + 4);
        // A request on a connection that still owes bytes: they go out first, as a desynced upstream's would.
        flushHeld();
        chain = chain.then(async () => {
          const m = /^\/c\/(\d+)\/([12])$/.exec(path);
          const entry = m ? this.scripts.get(Number(m[1])) : undefined;
          if (!m || !entry || socket.destroyed) return;
          if (m[2] === "2") {
            const body = secondBody(Number(m[1]));
            socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`, "latin1");
            return;
          }
          const { script, close } = entry;
          const pieces = script.pieces;
          const hold = script.holdLast === true && !close && pieces.length > 1;
          const now = hold ? pieces.slice(0, -1) : pieces;
          for (let i = 0; i < now.length; i++) {
            if (i > 0) await tick();
            if (socket.destroyed) return;
            socket.write(now[i]!, "latin1");
          }
          if (hold) {
            held = pieces[pieces.length - 1]!;
            setTimeout(flushHeld, 20);
          }
          if (close) socket.end();
        });
      }
    });
  }

  /** Two requests on one client connection (a new one if the proxy closed it): the case's, then a known-good one. */
  private async run(script: Script, close: boolean): Promise<ProxyOutcome> {
    const id = ++this.seq;
    this.scripts.set(id, { script, close });
    const deadline = Date.now() + CASE_DEADLINE_MS;
    const c1 = new RawClient(this.proxyPort);
    const clients = [c1];
    try {
      c1.socket.write(`${script.method} /c/${id}/1 HTTP/1.1\r\nHost: fuzz.test\r\n\r\n`);
      const first = await c1.response(script.method, deadline);
      // Whatever else the proxy sends before the next request is not an answer to anything.
      await tick();
      const afterFirst = first.kind === "response" ? c1.take().toString("latin1") : "";
      const reuse = first.kind === "response" && !c1.closed;
      const c2 = reuse ? c1 : new RawClient(this.proxyPort);
      if (!reuse) clients.push(c2);
      c2.socket.write(`GET /c/${id}/2 HTTP/1.1\r\nHost: fuzz.test\r\n\r\n`);
      const second = await c2.response("GET", deadline);
      await tick();
      const afterSecond = c2.take().toString("latin1");
      return { first, second, afterFirst, afterSecond, sameClientConnection: reuse };
    } finally {
      for (const c of clients) c.destroy();
      this.scripts.delete(id);
      // No upstream connection outlives its case, so that one case's leftovers cannot leak into the
      // next. Silent ones stay: they are the proxy's liveness probes, which a close would fail.
      for (const s of this.asked) s.destroy();
      await tick();
      await tick();
    }
  }

  /**
   * Node's verdict on the script's bytes, the proxy's outcome and what is wrong with it. The
   * upstream closes after its bytes when Node's verdict needed EOF or was an error: the proxy may
   * wait for the rest of an unfinished head that Node already rejects (upstream timeouts end that).
   */
  async check(script: Script, refused: readonly string[] = [], close: "auto" | "always" | "never" = "auto"): Promise<{ node: NodeVerdict; out: ProxyOutcome; problems: string[] }> {
    const node = await this.oracle.verdict(Buffer.from(script.pieces.join(""), "latin1"), script.method);
    const out = await this.run(script, close === "always" || (close === "auto" && (node.kind === "error" || node.needsEof)));
    return { node, out, problems: judge(node, out, this.seq, refused) };
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await this.proxy.close();
    await new Promise<void>((resolve) => this.upstream.close(() => resolve()));
    await this.oracle.close();
  }
}

/** The proxy's own failure answer, as opposed to an upstream's 502 relayed (no body to tell by after a HEAD). */
export function isProxyError(r: ClientResponse): boolean {
  if (r.kind !== "response" || r.status !== 502) return false;
  if (r.body.length === 0) return r.headers.some((h, i) => i % 2 === 1 && h === "application/json" && r.headers[i - 1] === "Content-Type");
  return r.body.toString("latin1").includes('"error":"upstream failed"');
}

/** End-to-end fields as a client sees them: hop-by-hop ones and what Node's server adds left out. */
function endToEnd(raw: string[]): string[] {
  const named = new Set<string>();
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() === "connection") for (const t of raw[i + 1]!.split(",")) named.add(t.trim().toLowerCase());
  }
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (DROPPED_RESPONSE_HEADERS.has(name) || named.has(name) || name === "date") continue;
    out.push(`${name}: ${raw[i + 1]}`);
  }
  return out;
}

/**
 * Fields the client got that only the upstream's hop could have sent: the proxy writes one
 * Connection, at most one Keep-Alive, its own Transfer-Encoding and a Date, never any other
 * hop-by-hop field nor one the upstream's Connection named (but Content-Length, which it keeps).
 */
function leakedHopByHop(upstream: string[], relayed: string[]): string[] {
  const named = new Set<string>();
  for (let i = 0; i < upstream.length; i += 2) {
    if (upstream[i]!.toLowerCase() === "connection") for (const t of upstream[i + 1]!.split(",")) named.add(t.trim().toLowerCase());
  }
  const own = new Map([["connection", 1], ["keep-alive", 1], ["transfer-encoding", 1], ["date", 1], ["content-length", 1]]);
  const seen = new Map<string, number>();
  const leaked: string[] = [];
  for (let i = 0; i < relayed.length; i += 2) {
    const name = relayed[i]!.toLowerCase();
    const n = (seen.get(name) ?? 0) + 1;
    seen.set(name, n);
    const limit = own.get(name);
    if (limit !== undefined ? n > limit : DROPPED_RESPONSE_HEADERS.has(name) || named.has(name)) leaked.push(`${relayed[i]}: ${relayed[i + 1]}`);
  }
  return leaked;
}

function show(r: ClientResponse): string {
  if (r.kind === "broken") return `broken (${r.detail}${r.status === undefined ? "" : `, status ${r.status}`})`;
  return `${r.status} ${JSON.stringify(r.body.toString("latin1").slice(0, 200))}`;
}

/**
 * What is wrong with the proxy's outcome, given Node's verdict on the same bytes; empty when
 * nothing is. `refused` names the deliberate rules by which the proxy refuses what Node accepts.
 */
function judge(node: NodeVerdict, out: ProxyOutcome, id: number, refused: readonly string[]): string[] {
  const problems: string[] = [];
  const second = out.second;
  if (second.kind !== "response" || second.status !== 200 || second.body.toString("latin1") !== secondBody(id)) {
    problems.push(`desync: the second request got ${show(second)}`);
  }
  if (out.afterFirst !== "") problems.push(`desync: the proxy sent ${JSON.stringify(out.afterFirst.slice(0, 200))} after the first response`);
  if (out.afterSecond !== "") problems.push(`desync: the proxy sent ${JSON.stringify(out.afterSecond.slice(0, 200))} after the second response`);
  const first = out.first;
  if (first.kind === "broken" && first.detail === "hang") {
    problems.push(`the proxy neither answered nor closed within ${CASE_DEADLINE_MS} ms`);
  } else if (node.kind === "error") {
    if (first.kind === "response" && !isProxyError(first)) problems.push(`Node fails (${node.detail}) but the proxy answered ${show(first)}`);
  } else if (refused.length > 0) {
    if (first.kind === "response" && !isProxyError(first)) problems.push(`the proxy should refuse (${refused.join(", ")}), but answered ${show(first)}`);
  } else if (first.kind !== "response" || isProxyError(first)) {
    problems.push(`Node reads ${node.status} ${JSON.stringify(node.body.toString("latin1").slice(0, 200))} but the proxy answered ${show(first)}`);
  } else {
    if (first.status !== node.status) problems.push(`status ${first.status}, Node says ${node.status}`);
    if (!first.body.equals(node.body)) {
      problems.push(`body ${JSON.stringify(first.body.toString("latin1").slice(0, 200))}, Node says ${JSON.stringify(node.body.toString("latin1").slice(0, 200))}`);
    }
    const want = endToEnd(node.headers);
    const got = endToEnd(first.headers);
    if (want.join("\n") !== got.join("\n")) problems.push(`headers ${JSON.stringify(got)}, Node says ${JSON.stringify(want)}`);
    const leaked = leakedHopByHop(node.headers, first.headers);
    if (leaked.length > 0) problems.push(`hop-by-hop fields of the upstream's reached the client: ${JSON.stringify(leaked)}`);
  }
  return problems;
}
