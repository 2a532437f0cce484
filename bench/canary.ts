// npm run bench:canary — progressive delivery under steady load, through Turquoise's proxy (2
// workers), users simulated from 200 loopback addresses with their own cookie jars:
// (a) a good release promoted through 5,25,50,100 with 0 failed requests; (b) a release answering
// 5 % of requests with 500, aborted at its first step: how many requests it served and how many
// saw its errors, against the target (the first share × one step window's requests, both measured
// in this run); (c) a release 10× slower at p99 (10× the good release's own p99 measured directly
// in this run), aborted at the end of its first step.
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { writeCanaryReleases } from "../src/demo/canary-releases.js";
import { LoadProcess } from "../src/demo/load-process.js";
import type { LoadReport } from "../src/demo/load.js";
import { createWorkspace, type Workspace } from "../src/demo/workspace.js";
import { freePort } from "../src/util/net.js";
import { formatMachine, machineInfo } from "./lib/machine.js";
import { formatNumber, formatTable } from "./lib/report.js";
import { percentile } from "./lib/stats.js";

const { values: args } = parseArgs({ options: { json: { type: "boolean" }, "step-interval": { type: "string", default: "5s" }, concurrency: { type: "string", default: "16" }, users: { type: "string", default: "200" } } });
const STEPS = "5,25,50,100";
const FIRST_SHARE = 0.05;
const STEP_INTERVAL = args["step-interval"]!;
const STEP_MS = Number.parseFloat(STEP_INTERVAL) * (STEP_INTERVAL.endsWith("ms") ? 1 : 1000);
const CONCURRENCY = Number(args.concurrency);
const USERS = Number(args.users);
const MAX_LOAD_MS = 3 * 60_000;
/** Requests to the app directly for the reference p99. */
const REFERENCE_REQUESTS = 2_000;

interface History { outcome: string; error: string | null; durationMs?: number; startedAt: number; finishedAt: number | null; steps: Array<{ name: string; ok: boolean; detail?: string; durationMs: number }> }

