// Failed requests per flip, nginx against Turquoise, in one run. wrk keeps 32 keep-alive
// connections busy for ~10 s per scenario while something changes the routing every 0.5 s:
//   - plain nginx, SIGHUP (a reload, as consul-template does it), with and without client keep-alive;
//   - Turquoise's nginx driver flipping between two pools of real upstream processes, without and
//     with its edge (the default), GET and POST;
//   - Turquoise's built-in proxy doing the same flips, for reference.
// Usage: node dist/bench/nginx-flip.js [--json] [--duration 10] [--interval 500] [--connections 32] [--threads 2] [--only NAME,...]

import { spawnSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { spawnProxy, stopProxy } from "../src/proxy/builtin.js";
import type { Proxy, RouteTable, Upstream } from "../src/proxy/contract.js";
import { NginxProxy } from "../src/proxy/nginx.js";
import { formatMachine, machineInfo } from "./lib/machine.js";
import { nginxProxyConf, startNginx } from "./lib/nginx.js";
import { formatNumber, formatTable } from "./lib/report.js";
import { freePort } from "./lib/net.js";
import { type RunningUpstream, startUpstreamProcess } from "./lib/upstream.js";
import { runWrk, type WrkOptions, type WrkResult } from "./lib/wrk.js";

const ENSURE_NGINX = fileURLToPath(new URL("../../scripts/ensure-nginx.sh", import.meta.url));
const DRAIN_TIMEOUT_MS = 5_000;
/** wrk's own deadline plus this much, and the flip loop stops whatever happens. */
const SCENARIO_SLACK_MS = 15_000;

interface Scenario {
  name: string;
  /** What changes the routing each interval. */
  change: string;
  method: "GET" | "POST";
  /** Starts the target; returns its URL, one routing change, and teardown. */
  setup(ctx: Context): Promise<Target>;
}

interface Target {
  url: string;
  change(n: number): Promise<void>;
  stop(): Promise<void>;
}

interface Context {
  pools: [Upstream, Upstream];
  tmp: string;
}

interface Row {
  name: string;
  change: string;
  method: string;
  changes: number;
  requests: number;
  rps: number;
  failures: number;
  failuresPerChange: number;
  p99Ms: number;
  /** Slowest routing change (reload or apply + drain), ms. */
  changeMaxMs: number;
}

function flipTable(n: number, pools: [Upstream, Upstream]): RouteTable {
  const color = n % 2 === 0 ? "blue" : "green";
  return { version: n, routes: [{ service: "bench", pathPrefix: "/", poolId: `bench:${color}:${n}`, upstreams: [pools[n % 2]!] }] };
}

/** apply(n), then drain the pool it replaced: the deploy flow's flip and drain steps. */
function flipper(proxy: Proxy, pools: [Upstream, Upstream]): (n: number) => Promise<void> {
  return async (n) => {
    await proxy.apply(flipTable(n, pools));
    const previous = flipTable(n - 1, pools).routes[0]!.poolId;
    await proxy.drain(previous, DRAIN_TIMEOUT_MS);
  };
}

const SCENARIOS: Scenario[] = [
  {
    name: "nginx",
    change: "reload",
    method: "GET",
    async setup({ pools }) {
      const nginx = await startNginx(nginxProxyConf([pools[0]]));
      return { url: `http://127.0.0.1:${nginx.port}/`, change: async () => void process.kill(nginx.pid, "SIGHUP"), stop: () => nginx.stop() };
    },
  },
  {
    name: "nginx (keepalive_timeout 0)",
    change: "reload",
    method: "GET",
    async setup({ pools }) {
      const nginx = await startNginx(nginxProxyConf([pools[0]], { keepaliveTimeoutS: 0 }));
      return { url: `http://127.0.0.1:${nginx.port}/`, change: async () => void process.kill(nginx.pid, "SIGHUP"), stop: () => nginx.stop() };
    },
  },
  ...(["GET", "POST"] as const).flatMap((method): Scenario[] => [
    { name: "turquoise nginx (no edge)", change: "flip", method, setup: (ctx) => nginxTarget(ctx, false) },
    { name: "turquoise nginx", change: "flip", method, setup: (ctx) => nginxTarget(ctx, true) },
    { name: "turquoise built-in", change: "flip", method, setup: builtinTarget },
  ]),
];

async function nginxTarget({ pools, tmp }: Context, edge: boolean): Promise<Target> {
  const stateDir = await mkdtemp(path.join(tmp, "nginx-"));
  const proxy = new NginxProxy({ stateDir, listenHost: "127.0.0.1", listenPort: await freePort(), edge });
  await proxy.start();
  await proxy.apply(flipTable(0, pools));
  return { url: `http://127.0.0.1:${proxy.listenPort}/`, change: flipper(proxy, pools), stop: async () => void (await proxy.stop()) };
}

async function builtinTarget({ pools, tmp }: Context): Promise<Target> {
  const stateDir = await mkdtemp(path.join(tmp, "builtin-"));
  const running = await spawnProxy({ stateDir, listenHost: "127.0.0.1", listenPort: 0 });
  await running.proxy.apply(flipTable(0, pools));
  return { url: `http://127.0.0.1:${running.listenPort}/`, change: flipper(running.proxy, pools), stop: async () => void (await stopProxy(stateDir)) };
}

async function runScenario(s: Scenario, ctx: Context, wrk: WrkOptions, intervalMs: number, postScript: string): Promise<Row> {
  const target = await s.setup(ctx);
  try {
    let stop = false;
    let changes = 0;
    let changeMaxMs = 0;
    const maxChanges = Math.ceil((wrk.durationS * 1_000) / intervalMs) + 1;
    const hardStop = Date.now() + wrk.durationS * 1_000 + SCENARIO_SLACK_MS;
    const loop = (async () => {
      // The first change lands a moment into the run, the last one before wrk stops.
      let next = performance.now() + intervalMs;
      while (!stop && changes < maxChanges && Date.now() < hardStop) {
        // Short naps, so that the loop ends with wrk even when the interval is long.
        while (!stop && performance.now() < next) await sleep(Math.min(50, next - performance.now()));
        if (stop) break;
        const t0 = performance.now();
        await target.change(changes + 1);
        changeMaxMs = Math.max(changeMaxMs, performance.now() - t0);
        changes++;
        next += intervalMs;
      }
    })();
    let result: WrkResult;
    try {
      result = await runWrk(target.url, { ...wrk, ...(s.method === "POST" ? { script: postScript } : {}) });
    } finally {
      stop = true;
      await loop;
    }
    return {
      name: s.name,
      change: s.change,
      method: s.method,
      changes,
      requests: result.requests,
      rps: result.rps,
      failures: result.errors,
      failuresPerChange: changes === 0 ? 0 : result.errors / changes,
      p99Ms: result.p99,
      changeMaxMs: Math.round(changeMaxMs),
    };
  } finally {
    await target.stop();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      json: { type: "boolean", default: false },
      duration: { type: "string", default: "10" },
      interval: { type: "string", default: "500" },
      connections: { type: "string", default: "32" },
      threads: { type: "string", default: "2" },
      only: { type: "string" },
    },
  });
  const json = values.json!;
  const say = (line: string): void => void (json ? process.stderr : process.stdout).write(line + "\n");
  const wrk: WrkOptions = { threads: Number(values.threads), connections: Number(values.connections), durationS: Number(values.duration), timeoutS: 2 };
  const intervalMs = Number(values.interval);
  const only = values.only?.split(",").map((s) => s.trim());
  const scenarios = only ? SCENARIOS.filter((s) => only.includes(s.name) || only.includes(`${s.name} ${s.method}`)) : SCENARIOS;

  const ensured = spawnSync("bash", [ENSURE_NGINX], { stdio: ["ignore", "ignore", "inherit"] });
  if (ensured.status !== 0) throw new Error(`${ENSURE_NGINX} failed`);
  const machine = machineInfo();
  say(formatMachine(machine));
  say(`load    wrk ${wrk.threads} threads, ${wrk.connections} keep-alive connections, ${wrk.durationS} s per scenario; a routing change every ${intervalMs} ms`);
  say("        flips alternate between two upstream processes (Node, ~100-byte JSON); each flip is apply + drain of the old pool\n");

  const tmp = await mkdtemp(path.join(os.tmpdir(), "turquoise-bench-nginx-flip-"));
  const postScript = path.join(tmp, "post.lua");
  await writeFile(postScript, 'wrk.method = "POST"\nwrk.body = \'{"title":"bench"}\'\nwrk.headers["Content-Type"] = "application/json"\n');
  const upstreams: RunningUpstream[] = [];
  const rows: Row[] = [];
  try {
    upstreams.push(await startUpstreamProcess(), await startUpstreamProcess());
    const pools: [Upstream, Upstream] = [
      { id: "bench-blue", host: "127.0.0.1", port: upstreams[0]!.port },
      { id: "bench-green", host: "127.0.0.1", port: upstreams[1]!.port },
    ];
    for (const s of scenarios) {
      const row = await runScenario(s, { pools, tmp }, wrk, intervalMs, postScript);
      rows.push(row);
      say(`${`${row.name} ${row.method}`.padEnd(32)} ${String(row.changes).padStart(3)} ${row.change}s  ${formatNumber(row.requests).padStart(9)} requests  ${String(row.failures).padStart(5)} failed`);
    }
  } finally {
    await Promise.all(upstreams.map((u) => u.stop().catch(() => undefined)));
    await rm(tmp, { recursive: true, force: true });
  }

  if (json) {
    process.stdout.write(JSON.stringify({ machine, load: { ...wrk, intervalMs }, rows }, null, 2) + "\n");
    return;
  }
  say("");
  say(formatTable(
    ["scenario", "method", "change", "changes", "requests", "req/s", "failed", "per change", "p99 ms", "slowest change ms"],
    rows.map((r) => [r.name, r.method, r.change, String(r.changes), formatNumber(r.requests), formatNumber(r.rps), String(r.failures), r.failuresPerChange.toFixed(2), r.p99Ms.toFixed(2), String(r.changeMaxMs)]),
  ));
  const ours = rows.filter((r) => r.name === "turquoise nginx");
  if (ours.some((r) => r.failures > 0)) process.exitCode = 1;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

main().catch((e: unknown) => {
  process.stderr.write(`bench nginx-flip failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
