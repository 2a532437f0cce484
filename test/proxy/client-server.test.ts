// The proxy's client-facing server beyond parsing: bodies nobody reads, expectations, a client that
// sends far ahead of its answers, a client that leaves, HTTP/1.0 keep-alive.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type AppProxy, RawClient, startAppProxy, statuses, type TestUpstream } from "./helpers.js";

describe("the proxy's client-facing server", { timeout: 60_000 }, () => {
  let app: AppProxy;
  let u: TestUpstream;
  let port: number;
  before(async () => {
    app = await startAppProxy({ host: "app.test" });
    ({ u, port } = app);
  });
  after(async () => {
    await app.close();
  });

  it("drops a small body the answer did not need, and serves the next request on the connection", async () => {
    const c = await RawClient.connect(port);
    c.write("POST / HTTP/1.1\r\nHost: nowhere.test\r\nContent-Length: 5\r\n\r\nhello");
    c.write("GET /next HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
    assert.ok(await c.waitClose());
    assert.deepEqual(statuses(c.received), [404, 200]);
    assert.match(c.received, /"url":"\/next"/);
  });

  it("closes the connection after the answer when the unread body is large, without reading it", async () => {
    const c = await RawClient.connect(port);
    // Announces 10 MB and sends 1 KiB: a server that read the body to the end would never answer and close.
    c.write(`POST / HTTP/1.1\r\nHost: nowhere.test\r\nContent-Length: 10000000\r\n\r\n${"x".repeat(1024)}`);
    assert.ok(await c.waitClose(), "closed after the 404");
    assert.deepEqual(statuses(c.received), [404]);
    assert.match(c.received, /Connection: close/i);
  });

  it("answers an expectation other than 100-continue with 417, forwarding nothing", async () => {
    const seen = u.seen.length;
    const c = await RawClient.connect(port);
    c.write("GET / HTTP/1.1\r\nHost: app.test\r\nExpect: something-else\r\n\r\n");
    assert.ok(await c.waitClose());
    assert.deepEqual(statuses(c.received), [417]);
    assert.equal(u.seen.length, seen);
  });

  it("sends 100 Continue before a body is read, then forwards it", async () => {
    const c = await RawClient.connect(port);
    c.write("POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n");
    assert.ok(await c.waitFor((r) => r.includes("100 Continue")), "100 Continue before the body");
    c.write("hello");
    assert.ok(await c.waitClose());
    assert.match(c.received, /"body":"hello"/);
  });

  it("keeps an HTTP/1.0 connection open only when asked, and ends a body without a length with the connection", async () => {
    const c = await RawClient.connect(port);
    c.write("GET /a HTTP/1.0\r\nHost: nowhere.test\r\nConnection: keep-alive\r\n\r\n");
    assert.ok(await c.waitFor((r) => r.includes('"path":"/a"')));
    assert.match(c.received, /Connection: keep-alive/i);
    // The upstream answers chunked; HTTP/1.0 has no chunks, so the body ends when the connection does.
    c.write("GET /b HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n");
    assert.ok(await c.waitClose());
    assert.match(c.received, /"url":"\/b"/);
    assert.doesNotMatch(c.received, /Transfer-Encoding/i);
  });

  it("a client far ahead of its answers is answered in order, every request once", async () => {
    const c = await RawClient.connect(port);
    // About 300 KiB of pipelined requests: beyond what is read ahead, so reading pauses and resumes.
    const n = 3_000;
    let text = "";
    for (let i = 0; i < n; i++) text += `GET /r${i} HTTP/1.1\r\nHost: app.test\r\nX-Pad: ${"p".repeat(40)}\r\n\r\n`;
    c.write(`${text}GET /last HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n`);
    assert.ok(await c.waitClose(60_000));
    const urls = [...c.received.matchAll(/"url":"([^"]+)"/g)].map((m) => m[1]);
    assert.equal(urls.length, n + 1);
    assert.deepEqual(urls.slice(0, 3), ["/r0", "/r1", "/r2"]);
    assert.equal(urls[n - 1], `/r${n - 1}`);
    assert.equal(urls[n], "/last");
  });

  it("garbage instead of a request line gets 400 and a closed connection", async () => {
    const c = await RawClient.connect(port);
    c.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x0d, 0x0a, 0x0d, 0x0a]));
    assert.ok(await c.waitClose());
    assert.deepEqual(statuses(c.received), [400]);
  });
});
