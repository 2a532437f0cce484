// Passive detection: an upstream that refuses or resets connections leaves rotation at once, in
// every pool, until the agent marks it healthy again. Real upstream servers, killed for real.

import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, it } from "node:test";
import { WebSocket, WebSocketServer } from "ws";
import type { ProxyStats, RouteTable, UpstreamDown } from "../../src/proxy/contract.js";
import { PROBE_WATCH_MS } from "../../src/proxy/server.js";
import {
  type TestProxy,
  type TestUpstream,
  json,
  refusedPort,
  request,
  route,
  sleep,
  startTestProxy,
  startUpstream,
  table,
} from "./helpers.js";

const CONCURRENCY = 4;

/** Dies as a crashed process does: the listener closes and every connection drops. */
function kill(u: TestUpstream): void {
  u.server.close();
  u.server.closeAllConnections();
}

function downOf(stats: ProxyStats, id: string): UpstreamDown | undefined {
  return stats.down?.find((d) => d.id === id);
}

describe("proxy passive detection", { timeout: 60_000 }, () => {
  let p: TestProxy;
  const upstreams: TestUpstream[] = [];
  const start = async (id: string, handler?: Parameters<typeof startUpstream>[1]) => {
    const u = await startUpstream(id, handler);
    upstreams.push(u);
    return u;
  };
  let version = 0;
  const apply = (...routes: RouteTable["routes"]) => p.proxy.apply(table(++version, ...routes));
  const control = (urlPath: string) => request(`${p.controlUrl}${urlPath}`, { headers: { authorization: `Bearer ${p.token}` } });

  /** GETs `count` times, CONCURRENCY at a time over keep-alive sockets; returns every failure. */
  const load = async (urlPath: string, count: number, agent: http.Agent): Promise<string[]> => {
    const failures: string[] = [];
    let sent = 0;
    const worker = async (): Promise<void> => {
      while (sent < count) {
        sent++;
        try {
          const r = await request(`${p.base}${urlPath}`, { agent });
          if (r.status !== 200) failures.push(`${r.status} ${r.text}`);
        } catch (e) {
          failures.push(String(e));
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    return failures;
  };

  /** Polls the stats until `id` is down, for up to timeoutMs. */
  const waitDown = async (id: string, timeoutMs = 2_000): Promise<UpstreamDown | undefined> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const d = downOf(await p.proxy.stats(), id);
      if (d || Date.now() > deadline) return d;
      await sleep(10);
    }
  };

  before(async () => {
    p = await startTestProxy();
  });
  after(async () => {
    await p.close();
    await Promise.all(upstreams.map((u) => u.close()));
  });

  it("takes a killed upstream out within a few requests under keep-alive load, with no failed GET", async () => {
    const a = await start("kill-a");
    const b = await start("kill-b");
    await apply(route("kill", "kill:1", [a.upstream, b.upstream]));
    const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    try {
      assert.deepEqual(await load("/k", 100, agent), []);
      assert.ok(b.hits > 0, "both upstreams serve before the kill");

      const { seq } = await p.proxy.events(0, 0);
      const t0 = performance.now();
      const polled = p.proxy.events(seq, 10_000).then((batch) => ({ batch, ms: performance.now() - t0 }));
      const before = await p.proxy.stats();
      const killedAt = Date.now();
      kill(b);
      const failures = await load("/k", 200, agent);
      const mid = await p.proxy.stats();

      assert.deepEqual(failures, []);
      const down = downOf(mid, "kill-b");
      assert.ok(down, `kill-b is down: ${JSON.stringify(mid.down)}`);
      assert.ok(down.reason === "refused" || down.reason === "reset", down.reason);
      assert.ok(down.since >= killedAt && down.since <= Date.now(), `since ${down.since}, killed at ${killedAt}`);
      assert.equal(downOf(mid, "kill-a"), undefined);
      // Every attempt at the dead upstream costs a retry. Left in rotation it would take half of 200.
      const attempts = mid.retries - before.retries;
      assert.ok(attempts >= 1 && attempts <= 2 * CONCURRENCY, `attempts at the dead upstream after the kill: ${attempts}`);

      const { batch, ms } = await polled;
      assert.ok(ms < 5_000, `the long-poll answered after ${Math.round(ms)} ms`);
      const event = batch.events.find((e) => e.id === "kill-b");
      assert.ok(event, JSON.stringify(batch));
      assert.equal(event.type, "upstream.down");
      assert.equal(event.reason, down.reason);
      assert.equal(event.at, down.since);
      assert.ok(event.seq > seq && batch.seq >= event.seq);

      // Out means out: no more attempts at it.
      assert.deepEqual(await load("/k", 50, agent), []);
      assert.equal((await p.proxy.stats()).retries, mid.retries);
    } finally {
      agent.destroy();
    }
  });

  it("setUpstreamHealth(id, true) puts it back; while still dead, its next failure takes it out again", async () => {
    const a = await start("back-a");
    const b = await start("back-b");
    await apply(route("back", "back:1", [a.upstream, b.upstream]));
    kill(b);
    for (let i = 0; i < 2; i++) assert.equal((await request(`${p.base}/`)).status, 200);
    assert.ok(downOf(await p.proxy.stats(), "back-b"));

    const { seq } = await p.proxy.events(0, 0);
    await p.proxy.setUpstreamHealth("back-b", true);
    const cleared = await p.proxy.stats();
    assert.equal(downOf(cleared, "back-b"), undefined);
    const up = await p.proxy.events(seq, 0);
    assert.deepEqual(up.events.map((e) => [e.type, e.id, e.reason]), [["upstream.up", "back-b", "marked"]]);

    for (let i = 0; i < 2; i++) assert.equal((await request(`${p.base}/`)).status, 200);
    const again = await p.proxy.stats();
    assert.ok(again.retries > cleared.retries, "the dead upstream was in rotation again");
    assert.equal(downOf(again, "back-b")?.reason, "refused");

    // Alive again on its port: in rotation once the agent says so, not before.
    await new Promise<void>((resolve) => b.server.listen(b.port, "127.0.0.1", resolve));
    const hitsBefore = b.hits;
    for (let i = 0; i < 4; i++) assert.equal((await request(`${p.base}/`)).status, 200);
    assert.equal(b.hits, hitsBefore);
    await p.proxy.setUpstreamHealth("back-b", true);
    for (let i = 0; i < 4; i++) assert.equal((await request(`${p.base}/`)).status, 200);
    assert.equal(b.hits, hitsBefore + 2);
  });

  it("a reset takes an upstream out only when a fresh connection finds it gone", async () => {
    // Crashes on its first request: the proxy sees a hang-up before any response byte.
    const crash: TestUpstream = await start("crash", () => kill(crash));
    // Stays up but drops every request, as one broken handler would.
    const flaky = await start("flaky", (req) => req.socket.destroy());
    const good = await start("reset-good");
    await apply(
      route("crash", "crash:1", [crash.upstream, good.upstream], { pathPrefix: "/crash" }),
      route("flaky", "flaky:1", [flaky.upstream, good.upstream], { pathPrefix: "/flaky" }),
    );
    const before = await p.proxy.stats();
    assert.equal((await request(`${p.base}/crash`)).status, 200);
    assert.equal(crash.hits, 1);
    assert.equal((await waitDown("crash"))?.reason, "reset");

    for (let i = 0; i < 4; i++) assert.equal((await request(`${p.base}/flaky`)).status, 200);
    assert.ok(flaky.hits >= 2, `flaky hits: ${flaky.hits}`);
    // Long enough for every probe to reach its verdict.
    await sleep(PROBE_WATCH_MS * 4);
    const stats = await p.proxy.stats();
    assert.equal(downOf(stats, "flaky"), undefined, JSON.stringify(stats.down));
    assert.ok(stats.retries - before.retries >= 1 + flaky.hits);
  });

  it("holds a mark in every pool and across tables, and forgets it once the table drops the id", async () => {
    const a = await start("t-a");
    const manual = await start("t-manual");
    const dead = { id: "t-dead", host: "127.0.0.1", port: await refusedPort() };
    const routes = (suffix: string, withGone = true) => [
      route("one", `one:${suffix}`, withGone ? [dead, a.upstream, manual.upstream] : [a.upstream], { pathPrefix: "/one" }),
      route("two", `two:${suffix}`, withGone ? [dead, a.upstream] : [a.upstream], { pathPrefix: "/two" }),
    ];
    await apply(...routes("1"));
    assert.equal((await request(`${p.base}/one`)).status, 200);
    await p.proxy.setUpstreamHealth("t-manual", false);
    const marked = await p.proxy.stats();
    const deadMark = downOf(marked, "t-dead");
    assert.equal(deadMark?.reason, "refused");
    assert.equal(downOf(marked, "t-manual")?.reason, "marked");

    // Learned in pool one, it holds in pool two: no attempt there.
    for (let i = 0; i < 4; i++) assert.equal((await request(`${p.base}/two`)).status, 200);
    for (let i = 0; i < 4; i++) assert.equal((await request(`${p.base}/one`)).status, 200);
    assert.equal((await p.proxy.stats()).retries, marked.retries);
    assert.equal(manual.hits, 0);

    // A new table with new pools, same instances: the marks stay as they were.
    await apply(...routes("2"));
    const kept = await p.proxy.stats();
    assert.deepEqual(downOf(kept, "t-dead"), deadMark);
    assert.equal(downOf(kept, "t-manual")?.reason, "marked");

    // The instances leave the table: their marks go with them.
    await apply(...routes("3", false));
    const gone = await p.proxy.stats();
    const goneAt = Date.now();
    assert.equal(downOf(gone, "t-dead"), undefined);
    assert.equal(downOf(gone, "t-manual"), undefined);

    // Back in a table, they are in rotation until they fail again.
    await apply(...routes("4"));
    for (let i = 0; i < 3; i++) assert.equal((await request(`${p.base}/one`)).status, 200);
    const back = await p.proxy.stats();
    assert.equal(manual.hits, 1);
    assert.ok(back.retries > gone.retries);
    const again = downOf(back, "t-dead");
    assert.ok(again && again.since >= goneAt, JSON.stringify(back.down));
  });

  it("retries a POST refused by a dead upstream elsewhere, and takes the dead one out", async () => {
    const ok = await start("post-ok", (req, res, body) => {
      res.writeHead(201, { "content-type": "application/json" }).end(JSON.stringify({ method: req.method, body: body.toString("utf8") }));
    });
    const dead = { id: "post-dead", host: "127.0.0.1", port: await refusedPort() };
    await apply(route("post", "post:1", [dead, ok.upstream]));
    const before = await p.proxy.stats();
    const r = await request(`${p.base}/orders`, { method: "POST", headers: { "content-type": "text/plain" }, body: "n=1" });
    assert.equal(r.status, 201, r.text);
    assert.deepEqual(json(r), { method: "POST", body: "n=1" });
    const stats = await p.proxy.stats();
    assert.equal(stats.retries - before.retries, 1);
    assert.equal(downOf(stats, "post-dead")?.reason, "refused");
    assert.equal(stats.pools.find((s) => s.poolId === "post:1")?.failed, 0);
  });

  it("takes out an upstream that refuses a WebSocket connection", async () => {
    const alive = await start("ws-p-alive");
    const wss = new WebSocketServer({ server: alive.server });
    wss.on("connection", (socket) => socket.on("message", (data) => socket.send(String(data))));
    const dead = { id: "ws-p-dead", host: "127.0.0.1", port: await refusedPort() };
    await apply(route("wsp", "wsp:1", [dead, alive.upstream]));
    try {
      const ws = new WebSocket(`ws://127.0.0.1:${p.server.listenPort}/`);
      const reply = await new Promise<string>((resolve, reject) => {
        ws.once("open", () => ws.send("ping"));
        ws.once("message", (data) => resolve(String(data)));
        ws.once("error", reject);
      });
      ws.terminate();
      assert.equal(reply, "ping");
      assert.equal(downOf(await p.proxy.stats(), "ws-p-dead")?.reason, "refused");
    } finally {
      wss.close();
    }
  });

  it("events: manual marks are events too; one mark per outage; the long-poll waits, then answers empty", async () => {
    const u = await start("ev-u");
    await apply(route("ev", "ev:1", [u.upstream]));
    const { seq } = await p.proxy.events(0, 0);
    await p.proxy.setUpstreamHealth("ev-u", false);
    await p.proxy.setUpstreamHealth("ev-u", false);
    await p.proxy.setUpstreamHealth("ev-u", true);
    await p.proxy.setUpstreamHealth("ev-u", true);
    const batch = await p.proxy.events(seq, 5_000);
    assert.deepEqual(batch.events.map((e) => [e.seq, e.type, e.id, e.reason]), [
      [seq + 1, "upstream.down", "ev-u", "marked"],
      [seq + 2, "upstream.up", "ev-u", "marked"],
    ]);
    assert.equal(batch.seq, seq + 2);

    // A passive mark on top of a manual one keeps the first; healthy clears it whatever it was.
    const dead = { id: "ev-dead", host: "127.0.0.1", port: await refusedPort() };
    await apply(route("ev", "ev:2", [dead, u.upstream]));
    await p.proxy.setUpstreamHealth("ev-dead", false);
    await p.proxy.setUpstreamHealth("ev-dead", true);
    assert.equal((await request(`${p.base}/`)).status, 200);
    await p.proxy.setUpstreamHealth("ev-dead", false);
    assert.equal(downOf(await p.proxy.stats(), "ev-dead")?.reason, "refused");
    await p.proxy.setUpstreamHealth("ev-dead", true);
    assert.equal(downOf(await p.proxy.stats(), "ev-dead"), undefined);

    const latest = (await p.proxy.events(0, 0)).seq;
    const t0 = performance.now();
    const empty = await p.proxy.events(latest, 300);
    const waited = performance.now() - t0;
    assert.deepEqual(empty, { seq: latest, events: [] });
    assert.ok(waited >= 250 && waited < 5_000, `waited ${Math.round(waited)} ms`);

    // An `after` from an earlier proxy process (seqs restart with it) gets every event at once.
    const t1 = performance.now();
    const stale = await p.proxy.events(latest + 1_000, 10_000);
    assert.ok(performance.now() - t1 < 1_000);
    assert.equal(stale.seq, latest);
    assert.equal(stale.events[0]?.seq, 1);

    assert.equal((await control("/events?after=-1")).status, 400);
    assert.equal((await control("/events?wait=soon")).status, 400);
    assert.equal((await request(`${p.controlUrl}/events`)).status, 401);
  });
});
