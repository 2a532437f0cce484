// The fleet: which instances run, per service and slot. It starts and stops them through each
// service's runtime and records each one in the Store, so that an agent that restarts can find them:
// recorded as starting before the start, as started (pid and start time) after it. Whatever a crash
// in between leaves running carries its id, and sweep() finds and stops it.
import path from "node:path";
import { TurquoiseError, errorMessage } from "../errors.js";
import type { AdoptResult, InstanceInfo, ReleaseDescription, Runtime, Slot } from "../runtime/contract.js";
import { newInstanceId } from "../runtime/identity.js";
import { sweepMarked, type SweepResult } from "../runtime/sweep.js";
import type { ServiceSpec } from "../spec/types.js";
import { crashPoint } from "../util/failpoint.js";
import type { InstanceIntent, Records } from "./records.js";

/** An orphan is in no rotation: it gets this long to exit on SIGTERM before the SIGKILL. */
export const ORPHAN_STOP_TIMEOUT_MS = 1_000;

/**
 * The failpoints (util/failpoint.ts) around one instance's start, in order; with the
 * orchestrator's (after the lock, after each journaled step, after the journal is cleared) they
 * cover every boundary between the lock, the journal, the records and the runtime.
 */
export const START_FAILPOINTS = {
  /** The journal says the start began; nothing of this instance is recorded or running. */
  beforeIntent: "instance-unrecorded",
  /** Recorded as starting; nothing started. */
  recorded: "instance-recorded",
  /** Running, with its marks; recorded only as starting. */
  started: "instance-started",
  /** Recorded as started; the journal does not say the start step is done. */
  marked: "instance-marked",
} as const;

/** What the agent's sweep did: orphans stopped, intents dropped, and what it could not stop. */
export interface FleetSweep extends SweepResult {
  /** Instances recorded as starting by an agent that died before it recorded them as started. */
  abandoned: InstanceIntent[];
}

const REMEMBERED_EXITS = 1_000;

/** restarting: the runtime brings the instance back itself under the same id (swarm); it stays in the fleet, out of rotation. */
export type ExitListener = (inst: InstanceInfo, exitCode: number | null, signal: string | null, restarting: boolean) => void;
/** An instance the runtime restarted itself, at its new address; not ready until it passes its checks again. */
export type RestartListener = (inst: InstanceInfo) => void;

export class Fleet {
  private readonly running = new Map<string, InstanceInfo>();
  private readonly stopping = new Set<string>();
  /** Instances that passed their first health checks (or were adopted running): the monitor watches only these. */
  private readonly ready = new Set<string>();
  private readonly exitListeners = new Set<ExitListener>();
  private readonly restartListeners = new Set<RestartListener>();
  /** Instances whose run ended and that their runtime restarts itself: not alive until it has. */
  private readonly between = new Set<string>();
  /** How recent instances ended, for a failed deploy to say so; bounded. */
  /** Intents of starts under way in this agent: not abandoned, whatever a sweep meanwhile finds. */
  private readonly starting = new Set<string>();
  private readonly exits = new Map<string, { exitCode: number | null; signal: string | null }>();

