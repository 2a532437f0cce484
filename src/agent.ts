// The agent (control plane): state, runtime, proxy, orchestrator, health monitor and the HTTP API,
// put together. It adopts what an earlier agent left running and finishes or undoes its flows.
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { TurquoiseError } from "./errors.js";
import { createApi } from "./api/server.js";
import { Registry } from "./api/registry.js";
import { bindConsulServer, type BoundConsulServer } from "./consul/server.js";
import { ensureToken, readUserToken, REGISTRY_TOKEN_FILE } from "./auth/token.js";
import { DeployTokens } from "./auth/deploy-tokens.js";
import { Supervisor } from "./heal/supervisor.js";
import { WatchRunner } from "./heal/watches.js";
import { watchRefusal, watchView } from "./api/catalog.js";
import { Fleet, ORPHAN_STOP_TIMEOUT_MS } from "./deploy/fleet.js";
import type { EventLog } from "./deploy/deps.js";
import type { Progress } from "./deploy/step.js";
import { Orchestrator } from "./deploy/orchestrator.js";
import { Records } from "./deploy/records.js";
import { moveLegacyKeys } from "./deploy/legacy-keys.js";
import { waitHealthy } from "./health/checks.js";
import { checkedInstances, HealthMonitor } from "./heal/monitor.js";
import { connectProxy, spawnProxy } from "./proxy/builtin.js";
import { openProxy, stopDataPlane, type OpenedProxy, type ProxyOptions } from "./proxy/index.js";
import type { DrainResult, Proxy, ProxyCapabilities, ProxyMetrics, ProxyStats, RouteTable, RouteTableDelta } from "./proxy/contract.js";
import { agentIdFor } from "./runtime/identity.js";
import { openRuntimes } from "./runtime/index.js";
import { SLOTS } from "./runtime/contract.js";
import { writeAgentSpec } from "./spec/agent-copy.js";
import type { Spec } from "./spec/types.js";
import type { Store } from "./state/contract.js";
import { openStore } from "./state/index.js";
import { Election, SoleLeadership, agentId as thisAgentId, type AgentAddress, type Leadership } from "./state/leader.js";
import { LeaderStore } from "./state/leader-store.js";
import { RouteFollower } from "./deploy/route-follower.js";
import { keys } from "./deploy/records.js";
import { endRunningCommands } from "./util/command.js";
import { createLogger, type Logger } from "./log/logger.js";
import { logSettings } from "./log/settings.js";
import { specSecrets } from "./deploy/secrets.js";
import { writeFileAtomic } from "./util/fs.js";
import { pidAlive } from "./util/proc.js";
import { AgentMetrics, type HealthState, type MetricsSource } from "./metrics/agent.js";
import { startMetricsServer } from "./metrics/server.js";
import { VERSION } from "./version.js";

export const AGENT_FILE = "agent.json";

export interface AgentInfo {
  pid: number;
  api: { host: string; port: number };
  proxy: { host: string; port: number; pid: number };
  startedAt: number;
}

const PROXY_WATCH_MS = 250;
// Short, so a closing agent is never held up for long by the pending poll; events still arrive at once.
const PROXY_EVENTS_WAIT_MS = 1_000;

/**
 * The proxy as the agent sees it: the running proxy process, replaced by a new one if it dies.
 * The new process restores its saved table by itself; the agent then re-applies the current one.
 */
class SupervisedProxy implements Proxy {
  constructor(public current: Proxy, public pid: number, public listenPort: number) {}
  get name(): string { return this.current.name; }
  get capabilities(): ProxyCapabilities { return this.current.capabilities; }
  apply(table: RouteTable): Promise<void> { return this.current.apply(table); }
  /** A proxy that takes whole tables only (nginx) is told to send the whole table. */
  applyDelta(delta: RouteTableDelta): Promise<"applied" | "stale"> { return this.current.applyDelta ? this.current.applyDelta(delta) : Promise.resolve("stale"); }
  drain(poolId: string, timeoutMs: number): Promise<DrainResult> { return this.current.drain(poolId, timeoutMs); }
  stats(): Promise<ProxyStats> { return this.current.stats(); }
  /** The per-slot counters a canary is judged by; a proxy without them (nginx) refuses. */
  metrics(): Promise<ProxyMetrics> { return this.current.metrics ? this.current.metrics() : Promise.reject(new Error(`the ${this.current.name} proxy keeps no per-slot counters`)); }
  setUpstreamHealth(id: string, healthy: boolean): Promise<void> { return this.current.setUpstreamHealth(id, healthy); }
}

