// An agent's world in one process, for the in-process deploy, recovery and healing tests: the
// memory store, machine and proxy outlive any one agent, as the state file, the instances and the
// proxy process outlive a real one. An agent is a runtime, a Fleet and an Orchestrator over them;
// it dies by losing its hold on all three at once, so nothing it was doing reaches the world afterwards.

import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import { spawnSync } from "node:child_process";
import { hostname, tmpdir } from "node:os";
import path from "node:path";
import { Fleet } from "../../src/deploy/fleet.js";
import { HealthMonitor } from "../../src/heal/monitor.js";
import { Supervisor } from "../../src/heal/supervisor.js";
import { Orchestrator } from "../../src/deploy/orchestrator.js";
import { AgentMetrics } from "../../src/metrics/agent.js";
import { keys, Records } from "../../src/deploy/records.js";
import type { SchemaRange } from "../../src/plan/planner.js";
import type { Proxy } from "../../src/proxy/contract.js";
import { MemoryProxy } from "../../src/proxy/memory.js";
import { SLOTS, type ExitEvent, type Runtime } from "../../src/runtime/contract.js";
import { agentIdFor } from "../../src/runtime/identity.js";
import { MemoryMachine, MemoryRuntime, releaseApp } from "../../src/runtime/memory.js";
import { loadSpecText } from "../../src/spec/loader.js";
import type { Spec } from "../../src/spec/types.js";
import type { Store } from "../../src/state/contract.js";
import { MemoryStore } from "../../src/state/memory.js";

export const SERVICE = "books";

let deadPid: number | undefined;

/**
 * Every test agent names itself as an agent whose process is gone, "<host>:<pid of a process that
 * exited>": agents in this process die without their pid dying, and recovery releases a lock only
 * when it can tell its owner's process is gone.
 */
function deadAgentId(): string {
  deadPid ??= spawnSync(process.execPath, ["-e", ""]).pid;
  return `${hostname()}:${deadPid}`;
}

/** What a dead agent gets from every call it still makes: nothing reaches the world. */
export class AgentDied extends Error {
  constructor(readonly at: string) {
    super(`the agent died (${at})`);
  }
}

export interface WorldEvent {
  service: string | null;
  type: string;
  message: string;
}

/** Called at each failpoint of the agent's flows (each journal write, each instance start's records), with the point and the agent. */
export type Failpoint = (point: string, agent: TestAgent) => void;

export interface WorldOptions {
  replicas?: number;
  /** Extra YAML lines for the service, indented under it (smoke checks, keep_previous, database...). */
  serviceYaml?: string[];
  /** The service's deploy_timeout; a test that proves a deploy fails before it makes it long. Default 700ms. */
  deployTimeout?: string;
  /** A metrics section in the spec: the route tables then ask the proxy to count by series. */
  metrics?: boolean;
  /** The agents' runtime restarts instances itself, as swarm does (the memory twin's restarts, after 100 ms). */
  restarts?: boolean;
}

export class World {
  readonly store = new MemoryStore();
  /** Where every agent of this world runs its instances; faults are injected here. */
  readonly machine = new MemoryMachine({ apps: { app: releaseApp } });
  readonly events: WorldEvent[] = [];
  /** What the agents of this world count, as a real agent with metrics.listen does. */
  readonly metrics = new AgentMetrics({ services: [SERVICE], watches: [], version: "test", processMetrics: false });
  private readonly agents: TestAgent[] = [];

  private constructor(
    readonly dir: string,
    readonly spec: Spec,
    readonly proxy: MemoryProxy,
    readonly restarts: boolean,
  ) {}

