// Client-side timeouts and limits of the built-in proxy, from the table's settings: slowloris 408, idle keep-alive, max connections, 431, 413.

import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, it } from "node:test";
import type { ProxyStats, Route } from "../../src/proxy/contract.js";
import { startProxyServer } from "../../src/proxy/server.js";
import {
  type TestProxy,
  type TestSettings,
  type TestUpstream,
  RawClient,
  json,
  request,
  route,
  sleep,
  startTestProxy,
  startUpstream,
  statuses,
  tableWith,
} from "./helpers.js";

describe("proxy client-side timeouts and limits", { timeout: 40_000 }, () => {
  let p: TestProxy;
  let port: number;
  const upstreams: TestUpstream[] = [];
  const start = async (id: string, handler?: Parameters<typeof startUpstream>[1]) => {
    const u = await startUpstream(id, handler);
    upstreams.push(u);
    return u;
  };
  let version = 0;
  const apply = (settings: TestSettings, ...routes: Route[]) => p.proxy.apply(tableWith(++version, settings, ...routes));
  const stats = async () => (await p.proxy.stats()) as Required<ProxyStats>;

  before(async () => {
    p = await startTestProxy();
    port = p.server.listenPort;
  });
  after(async () => {
    await p.close();
    await Promise.all(upstreams.map((u) => u.close()));
  });

  it("answers 408 and closes a connection that trickles its request head past clientHeaderMs", async () => {
    const u = await start("slowloris");
    await apply({ timeouts: { clientHeaderMs: 300 } }, route("s", "s:1", [u.upstream]));
    const before = await stats();
    const c = await RawClient.connect(port);
    const head = `GET / HTTP/1.1\r\nHost: app.example\r\nX-Padding: ${"p".repeat(100)}\r\n\r\n`;
    let sent = 0;
    const trickle = setInterval(() => {
      if (sent < head.length) c.write(head[sent++]!);
    }, 20);
    try {
      assert.equal(await c.waitClose(3_000), true);
    } finally {
      clearInterval(trickle);
    }
    assert.ok(sent < head.length, "cut before the head was complete");
    assert.deepEqual(statuses(c.received), [408], c.received);
    // clientHeaderMs, checked every CLIENT_CHECK_INTERVAL_MS.
    assert.ok(c.closedAfterMs >= 280 && c.closedAfterMs < 4_000, `closed after ${c.closedAfterMs} ms`);
    assert.equal(u.hits, 0);
    assert.equal((await stats()).timeouts.clientHeader, before.timeouts.clientHeader + 1);
    // A connection that sends nothing at all is cut the same way.
    const silent = await RawClient.connect(port);
    assert.equal(await silent.waitClose(3_000), true);
    assert.deepEqual(statuses(silent.received), [408]);
  });

  it("does not cut slow uploads or long streamed responses at clientHeaderMs", async () => {
    const u = await start("streamer", (req, res) => {
      if (req.url === "/stream") {
        res.writeHead(200, { "content-type": "text/plain" });
        let n = 0;
        const timer = setInterval(() => {
          res.write(`tick-${n}\n`);
          if (++n === 8) {
            clearInterval(timer);
            res.end();
          }
        }, 100);
      } else {
        res.end(`got ${req.headers["content-length"] ?? "chunked"}`);
      }
    });
    await apply({ timeouts: { clientHeaderMs: 300 } }, route("st", "st:1", [u.upstream]));
    const t0 = performance.now();
    const streamed = await request(`${p.base}/stream`);
    assert.ok(performance.now() - t0 >= 700);
    assert.equal(streamed.text.split("\n").filter(Boolean).length, 8);
    const upload = await new Promise<string>((resolve, reject) => {
      const req = http.request(`${p.base}/upload`, { method: "POST", agent: false, headers: { "content-length": "8" } }, (res) => {
        let text = "";
        res.on("data", (d: Buffer) => (text += d));
        res.on("end", () => resolve(text));
      });
      req.on("error", reject);
      let i = 0;
      const timer = setInterval(() => {
        req.write("x");
        if (++i === 8) {
          clearInterval(timer);
          req.end();
        }
      }, 100);
    });
    assert.equal(upload, "got 8");
  });

  it("closes a keep-alive connection idle for clientIdleMs (plus Node's 1 s margin), and counts it", async () => {
    const u = await start("idle");
    await apply({ timeouts: { clientIdleMs: 200 } }, route("i", "i:1", [u.upstream]));
    const before = await stats();
    const c = await RawClient.connect(port);
    c.write("GET / HTTP/1.1\r\nHost: app.example\r\n\r\n");
    assert.ok(await c.waitFor((r) => r.includes('"id":"idle"')));
    const answeredAt = performance.now();
    assert.equal(await c.waitClose(4_000), true);
    const idleFor = performance.now() - answeredAt;
    assert.ok(idleFor >= 180 && idleFor < 2_500, `closed after ${idleFor} ms idle`);
    assert.deepEqual(statuses(c.received), [200]);
    assert.equal((await stats()).timeouts.clientIdle, before.timeouts.clientIdle + 1);
  });

  it("refuses connections beyond maxConnections at accept, and counts them", async () => {
    const u = await start("max");
    await apply({ limits: { maxConnections: 2 } }, route("m", "m:1", [u.upstream]));
    const before = await stats();
    const held: RawClient[] = [];
    for (let i = 0; i < 2; i++) {
      const c = await RawClient.connect(port);
      c.write("GET / HTTP/1.1\r\nHost: app.example\r\n\r\n");
      assert.ok(await c.waitFor((r) => r.includes('"id":"max"')));
      held.push(c);
    }
    const third = await RawClient.connect(port);
    third.write("GET / HTTP/1.1\r\nHost: app.example\r\n\r\n");
    assert.equal(await third.waitClose(2_000), true);
    assert.equal(third.received, "");
    assert.equal((await stats()).rejected.connections, before.rejected.connections + 1);
    held[0]!.destroy();
    await held[0]!.waitClose();
    await sleep(50);
    const fourth = await RawClient.connect(port);
    fourth.write("GET / HTTP/1.1\r\nHost: app.example\r\n\r\n");
    assert.ok(await fourth.waitFor((r) => r.includes('"id":"max"')), "room again once one closed");
    for (const c of [...held, fourth]) c.destroy();
    await apply({}, route("m", "m:1", [u.upstream]));
  });

  it("answers 431 to a request head beyond maxHeaderBytes, from the table applied before the connection opened", async () => {
    const u = await start("big-head");
    const big = "x".repeat(3_000);
    await apply({}, route("h", "h:1", [u.upstream]));
    assert.equal((await request(`${p.base}/`, { headers: { "x-big": big } })).status, 200);
    await apply({ limits: { maxHeaderBytes: 2_048 } }, route("h", "h:1", [u.upstream]));
    const before = await stats();
    const c = await RawClient.connect(port);
    c.write(`GET / HTTP/1.1\r\nHost: app.example\r\nX-Big: ${big}\r\n\r\n`);
    assert.equal(await c.waitClose(), true);
    assert.deepEqual(statuses(c.received), [431], c.received);
    // The request line counts too.
    const longUrl = await RawClient.connect(port);
    longUrl.write(`GET /${big} HTTP/1.1\r\nHost: app.example\r\n\r\n`);
    assert.equal(await longUrl.waitClose(), true);
    assert.deepEqual(statuses(longUrl.received), [431]);
    assert.equal((await stats()).rejected.headerTooLarge, before.rejected.headerTooLarge + 2);
    assert.equal((await request(`${p.base}/`, { headers: { "x-small": "y".repeat(500) } })).status, 200);
    assert.equal(u.hits, 2);
  });

  it("answers 413 to a Content-Length beyond the route's maxBodyBytes without asking the upstream", async () => {
    const u = await start("cl-limit");
    await apply({ limits: { maxBodyBytes: 10_000 } }, route("b", "b:small", [u.upstream], { pathPrefix: "/small", maxBodyBytes: 1_000 }), route("b", "b:big", [u.upstream]));
    const before = await stats();
    const r = await request(`${p.base}/small/upload`, { method: "POST", body: "x".repeat(1_001) });
    assert.equal(r.status, 413);
    assert.equal(json(r).error, "request body too large");
    assert.equal(r.headers.connection, "close");
    assert.equal(u.hits, 0);
    assert.equal((await request(`${p.base}/small/upload`, { method: "POST", body: "x".repeat(1_000) })).status, 200);
    assert.equal((await request(`${p.base}/other`, { method: "POST", body: "x".repeat(5_000) })).status, 200, "the table's limit elsewhere");
    assert.equal((await request(`${p.base}/other`, { method: "POST", body: "x".repeat(10_001) })).status, 413);
    // Expect: 100-continue gets the 413 instead of a 100, so the body is never sent.
    const c = await RawClient.connect(port);
    c.write("POST /small/upload HTTP/1.1\r\nHost: app.example\r\nContent-Length: 50000\r\nExpect: 100-continue\r\n\r\n");
    assert.equal(await c.waitClose(), true);
    assert.deepEqual(statuses(c.received), [413], c.received);
    assert.equal((await stats()).rejected.bodyTooLarge, before.rejected.bodyTooLarge + 3);
    // Within the limit, the 100 Continue still comes.
    const ok = await RawClient.connect(port);
    ok.write("POST /small/upload HTTP/1.1\r\nHost: app.example\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    assert.ok(await ok.waitFor((t) => t.startsWith("HTTP/1.1 100 Continue\r\n\r\n")), ok.received);
    ok.write("hello");
    assert.ok(await ok.waitFor((t) => t.includes('"body":"hello"')), ok.received);
    ok.destroy();
  });

  it("answers 413 once a chunked body outgrows maxBodyBytes, and cuts the upstream's connection", async () => {
    let upstreamAborted = 0;
    let upstreamCompleted = 0;
    const u = await start("chunk-limit");
    u.server.removeAllListeners("request");
    u.server.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
      req.on("data", () => {});
      req.on("aborted", () => upstreamAborted++);
      req.on("end", () => {
        upstreamCompleted++;
        res.end("complete");
      });
    });
    await apply({}, route("c", "c:1", [u.upstream], { maxBodyBytes: 2_000 }));
    const before = await stats();
    const c = await RawClient.connect(port);
    c.write("POST /upload HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (let i = 0; i < 10; i++) {
      c.write(`1f4\r\n${"y".repeat(500)}\r\n`);
      await sleep(20);
      if (c.closed) break;
    }
    assert.equal(await c.waitClose(), true);
    assert.deepEqual(statuses(c.received), [413], c.received);
    await sleep(100);
    assert.equal(upstreamCompleted, 0, "the upstream never got a whole body");
    assert.equal(upstreamAborted, 1, "the upstream's connection was cut");
    const now = await stats();
    assert.equal(now.rejected.bodyTooLarge, before.rejected.bodyTooLarge + 1);
    assert.equal(now.pools.find((s) => s.poolId === "c:1")?.inFlight, 0);
    // Within the limit, chunked bodies pass.
    const fine = await request(`${p.base}/upload`, { method: "POST", body: [Buffer.alloc(1_000, "a"), Buffer.alloc(1_000, "b")] });
    assert.equal(fine.text, "complete");
  });

  it("answers 400 to a request Node's parser refuses, and counts it", async () => {
    const u = await start("bad");
    await apply({}, route("bad", "bad:1", [u.upstream]));
    const before = await stats();
    const c = await RawClient.connect(port);
    c.write("GET / HTTP/1.1\r\nHost: app.example\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab");
    assert.equal(await c.waitClose(), true);
    assert.deepEqual(statuses(c.received), [400], c.received);
    assert.equal((await stats()).rejected.badRequest, before.rejected.badRequest + 1);
    assert.equal(u.hits, 0);
  });
});

