// The nginx driver: Turquoise's route table served by nginx, behind the same Proxy contract as the
// built-in proxy. Two nginx masters share one prefix directory (<stateDir>/nginx):
//   - the router renders the table (nginx-template.ts) and is reloaded on every change;
//   - the edge holds the public listener and every client connection, and is reloaded only when
//     the table's client-facing settings change, never for a flip.
// A reload makes nginx's old workers close their idle keep-alive connections, which races with
// clients that are sending on them: with the edge in front, only the edge's own connections to
// the router are closed that way, and nginx retries those itself. docs/nginx.md has the figures.

import { NGINX_NO_CANARY } from "./split.js";
import { execFile, spawn } from "node:child_process";
import { statSync } from "node:fs";
import { lookup } from "node:dns/promises";
import { copyFile, mkdir, open, readFile, readdir, readlink, rename, rm, stat } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { TurquoiseError, errorMessage } from "../errors.js";
import { readTail, writeFileAtomic } from "../util/fs.js";
import { freePort } from "../util/net.js";
import { pidAlive } from "../util/proc.js";
import type { DrainResult, Proxy, ProxyCapabilities, ProxyStats, RouteTable, Upstream } from "./contract.js";
import {
  CONTROL_STATUS_PATH,
  CONTROL_VERSION_PATH,
  type Listen,
  MAX_UNIX_SOCKET_PATH,
  type NginxLayout,
  type RenderedConfig,
  nginxLayout,
  renderEdgeConfig,
  renderRouterConfig,
  validateListenHost,
} from "./nginx-template.js";
import { tableSettings } from "./settings.js";
import { validateTable } from "./table.js";

export const NGINX_DIR = "nginx";
export const NGINX_STATE_FILE = "state.json";
export const DEFAULT_NGINX_BINARY = "nginx";
export const DEFAULT_NGINX_RELOAD_TIMEOUT_MS = 10_000;
export const DEFAULT_NGINX_START_TIMEOUT_MS = 15_000;
export const DEFAULT_NGINX_STOP_TIMEOUT_MS = 15_000;
const POLL_MS = 5;
const DRAIN_POLL_MS = 25;
const KILL_GRACE_MS = 1_000;
const CONTROL_TIMEOUT_MS = 2_000;
// A user template may not turn nginx's own daemonizing off: start() relies on it.
const DAEMON_ON = ["-g", "daemon on;"];

/** What open-source nginx cannot do of the contract; docs/nginx.md says what it does instead. */
export const NGINX_CAPABILITIES: Readonly<ProxyCapabilities> = Object.freeze({
  // The edge holds the client connections and is not reloaded for a table.
  hitlessApply: true,
  // stub_status counts nginx-wide; per-upstream counters are NGINX Plus.
  poolStats: false,
  // proxy_read_timeout is one wait between two reads, head or body: it gets upstreamResponseMs.
  separateHeadAndIdleTimeouts: false,
  // max_conns refuses at once; the queue directive is NGINX Plus.
  upstreamQueue: false,
  // On client_header_timeout nginx closes the connection without a response.
  clientHeaderTimeout408: false,
  // worker_connections is per worker and counts upstream connections too: limit_conn bounds requests in flight.
  connectionLimitAtAccept: false,
  // nginx drops the standard hop-by-hop fields only; it cannot drop fields by a name the client sends.
  connectionNamedHeadersRemoved: false,
});

/** Without the edge, a reload closes the router's idle client keep-alive connections under requests racing to them. */
export const NGINX_WITHOUT_EDGE_CAPABILITIES: Readonly<ProxyCapabilities> = Object.freeze({ ...NGINX_CAPABILITIES, hitlessApply: false });

export interface NginxProxyOptions {
  stateDir: string;
  listenHost: string;
  /** 0 picks a free port at the first start(); it is saved, so later starts keep it. */
  listenPort: number;
  /** The nginx executable; "nginx" (from PATH) by default. */
  binary?: string;
  /** Path of a user template for the router's nginx.conf (placeholders: see nginx-template.ts). */
  template?: string;
  /**
   * How to signal the router's master: process.kill(pid from the pid file) by default. When nginx
   * runs in a container the agent passes one that goes through the Docker API; the driver then
   * cannot see the workers (drain reports nothing) and start()/stop() are the agent's business.
   */
  signal?: (sig: NodeJS.Signals) => Promise<void>;
  /** The edge in front of the router (default true). Without it, flips close client keep-alive connections. */
  edge?: boolean;
  reloadTimeoutMs?: number;
  startTimeoutMs?: number;
}

/** nginx's stub_status counters. */
export interface NginxStatus {
  active: number;
  accepts: number;
  handled: number;
  requests: number;
  reading: number;
  writing: number;
  waiting: number;
}

