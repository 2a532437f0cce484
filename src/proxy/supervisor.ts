// The proxy process's supervisor: it holds the listening sockets (plain, and TLS when asked),
// answers the control API, gets ACME certificates (acme.ts), and runs the data plane in worker
// processes (worker.ts) that share the sockets. A dead worker is
// replaced at once while new connections wait in the socket's accept queue; an in-place upgrade
// starts workers from the code on disk and retires the old ones once the new ones serve. With
// more than one worker, as many accept new connections as the cores can run (spill.ts). Every
// control call reaches every worker; the route table, the marks and the upstream events are kept
// here too, so that a new worker starts on them and the agent sees one proxy.

import { type ChildProcess, fork } from "node:child_process";
import type net from "node:net";
import os from "node:os";
import { fileURLToPath } from "node:url";
import { errorMessage } from "../errors.js";
import { AcmeManager, type AcmeHostStatus, type AcmeOptions } from "./acme.js";
import type { CertificateStatus } from "./cert-store.js";
import type { Logger } from "../log/logger.js";
import type { DrainResult, ProxyMetrics, ProxyStats, RouteTable, RouteTableDelta } from "./contract.js";
import { type ControlBackend, type HealthInfo, HttpError, type TlsStatus, type UpgradeOptions, type UpgradeResult, type WorkerInfo } from "./control.js";
import { DataPlane } from "./data-plane.js";
import { bindListenSocket, type ListenSocket } from "./listen-socket.js";
import { loadTable } from "./server.js";
import { addMetricCounters, sumStats, withMetricGauges, zeroMetrics } from "./sum-stats.js";
import { initialSpill, readHostTicks, readSchedstat, spillStep, type SpillState, type WorkerLoad } from "./spill.js";
import { Router, type UpstreamEventLog } from "./table.js";
import { type AcmeChallenge, WORKER_PROTOCOL, type SupervisorMessage, type WorkerMessage, type WorkerOp, type WorkerResults } from "./worker-protocol.js";

export const DEFAULT_WORKERS = 1;
/**
 * V8 flags of every worker: one thread, as an nginx worker is, with the cores shared out by
 * running one worker per core. V8's background work (parallel scavenges, concurrent marking and
 * sweeping, optimizing compiles) otherwise wakes helper threads that compete with the workers and
 * the apps beside them. A worker's heap holds little more than the requests in flight, so that
 * work is small; parallel scavenges alone spent 12.6 % of a worker's user time starting, stealing
 * and waiting against 0.9 % scavenging on the main thread (first `--no-parallel-scavenge`), and
 * the whole of it off cost 1-8 % less CPU and gave 4-10 % more requests a second in five A/B runs
 * of 8-10 pairs (docs/benchmarks.md, bench:proxy, session 22).
 */
export const WORKER_V8_FLAGS = ["--single-threaded"];

/** How long a worker may take from fork to serving. */
export const WORKER_READY_TIMEOUT_MS = 10_000;
/** How long a worker may take to answer an op (a drain: its own timeout, plus this). */
export const WORKER_OP_TIMEOUT_MS = 10_000;
/** A worker that dies sooner than this after it started counts toward a crash loop. */
const CRASH_LOOP_UPTIME_MS = 1_000;
/** In a crash loop the n-th quick death waits 100 ms × 2^(n-2) (the first restarts at once), up to 10 s. */
const RESTART_BACKOFF_MS = 100;
const MAX_RESTART_BACKOFF_MS = 10_000;
/**
 * How long the workers an upgrade retires keep a keep-alive connection that sends nothing: a
 * client still using it gets its next answer with Connection: close before then.
 */
export const RETIRE_IDLE_GRACE_MS = 1_000;
export const DEFAULT_UPGRADE_DRAIN_MS = 10_000;
/**
 * Spare workers: started ahead, kept up to date with every op, not accepting. A dead worker's
 * place is taken by a spare at once (it only has to listen) rather than by a process that must
 * first boot Node and load the proxy, while new connections wait in the accept queue.
 */
export const DEFAULT_SPARES = 1;
/** How often the supervisor looks at the accepting workers' load to decide how many accept (spill.ts). */
export const SPILL_TICK_MS = 1_000;
/**
 * adaptive: one worker accepts, and more while the ones accepting are saturated and a core sits
 * idle for another (spill.ts); all: every serving worker accepts, as nginx's do.
 */
export type AcceptMode = "adaptive" | "all";
export const DEFAULT_ACCEPT_MODE: AcceptMode = "adaptive";
/** A retired worker still running this long after its grace is killed. */
const RETIRE_KILL_AFTER_MS = 5_000;
const WORKER_JS = fileURLToPath(new URL("./worker.js", import.meta.url));

/** A worker count as --workers takes it: "auto" is one per core of this machine. */
export function resolveWorkers(workers: number | "auto"): number {
  return workers === "auto" ? os.availableParallelism() : workers;
}