describe("proxy client-side settings at start", { timeout: 20_000 }, () => {
  it("configures the server from the restored table before any is applied", async () => {
    const u = await startUpstream("restored-limits");
    const first = await startTestProxy();
    try {
      await first.proxy.apply(tableWith(1, { limits: { maxHeaderBytes: 1_024 }, timeouts: { clientHeaderMs: 300 } }, route("r", "r:1", [u.upstream])));
      await first.server.close(100);
      const second = await startProxyServer({ listenHost: "127.0.0.1", listenPort: 0, stateDir: first.stateDir, token: first.token });
      try {
        const c = await RawClient.connect(second.listenPort);
        c.write(`GET / HTTP/1.1\r\nHost: app.example\r\nX-Big: ${"x".repeat(2_000)}\r\n\r\n`);
        assert.equal(await c.waitClose(), true);
        assert.deepEqual(statuses(c.received), [431]);
        const silent = await RawClient.connect(second.listenPort);
        assert.equal(await silent.waitClose(3_000), true);
        assert.deepEqual(statuses(silent.received), [408]);
        assert.ok(silent.closedAfterMs < 4_000, `408 after ${silent.closedAfterMs} ms`);
      } finally {
        await second.close(100);
      }
    } finally {
      await first.close();
      await u.close();
    }
  });
});
