// npm run bench:proxy-restart — the built-in proxy's worker killed (kill -9) five times, then the
// proxy upgraded in place five times, under keep-alive load (wrk, and Node clients that count
// per event) and new-connection load (Node clients opening a connection per request). Prints,
// per event and as medians: refused connections (target 0), reset connections (target: only
// requests in flight at a kill; 0 for an upgrade), and the time until the proxy served again
// (a probe: a GET on a new connection sent right after the event).
// Loopback only; every load is bounded in requests and time.
// Usage: node dist/bench/proxy-restart.js [--kills 5] [--upgrades 5] [--workers 1] [--interval 2]
//        [--connections 32] [--fresh 8] [--json]

import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { type BuiltinProxy, resolveWorkers, spawnProxy, stopProxy } from "../src/proxy/builtin.js";
import { ConnectionLoad, countsSince, type LoadCounts } from "./lib/connection-load.js";
import { formatMachine, machineInfo } from "./lib/machine.js";
import { formatNumber, formatTable } from "./lib/report.js";
import { median } from "./lib/stats.js";
import { ensureCommand } from "./lib/tools.js";
import { type RunningUpstream, startUpstreamProcess } from "./lib/upstream.js";
import { runWrk, type WrkResult } from "./lib/wrk.js";

const { values: args } = parseArgs({
  options: {
    kills: { type: "string", default: "5" },
    upgrades: { type: "string", default: "5" },
    workers: { type: "string", default: "1" },
    interval: { type: "string", default: "2" },
    connections: { type: "string", default: "32" },
    fresh: { type: "string", default: "8" },
    json: { type: "boolean", default: false },
  },
});
const KILLS = Number(args.kills);
const UPGRADES = Number(args.upgrades);
const WORKERS = resolveWorkers(args.workers === "auto" ? "auto" : Number(args.workers));
/** Between events: longer than the supervisor's crash-loop window, so every kill restarts at once. */
const INTERVAL_MS = Math.max(1_500, Number(args.interval) * 1_000);
const WRK_CONNECTIONS = Number(args.connections);
const FRESH_CLIENTS = Number(args.fresh);
const KEEPALIVE_CLIENTS = 8;
const UPGRADE_DRAIN_MS = 5_000;
const MAX_WAIT_MS = 30_000;
/** No client runs longer than the benchmark could, whatever happens. */
const MAX_LOAD_MS = 10 * 60_000;

interface EventRow {
  kind: "kill" | "upgrade";
  n: number;
  /** The worker(s) gone: killed, or retired by the upgrade. */
  pids: number[];
  refused: number;
  reset: number;
  /** Other failures: timeouts, unexpected errors, non-2xx answers. */
  otherFailures: number;
  /** Requests the Node clients had in flight when the event began. */
  inFlight: number;
  /** From the event to the answer to a probe: a GET on a new connection sent just after it (retried until answered). */
  servedAgainMs: number;
  /** kill: until a new worker served; upgrade: until the new workers served, and until the old ones were gone. */
  workerReadyMs: number;
  upgradeMs?: number;
  /** The slowest answer the Node clients saw during the event. */
  maxLatencyMs: number;
}

interface PhaseLoad {
  fresh: ConnectionLoad;
  keepAlive: ConnectionLoad;
  wrk: Promise<WrkResult>;
}

/** What an event measures itself. */
type EventResult = Pick<EventRow, "kind" | "n" | "pids" | "workerReadyMs" | "upgradeMs">;
/** An event calls start() at the moment it begins (the kill, the upgrade call). */
type Event = (n: number, start: () => number) => Promise<EventResult>;