/** What a worker's op resolves to when the worker exited before answering: it has nothing left to say. */
const GONE = Symbol("gone");

export interface SupervisorOptions {
  stateDir: string;
  listenHost: string;
  listenPort: number;
  /** A TLS listener beside the plain one: its workers terminate TLS with the table's certificates. */
  tlsListen?: { host: string; port: number };
  /** Tests shorten ACME's backoff. */
  acme?: AcmeOptions;
  workers: number;
  /** How many of the serving workers accept new connections; DEFAULT_ACCEPT_MODE when absent. */
  accept?: AcceptMode;
  /** Spare workers kept in standby; DEFAULT_SPARES when absent. */
  spares?: number;
  /** WORKER_OP_TIMEOUT_MS when absent (tests shorten it). */
  opTimeoutMs?: number;
  log: Logger;
  /** The worker's script, read from disk at every fork: an upgrade runs the code installed now. */
  workerScript?: string;
  /** Tests feed the spill decision figures of their own, at a pace of their own. */
  spillProbe?: { tickMs?: number; schedstat?: typeof readSchedstat; hostTicks?: () => { idle: number; total: number; cores: number } | undefined };
}

interface Pending {
  settle(value: unknown): void;
  fail(error: Error): void;
}

class Worker {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly generation: number;
  readonly startedAt = Date.now();
  state: WorkerInfo["state"] = "starting";
  /** What it is for: serving, or standing by to replace a worker that dies. */
  role: "serve" | "spare";
  /** Got its init: every op from then on goes to it too. */
  member = false;
  /** Accepts new connections (or will, once it serves); a serving worker that does not serves the ones it has. */
  accepting = false;
  /** Has listened on its inherited sockets: to accept again after a pause it needs them sent over IPC. */
  inheritedUsed = false;
  /** Its scheduler figures at the last spill tick. */
  sched: { runNs: number; waitNs: number; atNs: bigint } | undefined;
  exited = false;
  /** Why it did not start, for the error that says so. */
  failure: string | undefined;
  readonly pending = new Map<number, Pending>();
  /** Resolves once it serves; rejects when it exits first. */
  readonly ready: Promise<void>;
  /** Resolves once it applied its init (a spare then stands by); rejects when it exits first. */
  readonly initialized: Promise<void>;
  /** Resolves once it exited. */
  readonly gone: Promise<void>;
  resolveReady!: () => void;
  rejectReady!: (e: Error) => void;
  resolveInitialized!: () => void;
  rejectInitialized!: (e: Error) => void;
  resolveGone!: () => void;

