// Shared setup for end-to-end tests: real agent, real proxy process, real instances.
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import { BIN, BOOKS_DIR, REPO_ROOT, createWorkspace, type Workspace, type WorkspaceOptions } from "../../src/demo/workspace.js";
import { AGENT_ENV, agentIdFor } from "../../src/runtime/identity.js";
import { CRASH_AFTER_ENV } from "../../src/util/failpoint.js";
import type { LogRecord } from "../support/logs.js";

const run = promisify(execFile);
const APP = JSON.stringify(path.join(BOOKS_DIR, "lib", "app.mjs"));
/** test/fixtures/crash-after-app.mjs, from the source tree (fixtures are not compiled). */
export const CRASH_AFTER_APP = path.join(REPO_ROOT, "test", "fixtures", "crash-after-app.mjs");

/** Release sources by kind: each becomes releases/<name>/server.mjs. */
export const RELEASE_KINDS = {
  good: (name: string) => `import { serve } from ${APP};\nserve({ release: ${JSON.stringify(name)}, shape: (b) => b });\n`,
  slowStart: (name: string, ms = 1500) => `await new Promise((r) => setTimeout(r, ${ms}));\n${RELEASE_KINDS.good(name)}`,
  exitsAtOnce: () => `console.error("fatal: cannot read config file /etc/books.conf");\nprocess.exit(3);\n`,
  /** Starts serving only once the file exists: a deploy that holds its lock until the test lets it go, however slow the machine. */
  gated: (name: string, gate: string) => `import fs from "node:fs";\nwhile (!fs.existsSync(${JSON.stringify(gate)})) await new Promise((r) => setTimeout(r, 50));\n${RELEASE_KINDS.good(name)}`,
  /** Healthy, unless the file exists when it starts: then it dies at once (a crash loop on demand). */
  crashIfFlag: (name: string, flag: string) => `import fs from "node:fs";\nif (fs.existsSync(${JSON.stringify(flag)})) { console.error("crashing: flag file present"); process.exit(1); }\n${RELEASE_KINDS.good(name)}`,
  /** Healthy, but on a port of its own choosing instead of $PORT. */
  wrongPort: () => `import http from "node:http";\nhttp.createServer((req, res) => res.end("ok")).listen(0, "127.0.0.1", function () { console.log("listening on port " + this.address().port); });\nprocess.on("SIGTERM", () => process.exit(0));\n`,
  /** Healthy and verified, then exits on its nth request that is not a health check. */
  crashAfter: (name: string, n = 200) => `process.env.CRASH_AFTER = ${JSON.stringify(String(n))};\nprocess.env.TURQUOISE_RELEASE ??= ${JSON.stringify(name)};\nawait import(${JSON.stringify(CRASH_AFTER_APP)});\n`,
  /** Healthy, then exits ms after it started, every time: a crash loop that health checks alone do not catch. */
  crashSoonAfterStart: (ms = 2000) => `process.env.CRASH_AT_START = "1";\nprocess.env.CRASH_START_MS = ${JSON.stringify(String(ms))};\nawait import(${JSON.stringify(CRASH_AFTER_APP)});\n`,
  unhealthy: () => `import http from "node:http";\nhttp.createServer((req, res) => { res.writeHead(req.url === "/health" ? 500 : 200); res.end(req.url === "/health" ? "database unreachable" : "ok"); }).listen(Number(process.env.PORT), "127.0.0.1");\nprocess.on("SIGTERM", () => process.exit(0));\n`,
} as const;

export async function workspaceWith(releases: Record<string, string>, opts: WorkspaceOptions = {}): Promise<Workspace> {
  const releasesDir = fs.mkdtempSync(path.join(os.tmpdir(), "turquoise-releases-"));
  for (const [name, source] of Object.entries(releases)) {
    fs.mkdirSync(path.join(releasesDir, name));
    fs.writeFileSync(path.join(releasesDir, name, "server.mjs"), source);
  }
  const ws = await createWorkspace({ ...opts, releasesDir });
  const destroy = ws.destroy;
  ws.destroy = async () => {
    await destroy();
    fs.rmSync(releasesDir, { recursive: true, force: true });
  };
  return ws;
}

