import { TurquoiseError } from "../errors.js";
import { LoadProcess } from "../demo/load-process.js";
import { createWorkspace } from "../demo/workspace.js";
import type { LoadReport } from "../demo/load.js";
import type { HistoryEntry } from "../state/contract.js";
import { formatMs } from "../util/duration.js";
import { printJson, type Command } from "./command.js";

const DEMO_MAX_LOAD_MS = 120_000;
const PAUSE_MS = 700;

/** A pause between flows, cut short when the demo is told to stop. */
function pause(stop: AbortSignal): Promise<void> {
  return new Promise((r) => {
    const timer = setTimeout(done, PAUSE_MS);
    stop.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      stop.removeEventListener("abort", done);
      r();
    }
  });
}

/** Thrown between two steps once the demo is told to stop; its finally cleans up. */
class DemoStopped extends Error {}

/** Every title the service can read back, to check that no acknowledged write was lost. */
async function readableTitles(baseUrl: string): Promise<Set<string>> {
  const res = await fetch(`${baseUrl}/api/v1/books?all=1`);
  const body = (await res.json()) as { books: Array<{ title: string }> };
  return new Set(body.books.map((b) => b.title));
}

export const demoCommand: Command = {
  name: "demo",
  summary: "zero-downtime deploys of books-service under load, blue → turquoise → green and back, in a temp dir",
  help: `usage: turquoise demo [--keep]

Starts an agent and a proxy in a temporary directory with books-service on a shared SQLite
database. It deploys v1 (migrating the empty database to schema 1), then, under steady
keep-alive load of reads and writes through the proxy: deploys v2 (a plain flip), walks the
breaking change v2 → v2-turquoise → v3 (schema 1 → 3), and rolls back v3 → v2-turquoise → v2
(schema 3 → 1). Prints the requests served, the failures, the writes kept, and each step's time.

options:
      --keep   leave the workspace running and print how to reach it

examples:
  turquoise demo
  turquoise demo --json`,
  options: { keep: { type: "boolean" } },
  // It writes its own spec in its own workspace: -f would mean nothing.
  usesSpec: false,
  async run(ctx) {
    const say = (s: string) => { if (!ctx.json) ctx.out(s); };
    // Its reader gone (`demo | head`) or Ctrl-C: the demo stops at the next step and removes its
    // workspace (agent, proxy, instances, files) rather than leaving them behind.
    const stopping = new AbortController();
    const interrupted = () => stopping.abort("interrupted");
    ctx.stdoutGone.addEventListener("abort", () => stopping.abort("stdout closed"), { once: true });
    process.once("SIGINT", interrupted);
    process.once("SIGTERM", interrupted);
    const stop = stopping.signal;
    const step = () => { if (stop.aborted) throw new DemoStopped(String(stop.reason)); };
    const ws = await createWorkspace({ replicas: 2, keepPrevious: "30s", database: { driver: "sqlite", url: "sqlite:books.db" } });
    let load: LoadProcess | undefined;
    try {
      say(`workspace ${ws.dir}`);
      step();
      await ws.cli(["up", "--detach"]);
      say(`agent and proxy up; proxy on ${ws.proxyUrl}`);

      const flows: Array<{ label: string; history: HistoryEntry }> = [];
      const flow = async (label: string, args: string[]) => {
        step();
        const { stdout } = await ws.cli([...args, "--json"]);
        const r = JSON.parse(stdout) as { history: HistoryEntry };
        flows.push({ label, history: r.history });
        say(`\n${label}: ${r.history.outcome} in ${formatMs(r.history.finishedAt! - r.history.startedAt)}`);
        for (const s of r.history.steps) say(`  ${s.ok ? "✓" : "✗"} ${s.name.padEnd(17)} ${formatMs(s.durationMs).padStart(7)}  ${s.detail?.split("\n")[0] ?? ""}`);
      };

      await flow("deploy v1 (empty database → schema 1)", ["deploy", "books", "--release", "v1"]);
      step();
      load = await LoadProcess.start({ baseUrl: ws.proxyUrl, concurrency: 8, postEvery: 4, maxDurationMs: DEMO_MAX_LOAD_MS });
      say("\nload running: 8 keep-alive clients, 3 GETs : 1 POST");
      await pause(stop);
      await flow("deploy v2: same schema, a plain flip", ["deploy", "books", "--release", "v2"]);
      await pause(stop);
      await flow("deploy v3 via v2-turquoise: blue → turquoise → green, schema 1 → 3", ["deploy", "books", "--release", "v3", "--via", "v2-turquoise"]);
      await pause(stop);
      await flow("rollback: green → turquoise → blue, schema 3 → 1", ["rollback", "books"]);
      await pause(stop);
      step();
      const report: LoadReport = await load.stop();
      load = undefined;
      const kept = await readableTitles(ws.proxyUrl);
      const lost = report.acknowledgedWrites.filter((t) => !kept.has(t)).length;

      if (ctx.json) {
        printJson(ctx, { load: { ...report, acknowledgedWrites: report.acknowledgedWrites.length, lostWrites: lost }, flows });
      } else {
        ctx.out(`\nrequests served: ${report.total} (${report.requestsPerSecond}/s), failed: ${report.failed}${report.failed ? ` ${JSON.stringify(report.failures)}` : ""}`);
        ctx.out(`answered by: ${Object.entries(report.byRelease).map(([r, n]) => `${r} ${n}`).join(", ")}`);
        ctx.out(`latency p50 ${report.p50Ms}ms, p99 ${report.p99Ms}ms`);
        ctx.out(`writes acknowledged: ${report.acknowledgedWrites.length}, readable at the end: ${report.acknowledgedWrites.length - lost}`);
        ctx.out(report.failed === 0 && lost === 0 ? "zero failed requests and no lost write across five flips and two schema migrations." : "some requests failed or writes were lost: see above.");
      }
      if (ctx.values.keep) {
        say(`\nstill running. try:\n  curl ${ws.proxyUrl}/api/v1/books\n  turquoise status -f ${ws.specFile}\n  turquoise down -f ${ws.specFile}`);
        return;
      }
      if (report.failed > 0 || lost > 0) throw new TurquoiseError("DEPLOY_FAILED", `${report.failed} request(s) failed and ${lost} write(s) were lost during the demo`, { data: { reported: true } });
    } catch (e) {
      if (!(e instanceof DemoStopped) && !stop.aborted) throw e;
      // A step cut short by Ctrl-C (its child got the signal too) is part of the stop, not an error of its own.
      if (stop.reason === "interrupted") throw new TurquoiseError("INTERNAL", "the demo was interrupted; its workspace was stopped and removed", { cause: e });
    } finally {
      process.off("SIGINT", interrupted);
      process.off("SIGTERM", interrupted);
      if (load) await load.stop().catch(() => undefined);
      // Kept only when asked, and only after a demo that ran to its end.
      if (!ctx.values.keep || stop.aborted) await ws.destroy();
    }
  },
};
