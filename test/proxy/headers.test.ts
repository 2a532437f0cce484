// Honest request headers through the built-in proxy: one Host, forwarding fields from what the proxy saw (or a trusted peer said), Connection that cannot strip them.

import assert from "node:assert/strict";
import http from "node:http";
import type net from "node:net";
import { after, before, describe, it } from "node:test";
import type { ProxyStats, Route } from "../../src/proxy/contract.js";
import { forwardedElement } from "../../src/proxy/http.js";
import {
  type TestProxy,
  type TestUpstream,
  RawClient,
  json,
  request,
  route,
  startTestProxy,
  startUpstream,
  statuses,
  tableWith,
} from "./helpers.js";

interface Echo {
  id: string;
  url: string;
  headers: Record<string, string>;
  body: string;
}

/** What a client would like the upstream to believe. */
const FORGED = {
  "x-forwarded-for": "203.0.113.9",
  "x-forwarded-proto": "https",
  "x-forwarded-host": "forged.example",
  "x-real-ip": "203.0.113.9",
  forwarded: "for=203.0.113.9;proto=https",
};

describe("proxy request headers", { timeout: 30_000 }, () => {
  let p: TestProxy;
  let u: TestUpstream;
  let version = 0;
  const apply = (settings: Parameters<typeof tableWith>[1], ...routes: Route[]) => p.proxy.apply(tableWith(++version, settings, ...routes));
  const stats = async () => (await p.proxy.stats()) as Required<ProxyStats>;

  before(async () => {
    p = await startTestProxy();
    u = await startUpstream("hdr");
    // 127.0.0.2 stands for another proxy in front of this one; 127.0.0.1 for a plain client.
    await apply({ trustedProxies: ["127.0.0.2"] }, route("hdr", "hdr:1", [u.upstream], { host: "app.example" }));
  });
  after(async () => {
    await p.close();
    await u.close();
  });

  it("answers 400 to a request with two Host headers instead of routing on one and forwarding both", async () => {
    const before = await stats();
    const hits = u.hits;
    // The route is for app.example only: routing on the last Host would reach it.
    const c = await RawClient.connect(p.server.listenPort);
    c.write("GET /two-hosts HTTP/1.1\r\nHost: other.example\r\nHost: app.example\r\n\r\n");
    const closed = await c.waitClose(2_000);
    assert.deepEqual(statuses(c.received), [400], c.received);
    assert.equal(closed, true, "the connection is closed");
    assert.match(c.received, /more than one Host/);
    assert.equal(u.hits, hits);
    assert.equal((await stats()).rejected.badRequest, before.rejected.badRequest + 1);
  });

  it("answers 400 to an HTTP/1.1 request without Host, and still serves HTTP/1.0 without one", async () => {
    await apply({ trustedProxies: ["127.0.0.2"] }, route("hdr", "hdr:1", [u.upstream], { host: "app.example" }), route("any", "any:1", [u.upstream], { pathPrefix: "/any" }));
    const before = await stats();
    const c11 = await RawClient.connect(p.server.listenPort);
    c11.write("GET /any HTTP/1.1\r\n\r\n");
    assert.equal(await c11.waitClose(), true);
    assert.deepEqual(statuses(c11.received), [400]);
    const c10 = await RawClient.connect(p.server.listenPort);
    c10.write("GET /any HTTP/1.0\r\n\r\n");
    assert.ok(await c10.waitFor((r) => r.includes('"url":"/any"')), c10.received);
    c10.destroy();
    assert.equal((await stats()).rejected.badRequest, before.rejected.badRequest + 1);
  });

  it("names the upstream as Host on every request of an HTTP/1.0 keep-alive connection without Host, repeated or not", async () => {
    // Answers with a length, so that the HTTP/1.0 connection stays open from one request to the next.
    const sized = await startUpstream("sized", (req, res) => {
      const text = JSON.stringify({ host: req.headers.host });
      res.writeHead(200, { "content-length": Buffer.byteLength(text) }).end(text);
    });
    try {
      await apply({ trustedProxies: ["127.0.0.2"] }, route("hdr", "hdr:1", [u.upstream], { host: "app.example" }), route("sized", "sized:1", [sized.upstream], { pathPrefix: "/sized" }));
      const c = await RawClient.connect(p.server.listenPort);
      const hostSeen = `{"host":"${sized.upstream.host}:${sized.upstream.port}"}`;
      // The same head three times: from its second time on the proxy sends it from kept bytes.
      for (let i = 1; i <= 3; i++) {
        c.write("GET /sized/again HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert.ok(await c.waitFor((r) => r.split(hostSeen).length - 1 === i), `answer ${i}: ${c.received}`);
      }
      assert.doesNotMatch(c.received, /Connection: close/i);
      c.destroy();
    } finally {
      await sized.close();
    }
  });

  it("replaces an untrusted client's X-Forwarded-*, X-Real-IP and Forwarded with what the proxy saw", async () => {
    const r = await request(`${p.base}/who`, { headers: { host: "app.example", ...FORGED }, localAddress: "127.0.0.1" });
    const seen = json<Echo>(r).headers;
    assert.equal(seen["x-forwarded-for"], "127.0.0.1");
    assert.equal(seen["x-forwarded-proto"], "http");
    assert.equal(seen["x-forwarded-host"], "app.example");
    assert.equal(seen["x-real-ip"], "127.0.0.1");
    assert.equal(seen.forwarded, "for=127.0.0.1;proto=http;host=app.example");
    assert.equal(seen.host, "app.example");
  });

  it("sets the forwarding fields when the client sent none", async () => {
    const r = await request(`${p.base}/who`, { headers: { host: "app.example:8080" } });
    const seen = json<Echo>(r).headers;
    assert.equal(seen["x-forwarded-for"], "127.0.0.1");
    assert.equal(seen["x-forwarded-host"], "app.example:8080");
    assert.equal(seen["x-real-ip"], "127.0.0.1");
    // A port makes the host a quoted string (":" is no token character).
    assert.equal(seen.forwarded, 'for=127.0.0.1;proto=http;host="app.example:8080"');
  });

  it("keeps a trusted peer's forwarding fields, appending itself to X-Forwarded-For and Forwarded", async () => {
    const r = await request(`${p.base}/who`, { headers: { host: "app.example", ...FORGED }, localAddress: "127.0.0.2" });
    const seen = json<Echo>(r).headers;
    assert.equal(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.2");
    assert.equal(seen["x-forwarded-proto"], "https");
    assert.equal(seen["x-forwarded-host"], "forged.example");
    assert.equal(seen["x-real-ip"], "203.0.113.9");
    assert.equal(seen.forwarded, "for=203.0.113.9;proto=https, for=127.0.0.2;proto=http;host=app.example");
    // Without fields of its own, a trusted peer gets the proxy's.
    const bare = json<Echo>(await request(`${p.base}/who`, { headers: { host: "app.example" }, localAddress: "127.0.0.2" })).headers;
    assert.equal(bare["x-forwarded-for"], "127.0.0.2");
    assert.equal(bare["x-real-ip"], "127.0.0.2");
  });

  it("trusts by CIDR block, and follows a new table's list on connections already open", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const ask = async () => json<Echo>(await request(`${p.base}/who`, { headers: { host: "app.example", ...FORGED }, agent })).headers["x-forwarded-for"];
      assert.equal(await ask(), "127.0.0.1");
      await apply({ trustedProxies: ["198.51.100.0/24", "127.0.0.0/30"] }, route("hdr", "hdr:1", [u.upstream], { host: "app.example" }));
      assert.equal(await ask(), "203.0.113.9, 127.0.0.1");
      await apply({ trustedProxies: ["127.0.0.2"] }, route("hdr", "hdr:1", [u.upstream], { host: "app.example" }));
      assert.equal(await ask(), "127.0.0.1");
    } finally {
      agent.destroy();
    }
  });

  it("sends each request of a keep-alive connection on as sent, whether it repeats the last one, its fields alone or nothing", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const steps = [
        { path: "/a", x: "1" },
        { path: "/a", x: "1" },
        { path: "/b", x: "1" },
        { path: "/a", x: "2" },
        { path: "/a", x: "1", body: "posted" },
        { path: "/a", x: "1" },
        { path: "/a", x: "1", forged: true },
      ];
      for (const [i, step] of steps.entries()) {
        const headers = { host: "app.example", "x-step": step.x, ...(step.forged ? FORGED : {}) };
        const r = await request(`${p.base}${step.path}`, { method: step.body === undefined ? "GET" : "POST", headers, body: step.body, agent });
        const seen = json<Echo>(r);
        assert.equal(seen.url, step.path, `request ${i}`);
        assert.equal(seen.headers["x-step"], step.x, `request ${i}`);
        assert.equal(seen.body, step.body ?? "", `request ${i}`);
        assert.equal(seen.headers["content-length"], step.body === undefined ? undefined : String(step.body.length), `request ${i}`);
        assert.equal(seen.headers["x-forwarded-for"], "127.0.0.1", `request ${i}`);
        assert.equal(seen.headers.forwarded, "for=127.0.0.1;proto=http;host=app.example", `request ${i}`);
      }
    } finally {
      agent.destroy();
    }
  });

  it("does not let Connection strip Host, Content-Length or the fields the proxy adds", async () => {
    const connection = "keep-alive, Host, Content-Length, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, X-Real-IP, Forwarded, X-Secret";
    const r = await request(`${p.base}/conn`, {
      method: "POST",
      body: "payload",
      headers: { host: "app.example", connection, "x-secret": "hop", "x-kept": "end-to-end" },
    });
    assert.equal(r.status, 200, r.text);
    const e = json<Echo>(r);
    assert.equal(e.body, "payload");
    assert.equal(e.headers.host, "app.example");
    assert.equal(e.headers["content-length"], "7");
    assert.equal(e.headers["x-forwarded-for"], "127.0.0.1");
    assert.equal(e.headers["x-forwarded-proto"], "http");
    assert.equal(e.headers["x-forwarded-host"], "app.example");
    assert.equal(e.headers["x-real-ip"], "127.0.0.1");
    assert.equal(e.headers.forwarded, "for=127.0.0.1;proto=http;host=app.example");
    assert.equal(e.headers["x-secret"], undefined);
    assert.equal(e.headers["x-kept"], "end-to-end");
  });

  it("applies the same rules to upgrade requests", async () => {
    let seen: http.IncomingHttpHeaders | undefined;
    const onUpgrade = (req: http.IncomingMessage, socket: net.Socket) => {
      seen = req.headers;
      socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
    };
    u.server.on("upgrade", onUpgrade);
    try {
      const c = await RawClient.connect(p.server.listenPort);
      c.write("GET /ws HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade, X-Real-IP, Host\r\nUpgrade: websocket\r\nX-Forwarded-For: 203.0.113.9\r\nX-Real-IP: 203.0.113.9\r\nForwarded: for=203.0.113.9\r\n\r\n");
      assert.equal(await c.waitClose(), true);
      assert.deepEqual(statuses(c.received), [403]);
      assert.equal(seen?.host, "app.example");
      assert.equal(seen?.["x-forwarded-for"], "127.0.0.1");
      assert.equal(seen?.["x-real-ip"], "127.0.0.1");
      assert.equal(seen?.forwarded, "for=127.0.0.1;proto=http;host=app.example");
      const dup = await RawClient.connect(p.server.listenPort);
      dup.write("GET /ws HTTP/1.1\r\nHost: other.example\r\nHost: app.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
      assert.equal(await dup.waitClose(), true);
      assert.deepEqual(statuses(dup.received), [400]);
    } finally {
      u.server.off("upgrade", onUpgrade);
    }
  });
});

describe("Forwarded elements", () => {
  it("writes Forwarded nodes per RFC 7239: IPv6 bracketed and quoted, hosts with a port quoted", () => {
    assert.equal(forwardedElement("192.0.2.1", "app.example"), "for=192.0.2.1;proto=http;host=app.example");
    assert.equal(forwardedElement("2001:db8::1", "[2001:db8::2]:8080"), 'for="[2001:db8::1]";proto=http;host="[2001:db8::2]:8080"');
    assert.equal(forwardedElement("", undefined), "for=unknown;proto=http");
    assert.equal(forwardedElement("192.0.2.1", 'a"b'), 'for=192.0.2.1;proto=http;host="a\\"b"');
  });
});