export interface NginxProxyStats extends ProxyStats {
  /** stub_status of each tier; `requests` above is the public tier's count. */
  nginx: { router: NginxStatus; edge?: NginxStatus };
}

/** What survives a restart of the agent or of nginx: <stateDir>/nginx/state.json. */
interface SavedState {
  table: RouteTable;
  unhealthy: string[];
  /** Pools a newer table retired, kept until drained: a drain needs their addresses. */
  retired: Record<string, Upstream[]>;
  listen: Listen;
  edge: boolean;
}

type Tier = "router" | "edge";

export class NginxProxy implements Proxy {
  readonly name = "nginx";
  readonly capabilities: Readonly<ProxyCapabilities>;
  readonly layout: NginxLayout;
  readonly listenHost: string;
  private port: number;
  private readonly edge: boolean;
  private readonly binary: string;
  private readonly templateFile: string | undefined;
  private readonly signalRouterFn: ((sig: NodeJS.Signals) => Promise<void>) | undefined;
  private readonly reloadTimeoutMs: number;
  private readonly startTimeoutMs: number;
  private readonly stateFile: string;
  private current: RouteTable = { version: 0, routes: [] };
  private unhealthy = new Set<string>();
  private readonly retired = new Map<string, Upstream[]>();
  /** The config id each tier serves, once started or adopted; undefined when unknown (an older edge). */
  private readonly configIds: Record<Tier, string | undefined> = { router: undefined, edge: undefined };
  /** Every change to nginx or to the saved state runs one at a time. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(opts: NginxProxyOptions) {
    this.layout = nginxLayout(path.join(path.resolve(opts.stateDir), NGINX_DIR));
    this.listenHost = opts.listenHost;
    this.port = opts.listenPort;
    this.edge = opts.edge ?? true;
    this.capabilities = this.edge ? NGINX_CAPABILITIES : NGINX_WITHOUT_EDGE_CAPABILITIES;
    this.binary = opts.binary ?? DEFAULT_NGINX_BINARY;
    this.templateFile = opts.template === undefined ? undefined : path.resolve(opts.template);
    this.signalRouterFn = opts.signal;
    this.reloadTimeoutMs = opts.reloadTimeoutMs ?? DEFAULT_NGINX_RELOAD_TIMEOUT_MS;
    this.startTimeoutMs = opts.startTimeoutMs ?? DEFAULT_NGINX_START_TIMEOUT_MS;
    this.stateFile = path.join(this.layout.prefix, NGINX_STATE_FILE);
    const hostProblem = validateListenHost(opts.listenHost);
    if (hostProblem) throw new TurquoiseError("USAGE", hostProblem);
    if (!Number.isInteger(opts.listenPort) || opts.listenPort < 0 || opts.listenPort > 65535) {
      throw new TurquoiseError("USAGE", `listen port must be 0-65535, got ${opts.listenPort}`);
    }
    for (const socket of [this.layout.routerSocket, this.layout.controlSocket, this.layout.edgeControlSocket]) {
      if (Buffer.byteLength(socket) > MAX_UNIX_SOCKET_PATH) {
        throw new TurquoiseError("USAGE", `the state directory's path is too long for nginx's unix sockets (${socket} is over ${MAX_UNIX_SOCKET_PATH} bytes); use a shorter state_dir`);
      }
    }
  }

  /** The public port: the one given, or the one start() picked. */
  get listenPort(): number {
    return this.port;
  }

  /** The table nginx serves, as this driver last applied or restored it. */
  get table(): RouteTable {
    return this.current;
  }