async function main(): Promise<void> {
  const log = (s: string) => { if (!args.json) console.log(s); };
  log(formatMachine(machineInfo()));
  const releasesDir = fs.mkdtempSync(path.join(os.tmpdir(), "turquoise-bench-canary-"));
  writeCanaryReleases(releasesDir, { v1: {}, v2: {}, "v3-errors": { failEvery: 20 } });
  const referenceP99 = await directP99(path.join(releasesDir, "v1", "server.mjs"));
  const slowMs = Math.max(60, Math.ceil(referenceP99 * 10));
  writeCanaryReleases(releasesDir, { "v4-slow": { delayMs: slowMs } });
  log(`\nreference, same run: the good release answered directly, ${REFERENCE_REQUESTS} keep-alive GETs, 8 at a time: p99 ${formatNumber(referenceP99, 2)} ms; the slow release adds ${slowMs} ms to every answer`);

  const ws = await createWorkspace({ replicas: 2, healthInterval: "500ms", releasesDir, extraServiceYaml: "    bake: 0s\n" });
  // Two proxy workers: each must split users the same way, and their counters are summed.
  fs.writeFileSync(ws.specFile, fs.readFileSync(ws.specFile, "utf8").replace(/proxy: \{ listen: ("[^"]+") \}/, "proxy: { listen: $1, workers: 2 }"));
  const rows: string[][] = [];
  const out: Record<string, unknown> = { stepInterval: STEP_INTERVAL, steps: STEPS, users: USERS, concurrency: CONCURRENCY, referenceP99Ms: referenceP99, slowDelayMs: slowMs };
  try {
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    log(`\nload: ${CONCURRENCY} keep-alive clients in a separate process, ${USERS} users (own loopback address and cookie jar each), GETs; canary ${STEPS}, step interval ${STEP_INTERVAL}, 2 replicas, 2 proxy workers\n`);

    const a = await phase(ws, "v2");
    const b = await phase(ws, "v3-errors");
    const c = await phase(ws, "v4-slow");
    const windowRequests = (r: LoadReport) => r.requestsPerSecond * (STEP_MS / 1000);
    const target = FIRST_SHARE * windowRequests(b.report);
    for (const [name, p] of [["(a) good", a], ["(b) 5 % 500s", b], ["(c) 10× p99", c]] as const) {
      const release = p.release;
      rows.push([name, p.history.outcome, formatNumber(p.report.total), formatNumber(p.report.requestsPerSecond), formatNumber(p.report.failed), formatNumber(p.report.byRelease[release] ?? 0), formatNumber(p.tookMs / 1000, 1), p.reason]);
    }
    log(formatTable(["release", "outcome", "requests", "req/s", "failed", "served by it", "deploy s", "why"], rows));
    const sawErrors = b.report.failures["HTTP 500"] ?? 0;
    const servedByBad = b.report.byRelease["v3-errors"] ?? 0;
    log(`\n(b) requests that saw the bad release's errors: ${sawErrors}; requests it served in all: ${servedByBad + sawErrors}; target: fewer than ${formatNumber(target)} (5 % × ${formatNumber(windowRequests(b.report))} requests in one ${STEP_INTERVAL} window); ratio ${formatNumber((servedByBad + sawErrors) / target, 3)}`);
    log(`(a) ${a.report.failed === 0 ? "0 failed" : `${a.report.failed} FAILED`}; (b) ${b.history.outcome} at its first step: ${/at 5 %/.test(b.history.error ?? "") ? "yes" : "NO"}; (c) ${c.history.outcome}`);
    Object.assign(out, {
      good: summary(a), errors: { ...summary(b), sawErrors, servedByIt: servedByBad + sawErrors, target: Math.round(target) }, slow: summary(c),
    });
    if (args.json) console.log(JSON.stringify(out, null, 2));
    const ok = a.history.outcome === "succeeded" && a.report.failed === 0 && b.history.outcome === "aborted" && servedByBad + sawErrors < target && c.history.outcome === "aborted";
    if (!ok) process.exitCode = 1;
  } finally {
    await ws.destroy();
    fs.rmSync(releasesDir, { recursive: true, force: true });
  }
}

interface Phase { release: string; report: LoadReport; history: History; tookMs: number; reason: string }

function summary(p: Phase): Record<string, unknown> {
  return { outcome: p.history.outcome, requests: p.report.total, requestsPerSecond: p.report.requestsPerSecond, failed: p.report.failed, failures: p.report.failures, byRelease: p.report.byRelease, deployMs: p.tookMs, reason: p.reason };
}

/** One deploy in canary steps under load of its own. */
async function phase(ws: Workspace, release: string): Promise<Phase> {
  const load = await LoadProcess.start({ baseUrl: ws.proxyUrl, concurrency: CONCURRENCY, postEvery: 0, users: USERS, maxDurationMs: MAX_LOAD_MS, maxRequests: 5_000_000 });
  // Steady load before the deploy: the first step's window compares like with like.
  await new Promise((r) => setTimeout(r, 1_000));
  const started = Date.now();
  await ws.cli(["deploy", "books", "--release", release, "--canary", STEPS, "--step-interval", STEP_INTERVAL], { allowFail: true });
  const tookMs = Date.now() - started;
  await new Promise((r) => setTimeout(r, 500));
  const report = await load.stop();
  const [history] = JSON.parse((await ws.cli(["history", "books", "--json"])).stdout) as History[];
  const reason = history!.outcome === "aborted" ? (history!.error ?? "").split("\n")[0]!.replace(/^at /, "") : `${history!.steps.filter((s) => s.name === "canary" && s.ok).length} canary steps passed`;
  return { release, report, history: history!, tookMs, reason };
}

/** The good release's own p99, straight to it (no proxy): what "10× slower" is measured against. */
async function directP99(serverFile: string): Promise<number> {
  const { spawn } = await import("node:child_process");
  const port = await freePort();
  const child = spawn(process.execPath, [serverFile], { env: { ...process.env, PORT: String(port) }, stdio: "ignore" });
  try {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    const get = () => new Promise<number>((resolve, reject) => {
      const t0 = performance.now();
      http.get({ host: "127.0.0.1", port, path: "/api/v1/books", agent }, (res) => { res.resume(); res.on("end", () => resolve(performance.now() - t0)); }).on("error", reject);
    });
    for (let i = 0; ; i++) {
      try { await get(); break; } catch (e) { if (i > 100) throw e; await new Promise((r) => setTimeout(r, 50)); }
    }
    const latencies: number[] = [];
    for (let i = 0; i < REFERENCE_REQUESTS; i += 8) latencies.push(...(await Promise.all(Array.from({ length: 8 }, get))));
    agent.destroy();
    return percentile(latencies, 99);
  } finally {
    child.kill("SIGTERM");
  }
}

await main();