  constructor(
    /** By name: "process", "docker". */
    private readonly runtimes: Record<string, Runtime>,
    private readonly records: Records,
    private readonly specDir: string,
    /** Given to every instance, under the service's own env. */
    private readonly commonEnv: Record<string, string> = {},
    /**
     * Called at each of START_FAILPOINTS: in-process tests end the agent there, as the orchestrator's
     * failpoint does. By default, the TURQUOISE_CRASH_AFTER failpoints.
     */
    private readonly failpoint: (point: string) => void = crashPoint,
  ) {
    for (const runtime of Object.values(runtimes)) {
      runtime.onExit(({ instance, exitCode, signal, restarting }) => {
        this.exits.set(instance.id, { exitCode, signal });
        if (this.exits.size > REMEMBERED_EXITS) this.exits.delete(this.exits.keys().next().value!);
        this.ready.delete(instance.id);
        if (restarting) {
          // Still the slot's: its record stays, and its runtime reports its next run. Heard once,
          // though a runtime registered under two names reports it twice.
          if (!this.running.has(instance.id) || this.stopping.has(instance.id) || this.between.has(instance.id)) return;
          this.between.add(instance.id);
          for (const l of this.exitListeners) l(instance, exitCode, signal, true);
          return;
        }
        this.between.delete(instance.id);
        if (!this.running.delete(instance.id)) return;
        // A refusal (this agent no longer leads, etcd is down) is logged by the store; the leader's adoption drops the record.
        this.records.removeInstance(instance).catch(() => undefined);
        if (this.stopping.has(instance.id)) return;
        for (const l of this.exitListeners) l(instance, exitCode, signal, false);
      });
      runtime.slots?.onRestarted(({ instance }) => {
        const known = this.running.get(instance.id);
        if (!known || this.stopping.has(instance.id)) return;
        if (known.host === instance.host && known.port === instance.port && known.startedAt === instance.startedAt && !this.between.has(instance.id)) return;
        const inst = { ...instance, runtime: runtime.name };
        this.between.delete(inst.id);
        this.ready.delete(inst.id);
        this.running.set(inst.id, inst);
        // Its new address, for a restarted agent; a refusal is logged by the store, as above.
        this.records.addInstance(inst).catch(() => undefined);
        for (const l of this.restartListeners) l(inst);
      });
    }
  }

  /** The runtime that runs an instance (recorded with it) or a service. */
  runtime(of: InstanceInfo | ServiceSpec): Runtime {
    const name = "slot" in of ? (of.runtime ?? "process") : of.runtime;
    const r = this.runtimes[name];
    if (!r) throw new TurquoiseError("INTERNAL", `no ${name} runtime in this agent`);
    return r;
  }

  /** Called when an instance exits without being asked to. */
  onUnexpectedExit(listener: ExitListener): () => void {
    this.exitListeners.add(listener);
    return () => this.exitListeners.delete(listener);
  }

  /** Called when a runtime that restarts instances itself has brought one back (its new address in inst). */
  onRestarted(listener: RestartListener): () => void {
    this.restartListeners.add(listener);
    return () => this.restartListeners.delete(listener);
  }

  /** Whether the instance's runtime restarts it itself (swarm): healing then follows, and starts no replacement. */
  restartsItself(inst: InstanceInfo): boolean {
    return !!this.runtime(inst).slots;
  }

  /** Ends a run so that the runtime restarts the instance (a critical one, on swarm). */
  restart(inst: InstanceInfo, stopTimeoutMs: number): Promise<void> {
    const slots = this.runtime(inst).slots;
    if (!slots) throw new TurquoiseError("INTERNAL", `the ${this.runtime(inst).name} runtime does not restart instances itself`);
    return slots.restart(inst, stopTimeoutMs);
  }

  list(service?: string, slot?: Slot): InstanceInfo[] {
    return [...this.running.values()].filter((i) => (!service || i.service === service) && (!slot || i.slot === slot));
  }

  /** Running now: false between two runs of an instance its runtime restarts. */
  isAlive(id: string): boolean {
    return this.running.has(id) && !this.between.has(id);
  }

  markReady(instances: InstanceInfo[]): void {
    for (const i of instances) if (this.running.has(i.id)) this.ready.add(i.id);
  }

  isReady(id: string): boolean {
    return this.ready.has(id) && this.running.has(id);
  }

  releaseDir(svc: ServiceSpec, release: string): string {
    return path.resolve(this.specDir, svc.cwd.replaceAll("{release}", release));
  }

  image(svc: ServiceSpec, release: string): string | undefined {
    return svc.image?.replaceAll("{release}", release);
  }

