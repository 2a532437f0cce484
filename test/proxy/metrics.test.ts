// The proxy's metrics: what each request is counted as (status class, duration, in flight, a
// client gone, a held request, an upgrade), nothing counted by series unless the table asks, and
// across a supervisor's workers counters that add up and never go back when a worker is replaced
// (asked to go, upgraded in place, or killed at a bad moment).

import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { type RunningProxy, spawnProxy } from "../../src/proxy/builtin.js";
import type { ProxyMetrics, RequestSeriesCounts, RouteTable } from "../../src/proxy/contract.js";
import { DURATION_BUCKETS_S } from "../../src/proxy/counters.js";
import { MemoryProxy } from "../../src/proxy/memory.js";
import { pidAlive } from "../../src/util/proc.js";
import { waitFor } from "../runtime/helpers.js";
import { request, route, sleep, startUpstream, tableWith, type TestUpstream } from "./helpers.js";

function series(m: ProxyMetrics, service: string): RequestSeriesCounts {
  const s = m.requests.find((r) => r.service === service);
  assert.ok(s, `a series for "${service}" in ${JSON.stringify(m.requests.map((r) => r.service))}`);
  return s;
}

const total = (s: RequestSeriesCounts) => s.statuses.reduce((a, b) => a + b, 0);

function withMetrics(t: RouteTable): RouteTable {
  return { ...t, metrics: true };
}

