// npm run bench:flip — 20 deploy-and-rollback cycles of books-service (2 replicas) while a
// separate process drives keep-alive GET and POST load through Turquoise's proxy.
// Prints total and failed requests, p50/p99 latency, and for each deploy the app's own time
// (boot to healthy, graceful stop) apart from Turquoise's overhead (everything else).
// --runtime docker runs the releases as containers (images built locally by src/demo/images.ts,
// bridge network, ports on 127.0.0.1); the Docker Engine's create and start is then its own column.
import { spawn } from "node:child_process";
import http from "node:http";
import path from "node:path";
import { parseArgs } from "node:util";
import { BOOKS_IMAGE_REPO, ensureBooksImages } from "../src/demo/images.js";
import { LoadProcess } from "../src/demo/load-process.js";
import { BOOKS_DIR, createWorkspace, type Workspace } from "../src/demo/workspace.js";
import { readToken } from "../src/auth/token.js";
import { AgentClient } from "../src/cli/client.js";
import { nginxProxyConf, startNginx } from "./lib/nginx.js";
import { DockerApi } from "../src/runtime/docker-api.js";
import { freePort } from "../src/util/net.js";
import { flowRunner, stepMs } from "./lib/flows.js";
import { formatMachine, machineInfo } from "./lib/machine.js";
import { formatNumber, formatTable } from "./lib/report.js";
import { median } from "./lib/stats.js";

const { values: args } = parseArgs({ options: { cycles: { type: "string", default: "20" }, concurrency: { type: "string", default: "16" }, json: { type: "boolean" }, runtime: { type: "string", default: "process" }, proxy: { type: "string", default: "builtin" } } });
if (args.proxy !== "builtin" && args.proxy !== "nginx") throw new Error(`--proxy must be builtin or nginx, got "${args.proxy}"`);
const NGINX = args.proxy === "nginx";
const RELOAD_INTERVAL_MS = 500;
if (args.runtime !== "process" && args.runtime !== "docker") throw new Error(`--runtime must be process or docker, got "${args.runtime}"`);
const DOCKER = args.runtime === "docker";
const CYCLES = Number(args.cycles);
const CONCURRENCY = Number(args.concurrency);
const MAX_LOAD_MS = 10 * 60_000;
const OVERHEAD_TARGET_MS = 300;

interface DeployRow { n: number; kind: string; release: string; totalMs: number; runtimeStartMs: number; appHealthyMs: number; appStopMs: number; drainMs: number; overheadMs: number; outcome: string }