  /**
   * Starts whichever tier is not running, on the saved table (an empty one the first time).
   * nginx daemonizes itself: it binds its sockets and loads its configuration before the
   * foreground command exits, so a start error is that command's status and stderr; the master
   * then runs in its own session under init, serving whatever happens to the agent, and its pid
   * file is how adopt() finds it again.
   */
  start(): Promise<void> {
    return this.serial(async () => {
      await this.prepareDirs();
      await this.restoreState();
      const routerRunning = await this.controlAnswers(this.layout.controlSocket);
      const edgeRunning = this.edge && (await this.controlAnswers(this.layout.edgeControlSocket));
      if (routerRunning && (!this.edge || edgeRunning)) {
        throw new TurquoiseError("CONFLICT", `nginx is already running for ${this.layout.prefix}; adopt it or stop it first`);
      }
      if (this.port === 0) this.port = await freePort(this.listenHost === "" ? "0.0.0.0" : this.listenHost);
      const deadline = Date.now() + this.startTimeoutMs;
      if (!routerRunning) {
        // A killed nginx leaves its unix sockets behind, and nginx will not bind over a file.
        await this.removeStaleSockets("router");
        const rendered = await this.render(this.current, this.unhealthy);
        await this.testConfig("router", rendered.text);
        await writeFileAtomic(this.layout.routerConf, rendered.text);
        await this.launch("router", deadline);
        await this.waitForConfig("router", rendered.configId, [], deadline);
        this.configIds.router = rendered.configId;
      } else {
        this.configIds.router = await this.servedConfig("router");
      }
      // A running edge keeps the settings it has; the next apply reloads it if they differ.
      if (edgeRunning) this.configIds.edge = await this.servedConfig("edge");
      if (this.edge && !edgeRunning) {
        try {
          await this.removeStaleSockets("edge");
          const rendered = this.renderEdge(this.current);
          await this.testConfig("edge", rendered.text);
          await writeFileAtomic(this.layout.edgeConf, rendered.text);
          await this.launch("edge", deadline);
          await this.waitForConfig("edge", rendered.configId, [], deadline).catch((e: unknown) => {
            throw new TurquoiseError("INTERNAL", `the nginx edge did not answer on ${this.layout.edgeControlSocket}: ${errorMessage(e)}`, { cause: e });
          });
          this.configIds.edge = rendered.configId;
        } catch (e) {
          // A failed start leaves nothing running that it started.
          const router = routerRunning ? undefined : await this.routerPid();
          if (router) await quitMaster(router, Date.now() + DEFAULT_NGINX_STOP_TIMEOUT_MS);
          throw e;
        }
      }
      await this.saveState();
    });
  }

  /**
   * Takes over the nginx already running for this state directory (after the agent restarted):
   * true when every tier answers and listens where this driver would. Restores the saved table,
   * health marks and retired pools.
   */
  adopt(): Promise<boolean> {
    return this.serial(async () => {
      const saved = await this.readState();
      if (!saved || saved.edge !== this.edge || saved.listen.host !== this.listenHost) return false;
      if (this.port !== 0 && saved.listen.port !== this.port) return false;
      let served: { version: number; config: string };
      try {
        served = await this.version();
      } catch {
        return false;
      }
      if (this.edge && !(await this.controlAnswers(this.layout.edgeControlSocket))) return false;
      this.applySaved(saved);
      this.configIds.router = served.config;
      // An edge started by an older Turquoise has no version: the next apply renders and reloads it.
      this.configIds.edge = this.edge ? await this.servedConfig("edge") : undefined;
      return true;
    });
  }

  /**
   * Stops the edge, then the router, gracefully (SIGQUIT: in-flight requests finish), killing
   * what is left after timeoutMs. Resolves false when nothing was running.
   */
  stop(timeoutMs = DEFAULT_NGINX_STOP_TIMEOUT_MS): Promise<boolean> {
    return this.serial(async () => {
      let stopped = false;
      const deadline = Date.now() + timeoutMs;
      if (this.edge) {
        const pid = await masterPid(this.layout.edgePid, this.layout.edgeConf);
        if (pid) stopped = (await quitMaster(pid, deadline)) || stopped;
      }
      const pid = await this.routerPid();
      if (pid) {
        stopped = (await quitMaster(pid, deadline, this.signalRouterFn)) || stopped;
      } else if (this.signalRouterFn && (await this.controlAnswers(this.layout.controlSocket))) {
        await this.signalRouterFn("SIGQUIT");
        while (Date.now() < deadline && (await this.controlAnswers(this.layout.controlSocket))) await sleep(DRAIN_POLL_MS);
        stopped = true;
      }
      this.configIds.router = undefined;
      this.configIds.edge = undefined;
      return stopped;
    });
  }

  /**
   * Renders, tests (`nginx -t`) and only then installs the new configuration, keeping the
   * previous one; reloads the router and resolves once its new workers serve the table and no
   * old worker accepts anymore. When the table's client-facing settings changed, the edge is
   * tested with the router and reloaded after it. A rejected configuration changes nothing and
   * throws nginx's words.
   */
  apply(table: RouteTable): Promise<void> {
    return this.serial(async () => {
      // An older table is ignored, as the built-in proxy does.
      if (table.version < this.current.version) return;
      const inCanary = table.routes.find((r) => r.canary !== undefined);
      // nginx counts nothing per slot that the agent could read, so a canary could not be judged.
      if (inCanary) throw new Error(`${NGINX_NO_CANARY} (route of ${inCanary.service})`);
      const router = await this.render(table, this.unhealthy);
      const edge = this.edge ? this.renderEdge(table) : undefined;
      const edgeChanged = edge !== undefined && edge.configId !== this.configIds.edge;
      // Both tested before either is touched: a bad edge must not leave a new router behind.
      if (edgeChanged) await this.testConfig("edge", edge.text);
      await this.install("router", router);
      if (edgeChanged) await this.install("edge", edge, { tested: true });
      for (const route of this.current.routes) {
        if (!table.routes.some((r) => r.poolId === route.poolId)) this.retired.set(route.poolId, route.upstreams);
      }
      for (const route of table.routes) this.retired.delete(route.poolId);
      this.current = table;
      await this.saveState();
    });
  }

