// The agent's side of the built-in proxy: a Proxy driven over the loopback control API, and the
// helpers that start, adopt, upgrade in place and stop the proxy process. The process is detached
// so it keeps serving when the agent that started it stops or dies.

import { spawn } from "node:child_process";
import { mkdir, open, readFile, rm, stat } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { EXIT_CODES, TurquoiseError, errorMessage } from "../errors.js";
// Not kill(pid, 0): a proxy orphaned under a PID 1 that never reaps would look alive forever.
import { readTail } from "../util/fs.js";
import { readableTail } from "../log/pretty.js";
import { LOG_FORMAT_ENV, LOG_LEVEL_ENV, type LogSettings } from "../log/settings.js";
import { pidAlive } from "../util/proc.js";
import type { DrainResult, Proxy, ProxyCapabilities, ProxyMetrics, ProxyStats, RouteTable, RouteTableDelta, UpstreamEventBatch } from "./contract.js";
import { ensureToken, readToken } from "../auth/token.js";
import type { AcmeHostStatus } from "./acme.js";
import type { HealthInfo, TlsStatus, UpgradeOptions, UpgradeResult } from "./control.js";
import { MAX_EVENTS_WAIT_MS, PROXY_INFO_FILE, type ProxyInfo } from "./server.js";
import { DEFAULT_UPGRADE_DRAIN_MS, WORKER_READY_TIMEOUT_MS } from "./supervisor.js";

export { resolveWorkers } from "./supervisor.js";

export type { HealthInfo as ProxyHealth, TlsStatus, UpgradeOptions, UpgradeResult, WorkerInfo } from "./control.js";
export type { AcmeHostStatus } from "./acme.js";

export const PROXY_LOG_FILE = "proxy.log";
export const DEFAULT_CONTROL_TIMEOUT_MS = 10_000;
export const DEFAULT_SPAWN_TIMEOUT_MS = 10_000;
export const DEFAULT_STOP_TIMEOUT_MS = 15_000;
const MAIN_JS = fileURLToPath(new URL("./main.js", import.meta.url));

/** The built-in proxy is the contract's reference: it does all of it. */
export const BUILTIN_CAPABILITIES: Readonly<ProxyCapabilities> = Object.freeze({
  hitlessApply: true,
  poolStats: true,
  separateHeadAndIdleTimeouts: true,
  upstreamQueue: true,
  clientHeaderTimeout408: true,
  connectionLimitAtAccept: true,
  connectionNamedHeadersRemoved: true,
});

export class BuiltinProxy implements Proxy {
  readonly name = "builtin";
  readonly capabilities = BUILTIN_CAPABILITIES;
  readonly controlUrl: string;
  private readonly token: string;
  private readonly timeoutMs: number;

  constructor(opts: { controlUrl: string; token: string; timeoutMs?: number }) {
    this.controlUrl = opts.controlUrl.replace(/\/+$/, "");
    this.token = opts.token;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_CONTROL_TIMEOUT_MS;
  }

  async apply(table: RouteTable): Promise<void> {
    await this.call("PUT", "/table", table);
  }

  /** 409: the proxy serves another version than the delta's base, and kept it. */
  async applyDelta(delta: RouteTableDelta): Promise<"applied" | "stale"> {
    try {
      await this.call("PATCH", "/table", delta);
      return "applied";
    } catch (e) {
      if (e instanceof TurquoiseError && e.data.status === 409) return "stale";
      throw e;
    }
  }

  drain(poolId: string, timeoutMs: number): Promise<DrainResult> {
    // The call lasts as long as the drain itself.
    return this.call("POST", "/drain", { poolId, timeoutMs }, timeoutMs + this.timeoutMs) as Promise<DrainResult>;
  }

  stats(): Promise<ProxyStats> {
    return this.call("GET", "/stats") as Promise<ProxyStats>;
  }