describe("proxy metrics, one data plane", { timeout: 60_000 }, () => {
  const upstreams: TestUpstream[] = [];
  const proxies: MemoryProxy[] = [];
  after(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await Promise.all(upstreams.map((u) => u.close()));
  });
  const up = async (...args: Parameters<typeof startUpstream>) => {
    const u = await startUpstream(...args);
    upstreams.push(u);
    return u;
  };
  const start = async () => {
    const p = await MemoryProxy.start();
    proxies.push(p);
    return { p, base: `http://127.0.0.1:${p.port}` };
  };

  it("counts each answer by its status class, its duration in the right bucket, and what is in flight", async () => {
    const slowMs = 300;
    const u = await up("app", (req, res) => {
      if (req.url === "/slow") setTimeout(() => res.end("slow"), slowMs);
      else if (req.url === "/hang") setTimeout(() => res.end("late"), 5_000);
      else res.writeHead(req.url === "/missing" ? 404 : req.url === "/broken" ? 500 : req.url === "/moved" ? 301 : 200).end("x");
    });
    const { p, base } = await start();
    await p.apply(withMetrics({ version: 1, routes: [route("app", "app:1", [u.upstream], { slot: "green" })] }));
    for (const path of ["/", "/", "/missing", "/broken", "/moved", "/slow"]) await request(`${base}${path}`);
    // A client that leaves before any answer: counted as none.
    const gone = http.get(`${base}/hang`, { agent: false });
    gone.on("error", () => undefined);
    await waitFor("the request at the upstream", async () => u.seen.includes("GET /hang") || undefined);
    const during = await p.metrics();
    assert.deepEqual(during.inFlight, [{ service: "app", slot: "green", requests: 1 }]);
    gone.destroy();
    const m = await waitFor("the abandoned request counted", async () => {
      const m = await p.metrics();
      return total(series(m, "app")) === 7 ? m : undefined;
    });
    const s = series(m, "app");
    assert.equal(s.slot, "green");
    assert.deepEqual(s.statuses, [1, 0, 3, 1, 1, 1], "none, 1xx, 2xx (/, /, /slow), 3xx, 4xx, 5xx");
    assert.equal(s.durations.reduce((a, b) => a + b, 0), 7);
    // The slow one took at least slowMs: it is in no bucket below that.
    const under = DURATION_BUCKETS_S.findIndex((b) => b >= slowMs / 1000);
    assert.ok(s.durations.slice(under).reduce((a, b) => a + b, 0) >= 1, JSON.stringify(s.durations));
    assert.ok(s.durationSum >= slowMs / 1000);
    assert.deepEqual(m.inFlight, [{ service: "app", slot: "green", requests: 0 }]);
    assert.equal(total(series(m, "")), 0);
  });

  it("answers the proxy gives itself count too: no route, no Host, no healthy instance, a body too large", async () => {
    const { p, base } = await start();
    const dead = { id: "dead", host: "127.0.0.1", port: 1 };
    await p.apply(withMetrics(tableWith(1, { limits: { upstreamQueueMs: 200 } }, route("app", "app:1", [dead], { host: "app.test", maxBodyBytes: 10 }))));
    assert.equal((await request(`${base}/`, { headers: { host: "nobody.test" } })).status, 404);
    assert.equal((await request(`${base}/`, { headers: { host: "app.test" }, method: "POST", body: "x".repeat(100) })).status, 413);
    // Refused (and so out of rotation), then held for a revert until upstream_queue runs out: the
    // 502 it met. The next one finds no instance at once, and is held too: 503. Each is counted
    // once, when answered.
    assert.equal((await request(`${base}/`, { headers: { host: "app.test" } })).status, 502);
    assert.equal((await request(`${base}/`, { headers: { host: "app.test" } })).status, 503);
    const noHost = await new Promise<string>((resolve) => {
      const c = net.connect({ host: "127.0.0.1", port: p.port }, () => c.end("GET / HTTP/1.1\r\n\r\n"));
      let text = "";
      c.on("data", (d) => (text += d));
      c.on("close", () => resolve(text));
    });
    assert.match(noHost, /^HTTP\/1\.1 400/);
    const m = await p.metrics();
    assert.deepEqual(series(m, "").statuses, [0, 0, 0, 0, 2, 0], "404 and 400, with no service");
    assert.deepEqual(series(m, "app").statuses, [0, 0, 0, 0, 1, 2], "413, then 502 and 503");
    assert.ok(series(m, "app").durationSum >= 0.4, "the held requests' waits count in their durations");
    assert.equal(series(m, "app").upstreamErrors, 1);
    assert.deepEqual(m.ejections, { refused: 1, reset: 0 });
    assert.equal(m.rejected.bodyTooLarge, 1);
    assert.equal(m.rejected.badRequest, 1);
  });

  it("an upgrade counts once, as 1xx, timed to its 101 however long the tunnel lasts", async () => {
    const server = net.createServer((s) => {
      s.once("data", () => s.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"));
      s.on("error", () => undefined);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const { p } = await start();
    await p.apply(withMetrics({ version: 1, routes: [route("ws", "ws:1", [{ id: "ws", host: "127.0.0.1", port: (server.address() as net.AddressInfo).port }])] }));
    const client = net.connect({ host: "127.0.0.1", port: p.port });
    client.write("GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    await new Promise((r) => client.once("data", r));
    const open = await p.metrics();
    assert.equal(open.open.tunnels, 1);
    assert.equal(open.tunnelsOpened, 1);
    assert.deepEqual(series(open, "ws").statuses, [0, 1, 0, 0, 0, 0]);
    await sleep(600);
    client.destroy();
    const closed = await waitFor("the tunnel closed", async () => {
      const m = await p.metrics();
      return m.open.tunnels === 0 ? m : undefined;
    });
    assert.equal(total(series(closed, "ws")), 1, "counted once");
    assert.ok(series(closed, "ws").durationSum < 0.5, "its duration is the handshake's, not the tunnel's 600 ms");
    server.close();
  });

  it("a table without metrics counts no series (the other counters go on)", async () => {
    const u = await up("plain");
    const { p, base } = await start();
    await p.apply({ version: 1, routes: [route("plain", "plain:1", [u.upstream])] });
    for (let i = 0; i < 5; i++) await request(`${base}/`);
    const m = await p.metrics();
    assert.equal(total(series(m, "plain")), 0);
    assert.equal((await p.stats()).requests, 5);
    await p.apply(withMetrics({ version: 2, routes: [route("plain", "plain:1", [u.upstream])] }));
    await request(`${base}/`);
    assert.equal(total(series(await p.metrics(), "plain")), 1);
  });
});

describe("proxy metrics across a supervisor's workers", { timeout: 120_000 }, () => {
  const dirs: string[] = [];
  const running: RunningProxy[] = [];
  let u: TestUpstream;
  after(async () => {
    for (const p of running) {
      for (const w of (await p.proxy.health().catch(() => undefined))?.workers ?? []) if (pidAlive(w.pid)) process.kill(w.pid, "SIGKILL");
      if (pidAlive(p.pid)) process.kill(p.pid, "SIGKILL");
    }
    await u?.close();
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  it("counters add up over workers and never go back: a worker asked to go, an upgrade, a kill -9", async () => {
    u = await startUpstream("app");
    const stateDir = await mkdtemp(path.join(os.tmpdir(), "turquoise-proxy-metrics-"));
    dirs.push(stateDir);
    // Every worker accepts, so that stopping one sends every new connection to the other.
    const p = await spawnProxy({ stateDir, listenHost: "127.0.0.1", listenPort: 0, workers: 2, accept: "all" });
    running.push(p);
    const base = `http://127.0.0.1:${p.listenPort}`;
    await p.proxy.apply(withMetrics({ version: 1, routes: [route("app", "app:1", [u.upstream], { slot: "blue" })] }));
    let sent = 0;
    let last = 0;
    /** Sends n requests, each on a new connection (so both workers get some), 4 at a time. */
    const send = async (n: number) => {
      for (let i = 0; i < n; i += 4) await Promise.all(Array.from({ length: Math.min(4, n - i) }, async () => assert.equal((await request(`${base}/`)).status, 200)));
      sent += n;
    };
    /** The proxy's count now, checked never to be below the last one. */
    const look = async (): Promise<number> => {
      const m = await p.proxy.metrics();
      const n = total(series(m, "app"));
      assert.ok(n >= last, `the counter went back from ${last} to ${n}`);
      last = n;
      return n;
    };
    const serving = async () => ((await p.proxy.health()).workers ?? []).filter((w) => w.state === "serving");
    // Gone from the supervisor's own list (its exit handled), and two others serving.
    const replaced = (pid: number) =>
      waitFor(`worker ${pid} gone and replaced`, async () => {
        const workers = (await p.proxy.health()).workers ?? [];
        return !workers.some((w) => w.pid === pid) && workers.filter((w) => w.state === "serving").length === 2;
      }, 20_000);

    await send(40);
    assert.equal(await look(), sent, "summed over both workers");
    const both = await serving();
    assert.equal(both.length, 2);

    // A worker asked to go, with requests it counted since the last look (all of them: the other
    // worker is stopped meanwhile, so it accepts none): its final report keeps them.
    process.kill(both[1]!.pid, "SIGSTOP");
    try {
      await send(20);
    } finally {
      process.kill(both[1]!.pid, "SIGCONT");
    }
    process.kill(both[0]!.pid, "SIGTERM");
    await replaced(both[0]!.pid);
    assert.equal(await look(), sent, "a retired worker's counts stay, those since the last look too");

    // An in-place upgrade replaces every worker.
    await send(20);
    await p.proxy.upgrade({ drainTimeoutMs: 2_000 });
    assert.equal(await look(), sent, "an upgrade keeps every count");

    // kill -9 right after a look: nothing of it is lost.
    await send(12);
    assert.equal(await look(), sent);
    const [victim] = await serving();
    process.kill(victim!.pid, "SIGKILL");
    await replaced(victim!.pid);
    assert.equal(await look(), sent, "the dead worker's counts as last seen stay");

    // kill -9 at a bad moment, with counts nobody has seen yet: some may be lost, but the counter does not go back.
    const before = await look();
    await send(12);
    const [victim2] = await serving();
    process.kill(victim2!.pid, "SIGKILL");
    await replaced(victim2!.pid);
    const after = await look();
    assert.ok(after >= before && after <= sent, `${before} ≤ ${after} ≤ ${sent}`);
    await send(8);
    assert.equal(await look(), after + 8);

    const m = await p.proxy.metrics();
    assert.equal(m.workers?.restarts, 2, "the two kill -9s; the SIGTERM and the upgrade were asked for");
    assert.equal(m.workers?.states.serving, 2);
    assert.deepEqual(m.inFlight, [{ service: "app", slot: "blue", requests: 0 }]);
    assert.equal(series(m, "app").durations.reduce((a, b) => a + b, 0), total(series(m, "app")), "the histogram counts what the counter counts");
  });
});