  static async create(opts: WorldOptions = {}): Promise<World> {
    const dir = await mkdtemp(path.join(tmpdir(), "tq-world-"));
    const proxy = await MemoryProxy.start();
    // Short waits throughout: each test should take well under a second or two.
    const yaml = [
      "version: 1",
      `proxy: { listen: "127.0.0.1:${proxy.port}" }`,
      "services:",
      `  ${SERVICE}:`,
      "    command: [app]",
      "    cwd: releases/{release}",
      `    replicas: ${opts.replicas ?? 2}`,
      "    route: { path: / }",
      "    health: { http: /health, interval: 50ms, timeout: 300ms, failures_before_critical: 2 }",
      `    deploy_timeout: ${opts.deployTimeout ?? "700ms"}`,
      "    drain_timeout: 300ms",
      "    stop_timeout: 200ms",
      "    bake: 200ms",
      ...(opts.serviceYaml ?? []).map((l) => `    ${l}`),
      // Never listened on here: the world's agents only count, into world.metrics.
      ...(opts.metrics ? ['metrics: { listen: "127.0.0.1:9" }'] : []),
    ].join("\n");
    const { spec, errors } = loadSpecText(`${yaml}\n`, path.join(dir, "turquoise.yml"));
    assert.deepEqual(errors, [], "the test spec is valid");
    const world = new World(dir, spec!, proxy, opts.restarts ?? false);
    for (const r of ["v1", "v2", "v3"]) await world.release(r);
    return world;
  }

  /** A release directory, with the schema range it declares when given. */
  async release(name: string, schema?: SchemaRange): Promise<void> {
    const dir = path.join(this.dir, "releases", name);
    await mkdir(dir, { recursive: true });
    if (schema) await writeFile(path.join(dir, "turquoise.json"), JSON.stringify({ schema }));
  }

  /** The marks of this world's instances: one state dir, so one agent id, whichever agent process runs. */
  get agentId(): string {
    return agentIdFor(this.spec.stateDir);
  }

  /** An agent over this world. */
  agent(): TestAgent {
    const agent = new TestAgent(this);
    this.agents.push(agent);
    return agent;
  }

  /** The release answering through the proxy's public address, or the status when none does. */
  async serving(): Promise<string> {
    return new Promise((resolve, reject) => {
      http.get({ host: this.proxy.host, port: this.proxy.port, path: "/", agent: false, timeout: 2_000 }, (res) => {
        res.resume();
        resolve(res.statusCode === 200 ? String(res.headers["x-release"]) : `HTTP ${res.statusCode}`);
      }).on("error", reject);
    });
  }

  /**
   * What an agent must never leave behind, checked against the world itself: exactly one live
   * slot running `release` (replicas of it, each recorded, each in the proxy's table, nothing else
   * running), no journal, no held deploy lock, and no history entry still "running".
   */
  async assertSettled(release: string): Promise<void> {
    const records = new Records(this.store);
    const color = await records.color(SERVICE);
    assert.ok(color, "a live color is stored");
    const live = await records.slot(SERVICE, color);
    assert.equal(live?.state, "live", `the ${color} slot is live`);
    assert.equal(live?.release, release);
    for (const slot of SLOTS) {
      if (slot === color) continue;
      const other = await records.slot(SERVICE, slot);
      assert.ok(other === undefined || other.state === "warm", `the ${slot} slot is not live nor preview: ${JSON.stringify(other)}`);
    }
    const running = this.machine.running().filter((i) => i.service === SERVICE);
    const recorded = await records.instances(SERVICE);
    const warm = new Set(SLOTS.filter((s) => s !== color));
    const inLive = running.filter((i) => i.slot === color);
    assert.equal(inLive.length, this.spec.services[SERVICE]!.replicas, `replicas of ${release} run in ${color}: ${JSON.stringify(running.map((i) => i.id))}`);
    for (const i of running) {
      assert.ok(i.slot === color ? i.release === release : warm.has(i.slot), `no orphan instance: ${i.id} (${i.release})`);
    }
    assert.deepEqual(recorded.map((i) => i.id).sort(), running.map((i) => i.id).sort(), "every running instance is recorded, and only those");
    const table = this.proxy.table();
    const route = table.routes.find((r) => r.service === SERVICE);
    assert.equal(route?.poolId, live?.poolId, "the proxy routes to the live slot's pool");
    assert.deepEqual(route?.upstreams.map((u) => u.id).sort(), inLive.map((i) => i.id).sort(), "the proxy routes to the live instances");
    assert.equal(await this.serving(), release, "the public route answers with the live release");
    assert.deepEqual(await records.journals(), [], "no journal is left");
    assert.equal(await this.store.getLock(keys.lock(SERVICE)), undefined, "no deploy lock is held");
    assert.deepEqual(this.events.filter((e) => e.type === "record.invalid").map((e) => e.message), [], "no record was set aside");
    const history = await this.store.listHistory(SERVICE);
    assert.deepEqual(history.filter((h) => h.outcome === "running").map((h) => h.id), [], "no history entry is still running");
  }

