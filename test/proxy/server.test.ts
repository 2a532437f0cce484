import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { WebSocket, WebSocketServer } from "ws";
import type { RouteTable } from "../../src/proxy/contract.js";
import { BuiltinProxy } from "../../src/proxy/builtin.js";
import { TABLE_FILE } from "../../src/proxy/server.js";
import {
  type TestProxy,
  type TestUpstream,
  echo,
  json,
  refusedPort,
  request,
  route,
  sleep,
  startTestProxy,
  startUpstream,
  table,
} from "./helpers.js";

interface Echo {
  id: string;
  method: string;
  url: string;
  headers: Record<string, string>;
  body: string;
}

describe("proxy data plane", { timeout: 30_000 }, () => {
  let p: TestProxy;
  const upstreams: TestUpstream[] = [];
  const start = async (id: string, handler?: Parameters<typeof startUpstream>[1]) => {
    const u = await startUpstream(id, handler);
    upstreams.push(u);
    return u;
  };
  let version = 0;
  const apply = (...routes: RouteTable["routes"]) => p.proxy.apply(table(++version, ...routes));

  before(async () => {
    p = await startTestProxy();
  });
  after(async () => {
    await p.close();
    await Promise.all(upstreams.map((u) => u.close()));
  });

  it("routes by host and by the longest path prefix", async () => {
    const web = await start("web");
    const api = await start("api");
    const apiV2 = await start("api-v2");
    const books = await start("books");
    await apply(
      route("web", "web:1", [web.upstream]),
      route("api", "api:1", [api.upstream], { pathPrefix: "/api" }),
      route("api-v2", "api-v2:1", [apiV2.upstream], { pathPrefix: "/api/v2" }),
      route("books", "books:1", [books.upstream], { host: "books.example" }),
    );
    const who = async (urlPath: string, host?: string) => {
      const r = await request(`${p.base}${urlPath}`, { headers: host ? { host } : {} });
      assert.equal(r.status, 200, r.text);
      return json<Echo>(r).id;
    };
    assert.equal(await who("/"), "web");
    assert.equal(await who("/apis"), "web");
    assert.equal(await who("/api"), "api");
    assert.equal(await who("/api/v1/x?q=1"), "api");
    assert.equal(await who("/api/v2/x"), "api-v2");
    assert.equal(await who("/api/v2/x", "Books.Example:8080"), "books");
    const r = await request(`${p.base}/api/v2/x?q=1`);
    assert.equal(json<Echo>(r).url, "/api/v2/x?q=1");
  });

  it("round-robins across the upstreams of a pool", async () => {
    const a = await start("rr-a");
    const b = await start("rr-b");
    const c = await start("rr-c");
    await apply(route("rr", "rr:1", [a.upstream, b.upstream, c.upstream]));
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push(json<Echo>(await request(`${p.base}/`)).id);
    assert.deepEqual(ids.slice(0, 3).sort(), ["rr-a", "rr-b", "rr-c"]);
    assert.deepEqual(ids.slice(3), ids.slice(0, 3));
  });

  it("sets X-Forwarded-For (an untrusted client's replaced), -Proto and -Host and strips hop-by-hop headers", async () => {
    const u = await start("fwd");
    await apply(route("fwd", "fwd:1", [u.upstream]));
    const r = await request(`${p.base}/h`, {
      headers: { host: "app.example", "x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https", "x-custom": "kept", connection: "keep-alive, x-secret", "x-secret": "hop", te: "trailers" },
    });
    const seen = json<Echo>(r).headers;
    assert.equal(seen["x-forwarded-for"], "127.0.0.1");
    assert.equal(seen["x-forwarded-proto"], "http");
    assert.equal(seen["x-forwarded-host"], "app.example");
    assert.equal(seen.host, "app.example");
    assert.equal(seen["x-custom"], "kept");
    assert.equal(seen["x-secret"], undefined);
    assert.equal(seen.te, undefined);
    assert.equal(r.headers["x-upstream"], "fwd");
  });

  it("passes request bodies through, with a length or chunked", async () => {
    const u = await start("body");
    await apply(route("body", "body:1", [u.upstream]));
    const fixed = await request(`${p.base}/upload`, { method: "POST", body: "name=turquoise", headers: { "content-type": "application/x-www-form-urlencoded" } });
    assert.equal(json<Echo>(fixed).body, "name=turquoise");
    assert.equal(json<Echo>(fixed).headers["content-length"], "14");
    const pieces = Array.from({ length: 50 }, (_, i) => Buffer.from(`piece-${i};`));
    const chunked = await request(`${p.base}/upload`, { method: "PUT", body: pieces });
    assert.equal(json<Echo>(chunked).body, Buffer.concat(pieces).toString());
    assert.equal(json<Echo>(chunked).headers["transfer-encoding"], "chunked");
    const big = Buffer.alloc(3 * 1024 * 1024, "x");
    const large = await request(`${p.base}/upload`, { method: "POST", body: big });
    assert.equal(json<Echo>(large).body.length, big.length);
  });

  it("streams responses of every framing: length, chunked, until close, HEAD and 204", async () => {
    const u = await start("framing", (req, res) => {
      if (req.url === "/chunked") {
        res.write("a".repeat(10));
        setTimeout(() => res.end("b".repeat(70_000)), 20);
      } else if (req.url === "/close") {
        res.socket!.write("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-close body");
        res.socket!.end();
      } else if (req.url === "/empty") {
        res.writeHead(204).end();
      } else if (req.url === "/length") {
        res.writeHead(200, { "content-type": "text/plain", "content-length": "100000" }).end("x".repeat(100_000));
      } else {
        res.writeHead(200, { "content-type": "text/plain" }).end("small");
      }
    });
    await apply(route("framing", "framing:1", [u.upstream]));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const chunked = await request(`${p.base}/chunked`, { agent });
      assert.equal(chunked.text, "a".repeat(10) + "b".repeat(70_000));
      const length = await request(`${p.base}/length`, { agent });
      assert.equal(length.text.length, 100_000);
      assert.equal(length.headers["content-length"], "100000");
      const head = await request(`${p.base}/length`, { method: "HEAD", agent });
      assert.equal(head.status, 200);
      assert.equal(head.text, "");
      const empty = await request(`${p.base}/empty`, { agent });
      assert.equal(empty.status, 204);
      const untilClose = await request(`${p.base}/close`, { agent });
      assert.equal(untilClose.text, "until-close body");
      const again = await request(`${p.base}/length`, { agent });
      assert.equal(again.text.length, 100_000);
    } finally {
      agent.destroy();
    }
  });

  it("proxies WebSockets both ways", async () => {
    const u = await start("ws");
    const wss = new WebSocketServer({ server: u.server });
    let forwardedFor: string | undefined;
    wss.on("connection", (socket, req) => {
      forwardedFor = req.headers["x-forwarded-for"] as string;
      socket.on("message", (data) => socket.send(`echo:${String(data)}`));
    });
    await apply(route("ws", "ws:1", [u.upstream], { pathPrefix: "/ws" }));
    const ws = new WebSocket(`ws://127.0.0.1:${p.server.listenPort}/ws/chat`);
    try {
      await new Promise<void>((resolve, reject) => {
        ws.once("open", () => resolve());
        ws.once("error", reject);
      });
      const replies: string[] = [];
      const got = new Promise<void>((resolve) =>
        ws.on("message", (data) => {
          replies.push(String(data));
          if (replies.length === 2) resolve();
        }),
      );
      ws.send("hello");
      ws.send("x".repeat(100_000));
      await got;
      assert.equal(replies[0], "echo:hello");
      assert.equal(replies[1], `echo:${"x".repeat(100_000)}`);
      assert.equal(forwardedFor, "127.0.0.1");
    } finally {
      ws.terminate();
      wss.close();
    }
  });

  it("retries a refused WebSocket connection on another upstream, and answers 503 upgrades without one", async () => {
    const u = await start("ws-alive");
    const wss = new WebSocketServer({ server: u.server });
    wss.on("connection", (socket) => socket.on("message", (data) => socket.send(String(data))));
    const dead = { id: "ws-dead", host: "127.0.0.1", port: await refusedPort() };
    await apply(route("wsr", "wsr:1", [dead, u.upstream], { pathPrefix: "/wsr" }));
    try {
      for (let i = 0; i < 2; i++) {
        const ws = new WebSocket(`ws://127.0.0.1:${p.server.listenPort}/wsr`);
        const reply = await new Promise<string>((resolve, reject) => {
          ws.once("open", () => ws.send(`ping-${i}`));
          ws.once("message", (data) => resolve(String(data)));
          ws.once("error", reject);
        });
        ws.terminate();
        assert.equal(reply, `ping-${i}`);
      }
      await p.proxy.setUpstreamHealth("ws-alive", false);
      await p.proxy.setUpstreamHealth("ws-dead", false);
      const refused = new WebSocket(`ws://127.0.0.1:${p.server.listenPort}/wsr`);
      const status = await new Promise<number>((resolve) => {
        refused.once("unexpected-response", (_req, res) => resolve(res.statusCode!));
        refused.once("error", () => resolve(-1));
      });
      assert.equal(status, 503);
    } finally {
      wss.close();
    }
  });

  it("retries once on another upstream when a connection is refused, for GET and POST", async () => {
    const alive = await start("alive");
    const dead = { id: "dead", host: "127.0.0.1", port: await refusedPort() };
    await apply(route("retry", "retry:1", [dead, alive.upstream]));
    const before = await p.proxy.stats();
    for (let i = 0; i < 4; i++) {
      // Passive detection takes the dead upstream out at its first refusal: put it back each time
      // so that every request meets it first.
      await p.proxy.setUpstreamHealth("dead", true);
      const get = await request(`${p.base}/r`);
      assert.equal(get.status, 200, get.text);
      await p.proxy.setUpstreamHealth("dead", true);
      const post = await request(`${p.base}/r`, { method: "POST", body: `n=${i}` });
      assert.equal(post.status, 200, post.text);
      assert.equal(json<Echo>(post).body, `n=${i}`);
    }
    const after = await p.proxy.stats();
    assert.ok(after.retries - before.retries >= 4, `retries: ${after.retries - before.retries}`);
    assert.equal(alive.hits, 8);
  });

  it("retries a reset GET but not a POST whose body was already sent", async () => {
    const reset = await start("reset", (req) => req.socket.destroy());
    const good = await start("good");
    await apply(route("reset", "reset:1", [reset.upstream, good.upstream]));
    const statuses: number[] = [];
    for (let i = 0; i < 2; i++) statuses.push((await request(`${p.base}/g`)).status);
    assert.deepEqual(statuses, [200, 200]);
    const posts: number[] = [];
    for (let i = 0; i < 2; i++) posts.push((await request(`${p.base}/p`, { method: "POST", body: "payload" })).status);
    // One of the two POSTs lands on the resetting upstream first; it must not be replayed.
    assert.deepEqual(posts.sort(), [200, 502]);
  });

  it("answers 502 JSON when every attempt fails", async () => {
    const dead = { id: "dead2", host: "127.0.0.1", port: await refusedPort() };
    await apply(route("gone", "gone:1", [dead]));
    const r = await request(`${p.base}/x`);
    assert.equal(r.status, 502);
    assert.equal(json(r).error, "upstream failed");
    assert.equal(json(r).service, "gone");
  });

  it("answers 503 JSON when no upstream of the route is healthy, and recovers", async () => {
    const a = await start("h-a");
    const b = await start("h-b");
    await apply(route("books", "books:h", [a.upstream, b.upstream]));
    await p.proxy.setUpstreamHealth("h-a", false);
    assert.equal(json<Echo>(await request(`${p.base}/`)).id, "h-b");
    assert.equal(json<Echo>(await request(`${p.base}/`)).id, "h-b");
    await p.proxy.setUpstreamHealth("h-b", false);
    const r = await request(`${p.base}/`);
    assert.equal(r.status, 503);
    assert.deepEqual(json(r), { error: "no healthy instance", service: "books" });
    await p.proxy.setUpstreamHealth("h-a", true);
    assert.equal(json<Echo>(await request(`${p.base}/`)).id, "h-a");
  });

  it("answers 404 JSON when no route matches", async () => {
    const u = await start("only");
    await apply(route("only", "only:1", [u.upstream], { host: "only.example" }));
    const r = await request(`${p.base}/missing?x=1`, { headers: { host: "other.example" } });
    assert.equal(r.status, 404);
    assert.deepEqual(json(r), { error: "no route", host: "other.example", path: "/missing?x=1" });
  });

  it("swaps tables atomically under load: no failure, and every request after an ack uses the new pool", async () => {
    const blue = await start("blue", (_req, res) => res.end("blue"));
    const green = await start("green", (_req, res) => res.end("green"));
    const blueRoute = route("swap", "swap:blue", [blue.upstream]);
    const greenRoute = route("swap", "swap:green", [green.upstream]);
    await apply(blueRoute);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    let expected: string | undefined = "blue";
    let sent = 0;
    let failures = 0;
    let mismatches = 0;
    const counts: Record<string, number> = {};
    const worker = async () => {
      while (sent < 2_000) {
        sent++;
        const want = expected;
        try {
          const r = await request(`${p.base}/`, { agent });
          if (r.status !== 200) failures++;
          counts[r.text] = (counts[r.text] ?? 0) + 1;
          if (want !== undefined && r.text !== want) mismatches++;
        } catch {
          failures++;
        }
      }
    };
    const flipper = async () => {
      for (let i = 0; i < 6; i++) {
        await sleep(40);
        const next = i % 2 === 0 ? "green" : "blue";
        expected = undefined; // requests sent while the apply is in progress may use either pool
        await apply(next === "green" ? greenRoute : blueRoute);
        expected = next;
      }
    };
    try {
      await Promise.all([...Array.from({ length: 16 }, worker), flipper()]);
    } finally {
      agent.destroy();
    }
    assert.equal(failures, 0);
    assert.equal(mismatches, 0);
    assert.deepEqual(Object.keys(counts).sort(), ["blue", "green"]);
    assert.equal(counts.blue! + counts.green!, 2_000);
  });

  it("drain waits for a slow in-flight request to complete", async () => {
    const slow = await start("slow", (_req, res) => setTimeout(() => res.end("done"), 300));
    const fast = await start("fast");
    await apply(route("drain", "drain:old", [slow.upstream]));
    const inFlight = request(`${p.base}/slow`);
    await sleep(50);
    await apply(route("drain", "drain:new", [fast.upstream]));
    const result = await p.proxy.drain("drain:old", 5_000);
    assert.equal(result.poolId, "drain:old");
    assert.equal(result.completed, 1);
    assert.equal(result.cut, 0);
    assert.ok(result.durationMs >= 150 && result.durationMs < 2_000, `durationMs ${result.durationMs}`);
    assert.equal((await inFlight).text, "done");
    const stats = await p.proxy.stats();
    assert.equal(stats.pools.some((s) => s.poolId === "drain:old"), false, "a drained retired pool is forgotten");
  });

  it("drain cuts what is still in flight when the timeout runs out", async () => {
    const slow = await start("slower", (_req, res) => setTimeout(() => res.end("late"), 3_000));
    const fast = await start("fast2");
    await apply(route("cut", "cut:old", [slow.upstream]));
    const inFlight = request(`${p.base}/slow`).then(
      () => "answered",
      () => "cut",
    );
    await sleep(50);
    await apply(route("cut", "cut:new", [fast.upstream]));
    const t0 = Date.now();
    const result = await p.proxy.drain("cut:old", 100);
    const elapsed = Date.now() - t0;
    assert.equal(result.cut, 1);
    assert.equal(result.completed, 0);
    // About the timeout, far from the 3 s the request would have needed.
    assert.ok(result.durationMs >= 90 && result.durationMs < 1_000, `durationMs ${result.durationMs}`);
    assert.ok(elapsed < 1_500, `drain returned after ${elapsed} ms`);
    assert.equal(await inFlight, "cut");
  });

  it("drain of an unknown pool returns at once with nothing to do", async () => {
    assert.deepEqual(await p.proxy.drain("no-such-pool", 1_000), { poolId: "no-such-pool", completed: 0, cut: 0, durationMs: 0 });
  });

  it("counts requests per pool in stats", async () => {
    const u = await start("stats");
    await apply(route("stats", "stats:1", [u.upstream]));
    for (let i = 0; i < 3; i++) await request(`${p.base}/`);
    const stats = await p.proxy.stats();
    assert.equal(stats.tableVersion, version);
    assert.deepEqual(stats.pools.find((s) => s.poolId === "stats:1"), { poolId: "stats:1", inFlight: 0, served: 3, failed: 0 });
    assert.ok(stats.requests >= 3);
  });
});