  /**
   * After a reload the old workers finish their requests and exit. Waits until no old worker
   * holds a connection to the pool's upstreams, up to timeoutMs; then the old workers that still
   * do are killed, and `cut` counts those connections (each one a request or a WebSocket cut).
   * Requests of other pools that such a worker still carried are cut with it.
   */
  async drain(poolId: string, timeoutMs: number): Promise<DrainResult> {
    const started = performance.now();
    const result = (completed: number, cut: number): DrainResult => ({ poolId, completed, cut, durationMs: Math.round(performance.now() - started) });
    const upstreams = this.retired.get(poolId) ?? this.current.routes.find((r) => r.poolId === poolId)?.upstreams;
    const master = await this.routerPid();
    if (!upstreams || !master) return result(0, 0);
    const addresses = await resolveAddresses(upstreams);
    const initial = await oldWorkerConnections(master, addresses);
    let now = initial;
    const deadline = Date.now() + timeoutMs;
    while (now.total > 0 && Date.now() < deadline) {
      await sleep(DRAIN_POLL_MS);
      now = await oldWorkerConnections(master, addresses);
    }
    let cut = 0;
    if (now.total > 0) {
      const victims = [...now.byWorker].filter(([, n]) => n > 0);
      for (const [, n] of victims) cut += n;
      await Promise.all(victims.map(([pid]) => killWorker(master, pid)));
    }
    if (this.retired.delete(poolId)) await this.serial(() => this.saveState());
    return result(Math.max(0, initial.total - cut), cut);
  }

  async stats(): Promise<NginxProxyStats> {
    const [served, router, edge] = await Promise.all([
      this.version(),
      this.status(this.layout.controlSocket),
      this.edge ? this.status(this.layout.edgeControlSocket) : Promise.resolve(undefined),
    ]);
    // stub_status counts nginx-wide: nginx has no per-pool counters without NGINX Plus.
    return {
      tableVersion: served.version,
      pools: [],
      requests: (edge ?? router).requests,
      upstreamErrors: 0,
      retries: 0,
      nginx: edge ? { router, edge } : { router },
    };
  }

  /** Renders the upstream `down` (or back) and reloads; nothing happens when the mark is unchanged. */
  setUpstreamHealth(upstreamId: string, healthy: boolean): Promise<void> {
    return this.serial(async () => {
      if (this.unhealthy.has(upstreamId) === !healthy) return;
      const next = new Set(this.unhealthy);
      if (healthy) next.delete(upstreamId);
      else next.add(upstreamId);
      await this.install("router", await this.render(this.current, next));
      this.unhealthy = next;
      await this.saveState();
    });
  }

  // --- internals -----------------------------------------------------------------------------

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private listen(): Listen {
    return { host: this.listenHost, port: this.port };
  }

  private async render(table: RouteTable, unhealthy: ReadonlySet<string>): Promise<RenderedConfig> {
    let template: { text: string; file: string } | undefined;
    if (this.templateFile !== undefined) {
      try {
        template = { text: await readFile(this.templateFile, "utf8"), file: this.templateFile };
      } catch (e) {
        throw new TurquoiseError("SPEC_INVALID", `cannot read the nginx template ${this.templateFile}: ${errorMessage(e)}`, { cause: e });
      }
    }
    const user = workerUser();
    return renderRouterConfig({
      layout: this.layout,
      table,
      unhealthy,
      ...(this.edge ? {} : { listen: this.listen() }),
      ...(user ? { user } : {}),
      ...(template ? { template } : {}),
    });
  }

  /** The edge for a table: its client-facing settings, the defaults when it has none. */
  private renderEdge(table: RouteTable): RenderedConfig {
    return renderEdgeConfig(this.layout, this.listen(), tableSettings(table.settings), workerUser());
  }

