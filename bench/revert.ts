// npm run bench:revert — under keep-alive GET load, deploy a release that passes its health check
// and verify but crashes on its 200th request. The bake window must catch it and flip back: how
// many requests failed during the window (as a % of those sent in it), how many after the revert,
// and how long from the first failed request (or the crash) to traffic back on the old release.
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { BOOKS_DIR, REPO_ROOT, createWorkspace } from "../src/demo/workspace.js";
import type { HistoryEntry } from "../src/state/contract.js";
import { formatMachine, machineInfo } from "./lib/machine.js";
import { formatNumber, formatTable } from "./lib/report.js";
import { median } from "./lib/stats.js";

const { values: args } = parseArgs({ options: { rounds: { type: "string", default: "3" }, json: { type: "boolean" }, concurrency: { type: "string", default: "8" } } });
const ROUNDS = Number(args.rounds);
const CONCURRENCY = Number(args.concurrency);
const CRASH_AFTER = 200;
const BAKE = "5s";
/** Load keeps running this long after the deploy returned, to count failures after the revert. */
const AFTER_MS = 2_000;

/** failure: the status code, or the client error's code, of a failed request. */
interface Sample { at: number; ok: boolean; release: string | undefined; failure?: string }

/** Keep-alive GETs with a timestamp per answer, so failures can be placed in the bake window or after it. */
class TimedLoad {
  readonly samples: Sample[] = [];
  private stopping = false;
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  private workers: Promise<void>[] = [];

  constructor(private readonly baseUrl: string) {}

  start(): this {
    this.workers = Array.from({ length: CONCURRENCY }, () => this.worker());
    return this;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.workers);
    this.agent.destroy();
  }

  private async worker(): Promise<void> {
    while (!this.stopping) {
      const s = await new Promise<Sample>((resolve) => {
        const req = http.get(`${this.baseUrl}/api/v1/books`, { agent: this.agent, timeout: 5_000 }, (res) => {
          res.resume();
          const ok = (res.statusCode ?? 0) < 500;
          res.on("end", () => resolve({ at: Date.now(), ok, release: res.headers["x-release"] as string | undefined, ...(ok ? {} : { failure: String(res.statusCode) }) }));
          res.on("error", (e: NodeJS.ErrnoException) => resolve({ at: Date.now(), ok: false, release: undefined, failure: e.code ?? e.message }));
        });
        req.on("timeout", () => req.destroy(new Error("timeout")));
        req.on("error", (e: NodeJS.ErrnoException) => resolve({ at: Date.now(), ok: false, release: undefined, failure: e.code ?? e.message }));
      });
      this.samples.push(s);
    }
  }
}

interface Round {
  outcome: string;
  bakeRequests: number;
  bakeFailed: number;
  bakeFailedPct: number;
  afterRequests: number;
  afterFailed: number;
  /** What the failed requests of the window got: a status code or a client error, with counts. */
  failures: Record<string, number>;
  firstFailureToRevertMs: number | null;
  bakeMs: number;
  exitCode: number;
}