export class Agent {
  private server?: http.Server;
  private metricsServer?: http.Server;
  private consul?: BoundConsulServer;
  private closing?: Promise<void>;
  private resolveClosed!: () => void;
  /** Resolves once close() has finished, whoever called it (a signal, or the API's shutdown). */
  readonly closed = new Promise<void>((r) => (this.resolveClosed = r));
  readonly startedAt = Date.now();

  private constructor(
    readonly spec: Spec,
    readonly token: string,
    readonly store: Store,
    readonly records: Records,
    readonly fleet: Fleet,
    readonly proxy: SupervisedProxy,
    readonly orchestrator: Orchestrator,
    readonly monitor: HealthMonitor,
    readonly registry: Registry,
    readonly registryToken: string,
    readonly supervisor: Supervisor,
    readonly deployTokens: DeployTokens,
    readonly log: Logger,
    /** Present when turquoise.yml has metrics.listen. */
    readonly metrics: AgentMetrics | undefined,
    /** Who leads among the agents sharing the store; the one agent of an embedded store always does. */
    readonly leadership: Leadership,
    /** Several agents: this agent's proxy follows the table the leader publishes. */
    readonly routeFollower: RouteFollower | undefined,
    /** The agent's one event log, shared with the parts start() wires before the agent exists. */
    event: EventLog,
  ) {
    this.event = event;
    // A watch on the agent's own records would hand them to a handler: it does not run.
    const allowed = spec.watches.filter((w) => !watchRefusal(w));
    this.watches = new WatchRunner(allowed, registry, (w) => watchView(this, w), spec.dir, (type, message, data) => this.event(null, type, message, data), (watch, ok) => metrics?.watchRan(watch, ok));
  }

  readonly watches: WatchRunner;
  /**
   * This agent leads and has taken over (recovery done): it deploys, heals and runs watches. Always
   * true for the one agent of an embedded store once it reconciled.
   */
  private leading = false;
  get leads(): boolean {
    return this.leading && this.leadership.isLeader;
  }
  /** Records an agent event: its log, the Store's event log, the event stream. */
  readonly event: EventLog;

  /** log: where the agent's lines go; by default stderr, as the spec's log section and the environment say. */
  static async start(spec: Spec, log: Logger = createLogger({ component: "agent", settings: logSettings(spec.log) })): Promise<Agent> {
    // Before anything can log them: the spec's and the environment's secrets.
    log.scrubber.add(specSecrets(spec));
    fs.mkdirSync(spec.stateDir, { recursive: true, mode: 0o700 });
    await refuseSecondAgent(spec);
    // Before anything starts: a token file that is missing or unusable is the spec's problem to fix.
    const metricsToken = spec.metrics?.tokenFile ? readUserToken(spec.metrics.tokenFile, "metrics.token_file") : undefined;
    if (metricsToken) log.scrubber.add([metricsToken]);
    const metrics = spec.metrics ? new AgentMetrics({ services: Object.keys(spec.services), watches: spec.watches.map((w) => w.name), version: VERSION }) : undefined;
    // Every port this agent serves is bound before anything else: one in use fails the start
    // before a proxy or an instance runs that would outlive it.
    const api = await bindApi(spec);
    let metricsServer: http.Server | undefined;
    let consul: BoundConsulServer | undefined;
    let opened: OpenedProxy | undefined;
    try {
      if (metrics) metricsServer = await listenMetrics(spec, metrics, metricsToken, log);
      if (spec.consul) consul = await bindConsulServer(spec.consul, spec.file);
      const agent = await Agent.build(spec, log, api, metrics, (p) => (opened = p));
      agent.metricsServer = metricsServer;
      agent.consul = consul;
      await agent.serve(api.server);
      return agent;
    } catch (e) {
      await api.close();
      await consul?.close();
      if (metricsServer) {
        metricsServer.closeAllConnections();
        await new Promise<void>((r) => metricsServer!.close(() => r()));
      }
      // A proxy this start spawned goes with it; an adopted one was serving before and keeps serving.
      if (opened && !opened.adopted) await stopDataPlane(proxyOptions(spec)).catch(() => undefined);
      throw e;
    }
  }

