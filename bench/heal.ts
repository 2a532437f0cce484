// npm run bench:heal — books-service with 2 replicas under keep-alive GET load through the proxy.
// kill -9 one instance: how long until it is out of rotation, how long until a replacement is
// healthy, and whether any GET failed. Then kill every instance: how long until the service
// answers again. Each figure is printed beside the seed article's 10 s Consul check interval.
import http from "node:http";
import { parseArgs } from "node:util";
import { LoadProcess } from "../src/demo/load-process.js";
import { createWorkspace, type Workspace } from "../src/demo/workspace.js";
import { booksLive } from "./lib/books-live.js";
import { formatMachine, machineInfo } from "./lib/machine.js";
import { sleep, timeUntil as waitUntil } from "./lib/wait.js";
import { formatNumber, formatTable } from "./lib/report.js";
import { median } from "./lib/stats.js";

const { values: args } = parseArgs({ options: { rounds: { type: "string", default: "5" }, json: { type: "boolean" } } });
const ROUNDS = Number(args.rounds);
const SEED_DETECTION_MS = 10_000;
const POLL_MS = 2;
const MAX_WAIT_MS = 30_000;

interface Instance { id: string; ref: string; release: string; health: { status: string } }

async function main(): Promise<void> {
  const machine = machineInfo();
  if (!args.json) console.log(formatMachine(machine));
  const ws = await createWorkspace({ replicas: 2, healthInterval: "1s" });
  try {
    const { instances, proxy } = await booksLive<Instance>(ws);

    const load = await LoadProcess.start({ baseUrl: ws.proxyUrl, concurrency: 8, postEvery: 0, maxDurationMs: 5 * 60_000 });
    const kills: Array<{ outOfRotationMs: number; replacementHealthyMs: number }> = [];
    for (let r = 0; r < ROUNDS; r++) {
      await sleep(500);
      const before = await instances();
      const victim = before[r % before.length]!;
      const t0 = performance.now();
      process.kill(Number(victim.ref), "SIGKILL");
      const outOfRotationMs = await timeUntil(t0, async () => ((await proxy.stats()) as { down?: Array<{ id: string }> }).down?.some((d) => d.id === victim.id) || !(await routed(proxy, victim.id)));
      const replacementHealthyMs = await timeUntil(t0, async () => {
        const now = await instances();
        return now.length === 2 && !now.some((i) => i.id === victim.id) && now.every((i) => i.health.status === "passing");
      });
      kills.push({ outOfRotationMs, replacementHealthyMs });
    }
    const single = await load.stop();

    // Every instance at once: the proxy answers 503 until a replacement is healthy.
    await sleep(500);
    const all = await instances();
    const t0 = performance.now();
    for (const i of all) process.kill(Number(i.ref), "SIGKILL");
    await sleep(5);
    const answersAgainMs = await timeUntil(t0, async () => (await status(ws)) === 200);

    const summary = {
      machine, rounds: ROUNDS, requests: single.total, failedGets: single.failed, failures: single.failures,
      outOfRotationMedianMs: median(kills.map((k) => k.outOfRotationMs)), outOfRotationMaxMs: Math.max(...kills.map((k) => k.outOfRotationMs)),
      replacementHealthyMedianMs: median(kills.map((k) => k.replacementHealthyMs)), replacementHealthyMaxMs: Math.max(...kills.map((k) => k.replacementHealthyMs)),
      allKilledAnswersAgainMs: answersAgainMs, seedDetectionMs: SEED_DETECTION_MS, kills,
    };
    if (args.json) return void console.log(JSON.stringify(summary, null, 2));
    const vsSeed = (ms: number) => `${(ms / SEED_DETECTION_MS).toFixed(4)}× (${formatNumber(SEED_DETECTION_MS / Math.max(ms, 0.1), 0)}× sooner)`;
    console.log(`\nload: 8 keep-alive GET clients in a separate process; ${ROUNDS} rounds of kill -9 on one of 2 replicas\n`);
    console.log(formatTable(["figure", "median", "max", "vs the seed's 10 s check interval (median)"], [
      ["dead instance out of rotation", `${summary.outOfRotationMedianMs.toFixed(1)} ms`, `${summary.outOfRotationMaxMs.toFixed(1)} ms`, vsSeed(summary.outOfRotationMedianMs)],
      ["replacement healthy", `${summary.replacementHealthyMedianMs.toFixed(0)} ms`, `${summary.replacementHealthyMaxMs.toFixed(0)} ms`, vsSeed(summary.replacementHealthyMedianMs)],
      ["all instances killed: service answers again", `${answersAgainMs.toFixed(0)} ms`, "", vsSeed(answersAgainMs)],
    ]));
    console.log(`\nGET requests during the single kills: ${formatNumber(single.total)}, failed: ${single.failed}${single.failed ? ` ${JSON.stringify(single.failures)}` : ""} (target 0)`);
    if (single.failed > 0 || summary.outOfRotationMedianMs >= 1_000) process.exitCode = 1;
  } finally {
    await ws.destroy();
  }
}

/** Whether the proxy's current table still lists the instance among its upstreams. */
async function routed(proxy: unknown, id: string): Promise<boolean> {
  const table = (await (proxy as { table(): Promise<{ routes: Array<{ upstreams: Array<{ id: string }> }> }> }).table());
  return table.routes.some((r) => r.upstreams.some((u) => u.id === id));
}


function status(ws: Workspace): Promise<number> {
  return new Promise((resolve) => {
    http.get(`${ws.proxyUrl}/api/v1/books`, { agent: false }, (res) => { res.resume(); resolve(res.statusCode ?? 0); }).on("error", () => resolve(0));
  });
}


const timeUntil = (t0: number, done: () => Promise<boolean>) => waitUntil(t0, done, { maxWaitMs: MAX_WAIT_MS, pollMs: POLL_MS });

await main();