  /** Test, swap files, reload, wait; on any failure the previous configuration is the one on disk and in force. */
  private async install(tier: Tier, rendered: RenderedConfig, opts: { tested?: boolean } = {}): Promise<void> {
    const files = this.files(tier);
    const master = await this.masterPid(tier);
    if (!master && !(tier === "router" && this.signalRouterFn)) {
      throw new TurquoiseError("INTERNAL", `nginx is not running for ${this.layout.prefix}: start() or adopt() it first`);
    }
    // The same text is already loaded (an agent re-applying its table after a restart): no reload.
    if (rendered.configId === this.configIds[tier]) return;
    if (!opts.tested) await this.testConfig(tier, rendered.text);

    const prev = `${files.conf}.prev`;
    let hasPrev = true;
    await copyFile(files.conf, prev).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== "ENOENT") throw e;
      hasPrev = false;
    });
    await writeFileAtomic(files.conf, rendered.text);
    const before = master ? (await workers(master)).filter((w) => !w.exiting).map((w) => w.pid) : [];
    const logFrom = await fileSize(files.errorLog);
    try {
      await this.signal(tier, "SIGHUP");
      await this.waitForConfig(tier, rendered.configId, before, Date.now() + this.reloadTimeoutMs);
    } catch (e) {
      // nginx kept its previous configuration or never finished loading this one: make sure the
      // previous one is both on disk and loaded, then report what nginx logged.
      if (hasPrev) {
        await rename(prev, files.conf);
        await this.signal(tier, "SIGHUP").catch(() => undefined);
      }
      const log = await readTail(files.errorLog, logFrom);
      throw new TurquoiseError("INTERNAL", `nginx (${tier}) did not load the new configuration (${errorMessage(e)}); the previous one stays in force${log ? `\n--- ${files.errorLog} ---\n${log}` : ""}`, { cause: e });
    }
    this.configIds[tier] = rendered.configId;
  }

  /** `nginx -t` on a candidate file, so that a bad template or table never reaches the running master. */
  private async testConfig(tier: Tier, text: string): Promise<void> {
    const files = this.files(tier);
    const candidate = `${files.conf}.next`;
    await writeFileAtomic(candidate, text);
    const r = await run(this.binary, ["-t", "-q", "-p", `${this.layout.prefix}/`, "-e", files.errorLog, ...DAEMON_ON, "-c", candidate]);
    if (r.code === 0) {
      await rm(candidate, { force: true });
      return;
    }
    const rejected = `${files.conf}.rejected`;
    await rename(candidate, rejected);
    const said = r.output.trim() || `exit status ${r.code}`;
    throw new TurquoiseError("SPEC_INVALID", `nginx rejected the new configuration (kept as ${rejected}); the previous one stays in force:\n${said}`, {
      data: { file: rejected },
    });
  }

  private files(tier: Tier): { conf: string; pid: string; errorLog: string; control: string } {
    const l = this.layout;
    return tier === "router"
      ? { conf: l.routerConf, pid: l.routerPid, errorLog: l.routerErrorLog, control: l.controlSocket }
      : { conf: l.edgeConf, pid: l.edgePid, errorLog: l.edgeErrorLog, control: l.edgeControlSocket };
  }

  /** Runs the foreground nginx command, which exits once its daemon serves; then waits for the pid file. */
  private async launch(tier: Tier, deadline: number): Promise<void> {
    const conf = tier === "router" ? this.layout.routerConf : this.layout.edgeConf;
    const pidFile = tier === "router" ? this.layout.routerPid : this.layout.edgePid;
    const errorLog = tier === "router" ? this.layout.routerErrorLog : this.layout.edgeErrorLog;
    const startupLog = path.join(this.layout.prefix, "logs", `${tier}-startup.log`);
    // stderr goes to a file: a pipe could be held open by the daemon until it redirects stderr.
    const out = await open(startupLog, "w", 0o600);
    let status: string | number;
    try {
      const child = spawn(this.binary, ["-p", `${this.layout.prefix}/`, "-e", errorLog, ...DAEMON_ON, "-c", conf], {
        detached: true,
        stdio: ["ignore", out.fd, out.fd],
      });
      status = await new Promise<string | number>((resolve) => {
        child.once("error", (e) => resolve(e.message));
        child.once("exit", (code, signal) => resolve(signal ?? code ?? 0));
      });
    } finally {
      await out.close();
    }
    if (status !== 0) {
      const said = (await readFile(startupLog, "utf8").catch(() => "")).trim();
      throw new TurquoiseError("INTERNAL", `nginx (${tier}) did not start (${typeof status === "number" ? `exit status ${status}` : status})${said ? `:\n${said}` : ""}`);
    }
    // The daemon writes its pid file just after the foreground process exits.
    while (!(await masterPid(pidFile, conf))) {
      if (Date.now() > deadline) throw new TurquoiseError("INTERNAL", `nginx (${tier}) started but wrote no pid to ${pidFile}`);
      await sleep(POLL_MS);
    }
  }

  /**
   * Resolves once the control server answers configId (new workers loaded it) and each worker of
   * the previous generation has exited or is shutting down: nginx closes an exiting worker's
   * listening sockets right after it renames the process, so no old worker takes new requests.
   */
  private async waitForConfig(tier: Tier, configId: string, previousWorkers: readonly number[], deadline: number): Promise<void> {
    let seen = false;
    for (;;) {
      if (!seen) seen = (await this.servedConfig(tier).catch(() => undefined)) === configId;
      if (seen) {
        const master = previousWorkers.length ? await this.masterPid(tier) : undefined;
        if (!master) return;
        const live = new Set((await workers(master)).filter((w) => !w.exiting).map((w) => w.pid));
        if (!previousWorkers.some((pid) => live.has(pid))) return;
      }
      if (Date.now() > deadline) {
        throw new Error(seen ? "old workers kept accepting connections" : `the control server did not answer config ${configId}`);
      }
      await sleep(POLL_MS);
    }
  }

  private async signal(tier: Tier, sig: NodeJS.Signals): Promise<void> {
    if (tier === "router" && this.signalRouterFn) return this.signalRouterFn(sig);
    const files = this.files(tier);
    const pid = await this.masterPid(tier);
    if (!pid) throw new TurquoiseError("INTERNAL", `no nginx master for ${files.conf} (pid file ${files.pid})`);
    process.kill(pid, sig);
  }

  /** The router master's pid when this machine can see it (not when nginx runs in a container). */
  private routerPid(): Promise<number | undefined> {
    return this.masterPid("router");
  }

  private masterPid(tier: Tier): Promise<number | undefined> {
    const files = this.files(tier);
    return masterPid(files.pid, files.conf);
  }

  private async version(): Promise<{ version: number; config: string }> {
    const body = JSON.parse(await controlGet(this.layout.controlSocket, CONTROL_VERSION_PATH)) as { version: number; config: string };
    return body;
  }

  /** The id of the configuration a tier's workers serve; undefined from an edge that does not say (an older one). */
  private async servedConfig(tier: Tier): Promise<string | undefined> {
    if (tier === "router") return (await this.version()).config;
    try {
      return (JSON.parse(await controlGet(this.layout.edgeControlSocket, CONTROL_VERSION_PATH)) as { config: string }).config;
    } catch (e) {
      if (/answered 404/.test(errorMessage(e))) return undefined;
      throw e;
    }
  }

  private async status(socket: string): Promise<NginxStatus> {
    return parseStubStatus(await controlGet(socket, CONTROL_STATUS_PATH));
  }

  private async controlAnswers(socket: string): Promise<boolean> {
    try {
      await controlGet(socket, CONTROL_STATUS_PATH, 1_000);
      return true;
    } catch {
      return false;
    }
  }

  /** Only called when the tier's control socket does not answer, and its master is not alive. */
  private async removeStaleSockets(tier: Tier): Promise<void> {
    const [pidFile, conf, sockets] =
      tier === "router"
        ? [this.layout.routerPid, this.layout.routerConf, [this.layout.routerSocket, this.layout.controlSocket]]
        : [this.layout.edgePid, this.layout.edgeConf, [this.layout.edgeControlSocket]];
    if (await masterPid(pidFile, conf)) {
      throw new TurquoiseError("CONFLICT", `an nginx ${tier} master for ${conf} is alive but its control socket does not answer; stop it first`);
    }
    for (const socket of sockets) await rm(socket, { force: true });
  }

  private async prepareDirs(): Promise<void> {
    await mkdir(path.join(this.layout.prefix, "logs"), { recursive: true, mode: 0o700 });
    for (const tier of ["router", "edge"]) await mkdir(path.join(this.layout.tempDir, tier), { recursive: true, mode: 0o700 });
  }

  private async readState(): Promise<SavedState | undefined> {
    let text: string;
    try {
      text = await readFile(this.stateFile, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw e;
    }
    const saved = JSON.parse(text) as SavedState;
    const problem = validateTable(saved.table);
    if (problem) throw new TurquoiseError("INTERNAL", `${this.stateFile}: invalid route table: ${problem}`);
    return saved;
  }

  private async restoreState(): Promise<void> {
    const saved = await this.readState();
    if (saved) this.applySaved(saved);
  }

  private applySaved(saved: SavedState): void {
    this.current = saved.table;
    this.unhealthy = new Set(saved.unhealthy);
    this.retired.clear();
    for (const [id, ups] of Object.entries(saved.retired ?? {})) this.retired.set(id, ups);
    if (this.port === 0 && saved.listen.host === this.listenHost) this.port = saved.listen.port;
  }

  private async saveState(): Promise<void> {
    const saved: SavedState = {
      table: this.current,
      unhealthy: [...this.unhealthy],
      retired: Object.fromEntries(this.retired),
      listen: this.listen(),
      edge: this.edge,
    };
    await writeFileAtomic(this.stateFile, JSON.stringify(saved, null, 2) + "\n", 0o600);
  }
}