  private static async build(spec: Spec, log: Logger, api: BoundApi, metrics: AgentMetrics | undefined, onProxy: (p: OpenedProxy) => void): Promise<Agent> {
    const token = ensureToken(spec.stateDir);
    const registryToken = ensureToken(spec.stateDir, REGISTRY_TOKEN_FILE);
    log.scrubber.add([token, registryToken]);
    const rawStore = await openStore({ ...spec.state, warn: (message) => log.warn("state.warning", message) });
    const agentId = thisAgentId();
    const self: AgentAddress = { id: agentId, api: `http://${spec.agent.host}:${api.port}`, proxy: "", startedAt: Date.now() };
    const leaderLog = log.child("leader");
    // etcd is the store several agents share: one leads, and every write of this one is fenced on its leadership.
    const leadership: Leadership = spec.state.driver === "etcd"
      ? new Election(rawStore, self, { ttlMs: spec.state.etcd!.leaderTtlMs, log: (level, type, message, data) => leaderLog[level](type, message, data ? { data } : undefined) })
      : new SoleLeadership(self);
    const store = leadership.shared
      ? new LeaderStore(rawStore, leadership, (action, reason) => leaderLog.warn("write.refused", `refused the ${action}: ${reason}`, { data: { action, reason } }))
      : rawStore;
    // Start from the store's revision, so an index handed out before a restart is rarely above ours.
    const registry = new Registry(store, await store.revision());
    let agent!: Agent;
    // The one agent of an embedded store records every event, from its first (its start's repairs and reconcile come before it leads).
    const event = eventLog(store, registry, log, () => !leadership.shared || (agent?.leads ?? false));
    // Only an SQLite file can hold the layout from before the reserved prefix; an etcd store never did.
    const moved = leadership.shared ? [] : await moveLegacyKeys(store);
    if (moved.length) event(null, "records.moved", `moved ${moved.length} record(s) of the old layout under the reserved prefix: ${moved.slice(0, 10).join(", ")}${moved.length > 10 ? ", ..." : ""}`, { count: moved.length });
    const records = new Records(store, event);
    for (const w of spec.watches) {
      const why = watchRefusal(w);
      if (why) event(null, "watch.refused", `watch ${w.name} does not run: ${why}`, { watch: w.name });
    }

    // Every instance learns where the registry is (TURQUOISE_API) and gets its read-only token.
    const runtimes = await openRuntimes({ stateDir: spec.stateDir, drivers: runtimeDrivers(spec), state: spec.state, ...(spec.swarm ? { swarm: spec.swarm } : {}) });
    const fleet = new Fleet(runtimes, records, spec.dir, { TURQUOISE_TOKEN: registryToken });
    const proxied = await openProxy({ ...proxyOptions(spec), log: logSettings(spec.log) }, log.child("proxy"));
    onProxy(proxied);
    self.proxy = `${spec.proxy.host}:${proxied.listenPort}`;

    const apiUrl = `http://${spec.agent.host}:${api.port}`;
    const supervised = new SupervisedProxy(proxied.proxy, proxied.pid, proxied.listenPort);
    const orchestrator = new Orchestrator({ spec, store, records, fleet, proxy: supervised, apiUrl, agentId, event, publishRoutes: leadership.shared,
      // A flow's progress reaches the event stream scrubbed, as its events do.
      progress: (service, kind, p) => registry.publishProgress({ service, kind, at: Date.now(), progress: log.scrubber.fields(p) as Progress }),
      ...(metrics ? { metrics, migrationMetrics: (svc, p) => metrics.backfill(svc, p) } : {}) });
    const supervisor = new Supervisor({ spec, store, records, fleet, routes: orchestrator.routes, apiUrl: () => agent.apiUrl, agentId, event, fallBack: (service, why) => orchestrator.rollbackIfSafe(service, why), ...(metrics ? { metrics } : {}) });
    const monitor = new HealthMonitor(spec, fleet, supervised, event, (instances) => checkedInstances(instances, fleet, records), {
      changed: () => registry.bump(),
      // Not a registry change (the catalog's index stays, so blocking reads do not wake): only status readers care.
      firstChecked: () => registry.notifyChange(),
      // Critical and out of rotation: the supervisor stops and replaces it (or has its runtime restart it). Only the leader acts.
      critical: (inst) => {
        if (agent.leads) void supervisor.critical(inst);
      },
    });
    const deployTokens = new DeployTokens(store, (id, problem) => event(null, "record.invalid", `deploy token record ${id} is invalid (${problem}): it grants nothing`, { key: `tokens/${id}`, reason: problem }));
    await deployTokens.start();
    const routeFollower = leadership.shared
      ? new RouteFollower({ store, apply: (t) => supervised.apply(t), following: () => !agent.leads, log: (level, type, message, data) => log.child("proxy")[level](type, message, data ? { data } : undefined) })
      : undefined;
    agent = new Agent(spec, token, store, records, fleet, supervised, orchestrator, monitor, registry, registryToken, supervisor, deployTokens, log, metrics, leadership, routeFollower, event);
    agent.server = api.server;
    metrics?.attach(agent.metricsSource());

    fleet.onUnexpectedExit((inst, code, signal, restarting) => {
      void supervised.setUpstreamHealth(inst.id, false).catch(() => undefined);
      event(inst.service, "instance.exited", `${inst.id} (${inst.release}, ${inst.slot}) exited unexpectedly: ${signal ?? `code ${code}`}${restarting ? `; the ${inst.runtime ?? "process"} runtime restarts it` : ""}`);
      void monitor.sync();
      supervisor.lost(inst, "exited", restarting);
    });
    fleet.onRestarted((inst) => supervisor.rejoin(inst));

    // Several agents: reconciling is the leader's, once elected (takeOver).
    if (!leadership.shared) {
      await agent.reconcile();
      agent.leading = true;
    }
    return agent;
  }

