// How much does Turquoise's proxy cost? wrk against the same upstream in one run: direct, through
// the built-in proxy (its own process) with metrics off and with metrics on, and through nginx as
// the yardstick, with as many nginx worker processes as the built-in proxy has workers. With more
// than one worker, the built-in proxy runs twice: as it comes (proxy.accept adaptive: as many of
// its workers accept as the cores can run) and with every worker accepting, as nginx's do.
// Metrics off and on run back to back in each round, in alternating order, and are compared pair
// by pair; while "on" runs, the bench scrapes that proxy every second as the agent's /metrics does.
// A Node pipe (bench/lib/pipe.ts: bytes copied between sockets, nothing parsed) shows the floor of
// any proxy on Node's sockets; every proxy's CPU per request is measured from /proc.
// Usage: node dist/bench/proxy.js [--json] [--duration 10] [--rounds 3] [--connections 64] [--threads 2] [--workers 1|N|auto]

import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { AgentMetrics } from "../src/metrics/agent.js";
import { type RunningProxy, spawnProxy, stopProxy } from "../src/proxy/builtin.js";
import type { ProxyMetrics, RouteTable } from "../src/proxy/contract.js";
import { formatMachine, machineInfo } from "./lib/machine.js";
import { nginxProxyConf, type RunningNginx, startNginx } from "./lib/nginx.js";
import { formatNumber, formatTable } from "./lib/report.js";
import { childPids, clockTicksPerSecond, hostStealTicks, stolenCores, ticksOf } from "./lib/procfs.js";
import { type RunningPipe, startPipeProcess } from "./lib/pipe.js";
import { median, pairedRatio, ratio } from "./lib/stats.js";
import { ensureCommand } from "./lib/tools.js";
import { type RunningUpstream, startUpstreamProcess } from "./lib/upstream.js";
import { runWrk, type WrkResult, wrkBenchArgs } from "./lib/wrk.js";

const WARMUP_S = 2;
/** A run that lost less than this many cores to the hypervisor counts as quiet. */
const QUIET_STEAL_CORES = 0.15;
/** Far more often than the usual 15 s scrape interval: the collection's own cost shows, if it has one. */
const SCRAPE_EVERY_MS = 1_000;

/** The bench's route table for one upstream; `metrics` as the agent sets it when turquoise.yml has a metrics section. */
function benchTable(target: { host: string; port: number }, metrics: boolean): RouteTable {
  return { version: 1, metrics, routes: [{ service: "bench", slot: "blue", pathPrefix: "/", poolId: "bench:blue:1", upstreams: [{ id: "bench-1", ...target }] }] };
}

/** CPU ticks of a proxy's supervisor and workers, summed: the proxy's whole cost, on the machine's clock rather than its load. */
async function proxyTicks(p: RunningProxy): Promise<number> {
  const pids = [p.pid, ...((await p.proxy.health()).workers ?? []).map((w) => w.pid)];
  return [...ticksOf(pids).values()].reduce((a, b) => a + b, 0);
}

/** How many of the proxy's workers accept new connections now (proxy.accept adaptive: as many as the cores can run). */
async function acceptingWorkers(p: RunningProxy): Promise<number> {
  return ((await p.proxy.health()).workers ?? []).filter((w) => w.accepting).length;
}

function requestsCounted(m: ProxyMetrics): number {
  return m.requests.reduce((n, s) => n + s.statuses.reduce((a, b) => a + b, 0), 0);
}

/**
 * Scrapes a proxy as the agent does for each GET /metrics (the proxy's figures over its control
 * API, summed over its workers, then the whole text format) until stopped.
 */