async function main(): Promise<void> {
  const say = (line: string): void => void (args.json ? process.stderr : process.stdout).write(line + "\n");
  ensureCommand("wrk");
  const machine = machineInfo();
  say(formatMachine(machine));
  say(`load    wrk 1 thread, ${WRK_CONNECTIONS} keep-alive connections; Node: ${KEEPALIVE_CLIENTS} keep-alive clients and ${FRESH_CLIENTS} clients opening a connection per request`);
  say(`events  ${KILLS} × kill -9 of a worker, then ${UPGRADES} × in-place upgrade, every ${INTERVAL_MS} ms; proxy with ${WORKERS} worker(s)\n`);

  const stateDir = await mkdtemp(path.join(os.tmpdir(), "turquoise-bench-restart-"));
  let upstream: RunningUpstream | undefined;
  let spawned = false;
  const cleanup = async (): Promise<void> => {
    if (spawned) await stopProxy(stateDir).catch(() => {});
    await upstream?.stop().catch(() => {});
    await rm(stateDir, { recursive: true, force: true });
  };
  process.once("SIGINT", () => void cleanup().then(() => process.exit(130)));

  try {
    upstream = await startUpstreamProcess();
    const proxied = await spawnProxy({ stateDir, listenHost: "127.0.0.1", listenPort: 0, workers: WORKERS });
    spawned = true;
    const proxy = proxied.proxy;
    await proxy.apply({ version: 1, routes: [{ service: "bench", pathPrefix: "/", poolId: "bench:blue:1", upstreams: [{ id: "bench-1", host: "127.0.0.1", port: upstream.port }] }] });
    const url = `http://127.0.0.1:${proxied.listenPort}/`;

    const kills = await phase(url, KILLS, (n, start) => killWorker(proxy, n, start));
    say(table("kill -9 of a worker", kills.rows, kills.wrk));
    const upgrades = await phase(url, UPGRADES, (n, start) => upgrade(proxy, n, start));
    say(table("in-place upgrade", upgrades.rows, upgrades.wrk));

    const summary = {
      machine,
      workers: WORKERS,
      load: { wrkConnections: WRK_CONNECTIONS, keepAliveClients: KEEPALIVE_CLIENTS, freshClients: FRESH_CLIENTS, intervalMs: INTERVAL_MS },
      kill: summarize(kills.rows, kills.wrk),
      upgrade: summarize(upgrades.rows, upgrades.wrk),
      events: [...kills.rows, ...upgrades.rows],
    };
    if (args.json) process.stdout.write(JSON.stringify(summary, null, 2) + "\n");
    else {
      say(formatTable(["", "refused (target 0)", "reset", "in flight at event", "served again, median", "wrk refused / reset"], [
        ["kill -9", String(summary.kill.refused), `${summary.kill.reset} (target ≤ in flight)`, String(summary.kill.inFlight), `${summary.kill.servedAgainMedianMs.toFixed(0)} ms`, `${summary.kill.wrkRefused} / ${summary.kill.wrkReset}`],
        ["upgrade", String(summary.upgrade.refused), `${summary.upgrade.reset} (target 0)`, String(summary.upgrade.inFlight), `${summary.upgrade.servedAgainMedianMs.toFixed(0)} ms`, `${summary.upgrade.wrkRefused} / ${summary.upgrade.wrkReset}`],
      ]));
    }
    const failed = summary.kill.refused + summary.upgrade.refused + summary.upgrade.reset + summary.upgrade.otherFailures + summary.kill.wrkRefused + summary.upgrade.wrkRefused + summary.upgrade.wrkReset > 0 || summary.kill.reset > summary.kill.inFlight;
    if (failed) process.exitCode = 1;
  } finally {
    await cleanup();
  }
}

/** Runs `count` events `interval` apart under fresh load, each measured from its own counts. */
async function phase(url: string, count: number, event: Event): Promise<{ rows: EventRow[]; wrk: WrkResult }> {
  const durationS = Math.ceil(((count + 1) * INTERVAL_MS) / 1_000) + 1;
  const load: PhaseLoad = {
    fresh: new ConnectionLoad({ url, concurrency: FRESH_CLIENTS, keepAlive: false, maxDurationMs: MAX_LOAD_MS }).start(),
    keepAlive: new ConnectionLoad({ url, concurrency: KEEPALIVE_CLIENTS, keepAlive: true, maxDurationMs: MAX_LOAD_MS }).start(),
    wrk: runWrk(url, { threads: 1, connections: WRK_CONNECTIONS, durationS, timeoutS: 5 }),
  };
  const rows: EventRow[] = [];
  try {
    await sleep(INTERVAL_MS / 2);
    for (let n = 1; n <= count; n++) {
      const before = [load.fresh.counts(), load.keepAlive.counts()];
      load.fresh.maxLatencyMs = load.keepAlive.maxLatencyMs = 0;
      const startedAt = performance.now();
      let at = NaN;
      let inFlight = 0;
      let servedAgain: Promise<number> = Promise.resolve(NaN);
      const done = await event(n, () => {
        at = performance.now();
        inFlight = load.fresh.inFlight + load.keepAlive.inFlight;
        // After the event itself, which runs synchronously once start() returns.
        servedAgain = new Promise((resolve) => setImmediate(() => void probe(url, at).then(resolve)));
        return at;
      });
      const servedAgainMs = (await servedAgain) - at;
      await sleep(Math.max(0, INTERVAL_MS - (performance.now() - startedAt)));
      const d = addCounts(countsSince(before[0]!, load.fresh.counts()), countsSince(before[1]!, load.keepAlive.counts()));
      rows.push({ ...done, refused: d.refused, reset: d.reset, otherFailures: d.timeout + d.other + d.badStatus, inFlight, servedAgainMs, maxLatencyMs: Math.max(load.fresh.maxLatencyMs, load.keepAlive.maxLatencyMs) });
    }
  } finally {
    await Promise.all([load.fresh.stop(), load.keepAlive.stop()]);
  }
  return { rows, wrk: await load.wrk };
}