export function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    http.get(url, { agent: false, headers }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    }).on("error", reject);
  });
}

export async function releaseServing(ws: Workspace): Promise<string> {
  const r = await get(`${ws.proxyUrl}/api/v1/books`);
  return r.status === 200 ? String(r.headers["x-release"]) : `HTTP ${r.status}`;
}

export interface StatusJson {
  services: Array<{ name: string; color: string | null; release: string | null; instances: Array<{ id: string; slot: string; release: string; ref: string }>; lock: unknown }>;
}

export async function status(ws: Workspace): Promise<StatusJson["services"][number]> {
  const { stdout } = await ws.cli(["status", "--json"]);
  return (JSON.parse(stdout) as StatusJson).services[0]!;
}

/** Pids of every live process on the machine whose /proc/<pid>/<file>, split at NULs, holds `needle`; zombies left out. */
function pidsWith(file: "environ" | "cmdline", needle: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (!fs.readFileSync(`/proc/${entry}/${file}`, "utf8").split("\0").includes(needle)) continue;
      // A zombie is dead already; only its parent has not reaped it yet.
      if (fs.readFileSync(`/proc/${entry}/stat`, "utf8").split(") ")[1]!.startsWith("Z")) continue;
      pids.push(Number(entry));
    } catch { /* gone or not ours */ }
  }
  return pids.sort((a, b) => a - b);
}

/** Pids of every process on the machine that runs with this workspace's BOOKS_FILE: orphans included. */
export function instancePids(ws: Workspace): number[] {
  return pidsWith("environ", `BOOKS_FILE=${ws.booksFile}`);
}

/** Pids of every process on the machine carrying this workspace's agent mark (TURQUOISE_AGENT): recorded or not. */
export function markedPids(ws: Pick<Workspace, "dir">): number[] {
  return pidsWith("environ", `${AGENT_ENV}=${agentIdFor(path.join(ws.dir, ".turquoise"))}`);
}

/** Pids of the processes whose command line names this workspace's state dir: the built-in proxy's supervisor and workers. */
export function proxyPids(ws: Pick<Workspace, "dir">): number[] {
  return pidsWith("cmdline", path.join(ws.dir, ".turquoise"));
}

/** Runs bin/turquoise.js in cwd, as a user would from there (no -f): its exit code and output, never a rejection. */
export async function cliIn(cwd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { cwd });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

/** A CLI run still going: `printed` resolves once its stdout matches (or rejects when it ends first); `done` is its end. */
export interface RunningCli {
  printed(pattern: RegExp): Promise<void>;
  done: Promise<{ code: number; stdout: string; stderr: string }>;
}

/** Starts bin/turquoise.js on the workspace's spec and lets the test wait for what it prints: an event, not a guess at how long it takes. */
export function cliRunning(ws: Pick<Workspace, "dir" | "specFile">, args: string[]): RunningCli {
  const child = spawn(process.execPath, [BIN, ...args, "-f", ws.specFile], { cwd: ws.dir, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  const waiters = new Set<() => void>();
  child.stdout.setEncoding("utf8").on("data", (c: string) => {
    stdout += c;
    for (const w of waiters) w();
  });
  child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
  const done = new Promise<{ code: number; stdout: string; stderr: string }>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code) => {
      for (const w of waiters) w();
      resolve({ code: code ?? 1, stdout, stderr });
    });
  });
  return {
    done,
    printed: (pattern) => new Promise<void>((resolve, reject) => {
      const check = () => {
        if (pattern.test(stdout)) {
          waiters.delete(check);
          resolve();
        } else if (child.exitCode !== null || child.signalCode !== null) {
          waiters.delete(check);
          reject(new Error(`turquoise ${args.join(" ")} ended (exit ${child.exitCode}) without printing ${pattern}:\n${stdout}\n${stderr}`));
        }
      };
      waiters.add(check);
      check();
    }),
  };
}