async function main(): Promise<void> {
  const machine = machineInfo();
  if (!args.json) console.log(formatMachine(machine));
  const releasesDir = fs.mkdtempSync(path.join(os.tmpdir(), "turquoise-revert-"));
  const app = JSON.stringify(path.join(BOOKS_DIR, "lib", "app.mjs"));
  fs.mkdirSync(path.join(releasesDir, "v1"));
  fs.writeFileSync(path.join(releasesDir, "v1", "server.mjs"), `import { serve } from ${app};\nserve({ release: "v1", shape: (b) => b });\n`);
  fs.mkdirSync(path.join(releasesDir, "v2"));
  fs.writeFileSync(path.join(releasesDir, "v2", "server.mjs"), `process.env.CRASH_AFTER = "${CRASH_AFTER}";\nprocess.env.TURQUOISE_RELEASE ??= "v2";\nawait import(${JSON.stringify(path.join(REPO_ROOT, "test", "fixtures", "crash-after-app.mjs"))});\n`);
  const ws = await createWorkspace({ replicas: 2, releasesDir, healthInterval: "1s", extraServiceYaml: `    bake: ${BAKE}\n` });
  const rounds: Round[] = [];
  try {
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    for (let r = 0; r < ROUNDS; r++) {
      const load = new TimedLoad(ws.proxyUrl).start();
      await sleep(500);
      const deploy = await ws.cli(["deploy", "books", "--release", "v2"], { allowFail: true });
      await sleep(AFTER_MS);
      await load.stop();
      const history = JSON.parse((await ws.cli(["history", "books", "--limit", "1", "--json"])).stdout) as HistoryEntry[];
      const h = history[0]!;
      const bake = h.steps.find((s) => s.name === "bake");
      const revert = h.steps.find((s) => s.name === "revert");
      if (!bake) throw new Error(`round ${r + 1}: the deploy has no bake step (${h.outcome}: ${h.error ?? ""})`);
      const windowStart = bake.startedAt;
      const revertedAt = revert ? revert.startedAt + revert.durationMs : bake.startedAt + bake.durationMs;
      const inWindow = load.samples.filter((s) => s.at >= windowStart && s.at <= revertedAt);
      const after = load.samples.filter((s) => s.at > revertedAt);
      const firstFailure = inWindow.find((s) => !s.ok);
      rounds.push({
        outcome: h.outcome, exitCode: deploy.code,
        bakeRequests: inWindow.length, bakeFailed: inWindow.filter((s) => !s.ok).length,
        bakeFailedPct: inWindow.length ? (100 * inWindow.filter((s) => !s.ok).length) / inWindow.length : 0,
        afterRequests: after.length, afterFailed: after.filter((s) => !s.ok).length,
        failures: inWindow.filter((s) => !s.ok).reduce<Record<string, number>>((acc, s) => ({ ...acc, [s.failure!]: (acc[s.failure!] ?? 0) + 1 }), {}),
        firstFailureToRevertMs: firstFailure ? revertedAt - firstFailure.at : null,
        bakeMs: revertedAt - windowStart,
      });
      // The old release serves again: the next round starts from the same place.
      await sleep(500);
    }
  } finally {
    await ws.destroy();
    fs.rmSync(releasesDir, { recursive: true, force: true });
  }
  const failures = rounds.map((r) => r.firstFailureToRevertMs).filter((x): x is number => x !== null);
  const summary = {
    machine, rounds, crashAfter: CRASH_AFTER, bake: BAKE, concurrency: CONCURRENCY,
    medianBakeFailedPct: median(rounds.map((r) => r.bakeFailedPct)),
    medianAfterFailed: median(rounds.map((r) => r.afterFailed)),
    medianFirstFailureToRevertMs: failures.length ? median(failures) : null,
    medianFlipToRevertMs: median(rounds.map((r) => r.bakeMs)),
  };
  if (args.json) return void console.log(JSON.stringify(summary, null, 2));
  console.log(`\nload: ${CONCURRENCY} keep-alive GET clients; ${ROUNDS} deploys of a release that crashes on its ${CRASH_AFTER}th request, bake ${BAKE}\n`);
  console.log(formatTable(["round", "outcome", "exit", "requests in window", "failed in window", "what they got", "failed after revert", "first failure → revert", "flip → revert"], rounds.map((r, i) => [
    String(i + 1), r.outcome, String(r.exitCode), formatNumber(r.bakeRequests), `${r.bakeFailed} (${r.bakeFailedPct.toFixed(2)} %)`,
    Object.entries(r.failures).map(([k, n]) => `${n}× ${k}`).join(", ") || "-", `${r.afterFailed} of ${formatNumber(r.afterRequests)}`,
    r.firstFailureToRevertMs === null ? "no request failed" : `${r.firstFailureToRevertMs.toFixed(0)} ms`, `${r.bakeMs.toFixed(0)} ms`,
  ])));
  console.log(`\nmedians: failed in the bake window ${summary.medianBakeFailedPct.toFixed(2)} % (target < 1 %), failed after the revert ${summary.medianAfterFailed} (target 0), first failure → revert ${summary.medianFirstFailureToRevertMs === null ? "n/a" : `${summary.medianFirstFailureToRevertMs.toFixed(0)} ms`}, flip → revert ${summary.medianFlipToRevertMs.toFixed(0)} ms`);
  if (rounds.some((r) => r.outcome !== "reverted" || r.exitCode === 0 || r.afterFailed > 0) || summary.medianBakeFailedPct >= 1) process.exitCode = 1;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

await main();
