// How much does Turquoise's proxy cost? wrk against the same upstream three ways in one run:
// direct, through the built-in proxy (its own process), and through nginx as the yardstick, with
// as many nginx worker processes as the built-in proxy has workers.
// Usage: node dist/bench/proxy.js [--json] [--duration 10] [--rounds 3] [--connections 64] [--threads 2] [--workers 1|N|auto]

import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { spawnProxy, stopProxy } from "../src/proxy/builtin.js";
import { formatMachine, machineInfo } from "./lib/machine.js";
import { nginxProxyConf, type RunningNginx, startNginx } from "./lib/nginx.js";
import { formatNumber, formatTable } from "./lib/report.js";
import { median, ratio } from "./lib/stats.js";
import { ensureCommand } from "./lib/tools.js";
import { type RunningUpstream, startUpstreamProcess } from "./lib/upstream.js";
import { runWrk, type WrkResult, wrkBenchArgs } from "./lib/wrk.js";

const WARMUP_S = 2;

interface TargetResult {
  name: string;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  rounds: WrkResult[];
}

async function main(): Promise<void> {
  const { json, rounds, wrk, workersArg, workers, say } = wrkBenchArgs(10);

  ensureCommand("wrk");
  ensureCommand("nginx");
  const machine = machineInfo();
  say(formatMachine(machine));
  say(`load    wrk ${wrk.threads} threads, ${wrk.connections} keep-alive connections, ${wrk.durationS} s × ${rounds} rounds (medians), GET ~100-byte JSON`);
  say(`proxies turquoise with ${workers} worker(s), nginx with worker_processes ${workersArg === "auto" ? `auto (${workers})` : workers}\n`);

  const stateDir = await mkdtemp(path.join(os.tmpdir(), "turquoise-bench-proxy-"));
  let upstream: RunningUpstream | undefined;
  let nginx: RunningNginx | undefined;
  let proxySpawned = false;
  const cleanup = async (): Promise<void> => {
    await nginx?.stop().catch(() => {});
    if (proxySpawned) await stopProxy(stateDir).catch(() => {});
    await upstream?.stop().catch(() => {});
    await rm(stateDir, { recursive: true, force: true });
  };
  process.once("SIGINT", () => void cleanup().then(() => process.exit(130)));

  try {
    upstream = await startUpstreamProcess();
    const target = { host: "127.0.0.1", port: upstream.port };
    const spawned = await spawnProxy({ stateDir, listenHost: "127.0.0.1", listenPort: 0, workers });
    proxySpawned = true;
    await spawned.proxy.apply({
      version: 1,
      routes: [{ service: "bench", pathPrefix: "/", poolId: "bench:blue:1", upstreams: [{ id: "bench-1", ...target }] }],
    });
    nginx = await startNginx(nginxProxyConf([target], { workerProcesses: workersArg === "auto" ? "auto" : workers }));

    const targets = [
      { name: "direct", url: `http://127.0.0.1:${upstream.port}/` },
      { name: "turquoise", url: `http://127.0.0.1:${spawned.listenPort}/` },
      { name: "nginx", url: `http://127.0.0.1:${nginx.port}/` },
    ];
    for (const t of targets) await runWrk(t.url, { ...wrk, durationS: WARMUP_S });
    // Rounds interleave the targets so that drift on the machine hits all three alike.
    const results = new Map<string, WrkResult[]>(targets.map((t) => [t.name, []]));
    for (let r = 1; r <= rounds; r++) {
      for (const t of targets) {
        const res = await runWrk(t.url, wrk);
        results.get(t.name)!.push(res);
        say(`round ${r}/${rounds}  ${t.name.padEnd(9)}  ${formatNumber(res.rps).padStart(8)} req/s  p99 ${res.p99.toFixed(2)} ms${res.errors ? `  ${res.errors} errors` : ""}`);
      }
    }
    const summary: TargetResult[] = targets.map((t) => {
      const runs = results.get(t.name)!;
      return {
        name: t.name,
        rps: Math.round(median(runs.map((x) => x.rps))),
        p50Ms: median(runs.map((x) => x.p50)),
        p99Ms: median(runs.map((x) => x.p99)),
        errors: runs.reduce((sum, x) => sum + x.errors, 0),
        rounds: runs,
      };
    });
    const by = (name: string): TargetResult => summary.find((s) => s.name === name)!;
    const ratios = {
      proxyToDirect: ratio(by("turquoise").rps, by("direct").rps),
      nginxToDirect: ratio(by("nginx").rps, by("direct").rps),
      proxyToNginx: ratio(by("turquoise").rps, by("nginx").rps),
    };

    if (json) {
      process.stdout.write(JSON.stringify({ machine, load: { ...wrk, rounds }, workers, results: summary, ratios }, null, 2) + "\n");
    } else {
      say("");
      say(formatTable(
        ["target", "req/s", "p50 ms", "p99 ms", "errors"],
        summary.map((s) => [s.name, formatNumber(s.rps), s.p50Ms.toFixed(2), s.p99Ms.toFixed(2), String(s.errors)]),
      ));
      say("");
      say(`turquoise/direct  ${ratios.proxyToDirect.toFixed(2)}`);
      say(`nginx/direct      ${ratios.nginxToDirect.toFixed(2)}`);
      say(`turquoise/nginx   ${ratios.proxyToNginx.toFixed(2)}`);
    }
  } finally {
    await cleanup();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:proxy failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