  metrics(): Promise<ProxyMetrics> {
    return this.call("GET", "/metrics") as Promise<ProxyMetrics>;
  }

  async setUpstreamHealth(upstreamId: string, healthy: boolean): Promise<void> {
    await this.call("POST", "/upstreams/health", { id: upstreamId, healthy });
  }

  /**
   * The upstream.down/up events after seq `after` (0: every event kept), as soon as there is
   * one, or none once waitMs (at most 30 s) ran out. Pass the answer's seq as the next `after`.
   */
  events(after: number, waitMs: number): Promise<UpstreamEventBatch> {
    const query = `after=${Math.max(0, Math.floor(after))}&wait=${Math.max(0, Math.floor(waitMs))}`;
    // The call lasts as long as the wait itself.
    return this.call("GET", `/events?${query}`, undefined, Math.min(waitMs, MAX_EVENTS_WAIT_MS) + this.timeoutMs) as Promise<UpstreamEventBatch>;
  }

  /** Not in the Proxy contract: liveness of the proxy process, the table version it serves, its workers. */
  health(timeoutMs?: number): Promise<HealthInfo> {
    return this.call("GET", "/health", undefined, timeoutMs) as Promise<HealthInfo>;
  }

  /**
   * Not in the Proxy contract: replaces the proxy's workers with new ones running the code
   * installed now, without refusing or resetting a connection. Resolves once the old workers
   * have drained and exited.
   */
  upgrade(opts: UpgradeOptions = {}): Promise<UpgradeResult> {
    const waitMs = WORKER_READY_TIMEOUT_MS + (opts.drainTimeoutMs ?? DEFAULT_UPGRADE_DRAIN_MS) + this.timeoutMs;
    return this.call("POST", "/upgrade", opts, waitMs) as Promise<UpgradeResult>;
  }

  /** Not in the Proxy contract: the TLS listener, the certificates the workers serve, the ACME hosts. */
  tls(): Promise<TlsStatus> {
    return this.call("GET", "/tls") as Promise<TlsStatus>;
  }

  /**
   * Not in the Proxy contract: orders a new ACME certificate for host now; resolves once every
   * worker serves it. The order may take a while: the CA validates, polls are spaced out.
   */
  renewCertificate(host: string, timeoutMs = 5 * 60_000): Promise<AcmeHostStatus> {
    return this.call("POST", "/tls/renew", { host }, timeoutMs) as Promise<AcmeHostStatus>;
  }

  /** Not in the Proxy contract: the table the proxy serves right now. */
  table(): Promise<RouteTable> {
    return this.call("GET", "/table") as Promise<RouteTable>;
  }

  private call(method: string, pathname: string, body?: unknown, timeoutMs = this.timeoutMs): Promise<unknown> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const url = new URL(pathname, this.controlUrl);
    return new Promise((resolve, reject) => {
      const headers: http.OutgoingHttpHeaders = { authorization: `Bearer ${this.token}` };
      if (payload !== undefined) {
        headers["content-type"] = "application/json";
        headers["content-length"] = Buffer.byteLength(payload);
      }
      const req = http.request(url, { method, headers, agent: false, timeout: timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let parsed: unknown;
          try {
            parsed = text === "" ? undefined : JSON.parse(text);
          } catch {
            parsed = text;
          }
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) return resolve(parsed);
          const detail = (parsed as { error?: string } | undefined)?.error ?? text;
          const where = `proxy control ${method} ${pathname}`;
          if (status === 401) reject(new TurquoiseError("UNAUTHORIZED", `${where}: the proxy refused the token`));
          else reject(new TurquoiseError("INTERNAL", `${where} failed with ${status}: ${detail}`, { data: { status } }));
        });
      });
      req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.on("error", (e) =>
        reject(new TurquoiseError("INTERNAL", `proxy control API at ${this.controlUrl} is unreachable: ${errorMessage(e)}`, { cause: e })),
      );
      req.end(payload);
    });
  }
}