  /** What follows reconcile: the API answers, the watches and the health monitor run. */
  private async serve(server: http.Server): Promise<void> {
    const agent = this;
    const { spec, monitor } = this;
    if (this.leadership.shared) {
      // The first campaign, and a takeover when it wins, come before the API answers: an agent alone on etcd serves as the leader at once.
      await this.routeFollower!.start();
      await this.leadership.start({ elected: () => this.takeOver(), deposed: (why) => this.stepDown(why) });
    }
    await agent.listen(server);
    if (!this.leadership.shared) agent.watches.start();
    await monitor.sync();
    setInterval(() => void monitor.sync(), 1_000).unref();
    if (spec.proxy.driver === "builtin") {
      agent.watchProxy();
      void agent.followProxyEvents();
    }
  }

  get identity(): string {
    return agentIdFor(this.spec.stateDir);
  }

  get apiUrl(): string {
    const addr = this.server?.address();
    const port = addr && typeof addr === "object" ? addr.port : this.spec.agent.port;
    return `http://${this.spec.agent.host}:${port}`;
  }

  /** The built-in proxy takes a refusing or resetting upstream out of rotation by itself; the monitor checks it at once. */
  private async followProxyEvents(): Promise<void> {
    let after = 0;
    let proxy: Proxy | undefined;
    while (!this.closing) {
      try {
        // A restarted proxy numbers its events from 1 again.
        if (proxy !== this.proxy.current) [proxy, after] = [this.proxy.current, 0];
        // Only a proxy that takes upstreams out by itself reports it; the others have nothing to follow.
        if (!proxy.events) return;
        const batch = await proxy.events(after, PROXY_EVENTS_WAIT_MS);
        after = batch.seq;
        for (const e of batch.events) if (e.type === "upstream.down" && e.reason !== "marked") this.monitor.passiveDown(e.id);
      } catch {
        await new Promise((r) => setTimeout(r, PROXY_WATCH_MS));
      }
    }
  }