async function main(): Promise<void> {
  const log = (s: string) => { if (!args.json) console.log(s); };
  const machine = machineInfo();
  log(formatMachine(machine));
  const docker = DOCKER ? await dockerSetup() : undefined;
  if (docker) log(`docker  Engine ${docker.engine}; images ${Object.values(docker.images).join(", ")} (built locally, cached by content)`);
  const reference = docker ? await containerReference(5, docker.images.v1!) : await appReference(5);
  log(docker
    ? `\nreference, same run: a books-service container created and started directly answers /health in ${reference.bootMs} ms (median of 5)`
    : `\nreference, same run: books-service started directly boots to a passing /health in ${reference.bootMs} ms (median of 5)`);

  const ws = await createWorkspace({
    replicas: 2, keepPrevious: "0s", drainTimeout: "5s", deployTimeout: "20s", ...(NGINX ? { proxyDriver: "nginx" as const } : {}),
    ...(docker ? { runtime: { kind: "docker", image: `${BOOKS_IMAGE_REPO}:{release}`, network: "bridge" } as const } : {}),
  });
  try {
    await ws.cli(["up", "--detach"]);
    const flow = flowRunner(ws, "bench:flip");
    await flow("deploy", { release: "v1" });

    const load = await LoadProcess.start({ baseUrl: ws.proxyUrl, concurrency: CONCURRENCY, postEvery: 5, maxDurationMs: MAX_LOAD_MS });
    log(`\n${docker ? "runtime: docker, bridge network, 2 containers per slot; " : ""}load: ${CONCURRENCY} keep-alive clients in a separate process, 4 GETs : 1 POST; ${CYCLES} cycles of deploy v2 + rollback to v1`);
    const rows: DeployRow[] = [];
    for (let c = 0; c < CYCLES; c++) {
      for (const [kind, body] of [["deploy", { release: "v2" }], ["rollback", {}]] as const) {
        const h = await flow(kind, body);
        const totalMs = h.finishedAt! - h.startedAt;
        const appHealthyMs = stepMs(h, "healthy");
        const appStopMs = stepMs(h, "retire");
        const drainMs = stepMs(h, "drain");
        // With docker, the engine's create and start of the containers is its own figure, not Turquoise's.
        const runtimeStartMs = docker ? stepMs(h, "start") : 0;
        rows.push({ n: rows.length + 1, kind, release: h.release, totalMs, runtimeStartMs, appHealthyMs, appStopMs, drainMs, overheadMs: totalMs - runtimeStartMs - appHealthyMs - appStopMs - drainMs, outcome: h.outcome });
      }
      if (!args.json) process.stdout.write(`\rcycles done: ${c + 1}/${CYCLES}`);
    }
    const report = await load.stop();
    log("");
    // The reference for the nginx driver, in the same run: plain nginx in front of the same live instances, reloaded as often.
    const plain = NGINX ? await plainNginxReloads(ws, rows.length) : undefined;

    const overheads = rows.map((r) => r.overheadMs);
    const summary = {
      machine, ...(docker ? { runtime: "docker", docker: { engine: docker.engine, images: docker.images } } : {}), reference, cycles: CYCLES, deploys: rows.length, concurrency: CONCURRENCY,
      requests: report.total, failed: report.failed, failures: report.failures, byRelease: report.byRelease, writesAcknowledged: report.acknowledgedWrites.length,
      p50Ms: report.p50Ms, p99Ms: report.p99Ms, maxMs: report.maxMs, requestsPerSecond: report.requestsPerSecond,
      overheadMedianMs: median(overheads), overheadMaxMs: Math.max(...overheads),
      ...(docker ? { runtimeStartMedianMs: median(rows.map((r) => r.runtimeStartMs)) } : {}),
      appHealthyMedianMs: median(rows.map((r) => r.appHealthyMs)), appStopMedianMs: median(rows.map((r) => r.appStopMs)),
      totalMedianMs: median(rows.map((r) => r.totalMs)), overheadTargetMs: OVERHEAD_TARGET_MS,
      rows: docker ? rows : rows.map(({ runtimeStartMs: _, ...r }) => r),
      ...(plain ? { proxy: "nginx", failedPerFlip: report.failed / rows.length, plainNginx: plain } : {}),
    };
    if (args.json) return void console.log(JSON.stringify(summary, null, 2));

    if (docker) {
      console.log(`\n${formatTable(["#", "kind", "release", "total ms", "docker: create+start", "app: boot→healthy", "app: drain", "app: stop", "turquoise overhead"],
        rows.map((r) => [String(r.n), r.kind, r.release, String(r.totalMs), String(r.runtimeStartMs), String(r.appHealthyMs), String(r.drainMs), String(r.appStopMs), String(r.overheadMs)]))}`);
    } else {
      console.log(`\n${formatTable(["#", "kind", "release", "total ms", "app: boot→healthy", "app: drain", "app: stop", "turquoise overhead"],
        rows.map((r) => [String(r.n), r.kind, r.release, String(r.totalMs), String(r.appHealthyMs), String(r.drainMs), String(r.appStopMs), String(r.overheadMs)]))}`);
    }
    console.log(`\n${formatTable(["figure", "value"], [
      ["requests", formatNumber(report.total)],
      ["failed requests (non-2xx, reset, timeout)", `${report.failed}${report.failed ? ` ${JSON.stringify(report.failures)}` : ""}`],
      ["throughput during the run", `${formatNumber(report.requestsPerSecond)} req/s`],
      ["latency p50 / p99 / max", `${report.p50Ms} / ${report.p99Ms} / ${report.maxMs} ms`],
      ["answered by", Object.entries(report.byRelease).map(([k, v]) => `${k} ${formatNumber(v)}`).join(", ")],
      ["deploys (deploy + rollback)", String(rows.length)],
      ["deploy total, median", `${summary.totalMedianMs} ms`],
      ...(docker ? [["docker create+start of 2 containers, median", `${summary.runtimeStartMedianMs} ms`]] : []),
      [(docker ? "app boot→healthy, median (direct container start to healthy: " : "app boot→healthy, median (direct boot: ") + reference.bootMs + " ms)", `${summary.appHealthyMedianMs} ms`],
      ["app graceful stop, median", `${summary.appStopMedianMs} ms`],
      ["turquoise overhead per deploy, median / max", `${summary.overheadMedianMs} / ${summary.overheadMaxMs} ms (target ≤ ${OVERHEAD_TARGET_MS})`],
    ])}`);
    if (plain) {
      console.log(`\nproxy: nginx (Turquoise's driver: an edge nginx that is never reloaded, in front of a router nginx that is)\n`);
      console.log(formatTable(["same run, same load", "routing changes", "requests", "failed", "failed per change"], [
        ["Turquoise deploys through nginx", `${rows.length} flips`, formatNumber(report.total), String(report.failed), (report.failed / rows.length).toFixed(2)],
        ["plain nginx, SIGHUP every 0.5 s", `${plain.reloads} reloads`, formatNumber(plain.requests), String(plain.failed), (plain.failed / plain.reloads).toFixed(2)],
      ]));
    }
    if (report.failed > 0 || summary.overheadMedianMs > OVERHEAD_TARGET_MS) process.exitCode = 1;
  } finally {
    await ws.destroy();
  }
}