  constructor(child: ChildProcess, generation: number, role: "serve" | "spare") {
    this.child = child;
    this.pid = child.pid ?? 0;
    this.generation = generation;
    this.role = role;
    this.ready = new Promise<void>((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.initialized = new Promise<void>((resolve, reject) => {
      this.resolveInitialized = resolve;
      this.rejectInitialized = reject;
    });
    // Whoever waits for them says so; nobody waiting is no unhandled rejection.
    this.ready.catch(() => undefined);
    this.initialized.catch(() => undefined);
    this.gone = new Promise<void>((resolve) => (this.resolveGone = resolve));
  }

  info(): WorkerInfo {
    return { pid: this.pid, state: this.state, startedAt: this.startedAt, generation: this.generation, accepting: this.state === "serving" && this.accepting };
  }
}

export class Supervisor implements ControlBackend {
  /** The table, the marks and the event log the workers serve: no traffic runs through it. */
  private readonly router = new Router();
  private readonly socket: ListenSocket;
  private readonly tlsSocket: ListenSocket | undefined;
  /** Gets and renews the ACME certificates, once a table asks for them. */
  private acme: AcmeManager | undefined;
  /** The ACME challenges under validation: a worker that starts meanwhile answers them too. */
  private readonly challenges = new Map<string, AcmeChallenge>();
  private readonly opts: SupervisorOptions;
  private readonly workerScript: string;
  private readonly workers = new Set<Worker>();
  /** How many workers to keep serving, and how many spares beside them. */
  private target: number;
  private readonly spareCount: number;
  private readonly opTimeoutMs: number;
  private generation = 0;
  private opSeq = 0;
  /** The op that last marked each upstream healthy: a worker's mark made before it saw that op is stale. */
  private readonly upOps = new Map<string, number>();
  private quickDeaths = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private running = false;
  private upgrading = false;
  private zero: ProxyStats | undefined;
  private readonly startedAt = Date.now();
  /**
   * Each worker's counters as last seen (an answer, or its final report as it retired), kept until
   * its process is gone for good and they move to `retired`: a proxy's counters never go back
   * when a worker is replaced. A worker killed outright loses only what it counted since the last look.
   */
  private readonly lastMetrics = new Map<Worker, ProxyMetrics>();
  private retired: ProxyMetrics = zeroMetrics(this.startedAt);
  /** Workers that died unasked (and were replaced). */
  private restarts = 0;
  private acceptMode: AcceptMode;
  /** How many workers accept, in the adaptive mode. */
  private spill: SpillState;
  private spillTimer: NodeJS.Timeout | undefined;
  /** The host's clock ticks at the last spill tick. */
  private hostTicks: { idle: number; total: number; cores: number } | undefined;
  /** The kernel gives no scheduler figures (no /proc/<pid>/schedstat): every worker accepts. */
  private spillBlind = false;
  /** An upgrade is starting its workers: every one accepts, whatever the count. */
  private startingGeneration = false;

  private constructor(opts: SupervisorOptions, socket: ListenSocket, tlsSocket: ListenSocket | undefined) {
    this.opts = opts;
    this.socket = socket;
    this.tlsSocket = tlsSocket;
    this.target = opts.workers;
    this.acceptMode = opts.accept ?? DEFAULT_ACCEPT_MODE;
    this.spill = initialSpill(opts.workers);
    this.spareCount = opts.spares ?? DEFAULT_SPARES;
    this.opTimeoutMs = opts.opTimeoutMs ?? WORKER_OP_TIMEOUT_MS;
    this.workerScript = opts.workerScript ?? WORKER_JS;
  }

  /** Binds the socket, restores the saved table, and resolves once every worker serves it. */
  static async start(opts: SupervisorOptions): Promise<Supervisor> {
    if (!(Number.isInteger(opts.workers) && opts.workers >= 1)) throw new Error(`workers must be an integer ≥ 1, got ${opts.workers}`);
    const restored = await loadTable(opts.stateDir);
    const socket = await bindListenSocket(opts.listenHost, opts.listenPort);
    let tlsSocket: ListenSocket | undefined;
    try {
      tlsSocket = opts.tlsListen ? await bindListenSocket(opts.tlsListen.host, opts.tlsListen.port) : undefined;
    } catch (e) {
      socket.close();
      throw e;
    }
    const s = new Supervisor(opts, socket, tlsSocket);
    if (restored) s.router.apply(restored);
    const first = Array.from({ length: opts.workers }, () => s.spawn(0, "serve"));
    try {
      await Promise.all(first.map((w) => s.whenReady(w)));
    } catch (e) {
      for (const w of first) if (!w.exited) w.child.kill("SIGKILL");
      socket.close();
      tlsSocket?.close();
      throw e;
    }
    s.running = true;
    s.watchSpill();
    s.configureAcme();
    // The spares start once the proxy serves: they only matter from the first death on.
    s.topUp();
    return s;
  }

  get listenHost(): string {
    return this.socket.host;
  }

  get listenPort(): number {
    return this.socket.port;
  }

  /** The TLS listener's address, when the proxy has one. */
  get tlsListen(): { host: string; port: number } | undefined {
    return this.tlsSocket ? { host: this.tlsSocket.host, port: this.tlsSocket.port } : undefined;
  }

  get events(): UpstreamEventLog {
    return this.router.events;
  }

  table(): RouteTable {
    return this.router.current.source;
  }

  health(): HealthInfo {
    const workers = [...this.workers].map((w) => w.info());
    return { ok: workers.some((w) => w.state === "serving"), pid: process.pid, tableVersion: this.router.current.version, workers, workerCount: this.target, accept: this.acceptMode };
  }

  async apply(table: RouteTable): Promise<void> {
    this.took(table);
    await this.fanOut({ type: "apply", opId: this.nextOp(), table });
    this.configureAcme();
  }

  /**
   * The workers get the delta alone: with a hundred services a whole table is tens of KB that each
   * worker would parse and check again for a flip that changed one route. A worker that is not at
   * the delta's base (none should be: every op reaches it in order) gets the whole table.
   */
  async applyDelta(delta: RouteTableDelta, merged: RouteTable): Promise<void> {
    this.took(merged);
    const op = { type: "apply-delta" as const, opId: this.nextOp(), delta };
    const members = [...this.workers].filter((w) => w.member && !w.exited);
    await Promise.all(members.map(async (w) => {
      const answer = (await this.call(w, op, this.opTimeoutMs)) as WorkerResults["apply-delta"] | typeof GONE;
      if (answer !== GONE && answer.stale) await this.call(w, { type: "apply", opId: this.nextOp(), table: this.router.current.source }, this.opTimeoutMs);
    }));
    this.configureAcme();
  }

  /** First here, so that a worker starting from now on gets the table with its init. */
  private took(table: RouteTable): void {
    this.router.apply(table);
    for (const id of this.upOps.keys()) if (!table.routes.some((r) => r.upstreams.some((u) => u.id === id))) this.upOps.delete(id);
  }

  /** The certificates as the workers serve them, and the ACME hosts' state. */
  async tls(): Promise<TlsStatus> {
    const parts = await this.fanOut({ type: "tls", opId: this.nextOp() });
    // The workers load the same files; one that failed where another did not has the error shown.
    const certificates: CertificateStatus[] = parts[0]?.map((c) => ({ ...c })) ?? [];
    for (const part of parts.slice(1)) {
      part.forEach((c, i) => {
        const mine = certificates[i];
        if (mine && c.error !== undefined && mine.error === undefined) certificates[i] = { ...mine, error: c.error, loaded: mine.loaded && c.loaded };
      });
    }
    return { ...(this.tlsListen ? { listen: this.tlsListen } : {}), certificates, acme: this.acme?.status() ?? [] };
  }

  /** Orders a new ACME certificate for host now; resolves once every worker serves it. */
  renewCertificate(host: string): Promise<AcmeHostStatus> {
    if (!this.acme) throw new HttpError(404, "this proxy gets no certificates over ACME (no proxy.tls.acme, or no TLS listener)");
    return this.acme.renew(host).catch((e: unknown) => {
      throw new HttpError(/not one of/.test(errorMessage(e)) ? 404 : 502, errorMessage(e));
    });
  }

  /** ACME runs when the table asks for it and the proxy has a TLS listener to serve what it gets. */
  private configureAcme(): void {
    const policy = this.router.current.tls;
    const settings = policy?.settings.acme;
    if (settings && !this.tlsSocket) {
      this.opts.log.warn("tls.no-listener", "the table asks for ACME certificates, but this proxy has no TLS listener (--tls-listen): none are ordered");
      return;
    }
    if (!settings && !this.acme) return;
    this.acme ??= new AcmeManager(this.opts.stateDir, {
      publish: async (c) => {
        this.challenges.set(c.token, c);
        await this.fanOut({ type: "challenge", opId: this.nextOp(), ...c });
      },
      withdraw: async (c) => {
        this.challenges.delete(c.token);
        await this.fanOut({ type: "challenge", opId: this.nextOp(), token: c.token, host: c.host });
      },
      installed: async () => {
        await this.fanOut({ type: "certs", opId: this.nextOp() });
      },
      log: (message, level = "info") => this.opts.log[level]("tls.acme", message),
    }, this.opts.acme);
    this.acme.configure(settings, policy?.acmeHosts ?? new Set());
  }

  async drain(poolId: string, timeoutMs: number): Promise<DrainResult> {
    const started = performance.now();
    const results = await this.fanOut({ type: "drain", opId: this.nextOp(), poolId, timeoutMs }, timeoutMs + this.opTimeoutMs);
    const pool = this.router.pools.get(poolId);
    if (pool) this.router.release(pool);
    let completed = 0;
    let cut = 0;
    for (const r of results) {
      completed += r.completed;
      cut += r.cut;
    }
    return { poolId, completed, cut, durationMs: Math.round(performance.now() - started) };
  }

  async stats(): Promise<ProxyStats> {
    const parts = await this.fanOut({ type: "stats", opId: this.nextOp() });
    return sumStats(this.zeroStats(), parts, { tableVersion: this.router.current.version, down: this.router.downList() });
  }

  /** Counters: the workers gone plus each worker's latest; gauges: the workers that answered now. */
  async metrics(): Promise<ProxyMetrics> {
    const op = { type: "metrics", opId: this.nextOp() } as const;
    const members = [...this.workers].filter((w) => w.member && !w.exited);
    const answers = await Promise.all(
      members.map(async (w) => {
        const m = await this.call(w, op, this.opTimeoutMs);
        if (m === GONE) return undefined;
        // An answer comes before the worker's exit, so before its counters move to `retired`.
        this.lastMetrics.set(w, m as ProxyMetrics);
        return m as ProxyMetrics;
      }),
    );
    const counted = addMetricCounters(this.retired, [...this.lastMetrics.values()]);
    const states: Record<WorkerInfo["state"], number> = { starting: 0, standby: 0, serving: 0, retiring: 0 };
    for (const w of this.workers) states[w.state]++;
    return { ...withMetricGauges(counted, answers.filter((a) => a !== undefined)), startedAt: this.startedAt, workers: { states, restarts: this.restarts, accepting: this.acceptingWorkers().filter((w) => w.state === "serving").length } };
  }

  async setUpstreamHealth(id: string, healthy: boolean): Promise<void> {
    const opId = this.nextOp();
    const at = Date.now();
    if (healthy) {
      this.router.markUp(id, at);
      this.upOps.set(id, opId);
    } else {
      this.router.markDown(id, "marked", at);
    }
    await this.fanOut({ type: "mark", opId, id, healthy, reason: "marked", at });
  }

  /**
   * Starts a new generation of workers from the code on disk, waits until every one serves, then
   * retires the old ones: they stop accepting, answer what their connections still send with
   * Connection: close, and exit once their in-flight requests are done (or cut at the drain
   * timeout). New connections meanwhile go to whichever worker accepts first, old or new.
   */
  async upgrade(opts: UpgradeOptions): Promise<UpgradeResult> {
    if (!this.running) throw new HttpError(503, "the proxy is stopping");
    if (this.upgrading) throw new HttpError(409, "an upgrade is already running");
    this.upgrading = true;
    this.startingGeneration = true;
    try {
      const started = performance.now();
      const count = opts.workers ?? this.target;
      const drainMs = opts.drainTimeoutMs ?? DEFAULT_UPGRADE_DRAIN_MS;
      const old = [...this.workers].filter((w) => w.state !== "retiring");
      const generation = ++this.generation;
      this.opts.log.info("proxy.upgrade-started", `upgrade: starting ${count} worker(s) of generation ${generation} from ${this.workerScript}`, { data: { generation, workers: count } });
      const fresh = Array.from({ length: count }, () => this.spawn(generation, "serve"));
      // The new spares are the new code's too; nobody waits for them.
      const spares = Array.from({ length: this.spareCount }, () => this.launch("spare"));
      try {
        await Promise.all(fresh.map((w) => this.whenReady(w)));
      } catch (e) {
        for (const w of [...fresh, ...spares]) this.retire(w, drainMs, RETIRE_IDLE_GRACE_MS);
        this.opts.log.error("proxy.upgrade-failed", `upgrade failed, the old workers keep serving: ${errorMessage(e)}`, { data: { generation } });
        throw new HttpError(500, `upgrade failed, the old workers keep serving: ${errorMessage(e)}`);
      }
      const readyMs = Math.round(performance.now() - started);
      this.target = count;
      this.opts.log.info("proxy.upgraded", `upgrade: generation ${generation} serves (pids ${fresh.map((w) => w.pid).join(", ")}); retiring ${old.map((w) => w.pid).join(", ") || "none"}`, { data: { generation, started: fresh.map((w) => w.pid), retiring: old.map((w) => w.pid) } });
      for (const w of old) this.retire(w, drainMs, RETIRE_IDLE_GRACE_MS);
      this.spill = { ...initialSpill(count), accepting: Math.min(this.spill.accepting, count) };
      if (opts.accept && opts.accept !== this.acceptMode) {
        this.acceptMode = opts.accept;
        this.watchSpill();
      }
      this.startingGeneration = false;
      // Every new worker accepted while they started; from now on, as many as the cores can run.
      this.rebalance();
      await Promise.all(old.map((w) => w.gone));
      const retired = old.filter((w) => w.role === "serve").map((w) => w.pid);
      return { started: fresh.map((w) => w.pid), retired, generation, readyMs, durationMs: Math.round(performance.now() - started) };
    } finally {
      this.upgrading = false;
      if (this.startingGeneration) {
        this.startingGeneration = false;
        this.rebalance();
      }
    }
  }

  /**
   * Stops for good: the supervisor's copy of the socket closes first, so that once the workers
   * close theirs new connections are refused rather than left waiting; then every worker
   * finishes its in-flight requests for up to graceMs and exits.
   */
  async stop(graceMs: number): Promise<void> {
    this.running = false;
    clearTimeout(this.restartTimer);
    clearInterval(this.spillTimer);
    this.acme?.stop();
    this.socket.close();
    this.tlsSocket?.close();
    const all = [...this.workers];
    for (const w of all) this.retire(w, graceMs, 0);
    await Promise.all(all.map((w) => w.gone));
  }

  // -------------------------------------------------------------------------------------------
  // Workers

  private spawn(generation: number, role: "serve" | "spare"): Worker {
    // fd 3: the listening socket (WORKER_LISTEN_FD); fd 4: the TLS one (WORKER_TLS_FD), if any; fd 5: the IPC channel.
    const stdio = ["ignore", "inherit", "inherit", this.socket.fd, this.tlsSocket?.fd ?? "ignore", "ipc"] as const;
    const child = fork(this.workerScript, ["--state-dir", this.opts.stateDir], { stdio: [...stdio], execArgv: [...process.execArgv, ...WORKER_V8_FLAGS] });
    const w = new Worker(child, generation, role);
    this.workers.add(w);
    child.on("message", (m: WorkerMessage) => this.onMessage(w, m));
    child.once("error", (e) => {
      // fork failed (no pid), or a signal could not be sent: only the first matters.
      if (w.pid === 0) this.onExit(w, `it could not be started: ${errorMessage(e)}`);
    });
    child.once("exit", (code, signal) => this.onExit(w, signal ? `killed by ${signal}` : `exited with code ${code}`));
    // After its exit and the last of its messages (its final report among them): its counters are history now.
    child.once("close", () => {
      const last = this.lastMetrics.get(w);
      this.lastMetrics.delete(w);
      if (last) this.retired = addMetricCounters(this.retired, [last]);
    });
    return w;
  }

  /** Starts a worker of the current generation, killed if it does not get ready in time (a quick death). */
  private launch(role: "serve" | "spare"): Worker {
    const w = this.spawn(this.generation, role);
    // Its exit, or the kill for its delay, is logged already.
    this.whenReady(w).catch(() => undefined);
    return w;
  }

  /** Resolves once w serves (a spare: once it stands by, or serves); kills it when that takes too long. */
  private async whenReady(w: Worker): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`worker ${w.pid} was not ready within ${WORKER_READY_TIMEOUT_MS} ms`)), WORKER_READY_TIMEOUT_MS);
    });
    try {
      await Promise.race([w.role === "spare" ? w.initialized : w.ready, timeout]);
    } catch (e) {
      if (!w.exited) {
        this.opts.log.error("worker.not-ready", `${errorMessage(e)}: killing it`, { data: { worker: w.pid } });
        w.child.kill("SIGKILL");
      }
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  private onMessage(w: Worker, m: WorkerMessage): void {
    switch (m.type) {
      case "hello":
        if (m.protocol !== WORKER_PROTOCOL) {
          w.failure = `its protocol is ${m.protocol}, this supervisor's ${WORKER_PROTOCOL}: restart the proxy to run the new supervisor`;
          w.child.kill("SIGKILL");
          return;
        }
        // The state as of now; every op from now on follows it on the same channel.
        w.member = true;
        return this.send(w, {
          type: "init",
          opId: this.opSeq,
          table: this.router.current.source,
          down: this.router.downList(),
          serve: w.role === "serve",
          accept: w.role === "serve" && this.takesAnother(w),
          tls: this.tlsSocket !== undefined,
          challenges: [...this.challenges.values()],
        });
      case "ready":
        w.resolveInitialized();
        if (!m.serving) {
          if (w.state === "starting") w.state = "standby";
          return;
        }
        if (w.state !== "retiring") w.state = "serving";
        w.resolveReady();
        this.rebalance();
        return;
      case "reply": {
        const p = w.pending.get(m.opId);
        if (!p) return;
        w.pending.delete(m.opId);
        if (m.error !== undefined) p.fail(new Error(`worker ${w.pid}: ${m.error}`));
        else p.settle(m.result);
        return;
      }
      case "down":
        return this.onPassiveDown(w, m);
      case "leaving":
        return this.replace(w);
      case "want-cert":
        return this.acme?.request(m.host);
      case "final":
        this.lastMetrics.set(w, m.metrics);
        return;
    }
  }

  /** A worker took an upstream out by itself: the others do too, and the event is logged once. */
  private onPassiveDown(from: Worker, m: Extract<WorkerMessage, { type: "down" }>): void {
    if ((this.upOps.get(m.id) ?? 0) > m.opSeen) return;
    if (!this.router.markDown(m.id, m.reason, m.at)) return;
    this.fanOut({ type: "mark", opId: this.nextOp(), id: m.id, healthy: false, reason: m.reason, at: m.at }, this.opTimeoutMs, from).catch((e: unknown) =>
      this.opts.log.error("upstream.mark-failed", `passing on ${m.id} down: ${errorMessage(e)}`, { data: { upstream: m.id } }),
    );
  }

  private onExit(w: Worker, how: string): void {
    if (w.exited) return;
    w.exited = true;
    this.workers.delete(w);
    for (const p of w.pending.values()) p.settle(GONE);
    w.pending.clear();
    const why = new Error(`worker ${w.pid} ${how} before ${w.role === "spare" ? "standing by" : "serving"}${w.failure ? `: ${w.failure}` : ""}`);
    w.rejectReady(why);
    w.rejectInitialized(why);
    w.resolveGone();
    if (!this.running || w.state === "retiring") return;
    this.restarts++;
    // Another serving worker takes new connections first, if one was not: it needs no start.
    if (w.accepting) this.rebalance();
    const uptimeMs = Date.now() - w.startedAt;
    this.quickDeaths = uptimeMs < CRASH_LOOP_UPTIME_MS ? this.quickDeaths + 1 : 0;
    this.opts.log.warn("worker.exited", `${w.role === "spare" ? "spare" : "worker"} ${w.pid} ${how} after ${uptimeMs} ms`, { data: { worker: w.pid, role: w.role, uptimeMs } });
    this.topUp();
  }

  /**
   * Brings the workers back to `target` serving and the spares to their count: a spare takes a
   * missing worker's place at once; what is still missing is started at once, or after a
   * backoff in a crash loop.
   */
  private topUp(): void {
    if (!this.running) return;
    for (let missing = this.target - this.active().length; missing > 0; missing--) {
      const spare = this.spares()[0];
      if (!spare) break;
      this.promote(spare);
    }
    if (this.restartTimer) return;
    if (this.active().length >= this.target && this.spares().length >= this.spareCount) return;
    const start = (): void => {
      this.restartTimer = undefined;
      if (!this.running) return;
      for (let n = this.target - this.active().length; n > 0; n--) this.launch("serve");
      for (let n = this.spareCount - this.spares().length; n > 0; n--) this.launch("spare");
    };
    const delayMs = this.quickDeaths <= 1 ? 0 : Math.min(RESTART_BACKOFF_MS * 2 ** (this.quickDeaths - 2), MAX_RESTART_BACKOFF_MS);
    if (delayMs === 0) return start();
    this.opts.log.warn("worker.crash-loop", `workers keep dying at start: the next one in ${delayMs} ms`, { data: { delayMs } });
    this.restartTimer = setTimeout(start, delayMs);
  }

  /** A spare starts serving: at once if it stands by, else as soon as its init is applied. */
  private promote(w: Worker): void {
    w.role = "serve";
    this.opts.log.info("worker.promoted", `spare ${w.pid} takes over`, { data: { worker: w.pid } });
    if (w.member) this.send(w, { type: "serve", accept: this.takesAnother(w) });
    this.whenReady(w).catch(() => undefined);
  }

  /** A worker that asked to go (SIGTERM): retired once its replacement serves, or failed to. */
  private replace(w: Worker): void {
    if (!this.running || w.state === "retiring") return;
    this.opts.log.info("worker.replacing", `${w.role === "spare" ? "spare" : "worker"} ${w.pid} got SIGTERM: replacing it`, { data: { worker: w.pid, role: w.role } });
    // A spare serves nobody: it goes at once, and topUp starts another.
    if (w.role === "spare") return this.retire(w, 0, 0);
    const spare = this.spares()[0];
    if (spare) this.promote(spare);
    const next = spare ?? this.launch("serve");
    void this.whenReady(next)
      .catch((e: unknown) => this.opts.log.error("worker.replace-failed", `the replacement of worker ${w.pid} did not start: ${errorMessage(e)}`, { data: { worker: w.pid } }))
      .then(() => this.retire(w, DEFAULT_UPGRADE_DRAIN_MS, RETIRE_IDLE_GRACE_MS));
  }

  private retire(w: Worker, graceMs: number, idleGraceMs: number): void {
    if (w.exited || w.state === "retiring") return;
    w.state = "retiring";
    // Another takes new connections before this one stops taking them.
    if (w.accepting) this.rebalance();
    this.send(w, { type: "retire", graceMs, idleGraceMs });
    const killer = setTimeout(() => {
      if (!w.exited) w.child.kill("SIGKILL");
    }, graceMs + RETIRE_KILL_AFTER_MS);
    void w.gone.then(() => clearTimeout(killer));
    this.topUp();
  }

  /** The workers serving or about to, not retiring. */
  private active(): Worker[] {
    return [...this.workers].filter((w) => w.role === "serve" && w.state !== "retiring");
  }

  private spares(): Worker[] {
    return [...this.workers].filter((w) => w.role === "spare" && w.state !== "retiring");
  }

  // -------------------------------------------------------------------------------------------
  // Which workers accept

  /** How many workers should accept new connections now. */
  private acceptTarget(): number {
    if (this.acceptMode === "all" || this.spillBlind) return this.target;
    return Math.min(this.spill.accepting, this.target);
  }

  private acceptingWorkers(): Worker[] {
    return this.active().filter((w) => w.accepting);
  }

  /**
   * Whether w, about to serve, accepts too; marks it so when it does (it then listens on its
   * inherited sockets). While an upgrade starts new workers every one accepts, as before.
   */
  private takesAnother(w: Worker): boolean {
    if (w.accepting) return true;
    if (!this.startingGeneration && this.acceptingWorkers().length >= this.acceptTarget()) return false;
    w.accepting = true;
    w.inheritedUsed = true;
    return true;
  }

  /**
   * Brings the number of accepting workers to the target: serving workers that do not accept start
   * to (the oldest first), or the ones that started last stop (they serve what they have). At least
   * one always accepts when one serves, an upgrade's old workers too until the new ones serve.
   */
  private rebalance(): void {
    if (!this.running) return;
    const want = Math.max(1, this.acceptTarget());
    const accepting = this.acceptingWorkers();
    for (const w of this.active()) {
      if (accepting.length >= want) break;
      if (w.accepting || w.state !== "serving" || !w.member) continue;
      this.startAccepting(w);
      accepting.push(w);
    }
    // While an upgrade starts its workers every one accepts: none stops until they serve.
    if (this.startingGeneration) return;
    const stoppable = accepting.filter((w) => w.state === "serving").sort((a, b) => b.startedAt - a.startedAt);
    for (let n = accepting.length - want; n > 0 && stoppable.length > 1; n--) {
      const w = stoppable.shift()!;
      w.accepting = false;
      w.sched = undefined;
      this.send(w, { type: "pause" });
    }
  }

  private startAccepting(w: Worker): void {
    w.accepting = true;
    w.sched = undefined;
    const handOver = w.inheritedUsed;
    w.inheritedUsed = true;
    this.send(w, { type: "accept", listener: "plain" }, handOver ? this.socket.handle : undefined);
    if (this.tlsSocket) this.send(w, { type: "accept", listener: "tls" }, handOver ? this.tlsSocket.handle : undefined);
  }

  /** Samples the load once a tick while the mode is adaptive. */
  private watchSpill(): void {
    clearInterval(this.spillTimer);
    if (this.acceptMode === "adaptive") this.spillTimer = setInterval(() => this.spillTick(), this.opts.spillProbe?.tickMs ?? SPILL_TICK_MS).unref();
  }

  /** Samples the accepting workers and the host, and lets spill.ts say whether one more or one fewer accepts. */
  private spillTick(): void {
    if (!this.running || this.upgrading || this.spillBlind) return;
    this.spill.max = this.target;
    const host = (this.opts.spillProbe?.hostTicks ?? readHostTicks)();
    const before = this.hostTicks;
    this.hostTicks = host;
    if (this.target <= 1) return;
    const now = process.hrtime.bigint();
    const loads: WorkerLoad[] = [];
    const accepting = this.acceptingWorkers().filter((w) => w.state === "serving");
    for (const w of accepting) {
      const figures = (this.opts.spillProbe?.schedstat ?? readSchedstat)(w.pid);
      if (!figures || !host) {
        // A worker that just exited has no figures: its exit is handled apart. A kernel with none
        // for this very process gives none at all.
        if (host && (this.opts.spillProbe?.schedstat ?? readSchedstat)(process.pid)) return;
        this.spillBlind = true;
        this.opts.log.warn("proxy.spill-blind", "the kernel gives no scheduler figures (/proc/<pid>/schedstat, /proc/stat): every worker accepts");
        this.rebalance();
        return;
      }
      const last = w.sched;
      w.sched = { ...figures, atNs: now };
      const wallNs = last ? Number(now - last.atNs) : 0;
      if (last && wallNs > 0) loads.push({ run: (figures.runNs - last.runNs) / wallNs, wait: (figures.waitNs - last.waitNs) / wallNs });
    }
    // A worker that just started accepting has no tick behind it yet.
    if (!before || !host || loads.length < accepting.length) return;
    const idleCores = host.total > before.total ? ((host.idle - before.idle) / (host.total - before.total)) * host.cores : 0;
    const verdict = spillStep(this.spill, { workers: loads, idleCores });
    this.spill = verdict.state;
    if (!verdict.change) return;
    const figures = loads.map((l) => `run ${l.run.toFixed(2)} wait ${l.wait.toFixed(2)}`).join("; ");
    this.opts.log.info("proxy.spill", `${verdict.change.to} of ${this.target} workers accept now (${verdict.change.reason}: ${figures}; idle cores ${idleCores.toFixed(2)})`, {
      data: { accepting: verdict.change.to, workers: this.target, reason: verdict.change.reason, loads, idleCores },
    });
    this.rebalance();
  }

  // -------------------------------------------------------------------------------------------
  // Ops to every worker

  private nextOp(): number {
    return ++this.opSeq;
  }

  /** Sends op to every worker that has its init (but `except`), and resolves with the answers of those still alive. */
  private async fanOut<T extends WorkerOp>(op: T, timeoutMs = this.opTimeoutMs, except?: Worker): Promise<WorkerResults[T["type"]][]> {
    const members = [...this.workers].filter((w) => w.member && !w.exited && w !== except);
    const answers = await Promise.all(members.map((w) => this.call(w, op, timeoutMs)));
    return answers.filter((a) => a !== GONE) as WorkerResults[T["type"]][];
  }

  /**
   * Sends one op and resolves with the answer, or GONE when the worker exits first. A worker
   * that does not answer in time has an event loop stuck for that long, so it serves nobody
   * either: it is killed, and replaced (its replacement starts on the supervisor's state).
   */
  private call(w: Worker, op: WorkerOp, timeoutMs: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.opts.log.error("worker.stuck", `worker ${w.pid} did not answer ${op.type} within ${timeoutMs} ms: killing it`, { data: { worker: w.pid, op: op.type, timeoutMs } });
        w.child.kill("SIGKILL");
      }, timeoutMs);
      w.pending.set(op.opId, {
        settle: (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        fail: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.send(w, op);
    });
  }

  /** A message that cannot be sent is for a worker on its way out: its exit settles what waits. */
  private send(w: Worker, message: SupervisorMessage, handle?: object): void {
    if (w.exited || !w.child.connected) return;
    // Node sends a raw TCP handle as is (keeping ours open), though its types name only net's classes.
    w.child.send(message, handle as net.Server | undefined, (err: Error | null) => {
      if (err && !w.exited) this.opts.log.warn("worker.send-failed", `worker ${w.pid}: cannot send ${message.type}: ${err.message}`, { data: { worker: w.pid, message: message.type } });
    });
  }

  /** A fresh data plane's stats: the shape the workers' figures are summed into. */
  private zeroStats(): ProxyStats {
    if (!this.zero) {
      const plane = new DataPlane();
      this.zero = plane.stats();
      plane.upstreams.destroy();
    }
    return this.zero;
  }
}