async function killWorker(proxy: BuiltinProxy, n: number, start: () => number): Promise<EventResult> {
  // The one accepting new connections (with proxy.accept adaptive, others may serve only the ones they have).
  const serving = ((await proxy.health()).workers ?? []).filter((w) => w.state === "serving");
  const victim = serving.find((w) => w.accepting) ?? serving[0];
  if (!victim) throw new Error("no worker is serving");
  const at = start();
  process.kill(victim.pid, "SIGKILL");
  for (;;) {
    const workers = (await proxy.health()).workers ?? [];
    if (workers.filter((w) => w.state === "serving" && w.pid !== victim.pid).length >= WORKERS) break;
    if (performance.now() - at > MAX_WAIT_MS) throw new Error(`no worker replaced ${victim.pid} within ${MAX_WAIT_MS} ms`);
    await sleep(2);
  }
  return { kind: "kill", n, pids: [victim.pid], workerReadyMs: performance.now() - at };
}

async function upgrade(proxy: BuiltinProxy, n: number, start: () => number): Promise<EventResult> {
  start();
  const r = await proxy.upgrade({ drainTimeoutMs: UPGRADE_DRAIN_MS });
  return { kind: "upgrade", n, pids: r.retired, workerReadyMs: r.readyMs, upgradeMs: r.durationMs };
}

/** GETs on new connections, one after the other, until one is answered 2xx: when, or NaN after MAX_WAIT_MS. */
async function probe(url: string, since: number): Promise<number> {
  while (performance.now() - since < MAX_WAIT_MS) {
    const ok = await new Promise<boolean>((resolve) => {
      const req = http.get(url, { agent: false }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode === 200));
        res.on("error", () => resolve(false));
      });
      req.on("error", () => resolve(false));
    });
    if (ok) return performance.now();
  }
  return NaN;
}

function addCounts(a: LoadCounts, b: LoadCounts): LoadCounts {
  const out = { ...a };
  for (const k of Object.keys(out) as (keyof LoadCounts)[]) out[k] += b[k];
  return out;
}

function summarize(rows: EventRow[], wrk: WrkResult) {
  const sum = (f: (r: EventRow) => number): number => rows.reduce((s, r) => s + f(r), 0);
  return {
    events: rows.length,
    refused: sum((r) => r.refused),
    reset: sum((r) => r.reset),
    otherFailures: sum((r) => r.otherFailures),
    inFlight: sum((r) => r.inFlight),
    servedAgainMedianMs: median(rows.map((r) => r.servedAgainMs)),
    workerReadyMedianMs: median(rows.map((r) => r.workerReadyMs)),
    maxLatencyMedianMs: median(rows.map((r) => r.maxLatencyMs)),
    wrkRequests: wrk.requests,
    wrkRefused: wrk.socketErrors.connect,
    wrkReset: wrk.socketErrors.read + wrk.socketErrors.write,
    wrkTimeouts: wrk.socketErrors.timeout,
    wrkMaxMs: wrk.maxMs,
  };
}

function table(title: string, rows: EventRow[], wrk: WrkResult): string {
  const ms = (v: number | undefined): string => (v === undefined || Number.isNaN(v) ? "—" : `${v.toFixed(0)} ms`);
  const s = summarize(rows, wrk);
  const lines = formatTable(
    ["#", "worker(s)", "refused", "reset", "other", "in flight", "served again", "worker(s) ready", "upgrade done", "slowest answer"],
    [
      ...rows.map((r) => [String(r.n), r.pids.join(","), String(r.refused), String(r.reset), String(r.otherFailures), String(r.inFlight), ms(r.servedAgainMs), ms(r.workerReadyMs), ms(r.upgradeMs), ms(r.maxLatencyMs)]),
      ["median", "", "", "", "", "", ms(s.servedAgainMedianMs), ms(s.workerReadyMedianMs), ms(median(rows.flatMap((r) => (r.upgradeMs === undefined ? [] : [r.upgradeMs])))), ms(s.maxLatencyMedianMs)],
    ],
  );
  const w = wrk.socketErrors;
  return `${title}, Node clients per event:\n${lines}\nwrk over the whole phase: ${formatNumber(wrk.requests)} requests, connect errors (refused) ${w.connect}, read/write errors (reset) ${w.read}/${w.write}, timeouts ${w.timeout}, slowest ${ms(wrk.maxMs)}\n`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:proxy-restart failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
