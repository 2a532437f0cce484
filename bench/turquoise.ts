// npm run bench:turquoise — blue → turquoise → green and back to blue, under continuous reads
// and writes. books-service on a shared SQLite database: v2 (schema 1) → v2-turquoise (1..3),
// migrate 1 → 3 (split the author column, then drop it) → v3 (schema 3); then the rollback walks
// back through v2-turquoise, migrating 3 → 1. Prints failed requests, writes acknowledged and
// how many are readable at the end, and each step's duration.
// --runtime docker runs the releases as containers (images built locally by src/demo/images.ts)
// on PostgreSQL with host networking, so the containers reach it on 127.0.0.1; without
// BENCH_DATABASE_URL it makes a fresh database on the server scripts/ensure-postgres.sh sets up.
import http from "node:http";
import { parseArgs } from "node:util";
import { BOOKS_IMAGE_REPO, ensureBooksImages } from "../src/demo/images.js";
import { LoadProcess } from "../src/demo/load-process.js";
import { createWorkspace } from "../src/demo/workspace.js";
import { DockerApi } from "../src/runtime/docker-api.js";
import type { HistoryEntry } from "../src/state/contract.js";
import { flowRunner } from "./lib/flows.js";
import { freshDatabase } from "./lib/postgres.js";
import { formatMachine, machineInfo } from "./lib/machine.js";
import { formatNumber, formatTable } from "./lib/report.js";

const { values: args } = parseArgs({ options: { concurrency: { type: "string", default: "8" }, json: { type: "boolean" }, driver: { type: "string" }, runtime: { type: "string", default: "process" } } });
if (args.runtime !== "process" && args.runtime !== "docker") throw new Error(`--runtime must be process or docker, got "${args.runtime}"`);
const DOCKER = args.runtime === "docker";
// A SQLite file lives on the host, where no container can share it: containers use PostgreSQL.
if (DOCKER && args.driver === "sqlite") throw new Error("--runtime docker needs --driver postgres: containers cannot share a SQLite file on the host");
const CONCURRENCY = Number(args.concurrency);
const MAX_LOAD_MS = 5 * 60_000;

async function main(): Promise<void> {
  const log = (s: string) => { if (!args.json) console.log(s); };
  const machine = machineInfo();
  log(formatMachine(machine));
  const driver = args.driver === "postgres" || DOCKER ? "postgres" : "sqlite";
  const database = driver === "sqlite" ? { driver, url: "sqlite:books.db" } as const : { driver, url: "${BENCH_DATABASE_URL}" } as const;
  if (driver === "postgres" && !process.env.BENCH_DATABASE_URL && !DOCKER) throw new Error("--driver postgres needs BENCH_DATABASE_URL (an empty database); scripts/ensure-postgres.sh prints one");
  let docker: { engine: string; images: Record<string, string> } | undefined;
  if (DOCKER) {
    const api = new DockerApi();
    const v = await api.version();
    docker = { engine: `${v.Version} (API ${v.ApiVersion})`, images: await ensureBooksImages({ api }) };
    log(`docker  Engine ${docker.engine}; images ${Object.values(docker.images).join(", ")} (built locally, cached by content)`);
  }
  const fresh = DOCKER && !process.env.BENCH_DATABASE_URL ? await freshDatabase() : undefined;
  if (docker) {
    log(`\nruntime: docker, host network (the containers reach PostgreSQL on 127.0.0.1), 2 containers per slot${fresh ? `; fresh database ${fresh.name}` : ""}`);
  }
  const ws = await createWorkspace({
    replicas: 2, keepPrevious: "0s", drainTimeout: "5s", database,
    ...(fresh ? { env: { BENCH_DATABASE_URL: fresh.url } } : {}),
    ...(DOCKER ? { runtime: { kind: "docker", image: `${BOOKS_IMAGE_REPO}:{release}`, network: "host" } as const } : {}),
  });
  try {
    await ws.cli(["up", "--detach"]);
    const flow = flowRunner(ws, "bench:turquoise");
    const first = await flow("deploy", { release: "v2" });
    log(`\nfirst deploy (migrates the empty database to schema 1): ${first.finishedAt! - first.startedAt} ms`);

    const load = await LoadProcess.start({ baseUrl: ws.proxyUrl, concurrency: CONCURRENCY, postEvery: 3, maxDurationMs: MAX_LOAD_MS });
    log(`load: ${CONCURRENCY} keep-alive clients in a separate process, 2 GETs : 1 POST`);
    await sleep(1_000);
    const forward = await flow("deploy", { release: "v3", via: "v2-turquoise" });
    await sleep(1_000);
    const back = await flow("rollback");
    await sleep(1_000);
    const report = await load.stop();

    const stored = await allTitles(ws.proxyUrl);
    const missing = report.acknowledgedWrites.filter((t) => !stored.has(t));
    const summary = {
      machine, driver, ...(docker ? { runtime: "docker", docker } : {}), concurrency: CONCURRENCY,
      requests: report.total, failed: report.failed, failures: report.failures, byRelease: report.byRelease,
      writesAcknowledged: report.acknowledgedWrites.length, writesReadable: report.acknowledgedWrites.length - missing.length, missing: missing.slice(0, 10),
      p50Ms: report.p50Ms, p99Ms: report.p99Ms,
      forward: flowSummary(forward), back: flowSummary(back),
    };
    if (args.json) return void console.log(JSON.stringify(summary, null, 2));

    for (const [label, h] of [["blue → turquoise → green (v2 → v2-turquoise → v3, schema 1 → 3)", forward], ["rollback: green → turquoise → blue (v3 → v2-turquoise → v2, schema 3 → 1)", back]] as const) {
      console.log(`\n${label}: ${h.outcome} in ${h.finishedAt! - h.startedAt} ms`);
      console.log(formatTable(["step", "ms", "detail"], h.steps.map((s) => [s.name, String(s.durationMs), (s.detail ?? "").split("\n")[0]!.slice(0, 90)])));
    }
    console.log(`\n${formatTable(["figure", "value"], [
      ["requests", formatNumber(report.total)],
      ["failed requests (non-2xx, reset, timeout)", `${report.failed}${report.failed ? ` ${JSON.stringify(report.failures)}` : ""}`],
      ["answered by", Object.entries(report.byRelease).map(([k, v]) => `${k} ${formatNumber(v)}`).join(", ")],
      ["writes acknowledged (201)", formatNumber(summary.writesAcknowledged)],
      ["of them readable at the end", `${formatNumber(summary.writesReadable)}${missing.length ? ` (missing e.g. ${missing.slice(0, 3).join(", ")})` : ""}`],
      ["latency p50 / p99", `${report.p50Ms} / ${report.p99Ms} ms`],
    ])}`);
    if (report.failed > 0 || missing.length > 0) process.exitCode = 1;
  } finally {
    await ws.destroy();
    await fresh?.drop();
  }
}

function flowSummary(h: HistoryEntry) {
  return { outcome: h.outcome, totalMs: h.finishedAt! - h.startedAt, steps: h.steps.map((s) => ({ name: s.name, ms: s.durationMs, detail: s.detail ?? "" })) };
}

function allTitles(baseUrl: string): Promise<Set<string>> {
  return new Promise((resolve, reject) => {
    http.get(`${baseUrl}/api/v1/books?all=1`, { agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => {
        try {
          resolve(new Set((JSON.parse(body) as { books: Array<{ title: string }> }).books.map((b) => b.title)));
        } catch (e) {
          reject(new Error(`cannot read the books back (HTTP ${res.statusCode}): ${(e as Error).message}`));
        }
      });
    }).on("error", reject);
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

await main();