describe("proxy control plane", { timeout: 20_000 }, () => {
  let p: TestProxy;
  before(async () => {
    p = await startTestProxy();
  });
  after(async () => {
    await p.close();
  });

  it("refuses every call without the right token with 401 JSON", async () => {
    for (const [method, urlPath] of [["GET", "/health"], ["GET", "/stats"], ["PUT", "/table"], ["POST", "/drain"], ["POST", "/upstreams/health"]] as const) {
      const body = method === "GET" ? undefined : "{}";
      const none = await request(`${p.controlUrl}${urlPath}`, { method, body });
      assert.equal(none.status, 401, `${method} ${urlPath}`);
      assert.equal(json(none).error, "unauthorized");
      const wrong = await request(`${p.controlUrl}${urlPath}`, { method, body, headers: { authorization: `Bearer ${p.token}x` } });
      assert.equal(wrong.status, 401);
    }
    const bad = new BuiltinProxy({ controlUrl: p.controlUrl, token: "wrong" });
    await assert.rejects(bad.stats(), (e: Error & { code?: string }) => e.code === "UNAUTHORIZED");
  });

  it("does not serve the control API on the public port", async () => {
    const r = await request(`http://127.0.0.1:${p.server.listenPort}/stats`, { headers: { authorization: `Bearer ${p.token}` } });
    assert.equal(r.status, 404);
    assert.equal(json(r).error, "no route");
  });

  it("persists each applied table before acknowledging, and ignores older versions", async () => {
    const t3 = table(3, route("s", "s:3", [{ id: "i", host: "127.0.0.1", port: 9 }]));
    await p.proxy.apply(t3);
    assert.deepEqual(JSON.parse(await readFile(path.join(p.stateDir, TABLE_FILE), "utf8")), t3);
    await p.proxy.apply(table(2, route("s", "s:2", [])));
    assert.equal((await p.proxy.stats()).tableVersion, 3);
    assert.deepEqual(await p.proxy.table(), t3);
    assert.deepEqual(JSON.parse(await readFile(path.join(p.stateDir, TABLE_FILE), "utf8")), t3);
  });

  it("rejects an invalid table with 400 and keeps the current one", async () => {
    const r = await request(`${p.controlUrl}/table`, {
      method: "PUT",
      headers: { authorization: `Bearer ${p.token}` },
      body: JSON.stringify({ version: 99, routes: [{ service: "s", pathPrefix: "/", poolId: "p", upstreams: [{ id: "x", host: "h", port: 0 }] }] }),
    });
    assert.equal(r.status, 400);
    assert.match(json<{ error: string }>(r).error, /routes\[0\]\.upstreams\[0\]\.port/);
    assert.equal((await p.proxy.stats()).tableVersion, 3);
  });

  it("answers /health", async () => {
    assert.deepEqual(await p.proxy.health(), { ok: true, pid: process.pid, tableVersion: 3 });
  });
});

describe("proxy restart", { timeout: 20_000 }, () => {
  it("restores the persisted table when a server starts on the same state dir", async () => {
    const u = await startUpstream("restored", echo("restored"));
    const first = await startTestProxy();
    try {
      await first.proxy.apply(table(4, route("r", "r:1", [u.upstream])));
      await first.server.close(100);
      const { startProxyServer } = await import("../../src/proxy/server.js");
      const second = await startProxyServer({ listenHost: "127.0.0.1", listenPort: 0, stateDir: first.stateDir, token: first.token });
      try {
        assert.equal(second.tableVersion(), 4);
        const r = await request(`http://127.0.0.1:${second.listenPort}/`);
        assert.equal(json<Echo>(r).id, "restored");
      } finally {
        await second.close(100);
      }
    } finally {
      await first.close();
      await u.close();
    }
  });
});
