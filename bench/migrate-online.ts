// npm run bench:migrate-online — the split-author migration on a big books table, under keep-alive
// reads and writes through the proxy: blue → turquoise → green (schema 1 → 3) and back, on
// PostgreSQL. Run twice: with the example's batched backfills, and with the old one-statement
// backfill as the reference. Prints p50/p99 before and during each migration, its duration,
// failed requests and lost writes (acknowledged but not in the table), and checks every row's
// author columns after each direction.
import { mkdtemp, rm, writeFile, copyFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";
import { LoadProcess } from "../src/demo/load-process.js";
import type { LoadReport } from "../src/demo/load.js";
import { BOOKS_DIR, createWorkspace } from "../src/demo/workspace.js";
import type { HistoryEntry } from "../src/state/contract.js";
import { flowRunner } from "./lib/flows.js";
import { formatMachine, machineInfo } from "./lib/machine.js";
import { freshDatabase } from "./lib/postgres.js";
import { formatNumber, formatTable } from "./lib/report.js";

const { values: args } = parseArgs({ options: {
  rows: { type: "string", default: "1000000" },
  concurrency: { type: "string", default: "8" },
  mode: { type: "string", default: "both" },
  "before-ms": { type: "string", default: "10000" },
  json: { type: "boolean" },
} });
const ROWS = Number(args.rows);
const CONCURRENCY = Number(args.concurrency);
const BEFORE_MS = Number(args["before-ms"]);
if (!Number.isSafeInteger(ROWS) || ROWS < 1 || ROWS > 10_000_000) throw new Error(`--rows must be a whole number from 1 to 10,000,000, got "${args.rows}"`);
if (!["both", "batched", "single"].includes(args.mode!)) throw new Error(`--mode must be both, batched or single, got "${args.mode}"`);
/** Every load loop stops by itself: at most this long, whatever happens to the flows. */
const MAX_LOAD_MS = 20 * 60_000;

/** The one-statement split-author migration the example had before issue 16: the reference. */
const SINGLE_STATEMENT = {
  "0002_split_author.up.sql": `ALTER TABLE books ADD COLUMN author_first TEXT NOT NULL DEFAULT '', ADD COLUMN author_last TEXT NOT NULL DEFAULT '';
UPDATE books SET
  author_first = CASE WHEN position(' ' IN author) > 0 THEN split_part(author, ' ', 1) ELSE author END,
  author_last = CASE WHEN position(' ' IN author) > 0 THEN substr(author, position(' ' IN author) + 1) ELSE '' END;
`,
  "0002_split_author.down.sql": "ALTER TABLE books DROP COLUMN author_first, DROP COLUMN author_last;\n",
  "0003_drop_author.up.sql": "-- turquoise: contract\nALTER TABLE books DROP COLUMN author;\n",
  "0003_drop_author.down.sql": "ALTER TABLE books ADD COLUMN author TEXT NOT NULL DEFAULT '';\nUPDATE books SET author = trim(author_first || ' ' || author_last);\n",
};

interface Window { label: string; from: number; to: number }
interface WindowFigures { label: string; requests: number; failed: number; p50Ms: number; p99Ms: number; ms: number }

async function runMode(mode: "batched" | "single", log: (s: string) => void) {
  const db = await freshDatabase();
  const migrations = await mkdtemp(path.join(tmpdir(), `turquoise-bench-migrations-${mode}-`));
  const source = path.join(BOOKS_DIR, "migrations", "postgres");
  await copyFile(path.join(source, "0001_create_books.up.sql"), path.join(migrations, "0001_create_books.up.sql"));
  await copyFile(path.join(source, "0001_create_books.down.sql"), path.join(migrations, "0001_create_books.down.sql"));
  for (const f of ["0002_split_author.up.sql", "0002_split_author.down.sql", "0003_drop_author.up.sql", "0003_drop_author.down.sql"] as const) {
    if (mode === "batched") await copyFile(path.join(source, f), path.join(migrations, f));
    else await writeFile(path.join(migrations, f), SINGLE_STATEMENT[f]);
  }
  const ws = await createWorkspace({
    replicas: 2, keepPrevious: "0s", drainTimeout: "5s",
    database: { driver: "postgres", url: "${BENCH_DATABASE_URL}", migrations }, env: { BENCH_DATABASE_URL: db.url },
  });
  const client = new pg.Client({ connectionString: db.url });
  client.on("error", () => undefined);
  try {
    await ws.cli(["up", "--detach"]);
    const flow = flowRunner(ws, `bench:migrate-online (${mode})`);
    await flow("deploy", { release: "v2" });
    await client.connect();
    const loadStarted = performance.now();
    await client.query(`INSERT INTO books (id, title, author, created_at)
      SELECT 'seed-' || lpad(x::text, 8, '0'), 'Seed book ' || x, (ARRAY['Ursula Le Guin', 'Octavia Butler', 'Iain M. Banks', 'Borges'])[1 + x % 4], 1600000000000 + x
      FROM generate_series(1, $1) AS x`, [ROWS]);
    await client.query("ANALYZE books");
    const loadMs = Math.round(performance.now() - loadStarted);
    log(`\n[${mode}] ${formatNumber(ROWS)} rows loaded into books in ${loadMs} ms`);

    const load = await LoadProcess.start({ baseUrl: ws.proxyUrl, concurrency: CONCURRENCY, postEvery: 3, maxDurationMs: MAX_LOAD_MS, timeline: true });
    const t0 = Date.now();
    await sleep(BEFORE_MS);
    const forward = await flow("deploy", { release: "v3", via: "v2-turquoise" });
    const afterForward = await checkRows(client, 3);
    await sleep(2_000);
    const back = await flow("rollback");
    await sleep(1_000);
    const report = await load.stop();
    const afterBack = await checkRows(client, 1);

    const acknowledged = report.acknowledgedWrites;
    const found = await client.query<{ title: string }>("SELECT title FROM books WHERE title = ANY($1)", [acknowledged]);
    const lost = acknowledged.length - new Set(found.rows.map((r) => r.title)).size;
    const windows: Window[] = [
      { label: "before", from: t0 + 1_000, to: t0 + BEFORE_MS },
      { label: "during forward migrate (1 → 3)", ...stepWindow(forward, "migrate") },
      { label: "during rollback migrate (3 → 1)", ...stepWindow(back, "migrate") },
    ];
    return {
      mode, rows: ROWS, loadMs, report: { ...report, timeline: undefined }, lost, afterForward, afterBack,
      windows: windows.map((w) => figures(report, w)),
      forwardMs: forward.finishedAt! - forward.startedAt, backMs: back.finishedAt! - back.startedAt,
      steps: { forward: stepsOf(forward), back: stepsOf(back) },
    };
  } finally {
    await client.end().catch(() => undefined);
    await ws.destroy();
    await db.drop();
    await rm(migrations, { recursive: true, force: true });
  }
}

/** Every row's author columns as the schema expects them: none left unfilled by the backfill. */
async function checkRows(client: pg.Client, schema: 1 | 3): Promise<{ rows: number; unfilled: number }> {
  const where = schema === 3 ? "author_first = ''" : "author = ''";
  const r = await client.query<{ n: string; bad: string }>(`SELECT count(*) AS n, count(*) FILTER (WHERE ${where}) AS bad FROM books`);
  return { rows: Number(r.rows[0]!.n), unfilled: Number(r.rows[0]!.bad) };
}

function stepWindow(h: HistoryEntry, name: string): { from: number; to: number } {
  const s = h.steps.find((x) => x.name === name);
  if (!s) throw new Error(`the flow has no ${name} step: ${h.steps.map((x) => x.name).join(", ")}`);
  return { from: s.startedAt, to: s.startedAt + s.durationMs };
}

function stepsOf(h: HistoryEntry) {
  return h.steps.map((s) => ({ name: s.name, ms: s.durationMs }));
}

/** Requests that started inside the window. */
function figures(report: LoadReport, w: Window): WindowFigures {
  const inside = (report.timeline ?? []).filter(([start]) => start >= w.from && start < w.to);
  const sorted = Float64Array.from(inside.map((x) => x[1])).sort();
  const pct = (p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! : 0);
  return { label: w.label, requests: inside.length, failed: inside.filter((x) => x[2] === 0).length, p50Ms: Math.round(pct(0.5) * 10) / 10, p99Ms: Math.round(pct(0.99) * 10) / 10, ms: w.to - w.from };
}

async function main(): Promise<void> {
  const log = (s: string) => { if (!args.json) console.log(s); };
  const machine = machineInfo();
  log(formatMachine(machine));
  log(`rows: ${formatNumber(ROWS)}; load: ${CONCURRENCY} keep-alive clients in a separate process, 2 GETs : 1 POST, through the proxy`);
  const modes = args.mode === "both" ? (["batched", "single"] as const) : ([args.mode] as Array<"batched" | "single">);
  const results = [];
  for (const mode of modes) results.push(await runMode(mode, log));
  if (args.json) return void console.log(JSON.stringify({ machine, rows: ROWS, concurrency: CONCURRENCY, results }, null, 2));

  for (const r of results) {
    console.log(`\n${r.mode === "batched" ? "batched backfill (this issue)" : "one-statement backfill (the reference)"}: ${formatNumber(r.rows)} rows`);
    console.log(formatTable(["window", "ms", "requests", "failed", "p50 ms", "p99 ms", "p99 / before"], r.windows.map((w) => [
      w.label, formatNumber(w.ms), formatNumber(w.requests), String(w.failed), String(w.p50Ms), String(w.p99Ms), (w.p99Ms / Math.max(0.1, r.windows[0]!.p99Ms)).toFixed(1) + "×",
    ])));
    console.log(formatTable(["figure", "value"], [
      ["deploy v2 → v2-turquoise → v3", `${formatNumber(r.forwardMs)} ms`],
      ["rollback v3 → v2-turquoise → v2", `${formatNumber(r.backMs)} ms`],
      ["requests (all)", `${formatNumber(r.report.total)}, failed ${r.report.failed}${r.report.failed ? ` ${JSON.stringify(r.report.failures)}` : ""}`],
      ["writes acknowledged / lost", `${formatNumber(r.report.acknowledgedWrites.length)} / ${r.lost}`],
      ["rows unfilled after forward / back", `${r.afterForward.unfilled} of ${formatNumber(r.afterForward.rows)} / ${r.afterBack.unfilled} of ${formatNumber(r.afterBack.rows)}`],
    ]));
  }
  const batched = results.find((r) => r.mode === "batched");
  if (batched) {
    const before = batched.windows[0]!.p99Ms;
    const worst = Math.max(...batched.windows.slice(1).map((w) => w.p99Ms));
    const ok = worst <= 2 * before && batched.report.failed === 0 && batched.lost === 0 && batched.afterForward.unfilled === 0 && batched.afterBack.unfilled === 0;
    console.log(`\ntarget (batched): p99 during ≤ 2× p99 before (${worst} vs ${before} ms), 0 failed, 0 lost, every row filled: ${ok ? "met" : "NOT met"}`);
    if (!ok) process.exitCode = 1;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

await main();
