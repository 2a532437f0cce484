// The proxy's supervisor and its workers, as real processes on loopback: a killed worker refuses no
// connection, an in-place upgrade fails no request, and every control call reaches every worker.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import tls from "node:tls";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, describe, it } from "node:test";
import { ConnectionLoad, type LoadCounts } from "../../bench/lib/connection-load.js";
import { type BuiltinProxy, type RunningProxy, spawnProxy, stopProxy, type WorkerInfo } from "../../src/proxy/builtin.js";
import { Supervisor, WORKER_V8_FLAGS } from "../../src/proxy/supervisor.js";
import { pidAlive } from "../../src/util/proc.js";
import { ensureToken } from "../../src/auth/token.js";
import { starterSpec } from "../../src/spec/template.js";
import { captureLog } from "../support/logs.js";
import { type Reply, type TestUpstream, json, killProxies, refusedPort, request, route, sleep, startUpstream, table } from "./helpers.js";

const WORKER_JS = fileURLToPath(new URL("../../src/proxy/worker.js", import.meta.url));
const TURQUOISE_JS = fileURLToPath(new URL("../../../bin/turquoise.js", import.meta.url));

async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

async function serving(proxy: BuiltinProxy): Promise<WorkerInfo[]> {
  return ((await proxy.health()).workers ?? []).filter((w) => w.state === "serving");
}

function noFailures(counts: LoadCounts): Omit<LoadCounts, "ok" | "started" | "closeAnswers"> {
  const { ok: _ok, started: _started, closeAnswers: _close, ...failures } = counts;
  return failures;
}

const NO_FAILURES = { badStatus: 0, refused: 0, reset: 0, timeout: 0, other: 0 };

/** Opens n connections at once and closes them: how many connected, and how many took a second or more (a dropped SYN). */
async function connectBurst(port: number, n: number): Promise<{ connected: number; slow: number }> {
  const started = performance.now();
  const times = await Promise.all(
    Array.from({ length: n }, () =>
      new Promise<number>((resolve, reject) => {
        const socket = net.connect(port, "127.0.0.1", () => {
          resolve(performance.now() - started);
          socket.destroy();
        });
        socket.once("error", reject);
      }),
    ),
  );
  return { connected: times.length, slow: times.filter((t) => t >= 900).length };
}

