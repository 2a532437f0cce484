// Continuous health checks of every running instance, with its service's settings. A status
// change moves the instance in or out of the proxy's rotation; `status` shows each check's state.
import { CheckState, runHealthCheck } from "../health/checks.js";
import type { Proxy } from "../proxy/contract.js";
import type { InstanceInfo } from "../runtime/contract.js";
import type { Spec } from "../spec/types.js";
import type { Fleet } from "../deploy/fleet.js";

export class HealthMonitor {
  private readonly states = new Map<string, CheckState>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  /** Upstreams the proxy took out of rotation by itself (refused or reset): back in on their next passing check. */
  private readonly passivelyDown = new Set<string>();
  private stopped = false;

  constructor(
    private readonly spec: Spec,
    private readonly fleet: Fleet,
    private readonly proxy: Proxy,
    private readonly event: (service: string, type: string, message: string) => void,
    private readonly watched: (inst: InstanceInfo) => Promise<boolean>,
    private readonly on: { changed?: () => void; critical?: (inst: InstanceInfo) => void } = {},
  ) {}

  /**
   * Starts checking the live and warm instances the monitor does not know yet, and forgets the
   * others. A preview slot's instances belong to the deploy, which checks them itself.
   */
  async sync(): Promise<void> {
    if (this.stopped) return;
    const running = new Map<string, InstanceInfo>();
    for (const i of this.fleet.list()) if (await this.watched(i)) running.set(i.id, i);
    for (const [id, timer] of this.timers) {
      if (!running.has(id)) {
        clearTimeout(timer);
        this.timers.delete(id);
        this.states.delete(id);
      }
    }
    for (const inst of running.values()) if (!this.timers.has(inst.id)) this.schedule(inst, 0);
  }

  state(id: string): CheckState | undefined {
    return this.states.get(id);
  }

  /** The proxy saw this instance refuse or reset a connection: check it now rather than at its interval. */
  passiveDown(id: string): void {
    const inst = this.fleet.list().find((i) => i.id === id);
    if (!inst || !this.timers.has(id)) return;
    this.passivelyDown.add(id);
    clearTimeout(this.timers.get(id));
    this.schedule(inst, 0);
  }

  /** Tells a freshly (re)started proxy which instances are out of rotation. */
  async pushMarks(): Promise<void> {
    for (const [id, state] of this.states) if (state.status === "critical") await this.proxy.setUpstreamHealth(id, false).catch(() => undefined);
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  private schedule(inst: InstanceInfo, delayMs: number): void {
    const svc = this.spec.services[inst.service];
    if (!svc || this.stopped) return;
    const timer = setTimeout(async () => {
      if (!this.fleet.isAlive(inst.id)) return void this.sync();
      let state = this.states.get(inst.id);
      if (!state) {
        // Every instance the fleet runs passed its health checks to get there: it starts passing.
        state = new CheckState(svc.health, "passing");
        this.states.set(inst.id, state);
      }
      const before = state.status;
      let result = await runHealthCheck(inst, svc.health);
      if (result.status === "passing") {
        // A Docker HEALTHCHECK that says unhealthy overrides a passing check of ours.
        const rt = await this.fleet.runtime(inst).inspect(inst).catch(() => undefined);
        if (rt?.running && rt.health === "unhealthy") result = { ...result, status: "critical", output: "the image's HEALTHCHECK reports unhealthy" };
      }
      state.record(result);
      // This very check must pass: the status alone may still read passing below failures_before_critical.
      if (result.status === "passing" && state.status === "passing" && this.passivelyDown.delete(inst.id)) {
        await this.proxy.setUpstreamHealth(inst.id, true).catch(() => undefined);
        this.event(inst.service, "check.back", `${inst.id} passes again: back in rotation after the proxy took it out`);
      }
      if (state.status !== before && this.fleet.isAlive(inst.id)) {
        const inRotation = state.status !== "critical";
        this.event(inst.service, "check.changed", `${inst.id} ${before} → ${state.status}`);
        await this.proxy.setUpstreamHealth(inst.id, inRotation).catch(() => undefined);
        this.on.changed?.();
        if (state.status === "critical") this.on.critical?.(inst);
      }
      if (this.timers.has(inst.id)) this.schedule(inst, svc.health.intervalMs);
    }, delayMs);
    timer.unref();
    this.timers.set(inst.id, timer);
  }
}