export interface RunningProxy {
  /** The supervisor's pid: the process to watch; it replaces its own dead workers. */
  pid: number;
  proxy: BuiltinProxy;
  listenPort: number;
  /** The TLS listener's address, when the proxy has one. */
  tlsListen?: { host: string; port: number };
  /** How many workers it keeps serving (1 for a proxy from before workers). */
  workers: number;
}

export interface SpawnProxyOptions {
  stateDir: string;
  listenHost: string;
  listenPort: number;
  /** A TLS listener too (port 0: any free one). */
  tlsListen?: { host: string; port: number };
  /** Worker processes sharing the socket; "auto": one per core. 1 by default. */
  workers?: number | "auto";
  /** How many of them accept new connections (supervisor.ts AcceptMode); the proxy's default when absent. */
  accept?: "adaptive" | "all";
  nodePath?: string;
  timeoutMs?: number;
  /** The proxy's log level and format (through its environment); its own defaults when absent. */
  log?: LogSettings;
}

/**
 * Starts the proxy process, detached (own process group, output to `<stateDir>/proxy.log`), and
 * resolves once it has written proxy.json. Creates `<stateDir>/token` (mode 0600) when missing.
 */
export async function spawnProxy(opts: SpawnProxyOptions): Promise<RunningProxy> {
  const stateDir = path.resolve(opts.stateDir);
  await mkdir(stateDir, { recursive: true });
  const running = await connectProxy(stateDir);
  if (running) {
    throw new TurquoiseError("CONFLICT", `a proxy is already running for ${stateDir} (pid ${running.pid}); adopt it with connectProxy or stop it first`, {
      data: { pid: running.pid },
    });
  }
  ensureToken(stateDir);

  const logFile = path.join(stateDir, PROXY_LOG_FILE);
  const log = await open(logFile, "a", 0o600);
  const logStart = (await log.stat()).size;
  const hostPort = (host: string, port: number): string => (host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`);
  const listen = hostPort(opts.listenHost, opts.listenPort);
  let child;
  try {
    const args = [
      MAIN_JS,
      "--state-dir",
      stateDir,
      "--listen",
      listen,
      ...(opts.tlsListen ? ["--tls-listen", hostPort(opts.tlsListen.host, opts.tlsListen.port)] : []),
      ...(opts.workers === undefined ? [] : ["--workers", String(opts.workers)]),
      ...(opts.accept === undefined ? [] : ["--accept", opts.accept]),
    ];
    child = spawn(opts.nodePath ?? process.execPath, args, {
      detached: true,
      stdio: ["ignore", log.fd, log.fd],
      ...(opts.log ? { env: { ...process.env, [LOG_LEVEL_ENV]: opts.log.level, [LOG_FORMAT_ENV]: opts.log.format } } : {}),
    });
  } finally {
    await log.close();
  }
  child.unref();

  const failure = async (why: string): Promise<TurquoiseError> => {
    // Its port taken is the user's to fix, in the spec: said as such, without the log around it.
    if (exitCode === EXIT_CODES.CONFLICT) {
      return new TurquoiseError("CONFLICT", `the proxy cannot listen on ${listen}: address in use`, { data: { addressInUse: true } });
    }
    const tail = readableTail(await readTail(logFile, logStart));
    return new TurquoiseError("INTERNAL", `the proxy did not start: ${why}${tail ? `\n--- ${logFile} ---\n${tail}` : ""}`);
  };
  let exited: string | undefined;
  let exitCode: number | null = null;
  const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
    exitCode = code;
    exited = signal ? `it was killed by ${signal}` : `it exited with code ${code}`;
  };
  child.once("exit", onExit);
  child.once("error", (e) => (exited = `it could not be started: ${errorMessage(e)}`));
  try {
    const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_SPAWN_TIMEOUT_MS);
    for (;;) {
      const info = await readInfo(stateDir);
      if (info && info.pid === child.pid) {
        const proxy = new BuiltinProxy({ controlUrl: controlUrl(info), token: readToken(stateDir) });
        return { pid: info.pid, proxy, listenPort: info.listen.port, ...(info.tls ? { tlsListen: info.tls } : {}), workers: (await proxy.health()).workerCount ?? 1 };
      }
      if (exited) throw await failure(exited);
      if (Date.now() > deadline) {
        if (child.pid) signal(child.pid, "SIGKILL");
        throw await failure(`no ${PROXY_INFO_FILE} within ${opts.timeoutMs ?? DEFAULT_SPAWN_TIMEOUT_MS} ms`);
      }
      await sleep(25);
    }
  } finally {
    child.off("exit", onExit);
  }
}

/** Adopts the proxy already running for stateDir, or undefined when none answers. */
export async function connectProxy(stateDir: string): Promise<RunningProxy | undefined> {
  const info = await readInfo(stateDir);
  if (!info || !pidAlive(info.pid)) return undefined;
  let token: string;
  try {
    token = readToken(stateDir);
  } catch {
    return undefined;
  }
  const proxy = new BuiltinProxy({ controlUrl: controlUrl(info), token });
  let health: HealthInfo;
  try {
    health = await proxy.health(2_000);
  } catch {
    return undefined;
  }
  // The pid check guards against an unrelated process that reused the pid.
  if (health.pid !== info.pid) return undefined;
  return { pid: info.pid, proxy, listenPort: info.listen.port, ...(info.tls ? { tlsListen: info.tls } : {}), workers: health.workerCount ?? 1 };
}

/** Upgrades the proxy running for stateDir in place (see BuiltinProxy.upgrade). */
export async function upgradeProxy(stateDir: string, opts: UpgradeOptions = {}): Promise<UpgradeResult> {
  const running = await connectProxy(stateDir);
  if (!running) throw new TurquoiseError("NOT_FOUND", `no proxy is running for ${path.resolve(stateDir)}`);
  return running.proxy.upgrade(opts);
}

/**
 * Stops the proxy for stateDir: SIGTERM (it finishes in-flight requests), then SIGKILL after
 * timeoutMs. Resolves false when no proxy was running.
 */
export async function stopProxy(stateDir: string, timeoutMs = DEFAULT_STOP_TIMEOUT_MS): Promise<boolean> {
  const infoFile = path.join(stateDir, PROXY_INFO_FILE);
  const info = await readInfo(stateDir);
  if (!info) return false;
  if (!pidAlive(info.pid) || !(await isProxyProcess(info.pid, stateDir))) {
    await rm(infoFile, { force: true });
    return false;
  }
  signal(info.pid, "SIGTERM");
  const deadline = Date.now() + timeoutMs;
  while (pidAlive(info.pid)) {
    if (Date.now() > deadline) {
      signal(info.pid, "SIGKILL");
      await sleep(50);
      break;
    }
    await sleep(25);
  }
  const after = await readInfo(stateDir);
  if (after?.pid === info.pid) await rm(infoFile, { force: true });
  return true;
}

/** Signals pid; one that exited a moment ago is no error. */
function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ESRCH") throw e;
  }
}

function controlUrl(info: ProxyInfo): string {
  return `http://${info.control.host}:${info.control.port}`;
}

async function readInfo(stateDir: string): Promise<ProxyInfo | undefined> {
  try {
    const info = JSON.parse(await readFile(path.join(stateDir, PROXY_INFO_FILE), "utf8")) as ProxyInfo;
    return typeof info?.pid === "number" ? info : undefined;
  } catch {
    return undefined;
  }
}

/** Where /proc exists, refuses to signal a pid that now belongs to some other program. */
async function isProxyProcess(pid: number, stateDir: string): Promise<boolean> {
  try {
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0");
    return cmdline.includes("--state-dir") && cmdline.includes(path.resolve(stateDir));
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== "ENOENT" || !(await exists("/proc/self"));
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