describe("proxy supervisor", { timeout: 120_000 }, () => {
  const dirs: string[] = [];
  const upstreams: TestUpstream[] = [];
  const running: RunningProxy[] = [];
  const tempDir = async (): Promise<string> => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "turquoise-supervisor-"));
    dirs.push(dir);
    return dir;
  };
  const upstream = async (id: string, handler?: Parameters<typeof startUpstream>[1]): Promise<TestUpstream> => {
    const u = await startUpstream(id, handler);
    upstreams.push(u);
    return u;
  };
  /** accept "all" where a test reaches each worker by stopping the others: then every one accepts. */
  const spawn = async (workers: number, accept?: "all"): Promise<{ p: RunningProxy; stateDir: string; base: string }> => {
    const stateDir = await tempDir();
    const p = await spawnProxy({ stateDir, listenHost: "127.0.0.1", listenPort: 0, workers, ...(accept ? { accept } : {}) });
    running.push(p);
    return { p, stateDir, base: `http://127.0.0.1:${p.listenPort}` };
  };
  /**
   * For a supervisor run in this process: a state dir with its token and a saved table that
   * routes to a new upstream answering `id`, and a worker script that loads the real worker
   * (a test may rewrite it: each fork reads it again).
   */
  const supervisorDir = async (id: string): Promise<{ stateDir: string; script: string }> => {
    const stateDir = await tempDir();
    ensureToken(stateDir);
    const u = await upstream(id);
    await writeFile(path.join(stateDir, "proxy-table.json"), JSON.stringify(table(1, route("s", "s:1", [u.upstream]))));
    const script = path.join(stateDir, "worker.mjs");
    await writeFile(script, `import ${JSON.stringify(WORKER_JS)};\n`);
    return { stateDir, script };
  };
  after(async () => {
    await killProxies(running);
    await Promise.all(upstreams.map((u) => u.close()));
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  it("runs its workers with the worker V8 flags (single-threaded), and only them", async () => {
    const { p } = await spawn(2);
    const workers = await serving(p.proxy);
    assert.equal(workers.length, 2);
    assert.deepEqual(WORKER_V8_FLAGS, ["--single-threaded"]);
    for (const w of workers) {
      const argv = (await readFile(`/proc/${w.pid}/cmdline`, "utf8")).split("\0");
      for (const flag of WORKER_V8_FLAGS) assert.ok(argv.includes(flag), `worker ${w.pid}: ${argv.join(" ")}`);
    }
    const supervisorArgv = (await readFile(`/proc/${p.pid}/cmdline`, "utf8")).split("\0");
    assert.ok(!supervisorArgv.includes("--single-threaded"), "the supervisor keeps V8's defaults");
  });

  it("kill -9 of the worker under a stream of new connections: none refused, the table survives, the control API answers", async () => {
    const u = await upstream("kept");
    const { p, stateDir, base } = await spawn(1);
    await p.proxy.apply(table(3, route("kept", "kept:1", [u.upstream])));
    const load = new ConnectionLoad({ url: `${base}/`, concurrency: 8, keepAlive: false, maxDurationMs: 30_000 }).start();
    await sleep(300);
    const [victim] = await serving(p.proxy);
    assert.ok(victim);
    const inFlightAtKill = load.inFlight;
    const killedAt = performance.now();
    process.kill(victim.pid, "SIGKILL");
    // While no worker runs, the supervisor still answers, with the table it restored.
    const health = await p.proxy.health();
    assert.equal(health.tableVersion, 3);
    assert.equal((await p.proxy.stats()).tableVersion, 3);
    const servedAt = await load.servedAfter(killedAt);
    const [next] = await waitFor("a new worker", async () => (await serving(p.proxy)).filter((w) => w.pid !== victim.pid));
    await sleep(300);
    const counts = await load.stop();

    assert.notEqual(next!.pid, victim.pid);
    assert.equal(counts.refused, 0, `no connection refused: ${JSON.stringify(counts)}`);
    assert.equal(counts.timeout + counts.other + counts.badStatus, 0, JSON.stringify({ counts, other: load.otherCodes }));
    // Only requests the dead worker had accepted can die with it.
    assert.ok(counts.reset <= inFlightAtKill, `resets ${counts.reset} ≤ in flight at the kill ${inFlightAtKill}`);
    assert.ok(counts.ok > 0);
    assert.ok(servedAt - killedAt < 5_000, `served again ${Math.round(servedAt - killedAt)} ms after the kill`);
    assert.equal(json(await request(`${base}/`)).id, "kept");
    assert.equal((await p.proxy.stats()).tableVersion, 3);
    assert.equal((await p.proxy.health()).pid, p.pid, "the supervisor is the same process");
    assert.match(await readFile(path.join(stateDir, "proxy.log"), "utf8"), new RegExp(`worker ${victim.pid} killed by SIGKILL`));
  });

  it("an in-place upgrade under keep-alive and new-connection load fails no request", async () => {
    const u = await upstream("up");
    const { p, base } = await spawn(1);
    await p.proxy.apply(table(1, route("up", "up:1", [u.upstream])));
    const before = await serving(p.proxy);
    const keepAlive = new ConnectionLoad({ url: `${base}/`, concurrency: 8, keepAlive: true, maxDurationMs: 30_000 }).start();
    const fresh = new ConnectionLoad({ url: `${base}/`, concurrency: 4, keepAlive: false, maxDurationMs: 30_000 }).start();
    await sleep(300);
    const result = await p.proxy.upgrade({ drainTimeoutMs: 5_000 });
    await sleep(300);
    const [ka, fr] = await Promise.all([keepAlive.stop(), fresh.stop()]);

    assert.deepEqual(noFailures(ka), NO_FAILURES, `keep-alive: ${JSON.stringify({ ka, other: keepAlive.otherCodes })}`);
    assert.deepEqual(noFailures(fr), NO_FAILURES, `new connections: ${JSON.stringify({ fr, other: fresh.otherCodes })}`);
    assert.ok(ka.ok > 0 && fr.ok > 0);
    // The keep-alive clients were told to reconnect, and did.
    assert.ok(ka.closeAnswers >= 1, "the old worker answered with Connection: close");
    assert.deepEqual(result.retired, before.map((w) => w.pid));
    assert.equal(result.generation, 1);
    const after = await serving(p.proxy);
    assert.deepEqual(after.map((w) => w.pid), result.started);
    assert.ok(after.every((w) => w.generation === 1));
    for (const w of before) assert.equal(pidAlive(w.pid), false, `old worker ${w.pid} exited`);
    assert.equal((await p.proxy.stats()).tableVersion, 1);
  });

  it("with 2 workers: a table, a mark and a drain reach both, stats add up, passive marks make one event", async () => {
    const a = await upstream("a");
    const b = await upstream("b");
    const { p, base } = await spawn(2, "all");
    const workers = await serving(p.proxy);
    assert.equal(workers.length, 2);
    assert.equal(p.workers, 2);
    const freshGets = async (n: number): Promise<string[]> => {
      const ids: string[] = [];
      for (let i = 0; i < n; i += 4) ids.push(...(await Promise.all([0, 1, 2, 3].map(async () => json((await request(`${base}/`))).id as string))));
      return ids;
    };
    /**
     * Runs fn once per worker with the other workers stopped (SIGSTOP), so that every new
     * connection meanwhile goes to that one. No control call then: a stopped worker cannot answer.
     */
    const onEach = async (fn: (w: WorkerInfo) => Promise<void>): Promise<void> => {
      for (const w of workers) {
        const others = workers.filter((o) => o !== w);
        for (const o of others) process.kill(o.pid, "SIGSTOP");
        try {
          await fn(w);
        } finally {
          for (const o of others) process.kill(o.pid, "SIGCONT");
        }
      }
    };

    await p.proxy.apply(table(1, route("s", "s:a", [a.upstream])));
    assert.deepEqual(new Set(await freshGets(40)), new Set(["a"]));
    await p.proxy.apply(table(2, route("s", "s:b", [b.upstream])));
    await onEach(async (w) => assert.deepEqual(new Set(await freshGets(12)), new Set(["b"]), `worker ${w.pid} uses the acknowledged table`));

    const stats = await p.proxy.stats();
    assert.equal(stats.tableVersion, 2);
    assert.equal(stats.requests, 64, "requests summed over the workers");
    assert.deepEqual(stats.pools.map((x) => [x.poolId, x.served]), [["s:a", 40], ["s:b", 24]]);

    await p.proxy.apply(table(3, route("s", "s:ab", [a.upstream, b.upstream])));
    await p.proxy.setUpstreamHealth("a", false);
    await onEach(async (w) => assert.deepEqual(new Set(await freshGets(12)), new Set(["b"]), `worker ${w.pid} has the mark`));
    await p.proxy.setUpstreamHealth("a", true);
    await onEach(async (w) => assert.deepEqual(new Set(await freshGets(12)), new Set(["a", "b"]), `worker ${w.pid} has the mark lifted`));

    // Slow requests in flight on each worker, then a drain of their pool.
    const slow = await upstream("slow", (_req, res) => setTimeout(() => res.end("done"), 2_000));
    await p.proxy.apply(table(4, route("s", "s:slow", [slow.upstream])));
    const inFlight: Promise<Reply>[] = [];
    await onEach(async () => {
      const before = slow.hits;
      inFlight.push(...Array.from({ length: 6 }, () => request(`${base}/`)));
      await waitFor("6 more requests at the upstream", () => slow.hits >= before + 6 || undefined);
    });
    assert.equal((await p.proxy.stats()).pools.find((x) => x.poolId === "s:slow")?.inFlight, 12, "in flight summed over the workers");
    await p.proxy.apply(table(5, route("s", "s:b2", [b.upstream])));
    const drained = await p.proxy.drain("s:slow", 10_000);
    assert.equal(drained.completed, 12, "a drain waits for every worker's requests");
    assert.equal(drained.cut, 0);
    for (const r of await Promise.all(inFlight)) assert.equal(r.text, "done");
    assert.equal((await p.proxy.stats()).pools.some((x) => x.poolId === "s:slow"), false);

    // An upstream that refuses: whichever worker sees it first takes it out, for both, once.
    const gone = { id: "gone", host: "127.0.0.1", port: await refusedPort() };
    const { seq } = await p.proxy.events(0, 0);
    await p.proxy.apply(table(6, route("s", "s:g", [gone, b.upstream])));
    await onEach(async () => assert.deepEqual(new Set(await freshGets(12)), new Set(["b"])));
    const batch = await p.proxy.events(seq, 0);
    assert.deepEqual(batch.events.map((e) => [e.type, e.id, e.reason]), [["upstream.down", "gone", "refused"]]);
    assert.deepEqual(((await p.proxy.stats()).down ?? []).map((d) => d.id), ["gone"]);
  });

  it("a delta reaches every worker and the spare; a worker started after it, and a restarted supervisor, serve the whole table it made", async () => {
    const [a, b, f] = await Promise.all([upstream("delta-a"), upstream("delta-b"), upstream("delta-f")]);
    const { p, stateDir, base } = await spawn(2, "all");
    const workers = await serving(p.proxy);
    assert.equal(workers.length, 2);
    await p.proxy.apply(table(1, route("books", "books:a", [a.upstream]), route("films", "films:f", [f.upstream], { pathPrefix: "/films" })));
    assert.equal(await p.proxy.applyDelta({ base: 1, version: 2, services: ["books"], routes: [route("books", "books:b", [b.upstream])] }), "applied");
    const freshIds = async (urlPath: string, n: number): Promise<Set<string>> =>
      new Set(await Promise.all(Array.from({ length: n }, async () => json(await request(`${base}${urlPath}`)).id as string)));
    // Each worker alone (the other stopped), so that each is proven to have it.
    for (const w of workers) {
      const others = workers.filter((o) => o !== w);
      for (const o of others) process.kill(o.pid, "SIGSTOP");
      try {
        assert.deepEqual(await freshIds("/", 8), new Set(["delta-b"]), `worker ${w.pid}`);
        assert.deepEqual(await freshIds("/films", 4), new Set(["delta-f"]), `worker ${w.pid}`);
      } finally {
        for (const o of others) process.kill(o.pid, "SIGCONT");
      }
    }
    // Both serving workers die: the spare takes over with what it was sent, then new workers start from the supervisor's table.
    for (const w of workers) process.kill(w.pid, "SIGKILL");
    await waitFor("two new serving workers", async () => ((await serving(p.proxy)).filter((w) => !workers.some((o) => o.pid === w.pid)).length === 2 ? true : undefined), 30_000);
    assert.deepEqual(await freshIds("/", 8), new Set(["delta-b"]));
    assert.deepEqual(await freshIds("/films", 4), new Set(["delta-f"]));
    assert.equal((await p.proxy.stats()).tableVersion, 2);
    // The supervisor itself restarts on the file the delta's table was saved to.
    await stopProxy(stateDir, 5_000);
    const again = await spawnProxy({ stateDir, listenHost: "127.0.0.1", listenPort: 0, workers: 1 });
    running.push(again);
    assert.equal((await again.proxy.stats()).tableVersion, 2);
    assert.equal(json(await request(`http://127.0.0.1:${again.listenPort}/`)).id, "delta-b");
    assert.equal(await again.proxy.applyDelta({ base: 1, version: 3, services: ["books"], routes: [] }), "stale");
  });

  it("a worker sent SIGTERM alone is replaced before it goes: no request fails", async () => {
    const u = await upstream("term");
    const { p, base } = await spawn(1);
    await p.proxy.apply(table(1, route("t", "t:1", [u.upstream])));
    const [victim] = await serving(p.proxy);
    const load = new ConnectionLoad({ url: `${base}/`, concurrency: 4, keepAlive: true, maxDurationMs: 30_000 }).start();
    await sleep(200);
    process.kill(victim!.pid, "SIGTERM");
    await waitFor("the worker gone", () => !pidAlive(victim!.pid));
    await sleep(200);
    const counts = await load.stop();
    assert.deepEqual(noFailures(counts), NO_FAILURES, JSON.stringify({ counts, other: load.otherCodes }));
    const now = await serving(p.proxy);
    assert.equal(now.length, 1);
    assert.notEqual(now[0]!.pid, victim!.pid);
  });

  it("SIGTERM to the supervisor drains every worker and exits; the port is free again", async () => {
    const slow = await upstream("slow-stop", (_req, res) => setTimeout(() => res.end("finished"), 1_000));
    const { p, stateDir, base } = await spawn(2);
    await p.proxy.apply(table(1, route("s", "s:1", [slow.upstream])));
    const workers = await serving(p.proxy);
    const inFlight = Array.from({ length: 6 }, () => request(`${base}/`));
    // In flight means at the upstream: a request still in the accept queue is not one a drain owes an answer.
    await waitFor("6 requests at the upstream", () => slow.hits >= 6);
    const stopped = stopProxy(stateDir);
    for (const r of await Promise.all(inFlight)) assert.equal(r.text, "finished");
    assert.equal(await stopped, true);
    for (const w of [p.pid, ...workers.map((x) => x.pid)]) await waitFor(`pid ${w} gone`, () => !pidAlive(w));
    await assert.rejects(request(`${base}/`), /ECONNREFUSED/);
  });

  it("an upgrade to code that cannot serve fails, and the old workers keep serving", async () => {
    const stateDir = await tempDir();
    ensureToken(stateDir);
    const u = await upstream("stays");
    await writeFile(path.join(stateDir, "proxy-table.json"), JSON.stringify(table(4, route("s", "s:1", [u.upstream]))));
    // The worker script is read from disk at every fork, as an upgrade needs: this one changes.
    const script = path.join(stateDir, "worker.mjs");
    await writeFile(script, `import ${JSON.stringify(WORKER_JS)};\n`);
    const s = await Supervisor.start({ stateDir, listenHost: "127.0.0.1", listenPort: 0, workers: 1, log: captureLog("proxy").logger, workerScript: script });
    try {
      const base = `http://127.0.0.1:${s.listenPort}`;
      assert.equal(json(await request(`${base}/`)).id, "stays");
      // The spare, forked from the script as it was, is up before the script changes.
      await waitFor("the spare", () => s.health().workers!.some((w) => w.state === "standby") || undefined);
      const old = s.health().workers!.filter((w) => w.state === "serving");
      await writeFile(script, `process.exit(3);\n`);
      await assert.rejects(s.upgrade({}), /upgrade failed, the old workers keep serving: worker \d+ exited with code 3 before serving/);
      assert.deepEqual(s.health().workers!.filter((w) => w.state === "serving"), old);
      assert.equal(json(await request(`${base}/`)).id, "stays");
    } finally {
      await s.stop(1_000);
    }
  });

  it("turquoise proxy upgrade upgrades the proxy of the spec's state dir, to the spec's worker count and accept mode", async () => {
    const dir = await tempDir();
    const specFile = path.join(dir, "turquoise.yml");
    await writeFile(specFile, starterSpec().replace("workers: 1", "workers: 2").replace("accept: adaptive", "accept: all"));
    const p = await spawnProxy({ stateDir: path.join(dir, ".turquoise"), listenHost: "127.0.0.1", listenPort: 0 });
    running.push(p);
    const [old] = await serving(p.proxy);
    const out = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile(process.execPath, [TURQUOISE_JS, "proxy", "upgrade", "-f", specFile, "--drain-timeout", "2s", "--json"], { timeout: 30_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      ),
    );
    assert.equal(out.code, 0, out.stderr);
    const result = JSON.parse(out.stdout) as { started: number[]; retired: number[]; generation: number };
    assert.equal(result.started.length, 2);
    assert.deepEqual(result.retired, [old!.pid]);
    assert.deepEqual((await serving(p.proxy)).map((w) => w.pid).sort(), [...result.started].sort());
    assert.equal((await p.proxy.health()).workerCount, 2);
    assert.equal((await p.proxy.health()).accept, "all");
    assert.deepEqual((await serving(p.proxy)).map((w) => w.accepting), [true, true], "every worker accepts");
  });

  it("a worker that does not answer the supervisor is killed, and the spare serves in its place", async () => {
    const stateDir = await tempDir();
    ensureToken(stateDir);
    const u = await upstream("stuck");
    const log = captureLog("proxy");
    const s = await Supervisor.start({ stateDir, listenHost: "127.0.0.1", listenPort: 0, workers: 1, opTimeoutMs: 300, log: log.logger });
    try {
      await waitFor("the spare", () => s.health().workers!.some((w) => w.state === "standby") || undefined);
      const stuck = s.health().workers!.find((w) => w.state === "serving")!;
      // Its event loop stands still, as a stuck one would.
      process.kill(stuck.pid, "SIGSTOP");
      await s.apply(table(2, route("s", "s:1", [u.upstream])));
      const stuckLine = log.records().find((r) => r.event === "worker.stuck");
      assert.equal(stuckLine?.message, `worker ${stuck.pid} did not answer apply within 300 ms: killing it`, log.lines.join("\n"));
      assert.equal(stuckLine.level, "error");
      await waitFor("the stuck worker gone", () => !pidAlive(stuck.pid) || undefined);
      assert.equal(json(await request(`http://127.0.0.1:${s.listenPort}/`)).id, "stuck", "the spare serves the table the stuck worker never got");
    } finally {
      await s.stop(1_000);
    }
  });

  it("workers that keep dying at start are restarted with a growing backoff, while the others serve", async () => {
    const { stateDir, script } = await supervisorDir("steady");
    const log = captureLog("proxy");
    const s = await Supervisor.start({ stateDir, listenHost: "127.0.0.1", listenPort: 0, workers: 1, workerScript: script, log: log.logger });
    try {
      await waitFor("the spare", () => s.health().workers!.some((w) => w.state === "standby") || undefined);
      await writeFile(script, `process.exit(1);\n`);
      const victim = s.health().workers!.find((w) => w.state === "serving")!;
      process.kill(victim.pid, "SIGKILL");
      await waitFor("a longer backoff", () => log.messages().includes("workers keep dying at start: the next one in 400 ms") || undefined, 30_000);
      const backoffs = log.records().filter((r) => r.event === "worker.crash-loop").map((r) => r.data!.delayMs);
      assert.deepEqual(backoffs.slice(-3), [100, 200, 400], log.lines.join("\n"));
      assert.equal(json(await request(`http://127.0.0.1:${s.listenPort}/`)).id, "steady", "the promoted spare serves meanwhile");
    } finally {
      await s.stop(1_000);
    }
  });

  it("the accept queue holds 4,096 connections while no worker accepts, not Node's 511", async () => {
    const { p } = await spawn(1);
    const [w] = await serving(p.proxy);
    process.kill(w!.pid, "SIGSTOP");
    try {
      // Past 511 a full queue drops the SYN, and the client tries again a second later.
      assert.deepEqual(await connectBurst(p.listenPort, 700), { connected: 700, slow: 0 });
    } finally {
      process.kill(w!.pid, "SIGCONT");
    }
  });

  it("with accept adaptive, one worker accepts; more while they are saturated with an idle core, fewer when they wait for the cores", async () => {
    const { stateDir } = await supervisorDir("spill");
    // The kernel's figures as the test says: each worker on a core (run) or waiting for one, and the host's idle cores.
    const feed = { run: 0.1, wait: 0, idleCores: 1.5 };
    const ran = new Map<number, { runNs: number; waitNs: number; at: number }>();
    const host = { idle: 0, total: 0, at: performance.now() };
    const schedstat = (pid: number) => {
      const now = performance.now();
      const last = ran.get(pid) ?? { runNs: 0, waitNs: 0, at: now };
      const ns = (now - last.at) * 1e6;
      const next = { runNs: last.runNs + ns * feed.run, waitNs: last.waitNs + ns * feed.wait, at: now };
      ran.set(pid, next);
      return { runNs: next.runNs, waitNs: next.waitNs };
    };
    const hostTicks = () => {
      const now = performance.now();
      const ticks = (now - host.at) / 10;
      host.at = now;
      host.total += ticks * 2;
      host.idle += ticks * feed.idleCores;
      return { idle: host.idle, total: host.total, cores: 2 };
    };
    const log = captureLog("proxy");
    const s = await Supervisor.start({ stateDir, listenHost: "127.0.0.1", listenPort: 0, tlsListen: { host: "127.0.0.1", port: 0 }, workers: 2, log: log.logger, spillProbe: { tickMs: 50, schedstat, hostTicks } });
    /** A TLS handshake with `stopped` stopped: a worker accepted it when it ends in anything but a timeout (no certificate: an alert). */
    const tlsAnswered = async (stopped: number): Promise<string> => {
      process.kill(stopped, "SIGSTOP");
      try {
        return await new Promise<string>((resolve) => {
          const socket = tls.connect({ host: "127.0.0.1", port: s.tlsListen!.port, servername: "none.test", rejectUnauthorized: false });
          const end = (how: string): void => {
            socket.destroy();
            resolve(how);
          };
          socket.once("secureConnect", () => end("connected"));
          socket.once("error", (e: NodeJS.ErrnoException) => end(e.code ?? e.message));
          socket.setTimeout(3_000, () => end("timeout"));
        });
      } finally {
        process.kill(stopped, "SIGCONT");
      }
    };
    const base = `http://127.0.0.1:${s.listenPort}`;
    const accepting = () => s.health().workers!.filter((w) => w.accepting);
    const held = () => s.health().workers!.filter((w) => w.state === "serving" && !w.accepting);
    /** Fresh connections, each answered: with `stopped` stopped meanwhile, so another accepted them all. */
    const served = async (n: number, stopped?: number) => {
      if (stopped) process.kill(stopped, "SIGSTOP");
      try {
        const replies = await Promise.all(Array.from({ length: n }, () => request(`${base}/`, { timeoutMs: 5_000 })));
        assert.deepEqual(new Set(replies.map((r) => json(r).id)), new Set(["spill"]));
      } finally {
        if (stopped) process.kill(stopped, "SIGCONT");
      }
    };
    try {
      assert.equal(s.health().accept, "adaptive");
      assert.equal(accepting().length, 1, "one accepts at first");
      const [second] = held();
      assert.ok(second, "the other serves without accepting");
      await sleep(500);
      assert.equal(accepting().length, 1, "an idle proxy stays at one");
      await served(20, second.pid);

      feed.run = 0.97;
      feed.wait = 0.01;
      await waitFor("a second worker accepting", () => accepting().length === 2 || undefined);
      assert.match(log.messages().join("\n"), /2 of 2 workers accept now \(saturated, with an idle core: run 0\.9\d wait 0\.0\d; idle cores 1\.5\d\)/);
      const first = accepting().find((w) => w.pid !== second.pid)!;
      await served(20, first.pid);

      // The cores are taken: the workers wait for them as long as they run.
      feed.run = 0.5;
      feed.wait = 0.5;
      feed.idleCores = 0.1;
      await waitFor("back to one accepting", () => accepting().length === 1 || undefined);
      assert.match(log.messages().join("\n"), /1 of 2 workers accept now \(waiting for the cores/);
      const [stays] = accepting();
      const [paused] = held();
      await served(20, paused!.pid);
      assert.notEqual(await tlsAnswered(paused!.pid), "timeout", "the TLS listener accepts in the worker that stayed");

      // Accepting again, on the socket handed over IPC: the queue keeps its size.
      feed.run = 0.97;
      feed.wait = 0.01;
      feed.idleCores = 1.5;
      await waitFor("two accepting again", () => accepting().length === 2 || undefined);
      await served(20, stays!.pid);
      assert.notEqual(await tlsAnswered(stays!.pid), "timeout", "the TLS socket was handed over too");
      process.kill(stays!.pid, "SIGSTOP");
      process.kill(paused!.pid, "SIGSTOP");
      try {
        assert.deepEqual(await connectBurst(s.listenPort, 700), { connected: 700, slow: 0 });
      } finally {
        process.kill(stays!.pid, "SIGCONT");
        process.kill(paused!.pid, "SIGCONT");
      }

      // Down to one, then the one accepting dies under new connections: the other takes them at once.
      feed.run = 0.5;
      feed.wait = 0.5;
      feed.idleCores = 0.1;
      await waitFor("one accepting", () => accepting().length === 1 || undefined);
      const load = new ConnectionLoad({ url: `${base}/`, concurrency: 8, keepAlive: false, maxDurationMs: 30_000 }).start();
      await sleep(200);
      const [victim] = accepting();
      const inFlightAtKill = load.inFlight;
      const killedAt = performance.now();
      process.kill(victim!.pid, "SIGKILL");
      const servedAt = await load.servedAfter(killedAt);
      await waitFor("two serving again", () => s.health().workers!.filter((w) => w.state === "serving").length === 2 || undefined);
      await sleep(200);
      const counts = await load.stop();
      assert.deepEqual(noFailures({ ...counts, reset: 0 }), NO_FAILURES, JSON.stringify(counts));
      assert.ok(counts.reset <= inFlightAtKill, `resets ${counts.reset} ≤ in flight at the kill ${inFlightAtKill}`);
      assert.ok(servedAt - killedAt < 1_000, `served again ${Math.round(servedAt - killedAt)} ms after the kill`);
      assert.equal(accepting().length, 1);

      // An upgrade to accept all: every new worker accepts, whatever the figures say.
      await s.upgrade({ accept: "all", drainTimeoutMs: 1_000 });
      await sleep(300);
      assert.equal(s.health().accept, "all");
      assert.equal(accepting().length, 2);
      assert.equal(held().length, 0);
    } finally {
      await s.stop(1_000);
    }
  });

  it("with accept adaptive, the only accepting worker dying while an upgrade starts its workers: the other old one takes new connections at once", async () => {
    const { stateDir, script } = await supervisorDir("mid-upgrade");
    const s = await Supervisor.start({ stateDir, listenHost: "127.0.0.1", listenPort: 0, workers: 2, workerScript: script, log: captureLog("proxy").logger });
    try {
      const [accepting] = s.health().workers!.filter((w) => w.accepting);
      assert.ok(accepting);
      // The new generation takes 3 s to start.
      await writeFile(script, `await new Promise((resolve) => setTimeout(resolve, 3_000));\nawait import(${JSON.stringify(WORKER_JS)});\n`);
      const upgrade = s.upgrade({ drainTimeoutMs: 1_000 });
      // Awaited below; a failure before then is the test's own.
      upgrade.catch(() => undefined);
      await sleep(300);
      process.kill(accepting.pid, "SIGKILL");
      const killedAt = performance.now();
      assert.equal(json(await request(`http://127.0.0.1:${s.listenPort}/`, { timeoutMs: 2_500 })).id, "mid-upgrade");
      assert.ok(performance.now() - killedAt < 2_000, `served ${Math.round(performance.now() - killedAt)} ms after the kill`);
      await upgrade;
    } finally {
      await s.stop(1_000);
    }
  });

  it("refuses to start on a port another process listens on", async () => {
    const { p } = await spawn(1);
    const stateDir = await tempDir();
    ensureToken(stateDir);
    await assert.rejects(Supervisor.start({ stateDir, listenHost: "127.0.0.1", listenPort: p.listenPort, workers: 1, log: captureLog("proxy").logger }), /listen EADDRINUSE/);
  });
});
