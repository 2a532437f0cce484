// The fleet: which instances run, per service and slot. It starts and stops them through each
// service's runtime and records each one in the Store, so that an agent that restarts can find them.
import path from "node:path";
import { TurquoiseError } from "../errors.js";
import type { AdoptResult, InstanceInfo, ReleaseDescription, Runtime, Slot } from "../runtime/contract.js";
import type { ServiceSpec } from "../spec/types.js";
import type { Records } from "./records.js";

export type ExitListener = (inst: InstanceInfo, exitCode: number | null, signal: string | null) => void;

export class Fleet {
  private readonly running = new Map<string, InstanceInfo>();
  private readonly stopping = new Set<string>();
  /** Instances that passed their first health checks (or were adopted running): the monitor watches only these. */
  private readonly ready = new Set<string>();
  private readonly exitListeners = new Set<ExitListener>();

  constructor(
    /** By name: "process", "docker". */
    private readonly runtimes: Record<string, Runtime>,
    private readonly records: Records,
    private readonly specDir: string,
    /** Given to every instance, under the service's own env. */
    private readonly commonEnv: Record<string, string> = {},
  ) {
    for (const runtime of Object.values(runtimes)) {
      runtime.onExit(({ instance, exitCode, signal }) => {
        this.ready.delete(instance.id);
        if (!this.running.delete(instance.id)) return;
        void this.records.removeInstance(instance);
        if (this.stopping.has(instance.id)) return;
        for (const l of this.exitListeners) l(instance, exitCode, signal);
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

  /**
   * Instances the runtimes find by themselves that this fleet neither started nor adopted: an
   * agent that died between starting them and recording them left them behind.
   */
  async unrecorded(): Promise<InstanceInfo[]> {
    const found: InstanceInfo[] = [];
    for (const [name, runtime] of Object.entries(this.runtimes)) {
      for (const inst of (await runtime.discover?.()) ?? []) if (!this.running.has(inst.id)) found.push({ ...inst, runtime: name });
    }
    return found;
  }

  /** Called when an instance exits without being asked to. */
  onUnexpectedExit(listener: ExitListener): () => void {
    this.exitListeners.add(listener);
    return () => this.exitListeners.delete(listener);
  }

  list(service?: string, slot?: Slot): InstanceInfo[] {
    return [...this.running.values()].filter((i) => (!service || i.service === service) && (!slot || i.slot === slot));
  }

  isAlive(id: string): boolean {
    return this.running.has(id);
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

  /** Starts svc.replicas instances of release in slot. On a failed start, stops the ones that did start. */
  async startSlot(svc: ServiceSpec, slot: Slot, release: string, apiUrl: string, extraEnv: Record<string, string> = {}): Promise<InstanceInfo[]> {
    const runtime = this.runtime(svc);
    const image = this.image(svc, release);
    const req = {
      service: svc.name, slot, release, command: svc.command, cwd: this.releaseDir(svc, release), env: { ...this.commonEnv, ...svc.env, ...extraEnv }, apiUrl,
      envPassthrough: svc.envPassthrough,
      stopTimeoutMs: svc.stopTimeoutMs, ...(image ? { image } : {}), ...(svc.network ? { network: svc.network } : {}),
    };
    const started = await Promise.allSettled(
      Array.from({ length: svc.replicas }, async () => {
        const inst = { ...(await runtime.start(req)), runtime: runtime.name };
        this.running.set(inst.id, inst);
        await this.records.addInstance(inst);
        return inst;
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
  async stop(instances: InstanceInfo[], stopTimeoutMs: number): Promise<{ killed: number }> {
    let killed = 0;
    await Promise.all(
      // One that is already being stopped (by a deploy, or by healing) is left to that stop.
      instances.filter((inst) => !this.stopping.has(inst.id)).map(async (inst) => {
        this.stopping.add(inst.id);
        try {
          if ((await this.runtime(inst).stop(inst, stopTimeoutMs)).killed) killed++;
        } finally {
          this.running.delete(inst.id);
          this.ready.delete(inst.id);
          this.stopping.delete(inst.id);
          await this.records.removeInstance(inst);
        }
      }),
    );
    return { killed };
  }

  /** Sends a signal to instances, through their runtime. */
  async signal(instances: InstanceInfo[], signal: NodeJS.Signals): Promise<void> {
    await Promise.all(instances.map((inst) => this.runtime(inst).signal(inst, signal)));
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