  /**
   * Restarts the proxy if its process dies; it comes back on its saved table, then gets the
   * current one. The pid is the proxy's supervisor: a dead worker is the supervisor's to replace.
   */
  private watchProxy(): void {
    let restarting = false;
    const timer = setInterval(async () => {
      if (restarting || this.closing || pidAlive(this.proxy.pid)) return;
      restarting = true;
      try {
        const old = this.proxy.pid;
        const p = (await connectProxy(this.spec.stateDir)) ?? (await spawnProxy({
            stateDir: this.spec.stateDir,
            listenHost: this.spec.proxy.host,
            listenPort: this.spec.proxy.port,
            // Its TLS listener too: without it the restarted proxy refused every HTTPS client.
            ...(this.spec.proxy.tls ? { tlsListen: this.spec.proxy.tls } : {}),
            workers: this.spec.proxy.workers,
            accept: this.spec.proxy.accept,
            log: logSettings(this.spec.log),
          }));
        Object.assign(this.proxy, { current: p.proxy, pid: p.pid, listenPort: p.listenPort });
        // It restored its saved table; the whole current one goes all the same.
        this.orchestrator.routes.forgetApplied();
        if (this.leads || !this.routeFollower) await this.orchestrator.applyRoutes();
        else this.routeFollower.reapply();
        await this.monitor.pushMarks();
        await this.writeAgentInfo();
        this.event(null, "proxy.restarted", `proxy (pid ${old}) died; started pid ${p.pid} with the route table restored`);
      } catch (e) {
        this.event(null, "proxy.restart-failed", `proxy restart failed: ${e instanceof Error ? e.message : e}`);
      } finally {
        restarting = false;
      }
    }, PROXY_WATCH_MS);
    timer.unref();
    this.closed.then(() => clearInterval(timer));
  }

  /** Adopts what an earlier agent left, finishes or undoes its flows, stops orphans, restores the live slots. */
  private async reconcile(): Promise<void> {
    const { alive, dead, refused } = await this.fleet.adopt();
    if (alive.length || dead.length) this.log.info("agent.adopted", `adopted ${alive.length} running instance(s); ${dead.length} recorded instance(s) were gone`, { data: { alive: alive.length, gone: dead.length } });
    for (const { instance, reason } of refused) {
      this.event(instance.service, "instance.refused", `not adopting ${instance.id} (ref ${instance.ref}), nor signalling it: ${reason}; its record is dropped`, { instance: { ...instance }, reason });
    }
    // Every record read before anything is stopped: a bad one puts its service on hold.
    for (const name of Object.keys(this.spec.services)) {
      await this.records.color(name);
      for (const slot of SLOTS) await this.records.slot(name, slot);
    }
    // Instances that carry this agent's marks but no record as started: the agent died between starting and recording them.
    const swept = await this.fleet.sweep({ hold: (service) => this.records.held.has(service) });
    for (const inst of swept.stopped) {
      this.event(inst.service, "instance.orphan", `stopped ${inst.id} (${inst.release}, ${inst.slot}; ${inst.runtime ?? "process"} ${inst.ref}): it carried this agent's marks, but no record named it as started`, { instance: { ...inst } });
    }
    for (const { instance, reason } of swept.failed) {
      this.event(instance.service, "instance.orphan-stop-failed", `could not stop orphan ${instance.id} (${instance.runtime ?? "process"} ${instance.ref}): ${reason}`, { instance: { ...instance }, reason });
    }
    for (const intent of swept.abandoned) {
      const appeared = swept.stopped.some((i) => i.id === intent.id);
      this.event(intent.service, "instance.abandoned", `${intent.id} (${intent.release}, ${intent.slot}) was recorded as starting by an agent that died before recording it as started: ${appeared ? "it was running and was stopped" : "it never started"}; its record is dropped`, { instance: intent.id });
    }
    for (const note of await this.orchestrator.recover(this.leadership.shared ? "takeover" : "restart")) this.log.child("deploy").info("agent.recovered", `recovered: ${note}`);

    for (const svc of Object.values(this.spec.services)) {
      const color = await this.records.color(svc.name);
      // Read every record of the service first: a bad one puts the service on hold before anything is stopped.
      const recs = { blue: await this.records.slot(svc.name, "blue"), green: await this.records.slot(svc.name, "green") };
      if (this.records.held.has(svc.name)) {
        const running = this.fleet.list(svc.name);
        this.event(svc.name, "service.held", `records of ${svc.name} were invalid and set aside (see turquoise status): at start the agent stopped none of its ${running.length} running instance(s) and cleared none of its slots`);
        await this.restoreLive(svc.name);
        continue;
      }
      for (const slot of SLOTS) {
        const rec = recs[slot];
        const running = this.fleet.list(svc.name, slot);
        // A held release survives the agent: it waits for promote or abort, not for a flow.
        const wanted = rec && (slot === color || rec.state === "warm" || rec.state === "held");
        const orphans = wanted ? running.filter((i) => i.release !== rec.release) : running;
        if (orphans.length) {
          this.log.info("agent.orphans", `stopping ${orphans.length} orphan instance(s) of ${svc.name} in ${slot}`, { service: svc.name, data: { slot, count: orphans.length } });
          await this.fleet.stop(orphans, svc.stopTimeoutMs);
        }
        const emptyWarm = rec?.state === "warm" && slot !== color && running.length === 0;
        if ((!wanted || emptyWarm) && rec) await this.records.clearSlot(svc.name, slot);
        else if (rec?.state === "warm" && slot !== color) this.orchestrator.scheduleWarmExpiry(svc, slot, rec.warmUntil ?? 0);
      }
      await this.restoreLive(svc.name);
    }
    // Agent-owned deploy locks left by a dead agent are stale: recover() released journaled ones.
    await this.orchestrator.applyRoutes();
  }