// --- processes ----------------------------------------------------------------------------------

const HAS_PROC = (() => {
  try {
    return statSync("/proc/self").isDirectory();
  } catch {
    return false;
  }
})();

/** The pid in pidFile when it is a live nginx master started with confFile; undefined otherwise. */
async function masterPid(pidFile: string, confFile: string): Promise<number | undefined> {
  const pid = Number((await readFile(pidFile, "utf8").catch(() => "")).trim());
  if (!Number.isInteger(pid) || pid <= 0 || !pidAlive(pid)) return undefined;
  const cmd = await cmdline(pid);
  if (cmd === undefined) return HAS_PROC ? undefined : pid;
  // A reused pid, or a master in a container whose pids mean something else here, is not ours.
  return cmd.includes("master process") && cmd.includes(confFile) ? pid : undefined;
}

async function cmdline(pid: number): Promise<string | undefined> {
  try {
    return (await readFile(`/proc/${pid}/cmdline`, "utf8")).replace(/\0/g, " ").trim();
  } catch {
    return undefined;
  }
}

interface Worker {
  pid: number;
  /** Renamed "worker process is shutting down" by nginx once it stopped accepting. */
  exiting: boolean;
}

async function workers(master: number): Promise<Worker[]> {
  const out: Worker[] = [];
  for (const pid of await childPids(master)) {
    const cmd = await cmdline(pid);
    if (cmd === undefined || !cmd.includes("worker process")) continue;
    if (!pidAlive(pid)) continue;
    out.push({ pid, exiting: cmd.includes("shutting down") });
  }
  return out;
}

