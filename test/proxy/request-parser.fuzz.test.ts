// Differential fuzzing of the proxy's client-facing request parser against Node's own (llhttp):
// generated request streams, valid and hostile, sent over real sockets to both. Whatever Node
// refuses, ours refuses; where both take a request, they read the same method, target, fields and
// body. Bounded to about 20 s in npm test; FUZZ_RUNS=N (npm run test:fuzz) runs that many, uncut.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { parseRequestHead, type RequestHead } from "../../src/proxy/request-head.js";
import { differ, type RequestRig, startRequestRig } from "./request-rig.js";

const RUNS = Number(process.env.FUZZ_RUNS ?? 400);
/** Each case is two real connections: on a busy machine the default run stops at this bound rather than at RUNS. */
const TIME_LIMIT_MS = process.env.FUZZ_RUNS === undefined ? 10_000 : undefined;
const LIMITS = { interruptAfterTimeLimit: TIME_LIMIT_MS, markInterruptAsFailure: false };

const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}$/);
const plainValue = fc.stringMatching(/^[\x21-\x7e]([\x20-\x7e]{0,20}[\x21-\x7e])?$/);
const body = fc.string({ maxLength: 40 }).map((s) => s.replace(/[^\x20-\x7e]/g, "a"));

/** A well-formed request: method, target, fields, and a body framed by Content-Length or chunks. */
const validRequest = fc
  .record({
    method: fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"),
    target: fc.constantFrom("/", "/a", "/a/b?c=d&e", "/%20x", "/x;y", "/~u/.x"),
    version: fc.constantFrom("1.1", "1.0"),
    fields: fc.array(fc.tuple(token, plainValue), { maxLength: 5 }),
    body,
    chunks: fc.array(fc.integer({ min: 1, max: 9 }), { maxLength: 4 }),
    framing: fc.constantFrom("length", "chunked", "none"),
  })
  .map((r) => {
    const fields = r.fields.filter(([n]) => !/^(content-length|transfer-encoding|connection|upgrade|expect|host)$/i.test(n));
    let head = `${r.method} ${r.target} HTTP/${r.version}\r\nHost: h.test\r\n`;
    for (const [n, v] of fields) head += `${n}: ${v}\r\n`;
    if (r.version === "1.0") head += "Connection: keep-alive\r\n";
    let payload = "";
    if (r.framing === "length" || (r.framing === "chunked" && r.version === "1.0")) {
      head += `Content-Length: ${r.body.length}\r\n`;
      payload = r.body;
    } else if (r.framing === "chunked") {
      head += "Transfer-Encoding: chunked\r\n";
      let rest = r.body;
      for (const n of r.chunks) {
        if (rest === "") break;
        payload += `${Math.min(n, rest.length).toString(16)}\r\n${rest.slice(0, n)}\r\n`;
        rest = rest.slice(n);
      }
      if (rest !== "") payload += `${rest.length.toString(16)}\r\n${rest}\r\n`;
      payload += "0\r\n\r\n";
    }
    return `${head}\r\n${payload}`;
  });

/** The last request of every stream: both servers close after answering it. */
const SENTINEL = "GET /end HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n";

/** Pieces known to split parsers: framing conflicts, odd codings, stray bytes, overflows. */
const hostilePiece = fc.constantFrom(
  "Content-Length: 5\r\n",
  "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
  "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
  "Content-Length: 5\r\nContent-Length: 5\r\n",
  "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
  "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n",
  "Content-Length: 05\r\n",
  "Content-Length: +5\r\n",
  "Content-Length: 5, 5\r\n",
  "Content-Length:  5 \r\n",
  "Content-Length: -1\r\n",
  "Content-Length: 99999999999999999999\r\n",
  "Content-Length : 5\r\n",
  "Transfer-Encoding: chunked\r\n",
  "Transfer-Encoding: Chunked\r\n",
  "Transfer-Encoding:  chunked\r\n",
  "Transfer-Encoding: chunked\t\r\n",
  "Transfer-Encoding: chunked, identity\r\n",
  "Transfer-Encoding: identity, chunked\r\n",
  "Transfer-Encoding: gzip\r\n",
  "Transfer-Encoding: xchunked\r\n",
  "Transfer-Encoding: chunked\x0b\r\n",
  "Transfer-Encoding:\tchunked\r\n",
  "Transfer-Encoding\r\n : chunked\r\n",
  " Transfer-Encoding: chunked\r\n",
  "X: y\r\n\tTransfer-Encoding: chunked\r\n",
  "X: a\x00b\r\n",
  "X: a\x0bb\r\n",
  "X: a\x7fb\r\n",
  "X: a\xe9b\r\n",
  "X: a\rb\r\n",
  "X: a\nb\r\n",
  "X\n: y\r\n",
  "X y: z\r\n",
  ": empty\r\n",
  "X: y\n",
  "Host: other.test\r\n",
  "Connection: close\r\n",
  "Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n",
  "Expect: 100-continue\r\n",
);