/** Plain nginx (one process, keep-alive to clients and upstreams) in front of the live instances, reloaded `reloads` times under the same load. */
async function plainNginxReloads(ws: Workspace, reloads: number): Promise<{ reloads: number; requests: number; failed: number; failures: Record<string, number> }> {
  const client = new AgentClient(`http://127.0.0.1:${ws.agentPort}`, readToken(path.join(ws.dir, ".turquoise")));
  const status = await client.get<{ services: Array<{ color: string; instances: Array<{ slot: string; address: string }> }> }>("/v1/status");
  const svc = status.services[0]!;
  const upstreams = svc.instances.filter((i) => i.slot === svc.color).map((i) => ({ host: i.address.split(":")[0]!, port: Number(i.address.split(":")[1]) }));
  const nginx = await startNginx(nginxProxyConf(upstreams));
  try {
    const load = await LoadProcess.start({ baseUrl: `http://127.0.0.1:${nginx.port}`, concurrency: CONCURRENCY, postEvery: 5, maxDurationMs: MAX_LOAD_MS });
    for (let i = 0; i < reloads; i++) {
      await new Promise((r) => setTimeout(r, RELOAD_INTERVAL_MS));
      process.kill(nginx.pid, "SIGHUP");
    }
    await new Promise((r) => setTimeout(r, RELOAD_INTERVAL_MS));
    const r = await load.stop();
    return { reloads, requests: r.total, failed: r.failed, failures: r.failures };
  } finally {
    await nginx.stop();
  }
}

/** Docker answers, and the books-service images exist (built here when missing: no registry). */
async function dockerSetup(): Promise<{ engine: string; images: Record<string, string> }> {
  const api = new DockerApi();
  const v = await api.version();
  return { engine: `${v.Version} (API ${v.ApiVersion})`, images: await ensureBooksImages({ api }) };
}

/** The app alone as a container, in this run: create and start it directly, time until /health answers 200 on its published port. */
async function containerReference(rounds: number, image: string): Promise<{ bootMs: number }> {
  const api = new DockerApi();
  const boots: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    const { Id: id } = await api.createContainer(`turquoise-bench-reference-${process.pid}-${i}`, {
      Image: image, Env: ["PORT=8080", "HOST=0.0.0.0"], ExposedPorts: { "8080/tcp": {} },
      HostConfig: { PortBindings: { "8080/tcp": [{ HostIp: "127.0.0.1", HostPort: "" }] }, Init: false },
    });
    try {
      await api.startContainer(id);
      const port = Number((await api.inspectContainer(id)).NetworkSettings.Ports?.["8080/tcp"]?.[0]?.HostPort ?? 0);
      const deadline = Date.now() + 20_000;
      for (;;) {
        const ok = await new Promise<boolean>((r) => http.get({ host: "127.0.0.1", port, path: "/health", agent: false }, (res) => { res.resume(); r(res.statusCode === 200); }).on("error", () => r(false)));
        if (ok) break;
        if (Date.now() > deadline) throw new Error(`the reference container of ${image} did not answer /health within 20s`);
        await new Promise((r) => setTimeout(r, 2));
      }
      boots.push(Math.round(performance.now() - t0));
    } finally {
      await api.removeContainer(id, { force: true });
    }
  }
  return { bootMs: median(boots) };
}

/** The app alone, in this run: spawn books-service directly and time until /health answers 200. */
async function appReference(rounds: number): Promise<{ bootMs: number }> {
  const boots: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const port = await freePort();
    const t0 = performance.now();
    const child = spawn(process.execPath, ["server.mjs"], { cwd: path.join(BOOKS_DIR, "releases", "v1"), env: { ...process.env, PORT: String(port), BOOKS_FILE: "/dev/null" }, stdio: "ignore" });
    for (;;) {
      const ok = await new Promise<boolean>((r) => http.get({ host: "127.0.0.1", port, path: "/health", agent: false }, (res) => { res.resume(); r(res.statusCode === 200); }).on("error", () => r(false)));
      if (ok) break;
      await new Promise((r) => setTimeout(r, 2));
    }
    boots.push(Math.round(performance.now() - t0));
    child.kill("SIGTERM");
    await new Promise((r) => child.on("exit", r));
  }
  return { bootMs: median(boots) };
}

await main();