async function childPids(pid: number): Promise<number[]> {
  try {
    const text = await readFile(`/proc/${pid}/task/${pid}/children`, "utf8");
    return text.trim() === "" ? [] : text.trim().split(/\s+/).map(Number);
  } catch {
    // Kernels without CONFIG_PROC_CHILDREN: every process's parent, from /proc/*/stat.
    const out: number[] = [];
    for (const entry of await readdir("/proc").catch(() => [] as string[])) {
      if (!/^\d+$/.test(entry)) continue;
      const stat = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) === pid) out.push(Number(entry));
    }
    return out;
  }
}

/** Established TCP connections from the master's exiting workers to `addresses` ("ip:port"). */
async function oldWorkerConnections(master: number, addresses: ReadonlySet<string>): Promise<{ total: number; byWorker: Map<number, number> }> {
  const byWorker = new Map<number, number>();
  let total = 0;
  const exiting = (await workers(master)).filter((w) => w.exiting);
  if (exiting.length === 0) return { total, byWorker };
  // Workers share the master's network namespace: one read of its TCP tables serves them all.
  const remotes = await establishedByInode(master);
  for (const w of exiting) {
    let n = 0;
    for (const inode of await socketInodes(w.pid)) {
      const remote = remotes.get(inode);
      if (remote !== undefined && addresses.has(remote)) n++;
    }
    byWorker.set(w.pid, n);
    total += n;
  }
  return { total, byWorker };
}

async function socketInodes(pid: number): Promise<string[]> {
  const dir = `/proc/${pid}/fd`;
  const out: string[] = [];
  for (const fd of await readdir(dir).catch(() => [] as string[])) {
    const link = await readlink(`${dir}/${fd}`).catch(() => "");
    const m = /^socket:\[(\d+)\]$/.exec(link);
    if (m) out.push(m[1]!);
  }
  return out;
}

/** inode → remote "ip:port" of every ESTABLISHED TCP socket in pid's network namespace. */
async function establishedByInode(pid: number): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const table of ["tcp", "tcp6"]) {
    const text = await readFile(`/proc/${pid}/net/${table}`, "utf8").catch(() => "");
    const lines = text.split("\n");
    for (let i = 1; i < lines.length; i++) {
      const f = lines[i]!.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== "01") continue;
      out.set(f[9]!, decodeProcAddress(f[2]!));
    }
  }
  return out;
}

