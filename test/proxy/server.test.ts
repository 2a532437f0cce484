// The built-in proxy beyond the shared contract (contract.test-suite.ts): round-robin, bodies and
// framing, retries, its control API and restart. The contract itself runs in builtin.contract.test.ts.

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
    for (const [method, urlPath] of [["GET", "/health"], ["GET", "/stats"], ["PUT", "/table"], ["PATCH", "/table"], ["POST", "/drain"], ["POST", "/upstreams/health"]] as const) {
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

  it("PATCH /table: a delta at the served version is saved as the whole table it makes before it is acknowledged; another base gets 409 with the served version", async () => {
    const patch = (body: string) => request(`${p.controlUrl}/table`, { method: "PATCH", headers: { authorization: `Bearer ${p.token}` }, body });
    const delta = { base: 3, version: 5, services: ["t"], routes: [route("t", "t:5", [{ id: "j", host: "127.0.0.1", port: 9 }])] };
    assert.equal((await patch(JSON.stringify(delta))).status, 200);
    const saved = JSON.parse(await readFile(path.join(p.stateDir, TABLE_FILE), "utf8")) as RouteTable;
    assert.equal(saved.version, 5);
    assert.deepEqual(saved.routes.map((r) => r.poolId), ["s:3", "t:5"]);
    assert.deepEqual(await p.proxy.table(), saved);
    const stale = await patch(JSON.stringify({ ...delta, base: 4, version: 6 }));
    assert.equal(stale.status, 409);
    assert.equal(json<{ version: number }>(stale).version, 5);
    assert.match(json<{ error: string }>(stale).error, /for table version 4, this proxy serves version 5: send the whole table/);
    assert.equal(await p.proxy.applyDelta({ ...delta, base: 4, version: 6 }), "stale");
    // Back to version 3's routes for the tests below, by a whole table.
    await p.proxy.apply(table(6, route("s", "s:3", [{ id: "i", host: "127.0.0.1", port: 9 }])));
  });

  it("PATCH /table: garbage, a wrong shape, a table it would make invalid and a body over the limit are refused with what is wrong; the table stays", async () => {
    const patch = (body: string | Buffer) => request(`${p.controlUrl}/table`, { method: "PATCH", headers: { authorization: `Bearer ${p.token}` }, body });
    const cases: Array<[string | Buffer, number, RegExp]> = [
      ["{not json", 400, /body is not valid JSON/],
      ["[]", 400, /invalid route table delta: base must be a number/],
      [JSON.stringify({ base: 6, version: 6, services: [], routes: [] }), 400, /version \(6\) must be above base \(6\)/],
      [JSON.stringify({ base: 6, version: 7, services: ["u"], routes: [{ service: "u", pathPrefix: "/", poolId: "s:3", upstreams: [] }] }), 400, /the table it makes is invalid: .*poolId "s:3" is already used/],
      [JSON.stringify({ base: 6, version: 7, services: ["u"], routes: [{ service: "u", pathPrefix: "/", poolId: "u", upstreams: [{ id: "x", host: "h", port: 0 }] }] }), 400, /routes\[1\]\.upstreams\[0\]\.port/],
      [Buffer.alloc(17 * 1024 * 1024, 0x20), 413, /body too large/],
    ];
    for (const [body, status, message] of cases) {
      const r = await patch(body);
      assert.equal(r.status, status, `${String(body).slice(0, 60)}: ${r.text}`);
      assert.match(json<{ error: string }>(r).error, message);
    }
    assert.equal((await p.proxy.stats()).tableVersion, 6);
    assert.equal(JSON.parse(await readFile(path.join(p.stateDir, TABLE_FILE), "utf8")).version, 6);
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