  async close(): Promise<void> {
    for (const agent of this.agents) {
      agent.die("the test ended");
      agent.own.close();
    }
    const janitor = new MemoryRuntime({ machine: this.machine, agentId: this.agentId });
    for (const instance of this.machine.running()) await janitor.stop(instance, 100);
    await this.proxy.close(100);
    await this.store.close();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** One agent: a Fleet and an Orchestrator over the world, through handles that die with it. */
export class TestAgent {
  readonly records: Records;
  readonly fleet: Fleet;
  readonly orchestrator: Orchestrator;
  /** This agent's own runtime over the world's machine: a restarted agent has nothing tracked. */
  readonly runtime: Runtime;
  /** The same, without the handle that dies with the agent. */
  readonly own: MemoryRuntime;
  readonly proxy: Proxy;
  private deadAt: string | undefined;
  private readonly unsubscribes: Array<() => void> = [];
  private healing: { monitor: HealthMonitor; supervisor: Supervisor } | undefined;

  /** Called after each journal write of this agent's flows: set it to fail or end the agent at a chosen point. */
  failpoint: Failpoint | undefined;

  private readonly world: World;
  private readonly store: Store;

  constructor(world: World) {
    this.world = world;
    const store = (this.store = this.severable(world.store));
    this.own = new MemoryRuntime({ machine: world.machine, agentId: world.agentId, ...(world.restarts ? { restarts: { delayMs: 100 } } : {}) });
    this.runtime = this.severableRuntime(this.own);
    this.proxy = this.severable(world.proxy as Proxy);
    const event = (service: string | null, type: string, message: string) => {
      if (!this.deadAt) world.events.push({ service, type, message });
    };
    this.records = new Records(store, event);
    // The spec says "process"; what the fleet records is the runtime's own name. Only one of the
    // two names discovers, or a sweep would find each instance twice.
    const asProcess = new Proxy(this.runtime, { get: (t, prop) => (prop === "discover" ? undefined : Reflect.get(t, prop, t)) });
    this.fleet = new Fleet({ process: asProcess, [this.runtime.name]: this.runtime }, this.records, world.spec.dir, {}, (point) => this.failpoint?.(point, this));
    this.orchestrator = new Orchestrator({
      spec: world.spec,
      store,
      records: this.records,
      fleet: this.fleet,
      proxy: this.proxy,
      apiUrl: "http://127.0.0.1:1",
      agentId: deadAgentId(),
      event,
      metrics: world.metrics,
      failpoint: (point) => this.failpoint?.(point, this),
    });
  }

  get dead(): boolean {
    return this.deadAt !== undefined;
  }

  /**
   * The agent dies now: every call it makes from here on fails without reaching the world, it
   * hears of no exit, and its timers stop. Returns the error to throw from a failpoint.
   */
  die(at: string): AgentDied {
    this.deadAt ??= at;
    for (const off of this.unsubscribes.splice(0)) off();
    void this.orchestrator.stopTimers();
    this.healing?.monitor.stop();
    this.healing?.supervisor.stop();
    return new AgentDied(this.deadAt);
  }

  /**
   * What the agent does at start (agent.ts reconcile): adopt the recorded instances, stop the ones
   * that carry its marks but no record, finish or undo journaled flows, re-apply the routes.
   */
  async start(): Promise<string[]> {
    const adopted = await this.fleet.adopt();
    assert.deepEqual(adopted.refused, [], "every recorded instance is one the machine runs or ran");
    const swept = await this.fleet.sweep();
    assert.deepEqual(swept.failed, [], "every orphan could be stopped");
    const notes = [...swept.stopped.map((i) => `stopped orphan ${i.id}`), ...swept.abandoned.map((i) => `dropped intent ${i.id}`)];
    notes.push(...(await this.orchestrator.recover()));
    await this.orchestrator.applyRoutes();
    // A flow recover() resumed runs in the background: let it finish.
    await this.orchestrator.stopTimers();
    return notes;
  }

  /**
   * Self-healing, wired as agent.ts wires it: an unexpected exit takes the instance out of
   * rotation and is replaced; a check gone critical stops the instance, which is replaced too.
   */
  heal(): { monitor: HealthMonitor; supervisor: Supervisor } {
    if (this.healing) return this.healing;
    const { spec } = this.world;
    const event = (service: string | null, type: string, message: string) => {
      if (!this.deadAt) this.world.events.push({ service, type, message });
    };
    const supervisor = new Supervisor({
      spec, store: this.store, records: this.records, fleet: this.fleet, routes: this.orchestrator.routes, apiUrl: () => "http://127.0.0.1:1", agentId: deadAgentId(), event,
      fallBack: (service, why) => this.orchestrator.rollbackIfSafe(service, why),
      metrics: this.world.metrics,
    });
    const monitor = new HealthMonitor(spec, this.fleet, this.proxy, event, async (inst) => {
      if (!this.fleet.isReady(inst.id)) return false;
      const rec = await this.records.slot(inst.service, inst.slot);
      return rec?.release === inst.release && (rec.state === "live" || rec.state === "warm");
    }, {
      critical: (inst) => void supervisor.critical(inst),
    });
    this.unsubscribes.push(this.fleet.onUnexpectedExit((inst, code, signal, restarting) => {
      void this.proxy.setUpstreamHealth(inst.id, false).catch(() => undefined);
      event(inst.service, "instance.exited", `${inst.id} exited unexpectedly: ${signal ?? `code ${code}`}`);
      void monitor.sync();
      supervisor.lost(inst, "exited", restarting);
    }));
    this.unsubscribes.push(this.fleet.onRestarted((inst) => supervisor.rejoin(inst)));
    this.healing = { monitor, supervisor };
    return this.healing;
  }

  /** Each method of target, failing with AgentDied once the agent is dead. */
  private severable<T extends object>(target: T): T {
    return new Proxy(target, {
      get: (t, prop) => {
        const value = Reflect.get(t, prop, t) as unknown;
        if (typeof value !== "function") return value;
        return (...args: unknown[]) => {
          if (this.deadAt) return Promise.reject(new AgentDied(this.deadAt));
          return (value as (...a: unknown[]) => unknown).apply(t, args);
        };
      },
    });
  }

  /** The same for a runtime, whose exit listeners also go deaf when the agent dies. */
  private severableRuntime(runtime: Runtime): Runtime {
    const calls = this.severable(runtime);
    const onExit = (listener: (e: ExitEvent) => void): (() => void) => {
      const off = runtime.onExit((e) => {
        if (!this.deadAt) listener(e);
      });
      this.unsubscribes.push(off);
      return off;
    };
    return new Proxy(calls, { get: (t, prop) => (prop === "onExit" ? onExit : Reflect.get(t, prop, t)) }) as Runtime;
  }
}