  /** Whether the release can start, and the schema range it declares. */
  describeRelease(svc: ServiceSpec, release: string): Promise<ReleaseDescription> {
    const image = this.image(svc, release);
    return this.runtime(svc).describeRelease({ service: svc.name, release, cwd: this.releaseDir(svc, release), ...(image ? { image } : {}) });
  }

  logs(inst: InstanceInfo, tailLines: number): Promise<string> {
    return this.runtime(inst).logs(inst, { tailLines });
  }

  /**
   * Starts svc.replicas instances of release in slot. On a failed start, stops the ones that did
   * start. Each is recorded before it starts (intent), then as started: a crash at any point leaves
   * either nothing running or a record naming what runs.
   */
  async startSlot(svc: ServiceSpec, slot: Slot, release: string, apiUrl: string, extraEnv: Record<string, string> = {}): Promise<InstanceInfo[]> {
    const runtime = this.runtime(svc);
    const image = this.image(svc, release);
    const req = {
      service: svc.name, slot, release, command: svc.command, cwd: this.releaseDir(svc, release), env: { ...this.commonEnv, ...svc.env, ...extraEnv }, apiUrl,
      envPassthrough: svc.envPassthrough,
      stopTimeoutMs: svc.stopTimeoutMs, ...(image ? { image } : {}), ...(svc.network ? { network: svc.network } : {}),
      ...(svc.volumes ? { volumes: svc.volumes } : {}), ...(svc.placement ? { placement: svc.placement } : {}), ...(svc.resources ? { resources: svc.resources } : {}),
    };
    const intentOf = (): InstanceIntent => ({ id: newInstanceId(svc.name, slot), service: svc.name, slot, release, runtime: runtime.name, state: "starting", recordedAt: Date.now() });
    /** Recorded as started: its record names what runs. */
    const recordStarted = async (started: InstanceInfo): Promise<InstanceInfo> => {
      const inst = { ...started, runtime: runtime.name };
      this.failpoint(START_FAILPOINTS.started);
      this.running.set(inst.id, inst);
      await this.records.addInstance(inst);
      this.failpoint(START_FAILPOINTS.marked);
      // It exited while its record was being written: the exit's removal may have come first.
      if (!this.running.has(inst.id)) await this.records.removeInstance(inst);
      return inst;
    };
    const slots = runtime.slots;
    if (slots) {
      // The whole slot in one go (swarm: one service of svc.replicas tasks), every intent recorded first.
      const intents: InstanceIntent[] = [];
      try {
        for (let i = 0; i < svc.replicas; i++) {
          const intent = intentOf();
          this.failpoint(START_FAILPOINTS.beforeIntent);
          this.starting.add(intent.id);
          intents.push(intent);
          await this.records.addIntent(intent);
          this.failpoint(START_FAILPOINTS.recorded);
        }
        let started: InstanceInfo[];
        try {
          started = await slots.start(intents.map((intent) => ({ ...req, id: intent.id })));
        } catch (e) {
          for (const intent of intents) await this.records.removeInstance(intent);
          throw e;
        }
        const ok: InstanceInfo[] = [];
        for (const inst of started) ok.push(await recordStarted(inst));
        return ok;
      } finally {
        for (const intent of intents) this.starting.delete(intent.id);
      }
    }
    const started = await Promise.allSettled(
      Array.from({ length: svc.replicas }, async () => {
        const intent = intentOf();
        this.failpoint(START_FAILPOINTS.beforeIntent);
        this.starting.add(intent.id);
        try {
          await this.records.addIntent(intent);
          this.failpoint(START_FAILPOINTS.recorded);
          let inst: InstanceInfo;
          try {
            inst = await runtime.start({ ...req, id: intent.id });
          } catch (e) {
            await this.records.removeInstance(intent);
            throw e;
          }
          return await recordStarted(inst);
        } finally {
          this.starting.delete(intent.id);
        }
      }),
    );
    const ok = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) {
      await this.stop(ok, svc.stopTimeoutMs);
      throw failed.reason;
    }
    return ok;
  }

  /** SIGTERM, then SIGKILL after stopTimeoutMs; returns how many had to be killed. */
  /**
   * Stops instances, each to the end, and forgets the ones that stopped. One whose runtime could not
   * stop it keeps its record and its place in the fleet, so that a later stop finds it: the call
   * then rejects, naming each failure, once every other instance was stopped.
   */
  async stop(instances: InstanceInfo[], stopTimeoutMs: number): Promise<{ killed: number }> {
    let killed = 0;
    const failed: string[] = [];
    // One that is already being stopped (by a deploy, or by healing) is left to that stop.
    const mine = instances.filter((inst) => !this.stopping.has(inst.id));
    for (const inst of mine) this.stopping.add(inst.id);
    const stopped = async (inst: InstanceInfo, r: PromiseSettledResult<{ killed: boolean }>) => {
      this.stopping.delete(inst.id);
      if (r.status === "rejected") return void failed.push(`${inst.id}: ${errorMessage(r.reason)}`);
      if (r.value.killed) killed++;
      this.running.delete(inst.id);
      this.ready.delete(inst.id);
      this.between.delete(inst.id);
      await this.records.removeInstance(inst);
    };
    // Runtimes with slots stop a slot's instances in one go (swarm: a slot left empty is removed); the others one by one.
    const byRuntime = new Map<Runtime, InstanceInfo[]>();
    for (const inst of mine) byRuntime.set(this.runtime(inst), [...(byRuntime.get(this.runtime(inst)) ?? []), inst]);
    await Promise.all([...byRuntime].map(async ([runtime, list]) => {
      if (runtime.slots) {
        const results = await runtime.slots.stop(list, stopTimeoutMs).catch((e: unknown) => list.map((): PromiseSettledResult<{ killed: boolean }> => ({ status: "rejected", reason: e })));
        for (const [i, inst] of list.entries()) await stopped(inst, results[i]!);
        return;
      }
      await Promise.all(list.map(async (inst) => stopped(inst, await runtime.stop(inst, stopTimeoutMs).then(
        (value): PromiseSettledResult<{ killed: boolean }> => ({ status: "fulfilled", value }),
        (reason: unknown): PromiseSettledResult<{ killed: boolean }> => ({ status: "rejected", reason }),
      ))));
    }));
    if (failed.length) throw new TurquoiseError("STOP_INCOMPLETE", `could not stop ${failed.length} instance(s); they stay recorded: ${failed.join("; ")}`, { data: { failed } });
    return { killed };
  }

  /** Sends a signal to instances, through their runtime. */
  async signal(instances: InstanceInfo[], signal: NodeJS.Signals): Promise<void> {
    await Promise.all(instances.map((inst) => this.runtime(inst).signal(inst, signal)));
  }

  /**
   * Instances the runtimes find by their marks that this fleet neither started nor adopted: an
   * agent that died between starting them and recording them left them behind.
   */
  async unrecorded(): Promise<InstanceInfo[]> {
    const found: InstanceInfo[] = [];
    for (const [name, runtime] of Object.entries(this.runtimes)) {
      for (const inst of (await runtime.discover?.()) ?? []) if (!this.running.has(inst.id)) found.push({ ...inst, runtime: name });
    }
    return found;
  }

  /**
   * Stops every instance carrying this agent's marks that this fleet does not run (after adopt():
   * the orphans of a crash), and drops the intents whose instance never got recorded as started,
   * whether it appeared (then it was stopped here) or not. hold: services whose records were set
   * aside; nothing of theirs is stopped or dropped.
   */
  async sweep(opts: { hold?: (service: string) => boolean; stopTimeoutMs?: (inst: InstanceInfo) => number } = {}): Promise<FleetSweep> {
    const hold = opts.hold ?? (() => false);
    const result = await sweepMarked(this.runtimes, {
      keep: (inst) => this.running.has(inst.id) || hold(inst.service),
      stopTimeoutMs: opts.stopTimeoutMs ?? (() => ORPHAN_STOP_TIMEOUT_MS),
    });
    const abandoned: InstanceIntent[] = [];
    for (const intent of await this.records.intents()) {
      // One a start under way (in this agent) is about to record as started is not abandoned.
      if (hold(intent.service) || this.running.has(intent.id) || this.starting.has(intent.id)) continue;
      if (result.remaining.some((i) => i.id === intent.id)) continue;
      await this.records.removeInstance(intent);
      abandoned.push(intent);
    }
    return { ...result, abandoned };
  }

  /**
   * What the runtime can tell beyond a failed check: how an instance that exited ended, or, for one
   * that runs, where it listens when that is not where its check goes. undefined: nothing to add.
   */
  async diagnose(inst: InstanceInfo): Promise<string | undefined> {
    const exit = this.exits.get(inst.id);
    if (exit || !this.running.has(inst.id)) {
      if (exit?.signal) return `killed by ${exit.signal}`;
      if (exit && exit.exitCode !== null) return `exit code ${exit.exitCode}`;
      return undefined;
    }
    const sockets = await this.runtime(inst).listening?.(inst).catch(() => undefined);
    return sockets ? describeListening(sockets, inst) : undefined;
  }

  /**
   * Where a running instance listens when that is not where its check goes (another port than its
   * PORT, another address); undefined while it listens nowhere yet, or where it should.
   */
  async listeningElsewhere(inst: InstanceInfo): Promise<string | undefined> {
    if (!this.running.has(inst.id)) return undefined;
    const sockets = await this.runtime(inst).listening?.(inst).catch(() => undefined);
    return sockets && sockets.length > 0 ? describeListening(sockets, inst) : undefined;
  }

  /**
   * Re-attaches to instances recorded by an earlier agent; forgets the dead ones. A record that
   * does not prove its instance is ours (refused) is forgotten too, never signalled: the caller
   * reports it.
   */
  async adopt(): Promise<AdoptResult> {
    const recorded = await this.records.instances();
    const result: AdoptResult = { alive: [], dead: [], refused: [] };
    for (const [name, runtime] of Object.entries(this.runtimes)) {
      const mine = recorded.filter((i) => (i.runtime ?? "process") === name);
      if (mine.length === 0) continue;
      const r = await runtime.adopt(mine);
      result.alive.push(...r.alive.map((i) => ({ ...i, runtime: name })));
      result.dead.push(...r.dead);
      result.refused.push(...r.refused);
    }
    for (const inst of result.alive) {
      this.running.set(inst.id, inst);
      this.ready.add(inst.id);
    }
    for (const inst of [...result.dead, ...result.refused.map((r) => r.instance)]) await this.records.removeInstance(inst);
    return result;
  }
}

/**
 * Where an instance listens, said when its check cannot reach it there: on another port than its
 * PORT, or on its port at an address the check does not go to. undefined when it listens where it
 * should (the check's failure is then the app's answer, said by the check itself).
 */
export function describeListening(sockets: Array<{ host: string; port: number }>, inst: { host: string; port: number }): string | undefined {
  const covers = (host: string) => host === inst.host || host === "0.0.0.0" || host === "::" || host === `::ffff:${inst.host}`;
  const show = (a: { host: string; port: number }) => `${a.host.includes(":") ? `[${a.host}]` : a.host}:${a.port}`;
  if (sockets.length === 0) return `not listening on any TCP port (its $PORT is ${inst.port})`;
  if (sockets.some((a) => a.port === inst.port && covers(a.host))) return undefined;
  const list = sockets.map(show).join(", ");
  if (sockets.some((a) => a.port === inst.port)) return `listening on ${list}, which does not take the check's connections to ${show(inst)}`;
  return `listening on ${list}, not on $PORT=${inst.port}`;
}
