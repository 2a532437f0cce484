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
  private stopped = false;

  constructor(
    private readonly spec: Spec,
    private readonly fleet: Fleet,
    private readonly proxy: Proxy,
    private readonly event: (service: string, type: string, message: string) => void,
  ) {}

  /** Starts checking instances the monitor does not know yet, and forgets the gone ones. */
  sync(): void {
    if (this.stopped) return;
    const running = new Map(this.fleet.list().map((i) => [i.id, i]));
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

  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  private schedule(inst: InstanceInfo, delayMs: number): void {
    const svc = this.spec.services[inst.service];
    if (!svc || this.stopped) return;
    const timer = setTimeout(async () => {
      if (!this.fleet.isAlive(inst.id)) return this.sync();
      let state = this.states.get(inst.id);
      if (!state) {
        state = new CheckState(svc.health);
        this.states.set(inst.id, state);
      }
      const before = state.status;
      state.record(await runHealthCheck(inst, svc.health));
      if (state.status !== before && this.fleet.isAlive(inst.id)) {
        const inRotation = state.status !== "critical";
        this.event(inst.service, "check.changed", `${inst.id} ${before} → ${state.status}`);
        await this.proxy.setUpstreamHealth(inst.id, inRotation).catch(() => undefined);
      }
      if (this.timers.has(inst.id)) this.schedule(inst, svc.health.intervalMs);
    }, delayMs);
    timer.unref();
    this.timers.set(inst.id, timer);
  }
}