/** "0100007F:1F90" → "127.0.0.1:8080"; IPv6 as eight full hex groups, IPv4-mapped as IPv4. */
export function decodeProcAddress(text: string): string {
  const [hex, portHex] = text.split(":") as [string, string];
  const port = parseInt(portHex, 16);
  // /proc prints each 32-bit word in host (little-endian) byte order.
  const bytes: number[] = [];
  for (let w = 0; w < hex.length; w += 8) {
    const word = hex.slice(w, w + 8);
    for (let b = 6; b >= 0; b -= 2) bytes.push(parseInt(word.slice(b, b + 2), 16));
  }
  if (bytes.length === 4) return `${bytes.join(".")}:${port}`;
  const mapped = bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  if (mapped) return `${bytes.slice(12).join(".")}:${port}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16).padStart(4, "0"));
  return `${groups.join(":")}:${port}`;
}

/** The "ip:port" strings an upstream's connections show in /proc, names resolved. */
async function resolveAddresses(upstreams: readonly Upstream[]): Promise<Set<string>> {
  const out = new Set<string>();
  for (const u of upstreams) {
    const host = u.host.startsWith("[") ? u.host.slice(1, -1) : u.host;
    const ips = net.isIP(host) ? [host] : (await lookup(host, { all: true }).catch(() => [])).map((a) => a.address);
    for (const ip of ips) out.add(`${canonicalIp(ip)}:${u.port}`);
  }
  return out;
}

function canonicalIp(ip: string): string {
  if (net.isIPv4(ip)) return ip;
  const lower = ip.toLowerCase();
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  if (v4) return v4[1]!;
  const [head, tail] = lower.split("::") as [string, string | undefined];
  const left = head === "" ? [] : head.split(":");
  const right = tail === undefined || tail === "" ? [] : tail.split(":");
  const middle = tail === undefined ? [] : new Array<string>(8 - left.length - right.length).fill("0");
  return [...left, ...middle, ...right].map((g) => g.padStart(4, "0")).join(":");
}

/** SIGTERM an exiting worker (nginx then closes its connections at once), SIGKILL if it lingers. */
async function killWorker(master: number, pid: number): Promise<void> {
  const stillOurs = async (): Promise<boolean> => (await workers(master)).some((w) => w.pid === pid && w.exiting);
  if (!(await stillOurs())) return;
  signalPid(pid, "SIGTERM");
  const deadline = Date.now() + KILL_GRACE_MS;
  while (pidAlive(pid) && Date.now() < deadline) await sleep(DRAIN_POLL_MS);
  if (pidAlive(pid) && (await stillOurs())) signalPid(pid, "SIGKILL");
}

/** SIGQUIT (graceful) and wait; past the deadline the workers and then the master are killed. */
async function quitMaster(pid: number, deadline: number, signal?: (sig: NodeJS.Signals) => Promise<void>): Promise<boolean> {
  if (signal) await signal("SIGQUIT");
  else signalPid(pid, "SIGQUIT");
  while (pidAlive(pid)) {
    if (Date.now() > deadline) {
      // Workers outlive a killed master: they go first.
      for (const child of await childPids(pid)) signalPid(child, "SIGKILL");
      signalPid(pid, "SIGKILL");
      await sleep(50);
      break;
    }
    await sleep(DRAIN_POLL_MS);
  }
  return true;
}

function signalPid(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ESRCH") throw e;
  }
}

/**
 * As root, nginx would run its workers as "nobody", who cannot reach sockets and temp files
 * inside the agent's 0700 state directory: they run as the agent's user, as the built-in proxy does.
 */
function workerUser(): string | undefined {
  return process.getuid?.() === 0 ? os.userInfo().username : undefined;
}

// --- small helpers ------------------------------------------------------------------------------

function controlGet(socketPath: string, pathname: string, timeoutMs = CONTROL_TIMEOUT_MS): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: pathname, agent: false, timeout: timeoutMs, headers: { host: "localhost" } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        if (res.statusCode === 200) resolve(text);
        else reject(new Error(`nginx control ${pathname} answered ${res.statusCode}`));
      });
    });
    req.on("timeout", () => req.destroy(new Error(`nginx control ${pathname}: no answer within ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end();
  });
}

export function parseStubStatus(text: string): NginxStatus {
  const active = /Active connections:\s*(\d+)/.exec(text);
  const counts = /\s(\d+)\s+(\d+)\s+(\d+)\s*\n\s*Reading/.exec(text);
  const rww = /Reading:\s*(\d+)\s+Writing:\s*(\d+)\s+Waiting:\s*(\d+)/.exec(text);
  if (!active || !counts || !rww) throw new Error(`unreadable stub_status output: ${JSON.stringify(text.slice(0, 200))}`);
  return {
    active: Number(active[1]),
    accepts: Number(counts[1]),
    handled: Number(counts[2]),
    requests: Number(counts[3]),
    reading: Number(rww[1]),
    writing: Number(rww[2]),
    waiting: Number(rww[3]),
  };
}

function run(file: string, args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === "number" ? ((err as { code: number }).code) : 1) : 0;
      resolve({ code, output: `${stderr}${stdout}` || (err ? err.message : "") });
    });
  });
}

async function fileSize(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch {
    return 0;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
