// Does one hostile service take the proxy from the others? A service whose upstream never answers
// is hit by a flood of concurrent requests while a second service serves keep-alive GETs and is
// flipped once (new pool, old one drained), as a deploy does. Rounds alternate the same load
// without the attack (the reference) and with it.
// Usage: node dist/bench/abuse.js [--json] [--rounds 3] [--duration 8] [--connections 10000]

import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { LoadProcess } from "../src/demo/load-process.js";
import type { LoadReport } from "../src/demo/load.js";
import { type RunningProxy, spawnProxy, stopProxy } from "../src/proxy/builtin.js";
import type { ProxySettings, ProxyStats, Route, RouteTable } from "../src/proxy/contract.js";
import { defaultProxySettings } from "../src/proxy/settings.js";
import { type AttackReport, startAttack } from "./lib/attack.js";
import { formatMachine, machineInfo } from "./lib/machine.js";
import { formatNumber, formatTable } from "./lib/report.js";
import { median, ratio } from "./lib/stats.js";
import { type RunningUpstream, startUpstreamProcess } from "./lib/upstream.js";

/** The hostile route's own response-head timeout, so that a round ends in seconds, not 30 s. */
const ATTACK_RESPONSE_TIMEOUT_MS = 5_000;
const VICTIM_CONCURRENCY = 8;
const SAMPLE_EVERY_MS = 200;