  /**
   * Elected: the deploy locks of the term before are broken (their flows' fenced writes now fail),
   * then the agent reconciles as one that restarted does: adopts the instances, finishes or undoes
   * the flows left half done through their journals, restores the live slots and the routes.
   */
  private async takeOver(): Promise<void> {
    for (const name of Object.keys(this.spec.services)) {
      const lock = await this.store.getLock(keys.lock(name));
      if (lock && (await this.store.releaseLock(keys.lock(name), lock.owner))) {
        this.log.child("leader").info("leader.lock-broken", `broke the deploy lock of ${name} held by ${lock.owner}: it belongs to the term before this leader's`, { service: name, data: { owner: lock.owner } });
      }
    }
    await this.reconcile();
    this.supervisor.resume();
    this.watches.start();
    this.leading = true;
    this.event(null, "leader.elected", `agent ${this.leadership.self.id} (${this.apiUrl}) leads: it deploys, heals and runs watches`, { agent: this.leadership.self.id, api: this.apiUrl });
  }

  /** No longer leader: stop acting at once. Flows still running fail on their next (fenced) write; the proxy follows the new leader's table. */
  private stepDown(why: string): void {
    this.leading = false;
    this.supervisor.stop();
    // The proxy follows the new leader's tables from now on: a later term of this agent starts with a whole one.
    this.orchestrator.routes.forgetApplied();
    void this.watches.stop();
    this.log.child("leader").warn("leader.stepped-down", `this agent stopped deploying, healing and running watches: ${why}`, { data: { reason: why } });
    this.routeFollower?.reapply();
  }

  /** Starts missing replicas of the live release (e.g. after `down` and `up`). */
  private async restoreLive(service: string): Promise<void> {
    const svc = this.spec.services[service]!;
    const color = await this.records.color(service);
    const rec = color ? await this.records.slot(service, color) : undefined;
    if (!color || !rec) return;
    const missing = svc.replicas - this.fleet.list(service, color).length;
    if (missing <= 0) return;
    this.log.info("agent.restoring", `starting ${missing} instance(s) of ${service} ${rec.release} in ${color} to restore the live slot`, { service, data: { release: rec.release, slot: color, count: missing } });
    const started = await this.fleet.startSlot({ ...svc, replicas: missing }, color, rec.release, this.apiUrl, this.orchestrator.instanceEnvFor(svc));
    const r = await waitHealthy(started.map((i) => ({ id: i.id, host: i.host, port: i.port })), svc.health, { deadline: Date.now() + svc.deployTimeoutMs, isAlive: (id) => this.fleet.isAlive(id) });
    if (r.ok) this.fleet.markReady(started);
    else {
      // Never healthy: out they go, and healing takes over with its backoff.
      await this.fleet.stop(started.filter((i) => this.fleet.isAlive(i.id)), svc.stopTimeoutMs);
      for (const inst of started) this.supervisor.lost(inst, "did not turn healthy after the agent restarted it");
    }
  }

