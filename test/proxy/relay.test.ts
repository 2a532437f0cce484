// The upstream's response head as the client gets it: end-to-end fields in order, hop-by-hop ones and those Connection names left out wherever they stand, the proxy's own fields added once.

import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { type TestProxy, route, sleep, startTestProxy, tableWith } from "./helpers.js";

/**
 * An upstream that answers every request on a connection with the next of `answers` (head and
 * body), keeping the connection; a HEAD gets the answer's first head alone, as a server sends it.
 */
function startCannedUpstream(answers: string[]): Promise<{ port: number; close(): Promise<void> }> {
  let next = 0;
  return startAnsweringUpstream((head) => {
    const answer = answers[next++ % answers.length]!;
    return head.startsWith("HEAD ") ? answer.slice(0, answer.indexOf("\r\n\r\n") + 4) : answer;
  });
}

/** An upstream that answers each request head it reads (keep-alive, pipelined or not) with answer(head); bodies are not expected. */
async function startAnsweringUpstream(answer: (head: string) => string): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    let buf = "";
    socket.on("data", (d: Buffer) => {
      buf += d.toString("latin1");
      for (let end = buf.indexOf("\r\n\r\n"); end !== -1; end = buf.indexOf("\r\n\r\n")) {
        const head = buf.slice(0, end + 4);
        buf = buf.slice(end + 4);
        socket.write(answer(head), "latin1");
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Sends `count` requests on one connection and returns each answer's head lines (status line first) and body; `method` may name each request's. */
async function exchange(base: string, count: number, methods: string | string[] = "GET"): Promise<{ lines: string[]; body: string }[]> {
  const url = new URL(base);
  const socket = net.connect(Number(url.port), url.hostname);
  socket.setEncoding("latin1");
  let buf = "";
  let wake: (() => void) | undefined;
  socket.on("data", (d: string) => {
    buf += d;
    wake?.();
  });
  socket.on("close", () => wake?.());
  const more = (): Promise<void> => new Promise((resolve) => (wake = resolve));
  const out: { lines: string[]; body: string }[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const method = typeof methods === "string" ? methods : methods[i]!;
      socket.write(`${method} /r${i} HTTP/1.1\r\nHost: relay.test\r\n\r\n`);
      let end: number;
      while ((end = buf.indexOf("\r\n\r\n")) === -1) {
        if (socket.destroyed) throw new Error(`closed before answer ${i}: ${JSON.stringify(buf)}`);
        await more();
      }
      const lines = buf.slice(0, end).split("\r\n");
      buf = buf.slice(end + 4);
      if (method !== "HEAD" && lines.includes("Transfer-Encoding: chunked")) {
        // Chunks until the last one; the bodies here hold no CR LF of their own.
        let body = "";
        for (;;) {
          let eol: number;
          while ((eol = buf.indexOf("\r\n")) === -1 || buf.length < eol + 2 + parseInt(buf.slice(0, eol), 16) + 2) {
            if (socket.destroyed) throw new Error(`closed mid-chunk of answer ${i}`);
            await more();
          }
          const size = parseInt(buf.slice(0, eol), 16);
          body += buf.slice(eol + 2, eol + 2 + size);
          buf = buf.slice(eol + 2 + size + 2);
          if (size === 0) break;
        }
        out.push({ lines, body });
        continue;
      }
      const length = lines.find((l) => /^content-length:/i.test(l));
      const n = method === "HEAD" || length === undefined ? 0 : Number(length.slice(15).trim());
      while (buf.length < n) {
        if (socket.destroyed) throw new Error(`closed mid-body of answer ${i}`);
        await more();
      }
      out.push({ lines, body: buf.slice(0, n) });
      buf = buf.slice(n);
    }
    return out;
  } finally {
    socket.destroy();
  }
}

/** "Name:<OWS>value<OWS>" as "Name: value" (the status line as it is). */
function withoutOws(line: string): string {
  const m = /^([^:\s]+):[\t ]*(.*?)[\t ]*$/.exec(line);
  return m ? `${m[1]}: ${m[2]}` : line;
}

const UPSTREAM_DATE = "Date: Tue, 01 Dec 2026 10:00:00 GMT";

describe("response heads through the proxy", { timeout: 30_000 }, () => {
  let p: TestProxy;
  let version = 1;
  const upstreams: { close(): Promise<void> }[] = [];

  before(async () => {
    p = await startTestProxy();
  });
  after(async () => {
    for (const u of upstreams) await u.close();
    await p.close();
  });

  async function through(answers: string[], count: number, method: string | string[] = "GET"): Promise<{ lines: string[]; body: string }[]> {
    const u = await startCannedUpstream(answers);
    upstreams.push(u);
    version++;
    await p.proxy.apply(tableWith(version, {}, route("relay", `relay:${version}`, [{ id: `u${version}`, host: "127.0.0.1", port: u.port }])));
    return exchange(p.base, count, method);
  }

  it("relays end-to-end field lines as written and in order, leaving out every hop-by-hop one wherever it stands", async () => {
    const head = [
      "HTTP/1.1 200 OK",
      "x-first: named by Connection, lower case",
      "Proxy-Connection: keep-alive",
      "X-Kept-1: a",
      "Connection: X-First, content-length,X-Middle",
      "X-Ows:\t v \t",
      "TE: trailers",
      "X-Middle: named by Connection",
      "Content-Length:\t005  ",
      "Trailer: X-T",
      UPSTREAM_DATE,
      "Upgrade: websocket",
      "Proxy-Authenticate: Basic",
      "x-KEPT-2: b",
      "Keep-Alive: timeout=5",
    ].join("\r\n");
    const [r] = await through([`${head}\r\n\r\nhello`], 1);
    const lines = r!.lines;
    assert.equal(r!.body, "hello");
    assert.match(lines.at(-1)!, /^Keep-Alive: timeout=\d+$/);
    // The proxy's Connection and Keep-Alive replace the upstream's; Content-Length, which
    // Connection may not remove, goes out without the OWS around it. Other values are compared
    // without theirs: a recipient drops it (RFC 9110 §5.5), so relaying it as written is allowed.
    assert.ok(lines.includes("Content-Length: 005"), JSON.stringify(lines));
    assert.deepEqual(lines.slice(0, -1).map(withoutOws), ["HTTP/1.1 200 OK", "X-Kept-1: a", "X-Ows: v", "Content-Length: 005", UPSTREAM_DATE, "x-KEPT-2: b", "Connection: keep-alive"]);
  });

  it("keeps the connection in step over answers of every shape, the status line always HTTP/1.1", async () => {
    const answers = [
      `HTTP/1.0 200 Fine\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok`,
      // No field at all: the proxy adds Date and its framing.
      "HTTP/1.1 204 No Content\r\n\r\n",
      // Every field hop-by-hop, chunked: re-chunked for the client.
      "HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
      // Connection names the upstream's Date: the client gets the proxy's own, once.
      `HTTP/1.1 200 OK\r\n${UPSTREAM_DATE}\r\nConnection: date\r\nContent-Length: 1\r\n\r\nx`,
      // 1xx first: dropped, the final answer relayed.
      "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-Final: yes\r\n\r\ny",
    ];
    const got = await through(answers, answers.length);
    const status = got.map((r) => r.lines[0]);
    assert.deepEqual(status, ["HTTP/1.1 200 Fine", "HTTP/1.1 204 No Content", "HTTP/1.1 200 ", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]);
    const dates = got.map((r) => r.lines.filter((l) => /^date:/i.test(l)));
    for (const d of dates) assert.equal(d.length, 1, JSON.stringify(got));
    assert.notEqual(dates[3]![0], UPSTREAM_DATE);
    assert.deepEqual(got.map((r) => r.body), ["ok", "", "abc", "x", "y"]);
    // The chunked answer came back chunked, with no field of the upstream's.
    assert.ok(got[2]!.lines.includes("Transfer-Encoding: chunked"));
    assert.deepEqual(got[1]!.lines.filter((l) => !/^(date|connection|keep-alive):/i.test(l)), ["HTTP/1.1 204 No Content"]);
    assert.ok(!got[4]!.lines.some((l) => /^link:/i.test(l)) && got[4]!.lines.includes("X-Final: yes"));
  });

  it("survives a hostile head: hundreds of fields named by Connection, all of them left out", async () => {
    const names = Array.from({ length: 600 }, (_, i) => `X-H${i}`);
    const head = `HTTP/1.1 200 OK\r\nConnection: ${names.join(",")}\r\n${names.map((n) => `${n}: v`).join("\r\n")}\r\nX-Kept: k\r\nContent-Length: 1\r\n\r\nz`;
    // Under Node's 16 KiB head limit, so that the head is taken rather than refused.
    assert.ok(head.length < 16_000);
    const [r] = await through([head], 1);
    assert.deepEqual(r!.lines.filter((l) => /^x-/i.test(l)), ["X-Kept: k"]);
    assert.equal(r!.body, "z");
  });

  it("reads a head that repeats the last one on its connection as that one, and a head one byte apart afresh, whatever the request", async () => {
    // Twins of one length (a digit of Content-Length or of the status apart), framings, a close, a
    // field named by Connection, a bodyless status: the parser's reading of the last head is reused
    // only for the same bytes, and what depends on the request (HEAD) is decided for each.
    const fields = "Content-Type: text/plain\r\nX-Tag: t";
    const canned = [
      { answer: `HTTP/1.1 200 OK\r\n${fields}\r\nContent-Length: 5\r\n\r\nhello`, status: "HTTP/1.1 200 OK", kept: [...fields.split("\r\n"), "Content-Length: 5"], body: "hello" },
      { answer: `HTTP/1.1 200 OK\r\n${fields}\r\nContent-Length: 3\r\n\r\nabc`, status: "HTTP/1.1 200 OK", kept: [...fields.split("\r\n"), "Content-Length: 3"], body: "abc" },
      { answer: `HTTP/1.1 201 OK\r\n${fields}\r\nContent-Length: 5\r\n\r\nhello`, status: "HTTP/1.1 201 OK", kept: [...fields.split("\r\n"), "Content-Length: 5"], body: "hello" },
      { answer: `HTTP/1.1 200 OK\r\n${fields}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n`, status: "HTTP/1.1 200 OK", kept: fields.split("\r\n"), body: "xyz" },
      { answer: `HTTP/1.1 200 OK\r\n${fields}\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok`, status: "HTTP/1.1 200 OK", kept: [...fields.split("\r\n"), "Content-Length: 2"], body: "ok" },
      { answer: `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: X-Tag\r\nX-Tag: t\r\nContent-Length: 5\r\n\r\nhello`, status: "HTTP/1.1 200 OK", kept: ["Content-Type: text/plain", "Content-Length: 5"], body: "hello" },
      { answer: `HTTP/1.1 204 No Content\r\n${fields}\r\n\r\n`, status: "HTTP/1.1 204 No Content", kept: fields.split("\r\n"), body: "" },
      // Kept after a HEAD as after a GET: a HEAD's reading reused for a GET, or the reverse, shows.
      { answer: `HTTP/1.1 200 OK\r\n${fields}\r\nContent-Length: 0\r\n\r\n`, status: "HTTP/1.1 200 OK", kept: [...fields.split("\r\n"), "Content-Length: 0"], body: "" },
    ];
    const proxyFields = /^(date|connection|keep-alive|transfer-encoding):/i;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.integer({ min: 0, max: canned.length - 1 }), fc.constantFrom("GET", "GET", "HEAD")), { minLength: 2, maxLength: 10 }), async (steps) => {
        const got = await through(steps.map(([i]) => canned[i]!.answer), steps.length, steps.map(([, m]) => m));
        steps.forEach(([i, method], n) => {
          const want = canned[i]!;
          const r = got[n]!;
          assert.equal(r.lines[0], want.status, `answer ${n}`);
          assert.deepEqual(r.lines.slice(1).filter((l) => !proxyFields.test(l)), want.kept, `answer ${n}`);
          assert.equal(r.body, method === "HEAD" ? "" : want.body, `answer ${n}`);
        });
      }),
      // A misread length leaves an answer waiting for bytes that never come: a run that hangs fails.
      { numRuns: 40, timeout: 5_000 },
    );
  });
});