interface RoundResult {
  baseline: LoadReport;
  attacked: LoadReport;
  attack: AttackReport;
  peakRssMiB: number;
  peakFds: number;
  flipMs: number;
  drain: { completed: number; cut: number };
  stats: { timeouts: Record<string, number>; rejected: Record<string, number> };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      json: { type: "boolean", default: false },
      rounds: { type: "string", default: "3" },
      duration: { type: "string", default: "8" },
      connections: { type: "string", default: "10000" },
    },
  });
  const json = values.json!;
  const rounds = Number(values.rounds);
  const durationMs = Number(values.duration) * 1_000;
  const connections = Number(values.connections);
  const say = (line: string): void => {
    (json ? process.stderr : process.stdout).write(line + "\n");
  };
  const settings: ProxySettings = defaultProxySettings();
  const machine = machineInfo();
  say(formatMachine(machine));
  say(`attack  ${formatNumber(connections)} concurrent GETs to a service whose upstream never answers (its upstream_response: ${ATTACK_RESPONSE_TIMEOUT_MS / 1_000} s)`);
  say(`victim  ${VICTIM_CONCURRENCY} keep-alive GET loops on a second service for ${durationMs / 1_000} s, flipped once mid-round; ${rounds} rounds, each without then with the attack`);
  say(`caps    max_connections ${settings.limits.maxConnections}, max_upstream_connections ${settings.limits.maxUpstreamConnections}, upstream_queue ${settings.limits.upstreamQueueMs} ms (defaults)\n`);

  const stateDir = await mkdtemp(path.join(os.tmpdir(), "turquoise-bench-abuse-"));
  const upstreams: RunningUpstream[] = [];
  let spawned: RunningProxy | undefined;
  const cleanup = async (): Promise<void> => {
    if (spawned) await stopProxy(stateDir).catch(() => {});
    await Promise.all(upstreams.map((u) => u.stop().catch(() => {})));
    await rm(stateDir, { recursive: true, force: true });
  };
  process.once("SIGINT", () => void cleanup().then(() => process.exit(130)));

  try {
    const hang = await startUpstreamProcess({ hang: true });
    const blue = await startUpstreamProcess();
    const green = await startUpstreamProcess();
    upstreams.push(hang, blue, green);
    spawned = await spawnProxy({ stateDir, listenHost: "127.0.0.1", listenPort: 0 });
    const proxy = spawned.proxy;
    let version = 0;
    let live = blue;
    const tableFor = (app: RunningUpstream): RouteTable => ({
      version: ++version,
      settings,
      routes: [
        {
          service: "hostile",
          host: "hang.localhost",
          pathPrefix: "/",
          poolId: "hostile:blue:1",
          upstreams: [{ id: "hang-1", host: "127.0.0.1", port: hang.port }],
          timeouts: { upstreamResponseMs: ATTACK_RESPONSE_TIMEOUT_MS },
        },
        appRoute(app),
      ],
    });
    await proxy.apply(tableFor(live));
    const base = `http://127.0.0.1:${spawned.listenPort}`;
    const victim = (): Promise<LoadProcess> =>
      LoadProcess.start({ baseUrl: base, host: "app.localhost", path: "/", concurrency: VICTIM_CONCURRENCY, postEvery: 0, maxDurationMs: durationMs, maxRequests: 10_000_000, timeoutMs: 10_000 });
    // Warm-up: connections open, JIT warm.
    await (await victim()).stop();

    const results: RoundResult[] = [];
    for (let r = 1; r <= rounds; r++) {
      const baselineLoad = await victim();
      const baseline = await waitFor(baselineLoad, durationMs);

      const before = await proxy.stats();
      const sampler = sampleProcess(spawned.pid);
      const attackedLoad = await victim();
      await sleep(500);
      const attack = startAttack({ port: spawned.listenPort, host: "hang.localhost", connections, maxWaitMs: ATTACK_RESPONSE_TIMEOUT_MS + settings.limits.upstreamQueueMs + 10_000 });
      await sleep(durationMs / 2 - 500);
      const oldPool = appRoute(live).poolId;
      live = live === blue ? green : blue;
      const flipStarted = performance.now();
      await proxy.apply(tableFor(live));
      const flipMs = performance.now() - flipStarted;
      const drain = await proxy.drain(oldPool, 10_000);
      const attacked = await waitFor(attackedLoad, durationMs);
      const attackReport = await attack.report;
      const peaks = sampler.stop();
      const after = await proxy.stats();
      const round: RoundResult = {
        baseline,
        attacked,
        attack: attackReport,
        ...peaks,
        flipMs,
        drain: { completed: drain.completed, cut: drain.cut },
        stats: { timeouts: delta(counters(before, "timeouts"), counters(after, "timeouts")), rejected: delta(counters(before, "rejected"), counters(after, "rejected")) },
      };
      results.push(round);
      say(
        `round ${r}/${rounds}  victim failed ${baseline.failed} → ${attacked.failed}  p99 ${baseline.p99Ms.toFixed(1)} → ${attacked.p99Ms.toFixed(1)} ms  ` +
          `proxy peak ${round.peakRssMiB.toFixed(0)} MiB, ${round.peakFds} fds  attack: ${formatOutcomes(attackReport.outcomes)}`,
      );
    }

    const summary = {
      victimFailed: results.reduce((n, x) => n + x.attacked.failed, 0),
      victimFailedBaseline: results.reduce((n, x) => n + x.baseline.failed, 0),
      victimRequests: results.reduce((n, x) => n + x.attacked.total, 0),
      p99BaselineMs: median(results.map((x) => x.baseline.p99Ms)),
      p99AttackedMs: median(results.map((x) => x.attacked.p99Ms)),
      p99Ratio: NaN,
      rpsBaseline: median(results.map((x) => x.baseline.requestsPerSecond)),
      rpsAttacked: median(results.map((x) => x.attacked.requestsPerSecond)),
      peakRssMiB: Math.max(...results.map((x) => x.peakRssMiB)),
      peakFds: Math.max(...results.map((x) => x.peakFds)),
      fdBound: settings.limits.maxConnections + settings.limits.maxUpstreamConnections * 3 + 64,
      attack: sumOutcomes(results.map((x) => x.attack.outcomes)),
      proxyCounted: { timeouts: sumOutcomes(results.map((x) => x.stats.timeouts)), rejected: sumOutcomes(results.map((x) => x.stats.rejected)) },
      flipMsMedian: median(results.map((x) => x.flipMs)),
    };
    summary.p99Ratio = ratio(summary.p99AttackedMs, summary.p99BaselineMs);

    if (json) {
      process.stdout.write(JSON.stringify({ machine, settings, attackResponseTimeoutMs: ATTACK_RESPONSE_TIMEOUT_MS, connections, durationMs, rounds: results, summary }, null, 2) + "\n");
      return;
    }
    say("");
    say(formatTable(
      ["victim (median of rounds)", "requests/s", "p99 ms", "failed"],
      [
        ["without the attack", formatNumber(summary.rpsBaseline), summary.p99BaselineMs.toFixed(1), String(summary.victimFailedBaseline)],
        ["under the attack, with a flip", formatNumber(summary.rpsAttacked), summary.p99AttackedMs.toFixed(1), String(summary.victimFailed)],
      ],
    ));
    say("");
    say(`victim failed requests under attack   ${summary.victimFailed} of ${formatNumber(summary.victimRequests)} (target 0)`);
    say(`victim p99 under attack / without     ${summary.p99Ratio.toFixed(2)} (target ≤ 2)`);
    say(`proxy peak RSS (supervisor + workers)  ${summary.peakRssMiB.toFixed(0)} MiB`);
    say(`proxy peak open descriptors           ${summary.peakFds} (caps allow ~${summary.fdBound})`);
    say(`flip under attack (apply)             ${summary.flipMsMedian.toFixed(1)} ms median`);
    say(`attack outcomes, all rounds           ${formatOutcomes(summary.attack)}`);
    say(`proxy counted timeouts                ${formatOutcomes(summary.proxyCounted.timeouts)}`);
    say(`proxy counted rejections              ${formatOutcomes(summary.proxyCounted.rejected)}`);
  } finally {
    await cleanup();
  }
}