  /** The API and the Consul API, bound since the start, now answer; agent.json and agent.pid say so. */
  private async listen(server: http.Server): Promise<void> {
    server.removeAllListeners("request");
    server.on("request", createApi(this));
    this.consul?.serve(this);
    await this.writeAgentInfo();
    await writeAgentSpec(this.spec);
    fs.writeFileSync(path.join(this.spec.stateDir, "agent.pid"), `${process.pid}\n`);
    this.log.info("agent.listening", `agent (pid ${process.pid}) API on ${this.apiUrl}`, { data: { api: this.apiUrl } });
    if (this.consul) this.log.child("api").info("consul.listening", `Consul API (read side) on ${this.consul.url}`, { data: { url: this.consul.url } });
  }

  /** What the metrics read at each scrape: never stale, nothing kept apart. */
  private metricsSource(): MetricsSource {
    return {
      liveReleases: async () => {
        const out = [];
        for (const name of Object.keys(this.spec.services)) {
          const slot = await this.records.color(name);
          const rec = slot ? await this.records.slot(name, slot) : undefined;
          if (slot && rec) out.push({ service: name, slot, release: rec.release });
        }
        return out;
      },
      degraded: async () => {
        const out = [];
        for (const name of Object.keys(this.spec.services)) if (await this.records.degraded(name)) out.push(name);
        return out;
      },
      instances: () => this.fleet.list().map((i) => ({ service: i.service, state: (this.monitor.state(i.id)?.status ?? "unknown") as HealthState })),
      proxyMetrics: async () => (this.proxy.current.metrics ? this.proxy.current.metrics() : undefined),
    };
  }

  private async writeAgentInfo(): Promise<void> {
    const addr = this.server?.address() as { port: number } | undefined;
    const info: AgentInfo = { pid: process.pid, api: { host: this.spec.agent.host, port: addr?.port ?? this.spec.agent.port }, proxy: { host: this.spec.proxy.host, port: this.proxy.listenPort, pid: this.proxy.pid }, startedAt: this.startedAt };
    await writeFileAtomic(path.join(this.spec.stateDir, AGENT_FILE), JSON.stringify(info, null, 2));
  }

  /** Stops the agent. With everything, also stops every instance and the proxy (`turquoise down`). */
  async close(opts: { everything?: boolean } = {}): Promise<void> {
    this.closing ??= (async () => {
      this.monitor.stop();
      this.supervisor.stop();
      // First no new watch runs; then hooks, smoke checks and watch handlers still running end
      // with the agent, process groups and all.
      const watchesStopped = this.watches.stop();
      await endRunningCommands();
      await watchesStopped;
      this.registry.close();
      this.routeFollower?.stop();
      this.deployTokens.stop();
      await this.orchestrator.stopTimers();
      await this.consul?.close();
      for (const server of [this.server, this.metricsServer]) {
        if (!server) continue;
        server.closeAllConnections();
        await new Promise<void>((r) => server.close(() => r()));
      }
      fs.rmSync(path.join(this.spec.stateDir, "agent.pid"), { force: true });
      if (opts.everything) {
        for (const svc of Object.values(this.spec.services)) await this.fleet.stop(this.fleet.list(svc.name), svc.stopTimeoutMs);
        // And what no record names (a start under way, an orphan): `down` checks again after the agent is gone.
        // Agents sharing etcd share their instances' mark: one that does not lead leaves the leader's alone.
        const swept = !this.leadership.shared || this.leads
          ? await this.fleet.sweep({ stopTimeoutMs: (inst) => this.spec.services[inst.service]?.stopTimeoutMs ?? ORPHAN_STOP_TIMEOUT_MS })
          : { failed: [] };
        for (const { instance, reason } of swept.failed) this.event(instance.service, "instance.stop-failed", `could not stop ${instance.id}: ${reason}`, { instance: { ...instance }, reason });
        await stopDataPlane(proxyOptions(this.spec));
      }
      fs.rmSync(path.join(this.spec.stateDir, AGENT_FILE), { force: true });
      // A leader lets go of its lock on the way out: another agent takes over at once, not after the TTL.
      await this.leadership.stop();
      await this.store.close();
      this.resolveClosed();
    })();
    return this.closing;
  }
}

