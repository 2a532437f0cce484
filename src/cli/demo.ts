import { TurquoiseError } from "../errors.js";
import { LoadProcess } from "../demo/load-process.js";
import { createWorkspace } from "../demo/workspace.js";
import type { LoadReport } from "../demo/load.js";
import type { HistoryEntry } from "../state/contract.js";
import { formatMs } from "../util/duration.js";
import { printJson, type Command } from "./command.js";

const DEMO_MAX_LOAD_MS = 120_000;

export const demoCommand: Command = {
  name: "demo",
  summary: "a zero-downtime deploy and rollback of books-service under load, in a temp dir",
  help: `usage: turquoise demo [--keep]

Starts an agent and a proxy in a temporary directory, deploys books-service v1 (blue), then
drives steady keep-alive load (GETs and POSTs) through the proxy while it deploys v2 (green)
and rolls back to v1. Prints the requests served, the failures and each step's time.

options:
      --keep   leave the workspace running and print how to reach it

examples:
  turquoise demo
  turquoise demo --json`,
  options: { keep: { type: "boolean" } },
  async run(ctx) {
    const say = (s: string) => { if (!ctx.json) ctx.out(s); };
    const ws = await createWorkspace({ replicas: 2, keepPrevious: "30s" });
    let load: LoadProcess | undefined;
    try {
      say(`workspace ${ws.dir}`);
      await ws.cli(["up", "--detach"]);
      say(`agent and proxy up; proxy on ${ws.proxyUrl}`);

      const flows: Array<{ label: string; history: HistoryEntry }> = [];
      const flow = async (label: string, args: string[]) => {
        const { stdout } = await ws.cli([...args, "--json"]);
        const r = JSON.parse(stdout) as { history: HistoryEntry };
        flows.push({ label, history: r.history });
        say(`\n${label}: ${r.history.outcome} in ${formatMs(r.history.finishedAt! - r.history.startedAt)}`);
        for (const s of r.history.steps) say(`  ${s.ok ? "✓" : "✗"} ${s.name.padEnd(17)} ${formatMs(s.durationMs).padStart(7)}  ${s.detail?.split("\n")[0] ?? ""}`);
      };

      await flow("deploy v1 → blue", ["deploy", "books", "--release", "v1"]);
      load = await LoadProcess.start({ baseUrl: ws.proxyUrl, concurrency: 8, postEvery: 5, maxDurationMs: DEMO_MAX_LOAD_MS });
      say("\nload running: 8 keep-alive clients, 4 GETs : 1 POST");
      await new Promise((r) => setTimeout(r, 1_000));
      await flow("deploy v2 → green, under load", ["deploy", "books", "--release", "v2"]);
      await new Promise((r) => setTimeout(r, 1_000));
      await flow("rollback → v1, under load", ["rollback", "books"]);
      await new Promise((r) => setTimeout(r, 1_000));
      const report: LoadReport = await load.stop();
      load = undefined;

      if (ctx.json) {
        printJson(ctx, { load: { ...report, acknowledgedWrites: report.acknowledgedWrites.length }, flows });
      } else {
        ctx.out(`\nrequests served: ${report.total} (${report.requestsPerSecond}/s), failed: ${report.failed}${report.failed ? ` ${JSON.stringify(report.failures)}` : ""}`);
        ctx.out(`answered by: ${Object.entries(report.byRelease).map(([r, n]) => `${r} ${n}`).join(", ")}`);
        ctx.out(`latency p50 ${report.p50Ms}ms, p99 ${report.p99Ms}ms; writes acknowledged: ${report.acknowledgedWrites.length}`);
        ctx.out(report.failed === 0 ? "zero failed requests across two flips." : "some requests failed: see above.");
      }
      if (ctx.values.keep) {
        say(`\nstill running. try:\n  curl ${ws.proxyUrl}/api/v1/books\n  turquoise status -f ${ws.specFile}\n  turquoise down -f ${ws.specFile}`);
        return;
      }
      if (report.failed > 0) throw new TurquoiseError("DEPLOY_FAILED", `${report.failed} request(s) failed during the demo`, { data: { reported: true } });
    } finally {
      if (load) await load.stop().catch(() => undefined);
      if (!ctx.values.keep) await ws.destroy();
    }
  },
};