const hostileBody = fc.constantFrom(
  "",
  "hello",
  "0\r\n\r\n",
  "5\r\nhello\r\n0\r\n\r\n",
  "5;ext=1\r\nhello\r\n0\r\n\r\n",
  "5 ;ext\r\nhello\r\n0\r\n\r\n",
  "5\nhello\r\n0\r\n\r\n",
  "5\r\nhelloXX0\r\n\r\n",
  "FFFFFFFFFFFFFFFFF1\r\nx\r\n0\r\n\r\n",
  "-5\r\nhello\r\n0\r\n\r\n",
  "0x5\r\nhello\r\n0\r\n\r\n",
  "5\r\nhello\r\n0\r\nTrailer: t\r\n\r\n",
  "5\r\nhello\r\n0\r\nBad Trailer: t\r\n\r\n",
  "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h.test\r\n\r\n",
);

const requestLine = fc.constantFrom(
  "POST / HTTP/1.1",
  "GET / HTTP/1.0",
  "GET http://h.test/abs HTTP/1.1",
  "GET http://evil.test/abs HTTP/1.1",
  "OPTIONS * HTTP/1.1",
  "GET * HTTP/1.1",
  "get / HTTP/1.1",
  "FOO / HTTP/1.1",
  "GET / HTTP/2.0",
  "GET / http/1.1",
  "GET  / HTTP/1.1",
  "GET /a b HTTP/1.1",
  "GET /\x7f HTTP/1.1",
  "GET /\xe9 HTTP/1.1",
  "CONNECT h.test:443 HTTP/1.1",
  "GET / HTTP/1.1 ",
);

/** Mostly one fault at a time in an otherwise plain POST, so that each fault is reached often. */
const hostileRequest = fc
  .record({
    line: fc.oneof({ arbitrary: fc.constant("POST / HTTP/1.1"), weight: 4 }, { arbitrary: requestLine, weight: 1 }),
    lineEnd: fc.oneof({ arbitrary: fc.constant("\r\n"), weight: 9 }, { arbitrary: fc.constant("\n"), weight: 1 }),
    pieces: fc.oneof({ arbitrary: fc.array(hostilePiece, { minLength: 1, maxLength: 1 }), weight: 3 }, { arbitrary: fc.array(hostilePiece, { maxLength: 3 }), weight: 1 }),
    host: fc.oneof({ arbitrary: fc.constant("Host: h.test\r\n"), weight: 6 }, { arbitrary: fc.constantFrom("", "Host: h.test\r\nHost: h.test\r\n"), weight: 1 }),
    body: hostileBody,
    leading: fc.oneof({ arbitrary: fc.constant(""), weight: 6 }, { arbitrary: fc.constantFrom("\r\n", "\n"), weight: 1 }),
  })
  .map((r) => `${r.leading}${r.line}${r.lineEnd}${r.host}${r.pieces.join("")}\r\n${r.body}`);