/** The API's socket, bound before the agent starts anything; it answers 503 until the agent is ready. */
interface BoundApi {
  server: http.Server;
  port: number;
  close(): Promise<void>;
}

async function bindApi(spec: Spec): Promise<BoundApi> {
  const server = http.createServer((_req, res) => {
    res.writeHead(503, { "content-type": "application/json", "retry-after": "1" });
    res.end(JSON.stringify({ error: { code: "AGENT_UNREACHABLE", message: "the agent is starting: try again in a moment" } }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e: NodeJS.ErrnoException) =>
      reject(e.code === "EADDRINUSE" ? new TurquoiseError("CONFLICT", `the agent cannot listen on ${spec.agent.host}:${spec.agent.port}: address in use (set agent.listen in ${spec.file})`) : e),
    );
    server.listen(spec.agent.port, spec.agent.host, () => resolve());
  });
  const addr = server.address();
  return {
    server,
    port: addr && typeof addr === "object" ? addr.port : spec.agent.port,
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}

/**
 * Every agent event: a log line, a row in the Store's event log, and a push to the event stream.
 * The recorded event is scrubbed as the log line is: no secret reaches /v1/events either.
 */
function eventLog(store: Store, registry: Registry, log: Logger, leads: () => boolean): EventLog {
  return (service, type, message, data = {}) => {
    log.event(service, type, message, data);
    // Only the leader writes the shared event log: an agent that does not lead (or no longer does) writes nothing to the store.
    if (!leads()) return;
    const scrubbed = { service, type, message: log.scrubber.text(message), data: log.scrubber.fields(data) as Record<string, unknown> };
    void store.appendEvent(scrubbed).then((e) => registry.publish(e), () => undefined);
  };
}

/** The /metrics listener of metrics.listen, with its token; a port in use is the spec's to change. */
async function listenMetrics(spec: Spec, metrics: AgentMetrics, token: string | undefined, agentLog: Logger): Promise<http.Server> {
  const where = spec.metrics!;
  const log = agentLog.child("metrics");
  let server: http.Server;
  try {
    server = await startMetricsServer({ host: where.host, port: where.port, token, render: () => metrics.render(), contentType: metrics.contentType, log: (line) => log.error("metrics.scrape-failed", line) });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EADDRINUSE") throw e;
    throw new TurquoiseError("CONFLICT", `the metrics endpoint cannot listen on ${where.host}:${where.port}: address in use (set metrics.listen in ${spec.file})`);
  }
  const url = `http://${where.host.includes(":") ? `[${where.host}]` : where.host}:${where.port}/metrics`;
  log.info("metrics.listening", `metrics on ${url}${token ? " (bearer token from metrics.token_file)" : ""}`, { data: { url } });
  return server;
}

/** The runtimes the spec's services run on, as the runtime factory takes them. */
export function runtimeDrivers(spec: Spec): string[] {
  return Object.values(spec.services).map((s) => s.runtime);
}

/** The spec's proxy block as the proxy factory takes it. */
export function proxyOptions(spec: Spec): ProxyOptions {
  return { ...spec.proxy, stateDir: spec.stateDir, specFile: spec.file };
}

async function refuseSecondAgent(spec: Spec): Promise<void> {
  const info = readAgentInfo(spec.stateDir);
  if (!info || info.pid === process.pid || !pidAlive(info.pid)) return;
  throw new TurquoiseError("CONFLICT", `an agent is already running for ${spec.file} (pid ${info.pid}, API http://${info.api.host}:${info.api.port}); run \`turquoise down\` first`);
}

export function readAgentInfo(stateDir: string): AgentInfo | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(stateDir, AGENT_FILE), "utf8")) as AgentInfo;
  } catch {
    return undefined;
  }
}