/**
 * Polls until fn gives a value. The bound only ends a wait for what never comes, so it is generous:
 * on a loaded CI machine a proxy restart or an agent's start took over 10 s.
 */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function readAgentPid(ws: Workspace): number {
  return Number(fs.readFileSync(path.join(ws.dir, ".turquoise", "agent.pid"), "utf8"));
}

/** A token from the workspace's state dir: "token" (admin) or "registry-token". */
export function tokenOf(ws: Workspace, name = "token"): string {
  return fs.readFileSync(path.join(ws.dir, ".turquoise", name), "utf8").trim();
}

export interface ApiAnswer {
  status: number;
  body: string;
  index: number;
}

/** One call to the agent's API with a bearer token (the admin token unless told). */
export function api(ws: Workspace, p: string, opts: { method?: string; body?: string; token?: string } = {}): Promise<ApiAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: ws.agentPort, path: p, method: opts.method ?? "GET", agent: false, headers: { authorization: `Bearer ${opts.token ?? tokenOf(ws)}` } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, index: Number(res.headers["x-turquoise-index"] ?? 0) }));
    });
    req.on("error", reject);
    req.end(opts.body);
  });
}

export interface AgentEvent {
  id: number;
  type: string;
  service: string | null;
  message: string;
  data: Record<string, unknown>;
}

/** The agent's recorded events, of one type when given. */
export async function agentEvents(ws: Workspace, type?: string): Promise<AgentEvent[]> {
  const r = await api(ws, "/v1/events?limit=10000");
  return (JSON.parse(r.body) as { events: AgentEvent[] }).events.filter((e) => !type || e.type === type);
}

/**
 * Runs a deploy with an agent that SIGKILLs itself at the failpoint (TURQUOISE_CRASH_AFTER), in place
 * of the running one; resolves with the signal it died of, once the deploy has failed.
 */
export async function crashingDeploy(ws: Workspace, release: string, failpoint: string, extra: string[] = []): Promise<NodeJS.Signals | null> {
  await ws.cli(["down", "--agent-only"]);
  const agent = spawn(process.execPath, [BIN, "up", "-f", ws.specFile], { env: { ...process.env, [CRASH_AFTER_ENV]: failpoint }, stdio: "ignore" });
  const exited = new Promise<NodeJS.Signals | null>((r) => agent.on("exit", (_code, signal) => r(signal)));
  // Its start (adopting the proxy and the live instances) can take many seconds on a loaded machine:
  // wait until it answers, or fail at once if it died first; the bound only ends a hang.
  let answering = false;
  const ready = waitFor("the crash-armed agent to answer", async () => (answering = (await ws.cli(["status", "--json"], { allowFail: true })).code === 0), 90_000);
  ready.catch(() => undefined);
  await Promise.race([ready, exited.then((signal) => {
    if (!answering) throw new Error(`the crash-armed agent exited (${signal ?? "no signal"}) before it answered`);
  })]);
  await ready;
  const r = await ws.cli(["deploy", "books", "--release", release, ...extra], { allowFail: true });
  if (r.code === 0) throw new Error(`the deploy of ${release} succeeded, though its agent was armed to die at ${failpoint}`);
  return exited;
}

/** Stops the agent only, and waits until it is gone: the proxy and instances keep running. */
export async function stopAgent(ws: Workspace): Promise<void> {
  await ws.cli(["down", "--agent-only"]);
}

/** The lines of a log in the workspace's state dir (agent.log, proxy.log), parsed: each must be JSON. */
export function logRecords(ws: Workspace, file = "agent.log"): LogRecord[] {
  return fs.readFileSync(path.join(ws.dir, ".turquoise", file), "utf8").split("\n").filter((line) => line !== "").map((line, i) => {
    try {
      return JSON.parse(line) as LogRecord;
    } catch {
      throw new Error(`${file} line ${i + 1} is not JSON: ${line}`);
    }
  });
}