describe("the client-facing request parser against Node's (llhttp)", { timeout: 300_000 }, () => {
  let rig: RequestRig;
  before(async () => {
    rig = await startRequestRig();
  });
  after(async () => {
    await rig.close();
  });

  it("reads valid pipelined requests exactly as Node does", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(validRequest, { minLength: 1, maxLength: 3 }), async (requests) => {
        const bytes = Buffer.from(requests.join("") + SENTINEL, "latin1");
        const { node, ours } = await rig.both(bytes);
        assert.equal(node.refused, undefined, `Node refused a request meant to be valid: ${JSON.stringify(requests)}`);
        assert.equal(ours.refused, undefined, `ours refused what Node took: ${JSON.stringify(requests)}`);
        assert.equal(differ(node, ours), undefined);
        assert.equal(ours.requests.length, requests.length + 1);
      }),
      { numRuns: Math.ceil(RUNS / 4), ...LIMITS },
    );
  });

  it("a valid request with bytes changed anywhere: never read where Node refuses", async () => {
    const mutation = fc.record({ at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }), kind: fc.constantFrom("insert", "replace", "delete") });
    await fc.assert(
      fc.asyncProperty(validRequest, fc.array(mutation, { minLength: 1, maxLength: 3 }), async (request, mutations) => {
        let bytes = Buffer.from(request, "latin1");
        for (const m of mutations) {
          const at = m.at % (bytes.length + 1);
          const one = Buffer.from([m.byte]);
          if (m.kind === "insert") bytes = Buffer.concat([bytes.subarray(0, at), one, bytes.subarray(at)]);
          else if (m.kind === "replace" && at < bytes.length) bytes = Buffer.concat([bytes.subarray(0, at), one, bytes.subarray(at + 1)]);
          else if (at < bytes.length) bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 1)]);
        }
        const { node, ours } = await rig.both(Buffer.concat([bytes, Buffer.from(SENTINEL, "latin1")]));
        const n = node.hung || ours.hung ? Math.min(node.requests.length, ours.requests.length) : undefined;
        const why = n === undefined ? differ(node, ours) : differ({ ...node, requests: node.requests.slice(0, n) }, { ...ours, requests: ours.requests.slice(0, n) });
        assert.equal(why, undefined, `${why}\n  input ${JSON.stringify(bytes.toString("latin1"))}`);
      }),
      { numRuns: Math.ceil(RUNS / 4), ...LIMITS },
    );
  });

  it("refuses whatever Node refuses, and reads what both take alike", async () => {
    await fc.assert(
      fc.asyncProperty(hostileRequest, fc.boolean(), async (request, pipelined) => {
        const bytes = Buffer.from(request + (pipelined ? SENTINEL : ""), "latin1");
        const { node, ours } = await rig.both(bytes);
        if (node.hung || ours.hung) {
          // A framing that waits for more bytes: only what both read before it can be compared.
          const n = Math.min(node.requests.length, ours.requests.length);
          assert.equal(differ({ ...node, requests: node.requests.slice(0, n) }, { ...ours, requests: ours.requests.slice(0, n) }), undefined, JSON.stringify(request));
          return;
        }
        const why = differ(node, ours);
        assert.equal(why, undefined, `${why}\n  input ${JSON.stringify(request)}`);
      }),
      { numRuns: RUNS, ...LIMITS },
    );
  });
});

describe("a request head read after another on its connection", () => {
  it("reads as it does alone, whatever came before", () => {
    // A few request lines and field sections per case, picked in turn, so that heads repeat, share
    // their field lines under another request line, or differ from the last by a piece.
    const fieldSection = fc.array(fc.oneof(hostilePiece, fc.constantFrom("Host: h.test\r\n", "X-A: 1\r\n", "X-A: 2\r\n", "Connection: keep-alive\r\n")), { maxLength: 4 });
    const line = fc.oneof(requestLine, fc.constantFrom("GET /a HTTP/1.1", "GET /b HTTP/1.1", "POST /a HTTP/1.0", "GET http://h.test/ HTTP/1.1"));
    fc.assert(
      fc.property(fc.array(line, { minLength: 1, maxLength: 3 }), fc.array(fieldSection, { minLength: 1, maxLength: 3 }), fc.array(fc.tuple(fc.nat(), fc.nat()), { minLength: 2, maxLength: 8 }), (lines, sections, picks) => {
        let last: RequestHead | undefined;
        for (const [l, f] of picks) {
          const fields = sections[f % sections.length]!.join("");
          const text = fields === "" ? lines[l % lines.length]! : `${lines[l % lines.length]}\r\n${fields.slice(0, -2)}`;
          const alone = parseRequestHead(text);
          const after = parseRequestHead(text, last);
          assert.deepEqual(after, alone, JSON.stringify({ text, last: last?.text }));
          // The next head is read after this reading, as a connection does: copies of copies too.
          if ((after as { code?: string }).code === undefined) last = after as RequestHead;
        }
      }),
      { numRuns: 3_000 },
    );
  });
});

