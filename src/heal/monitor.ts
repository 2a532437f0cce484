// Continuous health checks of every running instance, with its service's settings. A status
// change moves the instance in or out of the proxy's rotation; `status` shows each check's state.
import { CheckConnection, CheckState, runHealthCheck } from "../health/checks.js";
import type { Proxy } from "../proxy/contract.js";
import type { InstanceInfo } from "../runtime/contract.js";
import type { Spec } from "../spec/types.js";
import type { Fleet } from "../deploy/fleet.js";
import type { Records, SlotRecord } from "../deploy/records.js";

/**
 * Checks are due on a grid of this many ms, so the checks of many instances run in one turn of the
 * event loop instead of one wake-up each (half of the cost at 400 checks a second, bench:scale).
 * An interval may so run up to this much shorter or longer.
 */
export const CHECK_TICK_MS = 100;

/** The delay from now to the first tick at or after now + delayMs (at least 1 ms when that is now: never a busy loop). */
export function onTick(delayMs: number, now = Date.now()): number {
  const due = now + delayMs;
  return Math.max(delayMs > 0 ? 1 : 0, Math.ceil(due / CHECK_TICK_MS) * CHECK_TICK_MS - now);
}

/**
 * The instances the monitor checks: ready, and of the release their slot's record names while that
 * slot is live or warm (a preview belongs to its deploy, which checks it itself). Each slot record
 * is read once: with 100 services the monitor's sync every second read 400 of them, one per
 * instance, on the event loop a flip waits for (bench:scale).
 */
export async function checkedInstances(instances: InstanceInfo[], fleet: Pick<Fleet, "isReady">, records: Pick<Records, "slot">): Promise<InstanceInfo[]> {
  const slots = new Map<string, Promise<SlotRecord | undefined>>();
  const out: InstanceInfo[] = [];
  for (const inst of instances) {
    if (!fleet.isReady(inst.id)) continue;
    const key = `${inst.service}/${inst.slot}`;
    let rec = slots.get(key);
    if (!rec) slots.set(key, (rec = records.slot(inst.service, inst.slot)));
    const r = await rec;
    if (r?.release === inst.release && (r.state === "live" || r.state === "warm")) out.push(inst);
  }
  return out;
}

export class HealthMonitor {
  private readonly states = new Map<string, CheckState>();
  private readonly connections = new Map<string, CheckConnection>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  /** Upstreams the proxy took out of rotation by itself (refused or reset): back in on their next passing check. */
  private readonly passivelyDown = new Set<string>();
  private stopped = false;

  constructor(
    private readonly spec: Spec,
    private readonly fleet: Fleet,
    private readonly proxy: Proxy,
    private readonly event: (service: string, type: string, message: string) => void,
    /** Of the instances the fleet runs, those to check: one call a sync, so that it reads each slot record once, not once per instance. */
    private readonly watched: (instances: InstanceInfo[]) => Promise<InstanceInfo[]>,
    private readonly on: { changed?: () => void; firstChecked?: () => void; critical?: (inst: InstanceInfo) => void } = {},
  ) {}

  /**
   * Starts checking the live and warm instances the monitor does not know yet, and forgets the
   * others. A preview slot's instances belong to the deploy, which checks them itself.
   */
  async sync(): Promise<void> {
    if (this.stopped) return;
    const running = new Map<string, InstanceInfo>();
    try {
      for (const i of await this.watched(this.fleet.list())) running.set(i.id, i);
    } catch {
      // The store does not answer (etcd lost its quorum): go on checking what is checked, and look again at the next sync.
      return;
    }
    for (const [id, timer] of this.timers) {
      if (!running.has(id)) {
        clearTimeout(timer);
        this.timers.delete(id);
        this.states.delete(id);
        this.connections.get(id)?.close();
        this.connections.delete(id);
      }
    }
    // Spread over one interval, as Consul staggers its checks: instances adopted or started together
    // would otherwise all be checked in the same tick, every tick.
    for (const inst of running.values()) {
      if (!this.timers.has(inst.id)) this.schedule(inst, onTick(Math.random() * (this.spec.services[inst.service]?.health.intervalMs ?? 0)));
    }
  }

  state(id: string): CheckState | undefined {
    return this.states.get(id);
  }

  /** The proxy saw this instance refuse or reset a connection: check it now rather than at its interval. */
  passiveDown(id: string): void {
    const inst = this.fleet.list().find((i) => i.id === id);
    if (!inst || !this.timers.has(id)) return;
    this.passivelyDown.add(id);
    // A kept connection could still answer for an instance that now refuses new ones.
    this.connections.get(id)?.close();
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
    for (const c of this.connections.values()) c.close();
    this.connections.clear();
  }

  private schedule(inst: InstanceInfo, delayMs: number): void {
    const svc = this.spec.services[inst.service];
    if (!svc || this.stopped) return;
    const dueAt = Date.now() + delayMs;
    const timer = setTimeout(async () => {
      if (!this.fleet.isAlive(inst.id)) return void this.sync();
      let state = this.states.get(inst.id);
      const first = !state;
      if (!state) {
        // Every instance the fleet runs passed its health checks to get there: it starts passing.
        state = new CheckState(svc.health, "passing");
        this.states.set(inst.id, state);
      }
      const before = state.status;
      let connection = this.connections.get(inst.id);
      if (!connection) this.connections.set(inst.id, (connection = new CheckConnection()));
      let result = await runHealthCheck(inst, svc.health, { connection });
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
      } else if (first) {
        // Until its first check an instance reads "unknown" in status: the dashboard learns it was checked.
        this.on.firstChecked?.();
      }
      // One interval after this check was due, not after it ended: the period stays the interval.
      if (this.timers.has(inst.id)) this.schedule(inst, onTick(Math.max(0, dueAt + svc.health.intervalMs - Date.now())));
    }, delayMs);
    timer.unref();
    this.timers.set(inst.id, timer);
  }
}