function appRoute(app: RunningUpstream): Route {
  return { service: "app", host: "app.localhost", pathPrefix: "/", poolId: `app:${app.port}`, upstreams: [{ id: `app-${app.port}`, host: "127.0.0.1", port: app.port }] };
}

async function waitFor(load: LoadProcess, durationMs: number): Promise<LoadReport> {
  // The load stops itself at maxDurationMs; stop() only collects, and ends it should it linger.
  const lingering = setTimeout(() => void load.stop(), durationMs + 5_000);
  try {
    return await load.stop();
  } finally {
    clearTimeout(lingering);
  }
}

/** Peak resident memory and open descriptors of a process and its children, summed, sampled until stop(). */
function sampleProcess(pid: number): { stop(): { peakRssMiB: number; peakFds: number } } {
  let peakRssKiB = 0;
  let peakFds = 0;
  // The proxy is a supervisor and its workers (which hold the connections): all of them count.
  const tree = (): number[] => {
    try {
      const children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
      return [pid, ...children];
    } catch {
      return [pid];
    }
  };
  const sample = (): void => {
    let rssKiB = 0;
    let fds = 0;
    for (const p of tree()) {
      try {
        const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, "utf8"));
        if (rss) rssKiB += Number(rss[1]);
        fds += readdirSync(`/proc/${p}/fd`).length;
      } catch {
        // that process is gone: the others still count
      }
    }
    peakRssKiB = Math.max(peakRssKiB, rssKiB);
    peakFds = Math.max(peakFds, fds);
  };
  sample();
  const timer = setInterval(sample, SAMPLE_EVERY_MS);
  return {
    stop: () => {
      clearInterval(timer);
      sample();
      return { peakRssMiB: peakRssKiB / 1_024, peakFds };
    },
  };
}

/** A group of counters in the proxy's stats ({} from a proxy that does not count them). */
function counters(stats: ProxyStats, group: "timeouts" | "rejected"): Record<string, number> {
  const value = (stats as unknown as Record<string, unknown>)[group];
  return typeof value === "object" && value !== null ? (value as Record<string, number>) : {};
}

function delta(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) if (typeof v === "number" && v !== (before[k] ?? 0)) out[k] = v - (before[k] ?? 0);
  return out;
}

function sumOutcomes(list: Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const o of list) for (const [k, v] of Object.entries(o)) out[k] = (out[k] ?? 0) + v;
  return out;
}

function formatOutcomes(o: Record<string, number>): string {
  const entries = Object.entries(o).sort((a, b) => b[1] - a[1]);
  return entries.length === 0 ? "none" : entries.map(([k, v]) => `${formatNumber(v)} ${k}`).join(", ");
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:abuse failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});

