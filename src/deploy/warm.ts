// Step 10 of the flow, retiring the old slot: it is stopped, or kept warm for keep_previous so that
// a rollback to it is instant, and stopped by a timer when keep_previous runs out.
import type { Slot } from "../runtime/contract.js";
import { formatTime } from "../util/time.js";
import type { ServiceSpec } from "../spec/types.js";
import type { OrchestratorDeps } from "./deps.js";
import { DeployLock } from "./lock.js";
import { Records, type SlotRecord } from "./records.js";

export class WarmSlots {
  private readonly timers = new Map<string, NodeJS.Timeout>();

  constructor(private readonly d: Pick<OrchestratorDeps, "store" | "fleet" | "agentId" | "event">) {}

  /**
   * Keeps the old slot warm, unless there is a reason not to (noWarmBecause); otherwise stops it.
   * records: as the caller writes them, fenced by its lock.
   */
  async retire(records: Records, svc: ServiceSpec, slot: Slot, rec: SlotRecord, noWarmBecause?: string): Promise<string> {
    if (svc.keepPreviousMs > 0 && !noWarmBecause) {
      const warmUntil = Date.now() + svc.keepPreviousMs;
      await records.setSlot(svc.name, { ...rec, state: "warm", warmUntil });
      this.scheduleExpiry(svc, slot, warmUntil);
      return `${rec.release} kept warm in ${slot} until ${formatTime(warmUntil)}`;
    }
    const instances = this.d.fleet.list(svc.name, slot);
    const { killed } = await this.d.fleet.stop(instances, svc.stopTimeoutMs);
    await records.clearSlot(svc.name, slot);
    const why = noWarmBecause && svc.keepPreviousMs > 0 ? ` (not kept warm: ${noWarmBecause})` : "";
    return `stopped ${instances.length} instance(s) of ${rec.release}${why}${killed ? `, ${killed} killed after stop_timeout` : ""}`;
  }

  /** Stops a warm slot when keep_previous runs out, unless it went live again meanwhile. */
  scheduleExpiry(svc: ServiceSpec, slot: Slot, warmUntil: number): void {
    const key = `${svc.name}/${slot}`;
    clearTimeout(this.timers.get(key));
    const timer = setTimeout(async () => {
      this.timers.delete(key);
      const lock = await DeployLock.tryTake(this.d.store, this.d.event, svc.name, `agent ${this.d.agentId} (warm expiry)`);
      if (!lock) return this.scheduleExpiry(svc, slot, Date.now() + 1_000);
      try {
        const records = new Records(lock.fencedStore(), this.d.event);
        const rec = await records.slot(svc.name, slot);
        if (rec?.state !== "warm" || (rec.warmUntil ?? 0) > Date.now()) return;
        await this.d.fleet.stop(this.d.fleet.list(svc.name, slot), svc.stopTimeoutMs);
        await records.clearSlot(svc.name, slot);
        this.d.event(svc.name, "warm.expired", `stopped warm ${rec.release} (${slot}) after keep_previous`);
      } finally {
        await lock.release();
      }
    }, Math.max(0, warmUntil - Date.now()));
    timer.unref();
    this.timers.set(key, timer);
  }

  stop(): void {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }
}