function startScraper(p: RunningProxy): { stop(): Promise<{ scrapes: number }> } {
  const metrics = new AgentMetrics({ services: ["bench"], watches: [], version: "bench" });
  metrics.attach({ liveReleases: async () => [], degraded: async () => [], instances: () => [], proxyMetrics: () => p.proxy.metrics() });
  let scrapes = 0;
  let busy: Promise<unknown> = Promise.resolve();
  const timer = setInterval(() => {
    busy = metrics.render().then(() => scrapes++);
  }, SCRAPE_EVERY_MS);
  return {
    async stop() {
      clearInterval(timer);
      await busy;
      return { scrapes };
    },
  };
}

interface TargetResult {
  name: string;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  rounds: WrkResult[];
  /** Median CPU per request of the proxy's processes, µs (not measured for direct). */
  cpuUsPerRequest?: number;
  /** Turquoise: its workers accepting new connections at the end of each run. */
  accepting?: number[];
  /** Cores' worth of time the hypervisor took during each run (0 on bare metal). */
  stolenCores: number[];
}

/** a/b round by round, over the rounds where neither run lost QUIET_STEAL_CORES or more to steal. */
function quietRatios(a: TargetResult, b: TargetResult): number[] {
  return a.rounds.flatMap((run, i) => (a.stolenCores[i]! < QUIET_STEAL_CORES && b.stolenCores[i]! < QUIET_STEAL_CORES ? [Math.round((run.rps / b.rounds[i]!.rps) * 100) / 100] : []));
}

