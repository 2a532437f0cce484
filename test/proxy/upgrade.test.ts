// Upgrade requests through the built-in proxy: a tunnel only after a 101, anything else answered and closed, handshake and idle timeouts, tunnel stats.

import assert from "node:assert/strict";
import type http from "node:http";
import type net from "node:net";
import { after, before, describe, it } from "node:test";
import { WebSocket, WebSocketServer } from "ws";
import type { Route, ProxyStats } from "../../src/proxy/contract.js";
import {
  type TestProxy,
  type TestUpstream,
  RawClient,
  request,
  route,
  sleep,
  startTestProxy,
  startUpstream,
  statuses,
  tableWith,
} from "./helpers.js";

const UPGRADE = "Connection: Upgrade\r\nUpgrade: websocket\r\n";

describe("proxy upgrades", { timeout: 30_000 }, () => {
  let p: TestProxy;
  let port: number;
  const upstreams: TestUpstream[] = [];
  const start = async (id: string, handler?: Parameters<typeof startUpstream>[1]) => {
    const u = await startUpstream(id, handler);
    upstreams.push(u);
    return u;
  };
  let version = 0;
  const apply = (...routes: Route[]) => p.proxy.apply(tableWith(++version, {}, ...routes));
  const stats = async () => (await p.proxy.stats()) as Required<ProxyStats>;

  before(async () => {
    p = await startTestProxy();
    port = p.server.listenPort;
  });
  after(async () => {
    await p.close();
    await Promise.all(upstreams.map((u) => u.close()));
  });

  it("closes the client connection after a refused upgrade, so a second request cannot reach the upstream past the routes", async () => {
    // A plain HTTP upstream: it ignores the Upgrade and answers 200.
    const u = await start("plain");
    await apply(route("api", "api:plain", [u.upstream], { pathPrefix: "/api" }));
    assert.equal((await request(`${p.base}/internal/secret`)).status, 404, "outside the route");

    const c = await RawClient.connect(port);
    c.write(`GET /api/echo HTTP/1.1\r\nHost: app.example\r\n${UPGRADE}\r\n`);
    assert.ok(await c.waitFor((r) => r.includes('"url":"/api/echo"')), c.received);
    c.write("GET /internal/secret HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 203.0.113.99\r\n\r\n");
    const closed = await c.waitClose(2_000);
    assert.deepEqual(u.seen, ["GET /api/echo"], "the second request never reaches the upstream");
    assert.equal(closed, true, "the proxy closes the connection after the answer");
    assert.deepEqual(statuses(c.received), [200]);
    assert.match(c.received, /\r\nConnection: close\r\n/);
  });

  it("never forwards bytes sent behind an upgrade request before the upstream switched", async () => {
    const u = await start("plain-pipelined");
    await apply(route("api", "api:pipelined", [u.upstream], { pathPrefix: "/api" }));
    const c = await RawClient.connect(port);
    c.write(`GET /api/echo HTTP/1.1\r\nHost: app.example\r\n${UPGRADE}\r\nGET /internal/secret HTTP/1.1\r\nHost: app.example\r\n\r\n`);
    const closed = await c.waitClose(2_000);
    assert.deepEqual(u.seen, ["GET /api/echo"]);
    assert.equal(closed, true);
    assert.deepEqual(statuses(c.received), [200]);
  });

  it("relays a refused upgrade's answer whole, whatever its framing, then closes", async () => {
    const u = await start("refuser", (req, res) => {
      if (req.url === "/chunked") {
        res.writeHead(426, { upgrade: "websocket", "content-type": "text/plain" });
        res.write("part1-");
        setTimeout(() => res.end("part2"), 20);
      } else if (req.url === "/length") {
        res.writeHead(403, { "content-type": "text/plain", "content-length": "9" }).end("forbidden");
      } else if (req.url === "/empty") {
        res.writeHead(204).end();
      } else {
        res.socket!.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\nuntil-close body");
      }
    });
    await apply(route("refuser", "refuser:1", [u.upstream]));
    const cases: [string, number, string][] = [
      ["/chunked", 426, "6\r\npart1-\r\n5\r\npart2\r\n0\r\n\r\n"],
      ["/length", 403, "Content-Length: 9\r\nConnection: close\r\n\r\nforbidden"],
      ["/empty", 204, "Connection: close\r\n\r\n"],
      ["/close", 400, "Connection: close\r\n\r\nuntil-close body"],
    ];
    for (const [path, status, tail] of cases) {
      const c = await RawClient.connect(port);
      c.write(`GET ${path} HTTP/1.1\r\nHost: app.example\r\n${UPGRADE}\r\n`);
      assert.equal(await c.waitClose(2_000), true, `${path}: closed`);
      assert.deepEqual(statuses(c.received), [status], path);
      assert.ok(c.received.endsWith(tail), `${path}: ${JSON.stringify(c.received)}`);
      assert.doesNotMatch(c.received, /\r\nupgrade:/i, `${path}: hop-by-hop Upgrade dropped`);
    }
  });

  it("tunnels a real WebSocket and counts it while open", async () => {
    const u = await start("ws");
    const wss = new WebSocketServer({ server: u.server });
    wss.on("connection", (socket) => socket.on("message", (data) => socket.send(`echo:${String(data)}`)));
    await apply(route("ws", "ws:1", [u.upstream], { pathPrefix: "/ws" }));
    const before = await stats();
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/chat`);
    try {
      await new Promise<void>((resolve, reject) => {
        ws.once("open", () => resolve());
        ws.once("error", reject);
      });
      const reply = new Promise<string>((resolve) => ws.once("message", (d) => resolve(String(d))));
      ws.send("hello");
      assert.equal(await reply, "echo:hello");
      const during = await stats();
      assert.equal(during.tunnels.open, before.tunnels.open + 1);
      assert.equal(during.tunnels.total, before.tunnels.total + 1);
    } finally {
      ws.close();
      await new Promise((resolve) => ws.once("close", resolve));
      wss.close();
    }
    await sleep(50);
    const afterClose = await stats();
    assert.equal(afterClose.tunnels.open, before.tunnels.open);
    assert.equal(afterClose.pools.find((s) => s.poolId === "ws:1")?.inFlight, 0);
  });

  it("relays the 101 without hop-by-hop fields, then what each side sent early", async () => {
    const u = await start("raw-101");
    let seen: http.IncomingHttpHeaders | undefined;
    u.server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket) => {
      seen = req.headers;
      socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade, X-Hop\r\nX-Hop: gone\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\n\r\nhello:");
      socket.on("data", (d) => socket.write(d));
      // Half-open otherwise (an HTTP server's sockets allow it), which would hold the server open.
      socket.on("end", () => socket.end());
    });
    await apply(route("raw", "raw:1", [u.upstream]));
    const c = await RawClient.connect(port);
    c.write(`GET /chat HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade, X-Secret\r\nUpgrade: echo\r\nX-Secret: hop\r\nContent-Length: 0\r\nX-Forwarded-For: 203.0.113.66\r\n\r\nearly;`);
    assert.ok(await c.waitFor((r) => r.endsWith("hello:early;")), JSON.stringify(c.received));
    c.write("later");
    assert.ok(await c.waitFor((r) => r.endsWith("later")));
    const [head] = c.received.split("\r\n\r\n");
    assert.equal(head, "HTTP/1.1 101 Switching Protocols\r\nX-Kept: yes\r\nConnection: Upgrade\r\nUpgrade: echo");
    assert.equal(seen?.connection, "Upgrade");
    assert.equal(seen?.upgrade, "echo");
    assert.equal(seen?.["content-length"], undefined);
    assert.equal(seen?.["x-secret"], undefined);
    assert.equal(seen?.["x-forwarded-for"], "127.0.0.1");
    assert.equal(seen?.["x-real-ip"], "127.0.0.1");
    c.destroy();
  });

  it("answers 400 to an upgrade request with a body, without asking the upstream", async () => {
    const u = await start("no-body");
    let upgrades = 0;
    u.server.on("upgrade", (_req: http.IncomingMessage, socket: net.Socket) => {
      upgrades++;
      socket.destroy();
    });
    await apply(route("nb", "nb:1", [u.upstream]));
    const before = await stats();
    for (const framing of ["Content-Length: 5\r\n\r\nhello", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"]) {
      const c = await RawClient.connect(port);
      c.write(`GET /chat HTTP/1.1\r\nHost: app.example\r\n${UPGRADE}${framing}`);
      assert.equal(await c.waitClose(), true);
      assert.deepEqual(statuses(c.received), [400], c.received);
    }
    assert.equal(upgrades, 0);
    assert.equal((await stats()).rejected.badRequest, before.rejected.badRequest + 2);
  });

  it("answers 504 when the upstream does not answer the upgrade within upstreamResponseMs", async () => {
    const u = await start("mute");
    const held: net.Socket[] = [];
    u.server.on("upgrade", (_req: http.IncomingMessage, socket: net.Socket) => void held.push(socket));
    await apply(route("mute", "mute:1", [u.upstream], { timeouts: { upstreamResponseMs: 200 } }));
    const before = await stats();
    const c = await RawClient.connect(port);
    c.write(`GET /chat HTTP/1.1\r\nHost: app.example\r\n${UPGRADE}\r\n`);
    assert.equal(await c.waitClose(3_000), true);
    assert.deepEqual(statuses(c.received), [504], c.received);
    assert.ok(c.closedAfterMs >= 180 && c.closedAfterMs < 4_000, `closed after ${c.closedAfterMs} ms`);
    const now = await stats();
    assert.equal(now.timeouts.tunnelHandshake, before.timeouts.tunnelHandshake + 1);
    assert.equal(now.pools.find((s) => s.poolId === "mute:1")?.inFlight, 0);
    await sleep(50);
    assert.ok(held.every((s) => s.destroyed || s.readableEnded), "the upstream connection is closed");
    for (const s of held) s.destroy();
  });

  it("closes a tunnel with no byte either way for tunnelIdleMs, and counts it", async () => {
    const u = await start("idle-ws");
    const wss = new WebSocketServer({ server: u.server });
    wss.on("connection", (socket) => socket.on("message", (data) => socket.send(String(data))));
    await apply(route("idle", "idle:1", [u.upstream], { timeouts: { tunnelIdleMs: 300 } }));
    const before = await stats();
    const ws = new WebSocket(`ws://127.0.0.1:${port}/chat`);
    try {
      await new Promise<void>((resolve, reject) => {
        ws.once("open", () => resolve());
        ws.once("error", reject);
      });
      const closed = new Promise<number>((resolve) => ws.once("close", () => resolve(performance.now())));
      // Traffic keeps it open past the idle timeout...
      for (let i = 0; i < 6; i++) {
        const echoed = new Promise((resolve) => ws.once("message", resolve));
        ws.send(`ping-${i}`);
        await echoed;
        await sleep(100);
      }
      assert.equal(ws.readyState, WebSocket.OPEN);
      // ...silence closes it.
      const quietSince = performance.now();
      const closedAt = await closed;
      assert.ok(closedAt - quietSince >= 150 && closedAt - quietSince < 1_500, `closed ${closedAt - quietSince} ms after the last byte`);
    } finally {
      ws.terminate();
      wss.close();
    }
    await sleep(50);
    const now = await stats();
    assert.equal(now.timeouts.tunnelIdle, before.timeouts.tunnelIdle + 1);
    assert.equal(now.tunnels.open, before.tunnels.open);
  });
});