describe("whole answers written as bytes (ClientResponse.endBytes)", { timeout: 60_000 }, () => {
  /** Each answer's body: 12,000 bytes of its request's path repeated, so that any byte in the wrong answer shows. */
  const bodyFor = (path: string): string => path.repeat(Math.ceil(12_000 / path.length)).slice(0, 12_000);

  it("a client that reads nothing while others are answered gets each of its answers as the upstream sent it", async () => {
    // An answer that waits in libuv for this client keeps the buffer it was written from; the
    // other client's answers, written meanwhile, must go into another one.
    const upstream = await startAnsweringUpstream((head) => `HTTP/1.1 200 OK\r\nContent-Length: 12000\r\nX-Path: ${pathOf(head)}\r\n\r\n${bodyFor(pathOf(head))}`);
    const p = await startTestProxy();
    try {
      await p.proxy.apply(tableWith(2, {}, route("bytes", "bytes:1", [{ id: "u", host: "127.0.0.1", port: upstream.port }])));
      const port = Number(new URL(p.base).port);
      const stalled = net.connect(port, "127.0.0.1");
      stalled.on("error", () => undefined);
      await new Promise((resolve) => stalled.once("connect", resolve));
      stalled.pause();
      const count = 1_500; // 18 MB of answers: more than loopback's socket buffers hold
      for (let i = 0; i < count; i++) stalled.write(`GET /stalled/${i} HTTP/1.1\r\nHost: bytes.test\r\n\r\n`);
      await sleep(300);
      // Meanwhile another client is answered, one request at a time.
      const others = await exchange(p.base, 200);
      others.forEach((a, i) => assert.equal(a.body, bodyFor(`/r${i}`), `answer ${i} to the reading client`));
      // Now the stalled client reads everything it was sent.
      const got = await readAnswers(stalled, count);
      got.forEach((a, i) => {
        assert.ok(a.head.includes(`X-Path: /stalled/${i}\r\n`), `answer ${i}'s head: ${a.head}`);
        assert.equal(a.body, bodyFor(`/stalled/${i}`), `answer ${i}'s body`);
      });
      stalled.destroy();
    } finally {
      await p.close();
      await upstream.close();
    }
  });

  it("writes the Date of the second the answer goes out, not the one its head bytes were first made in", async () => {
    const upstream = await startAnsweringUpstream(() => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    const p = await startTestProxy();
    try {
      await p.proxy.apply(tableWith(2, {}, route("bytes", "bytes:1", [{ id: "u", host: "127.0.0.1", port: upstream.port }])));
      // One connection throughout: its answers' head bytes are kept from one answer to the next.
      const socket = net.connect(Number(new URL(p.base).port), "127.0.0.1");
      socket.setEncoding("latin1");
      let buf = "";
      socket.on("data", (d: string) => (buf += d));
      const ask = async (): Promise<number> => {
        buf = "";
        socket.write("GET / HTTP/1.1\r\nHost: bytes.test\r\n\r\n");
        while (!buf.endsWith("\r\n\r\nok")) await sleep(5);
        return Date.parse(/\r\nDate: ([^\r]+)\r\n/.exec(buf)![1]!);
      };
      const first = [await ask(), await ask()];
      await sleep(1_100);
      const later = await ask();
      socket.destroy();
      assert.ok(first[1]! - first[0]! <= 1_000);
      assert.ok(later > first[1]!, `a later second, a later Date: ${new Date(first[1]!).toUTCString()} then ${new Date(later).toUTCString()}`);
      assert.ok(Math.abs(later - Date.now()) < 2_000);
    } finally {
      await p.close();
      await upstream.close();
    }
  });
});

/** The request target of a request head. */
function pathOf(head: string): string {
  return head.slice(head.indexOf(" ") + 1, head.indexOf(" HTTP/"));
}

/** Reads `count` answers with a Content-Length each from a paused socket: heads and bodies. */
async function readAnswers(socket: net.Socket, count: number): Promise<{ head: string; body: string }[]> {
  let buf = "";
  const out: { head: string; body: string }[] = [];
  await new Promise<void>((resolve, reject) => {
    socket.on("data", (d: Buffer) => {
      buf += d.toString("latin1");
      for (;;) {
        const end = buf.indexOf("\r\n\r\n");
        if (end === -1) return;
        const head = buf.slice(0, end + 2);
        const n = Number(/\r\nContent-Length: (\d+)\r\n/i.exec(head)?.[1] ?? "0");
        if (buf.length < end + 4 + n) return;
        out.push({ head, body: buf.slice(end + 4, end + 4 + n) });
        buf = buf.slice(end + 4 + n);
        if (out.length === count) return resolve();
      }
    });
    socket.on("close", () => reject(new Error(`closed after ${out.length} of ${count} answers`)));
    socket.resume();
  });
  return out;
}