async function main(): Promise<void> {
  const { json, rounds, wrk, workersArg, workers, say } = wrkBenchArgs(10);

  ensureCommand("wrk");
  ensureCommand("nginx");
  const machine = machineInfo();
  say(formatMachine(machine));
  say(`load    wrk ${wrk.threads} threads, ${wrk.connections} keep-alive connections, ${wrk.durationS} s × ${rounds} rounds (medians), GET ~100-byte JSON`);
  say(`proxies turquoise with ${workers} worker(s), metrics off and on (scraped every ${SCRAPE_EVERY_MS / 1000} s), nginx with worker_processes ${workersArg === "auto" ? `auto (${workers})` : workers}\n`);

  const stateDir = await mkdtemp(path.join(os.tmpdir(), "turquoise-bench-proxy-"));
  const metricsStateDir = await mkdtemp(path.join(os.tmpdir(), "turquoise-bench-proxy-metrics-"));
  let upstream: RunningUpstream | undefined;
  let nginx: RunningNginx | undefined;
  let pipe: RunningPipe | undefined;
  let allAccept: RunningProxy | undefined;
  const allStateDir = await mkdtemp(path.join(os.tmpdir(), "turquoise-bench-proxy-all-"));
  const spawnedDirs: string[] = [];
  const cleanup = async (): Promise<void> => {
    await nginx?.stop().catch(() => {});
    pipe?.stop();
    for (const dir of spawnedDirs) await stopProxy(dir).catch(() => {});
    await upstream?.stop().catch(() => {});
    await rm(stateDir, { recursive: true, force: true });
    await rm(metricsStateDir, { recursive: true, force: true });
    await rm(allStateDir, { recursive: true, force: true });
  };
  process.once("SIGINT", () => void cleanup().then(() => process.exit(130)));

  try {
    upstream = await startUpstreamProcess();
    const target = { host: "127.0.0.1", port: upstream.port };
    // Two proxy processes alike but for the table's metrics flag, so that neither run warms the other's process.
    spawnedDirs.push(stateDir);
    const spawned = await spawnProxy({ stateDir, listenHost: "127.0.0.1", listenPort: 0, workers });
    await spawned.proxy.apply(benchTable(target, false));
    spawnedDirs.push(metricsStateDir);
    const withMetrics = await spawnProxy({ stateDir: metricsStateDir, listenHost: "127.0.0.1", listenPort: 0, workers });
    await withMetrics.proxy.apply(benchTable(target, true));
    if (workers > 1) {
      spawnedDirs.push(allStateDir);
      allAccept = await spawnProxy({ stateDir: allStateDir, listenHost: "127.0.0.1", listenPort: 0, workers, accept: "all" });
      await allAccept.proxy.apply(benchTable(target, false));
    }
    nginx = await startNginx(nginxProxyConf([target], { workerProcesses: workersArg === "auto" ? "auto" : workers }));

    const direct = { name: "direct", url: `http://127.0.0.1:${upstream.port}/` };
    const off = { name: "turquoise", url: `http://127.0.0.1:${spawned.listenPort}/` };
    const on = { name: "turquoise+metrics", url: `http://127.0.0.1:${withMetrics.listenPort}/` };
    const yardstick = { name: "nginx", url: `http://127.0.0.1:${nginx.port}/` };
    pipe = await startPipeProcess(upstream.port);
    const floor = { name: "node pipe (floor)", url: `http://127.0.0.1:${pipe.port}/` };
    const all = allAccept ? { name: "turquoise, all accept", url: `http://127.0.0.1:${allAccept.listenPort}/` } : undefined;
    const targets = [direct, off, on, yardstick, floor, ...(all ? [all] : [])];
    for (const t of targets) await runWrk(t.url, { ...wrk, durationS: WARMUP_S });
    // Rounds interleave the targets so that drift on the machine hits all of them alike; metrics
    // off and on run back to back, in turns first, so that each pair shares the machine's state.
    const results = new Map<string, WrkResult[]>(targets.map((t) => [t.name, []]));
    const stolenOf = new Map<string, number[]>(targets.map((t) => [t.name, []]));
    /** The proxies' CPU time per request served, µs, by run: less at the mercy of a busy machine than throughput. */
    const cpuUs = new Map<string, number[]>([[off.name, []], [on.name, []], [yardstick.name, []], [floor.name, []], ...(all ? [[all.name, []] as [string, number[]]] : [])]);
    const acceptingOf = new Map<{ name: string }, RunningProxy>([[off, spawned], [on, withMetrics], ...(all && allAccept ? [[all, allAccept] as [{ name: string }, RunningProxy]] : [])]);
    const accepting = new Map<string, number[]>([...acceptingOf.keys()].map((t) => [t.name, []]));
    const nginxPid = nginx.pid;
    const pipePid = pipe.pid;
    const allProxy = allAccept;
    const ticksFor = new Map<{ name: string }, () => Promise<number>>([
      [off, () => proxyTicks(spawned)],
      ...(all && allProxy ? [[all, () => proxyTicks(allProxy)] as [{ name: string }, () => Promise<number>]] : []),
      [on, () => proxyTicks(withMetrics)],
      [yardstick, async () => [...ticksOf([nginxPid, ...childPids(nginxPid)]).values()].reduce((a, b) => a + b, 0)],
      [floor, async () => [...ticksOf([pipePid]).values()].reduce((a, b) => a + b, 0)],
    ]);
    const hz = clockTicksPerSecond();
    let scrapes = 0;
    const counted = { before: requestsCounted(await withMetrics.proxy.metrics()), byWrk: 0 };
    for (let r = 1; r <= rounds; r++) {
      const each = [off, on, yardstick, floor, ...(all ? [all] : [])];
      for (const t of [direct, ...(r % 2 === 1 ? each : each.reverse())]) {
        const scraper = t === on ? startScraper(withMetrics) : undefined;
        const ticksNow = ticksFor.get(t);
        const ticks = ticksNow ? await ticksNow() : 0;
        const stealBefore = hostStealTicks();
        const res = await runWrk(t.url, wrk);
        const stolen = stolenCores(stealBefore, hostStealTicks());
        stolenOf.get(t.name)!.push(Math.round(stolen * 100) / 100);
        if (ticksNow) cpuUs.get(t.name)!.push((((await ticksNow()) - ticks) / hz / res.requests) * 1e6);
        const proxied = acceptingOf.get(t);
        if (proxied) accepting.get(t.name)!.push(await acceptingWorkers(proxied));
        if (scraper) {
          scrapes += (await scraper.stop()).scrapes;
          counted.byWrk += res.requests;
        }
        results.get(t.name)!.push(res);
        const cpu = cpuUs.get(t.name)?.at(-1);
        const took = accepting.get(t.name)?.at(-1);
        say(`round ${r}/${rounds}  ${t.name.padEnd(17)}  ${formatNumber(res.rps).padStart(8)} req/s  p99 ${res.p99.toFixed(2)} ms${cpu === undefined ? "" : `  ${cpu.toFixed(1)} µs CPU/req`}${took === undefined ? "" : `  ${took}/${workers} accepting`}${stolen >= 0.01 ? `  steal ${stolen.toFixed(2)} cores` : ""}${res.errors ? `  ${res.errors} errors` : ""}`);
      }
    }
    const countedByProxy = requestsCounted(await withMetrics.proxy.metrics()) - counted.before;
    const summary: TargetResult[] = targets.map((t) => {
      const runs = results.get(t.name)!;
      return {
        name: t.name,
        rps: Math.round(median(runs.map((x) => x.rps))),
        p50Ms: median(runs.map((x) => x.p50)),
        p99Ms: median(runs.map((x) => x.p99)),
        errors: runs.reduce((sum, x) => sum + x.errors, 0),
        rounds: runs,
        ...(cpuUs.has(t.name) ? { cpuUsPerRequest: Math.round(median(cpuUs.get(t.name)!) * 10) / 10 } : {}),
        ...(accepting.has(t.name) ? { accepting: accepting.get(t.name)! } : {}),
        stolenCores: stolenOf.get(t.name)!,
      };
    });
    const by = (name: string): TargetResult => summary.find((s) => s.name === name)!;
    const proxyToNginx = pairedRatio(by("turquoise").rounds.map((x) => x.rps), by("nginx").rounds.map((x) => x.rps));
    const ratios = {
      proxyToDirect: ratio(by("turquoise").rps, by("direct").rps),
      nginxToDirect: ratio(by("nginx").rps, by("direct").rps),
      /** Turquoise / nginx: the median of each round's ratio (the rounds' own, and the ratio of medians, beside it). */
      proxyToNginx: proxyToNginx.median,
      proxyToNginxRounds: proxyToNginx.rounds,
      proxyToNginxOfMedians: proxyToNginx.ofMedians,
      floorToNginx: ratio(by("node pipe (floor)").rps, by("nginx").rps),
      /** Every worker accepting / nginx, as proxyToNginx: what the adaptive accepting is worth here. */
      ...(all ? { allAcceptToNginx: pairedRatio(by(all.name).rounds.map((x) => x.rps), by("nginx").rounds.map((x) => x.rps)).median } : {}),
      /**
       * Turquoise / nginx over the rounds where neither run lost QUIET_STEAL_CORES to the
       * hypervisor: on a shared VM a round's ratio follows whose run was stolen from.
       */
      proxyToNginxQuiet: quietRatios(by("turquoise"), by("nginx")),
      /** nginx's CPU per request over ours: what the req/s ratio tends to when the CPU is the limit. */
      cpuNginxToProxy: ratio(by("nginx").cpuUsPerRequest!, by("turquoise").cpuUsPerRequest!),
      cpuNginxToFloor: ratio(by("nginx").cpuUsPerRequest!, by("node pipe (floor)").cpuUsPerRequest!),
    };
    // Each round's on/off pair, then their median: drift between rounds cancels out within a pair.
    const offRuns = results.get("turquoise")!;
    const pairRatios = results.get("turquoise+metrics")!.map((on, i) => on.rps / offRuns[i]!.rps);
    const metricsCost = {
      pairRatios: pairRatios.map((x) => Math.round(x * 1000) / 1000),
      medianPairRatio: Math.round(median(pairRatios) * 1000) / 1000,
      /** The proxies' CPU per request (supervisor and workers), medians of the runs, µs. */
      cpuUsPerRequest: { off: Math.round(median(cpuUs.get(off.name)!) * 10) / 10, on: Math.round(median(cpuUs.get(on.name)!) * 10) / 10 },
      ratioOfMedians: Math.round((by("turquoise+metrics").rps / by("turquoise").rps) * 1000) / 1000,
      scrapes,
      /** What the proxy counted during the "on" runs, against what wrk says it completed (wrk leaves out requests still in flight at its end). */
      countedByProxy,
      completedByWrk: counted.byWrk,
    };

    if (json) {
      process.stdout.write(JSON.stringify({ machine, load: { ...wrk, rounds }, workers, results: summary, ratios, metricsCost }, null, 2) + "\n");
    } else {
      say("");
      say(formatTable(
        ["target", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "errors"],
        summary.map((s) => [s.name, formatNumber(s.rps), s.p50Ms.toFixed(2), s.p99Ms.toFixed(2), s.cpuUsPerRequest === undefined ? "" : s.cpuUsPerRequest.toFixed(1), String(s.errors)]),
      ));
      say("");
      say(`turquoise/direct  ${ratios.proxyToDirect.toFixed(2)}`);
      say(`nginx/direct      ${ratios.nginxToDirect.toFixed(2)}`);
      say(`turquoise/nginx   ${ratios.proxyToNginx.toFixed(2)}  (median of the rounds' ratios: ${ratios.proxyToNginxRounds.map((x) => x.toFixed(2)).join(", ")}; ratio of medians ${ratios.proxyToNginxOfMedians.toFixed(2)}; CPU per request, nginx's / ours: ${ratios.cpuNginxToProxy.toFixed(2)})`);
      const acceptingOff = by("turquoise").accepting!;
      say(`                  turquoise's workers accepting at each run's end: ${acceptingOff.join(", ")} of ${workers}`);
      if (ratios.allAcceptToNginx !== undefined) say(`all accept/nginx  ${ratios.allAcceptToNginx.toFixed(2)}  (every worker accepting, as nginx's: median of the rounds' ratios)`);
      const stolenMedian = (name: string): string => median(by(name).stolenCores).toFixed(2);
      say(`steal             hypervisor's, cores (median of the runs): turquoise ${stolenMedian("turquoise")}, nginx ${stolenMedian("nginx")}, direct ${stolenMedian("direct")}`);
      const quiet = ratios.proxyToNginxQuiet;
      say(`quiet rounds      ${quiet.length ? `turquoise/nginx ${median(quiet).toFixed(2)} (median of the ${quiet.length} round(s) where neither run lost ${QUIET_STEAL_CORES} cores or more to steal: ${quiet.map((x) => x.toFixed(2)).join(", ")})` : `none: in every round one run or both lost ${QUIET_STEAL_CORES} cores or more to steal`}`);
      say(`floor/nginx       ${ratios.floorToNginx.toFixed(2)}  (CPU per request, nginx's / the pipe's: ${ratios.cpuNginxToFloor.toFixed(2)})`);
      say("");
      say(`metrics on/off    ${metricsCost.medianPairRatio.toFixed(3)}  (median of the ${rounds} pairs: ${metricsCost.pairRatios.map((x) => x.toFixed(3)).join(", ")}; ratio of medians ${metricsCost.ratioOfMedians.toFixed(3)})`);
      say(`                  ${scrapes} scrapes meanwhile; the proxy counted ${formatNumber(countedByProxy)} requests, wrk completed ${formatNumber(counted.byWrk)}`);
      say(`proxy CPU/request off ${metricsCost.cpuUsPerRequest.off.toFixed(1)} µs, on ${metricsCost.cpuUsPerRequest.on.toFixed(1)} µs (medians; supervisor and workers)`);
    }
  } finally {
    await cleanup();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:proxy failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
