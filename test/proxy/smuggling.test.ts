// Request smuggling cases from the literature (CL.TE, TE.CL, TE.TE with obfuscated codings, bare
// line breaks, controls in fields, chunk-size overflow...) sent through the proxy's client side:
// each is refused with 400 and a closed connection, and the request after it never reaches the
// upstream. A fault in the head forwards nothing; a fault in a chunked body is found while the
// body streams, so the upstream has seen the request begin and then loses its connection.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type AppProxy, RawClient, startAppProxy, statuses, type TestUpstream } from "./helpers.js";

/** Each case ends with a request that would reach the upstream if the proxy read the bytes another way. */
const SMUGGLED = "GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n";

/** Marks a case whose fault is in the body: the request's head was forwarded before it. */
const BODY = true;

const CASES: ([name: string, bytes: string, status: number] | [name: string, inBody: true, bytes: string, status: number])[] = [
  ["CL.TE: Content-Length and Transfer-Encoding", `POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`, 400],
  ["TE.CL: Transfer-Encoding then Content-Length", `POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\n${SMUGGLED}\r\n0\r\n\r\n`, 400],
  ["TE.TE: a second, bogus Transfer-Encoding", `POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: cow\r\n\r\n0\r\n\r\n${SMUGGLED}`, 400],
  ["TE.TE: xchunked", `POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${SMUGGLED}`, 400],
  ["TE.TE: space before the colon", `POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`, 400],
  ["TE.TE: obs-fold into Transfer-Encoding", `POST / HTTP/1.1\r\nHost: app.test\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`, 400],
  ["TE.TE: chunked followed by HTAB", `POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n${SMUGGLED}`, 400],
  ["TE.TE: VT after chunked", `POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n${SMUGGLED}`, 400],
  ["Transfer-Encoding: chunked, identity", `POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n${SMUGGLED}`, 400],
  ["Transfer-Encoding in HTTP/1.0", `POST / HTTP/1.0\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`, 400],
  ["two Content-Length fields, equal", `POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc${SMUGGLED}`, 400],
  ["Content-Length as a list", `POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3, 3\r\n\r\nabc${SMUGGLED}`, 400],
  ["Content-Length with a sign", `POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: +3\r\n\r\nabc${SMUGGLED}`, 400],
  ["NUL in a field value", `GET / HTTP/1.1\r\nHost: app.test\r\nX: a\x00b\r\n\r\n${SMUGGLED}`, 400],
  ["VT in a field value", `GET / HTTP/1.1\r\nHost: app.test\r\nX: a\x0bb\r\n\r\n${SMUGGLED}`, 400],
  ["bare LF ending a field line", `GET / HTTP/1.1\r\nHost: app.test\nX: y\r\n\r\n${SMUGGLED}`, 400],
  ["bare CR inside a field value", `GET / HTTP/1.1\r\nHost: app.test\r\nX: a\rContent-Length: 40\r\n\r\n${SMUGGLED}`, 400],
  ["chunk size overflowing 64 bits", BODY, `POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF1\r\nx\r\n0\r\n\r\n${SMUGGLED}`, 400],
  ["chunk size with a 0x prefix", BODY, `POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n${SMUGGLED}`, 400],
  ["chunk extension with a bare LF", BODY, `POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\nhello\r\n0\r\n\r\n${SMUGGLED}`, 400],
  ["chunk data longer than its size", BODY, `POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhelloX\r\n0\r\n\r\n${SMUGGLED}`, 400],
  ["absolute-form naming another host", `GET http://other.test/ HTTP/1.1\r\nHost: app.test\r\n\r\n${SMUGGLED}`, 400],
  ["two Host fields", `GET / HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n\r\n${SMUGGLED}`, 400],
  ["an unknown HTTP version", `GET / HTTP/1.2\r\nHost: app.test\r\n\r\n${SMUGGLED}`, 400],
  ["a space inside the request target", `GET /a b HTTP/1.1\r\nHost: app.test\r\n\r\n${SMUGGLED}`, 400],
  ["CONNECT", `CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\n\r\n${SMUGGLED}`, 400],
];

describe("request smuggling through the proxy's client side", { timeout: 60_000 }, () => {
  let app: AppProxy;
  let u: TestUpstream;
  let port: number;
  before(async () => {
    app = await startAppProxy();
    ({ u, port } = app);
  });
  after(async () => {
    await app.close();
  });

  for (const c of CASES) {
    const [name, inBody, bytes, status] = c.length === 3 ? [c[0], false, c[1], c[2]] : c;
    it(`${name}: ${status}, the connection closed, ${inBody ? "the upstream's request cut short" : "nothing forwarded"}`, async () => {
      const seenBefore = u.seen.length;
      const c = await RawClient.connect(port);
      c.write(Buffer.from(bytes, "latin1"));
      assert.ok(await c.waitClose(), "the proxy closes the connection");
      assert.deepEqual(statuses(c.received), [status], c.received);
      assert.deepEqual(u.seen.slice(seenBefore), inBody ? ["POST /"] : [], "nothing else reached the upstream");
    });
  }

  it("a valid chunked body with extensions and trailers is forwarded whole, then a pipelined request in order", async () => {
    const seenBefore = u.seen.length;
    const c = await RawClient.connect(port);
    c.write(
      "POST /one HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n" +
        "GET /two HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    );
    assert.ok(await c.waitClose());
    assert.deepEqual(statuses(c.received), [200, 200]);
    assert.deepEqual(u.seen.slice(seenBefore), ["POST /one", "GET /two"]);
    assert.match(c.received, /"body":"hello world"/);
  });

  it("a head longer than the limit is refused with 431", async () => {
    const c = await RawClient.connect(port);
    c.write(`GET / HTTP/1.1\r\nHost: app.test\r\nX: ${"a".repeat(70_000)}\r\n\r\n`);
    assert.ok(await c.waitClose());
    assert.deepEqual(statuses(c.received), [431]);
  });

  it("chunk extensions beyond 16 KiB are refused with 413", async () => {
    const c = await RawClient.connect(port);
    c.write(`POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n1;a=${"b".repeat(20_000)}\r\nx\r\n0\r\n\r\n`);
    assert.ok(await c.waitClose());
    assert.deepEqual(statuses(c.received), [413]);
  });

  it("pipelined requests are answered in order, each once", async () => {
    const c = await RawClient.connect(port);
    let text = "";
    for (let i = 0; i < 20; i++) text += `GET /p${i} HTTP/1.1\r\nHost: app.test\r\n\r\n`;
    c.write(`${text}GET /last HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n`);
    assert.ok(await c.waitClose());
    const urls = [...c.received.matchAll(/"url":"([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual(urls, [...Array.from({ length: 20 }, (_, i) => `/p${i}`), "/last"]);
  });
});
