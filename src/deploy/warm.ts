// Step 10 of the flow, retiring the old slot: it is stopped, or kept warm for keep_previous so that
// a rollback to it is instant, and stopped by a timer when keep_previous runs out.
import { errorMessage } from "../errors.js";
import type { Slot } from "../runtime/contract.js";
import { formatTime } from "../util/time.js";
import type { ServiceSpec } from "../spec/types.js";
import type { OrchestratorDeps } from "./deps.js";
import { DeployLock } from "./lock.js";
import { Records, type SlotRecord } from "./records.js";

/** How soon a retired slot whose instances did not stop is tried again. */
export const STOP_RETRY_MS = 30_000;

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
    let killed: number;
    try {
      ({ killed } = await this.d.fleet.stop(instances, svc.stopTimeoutMs));
    } catch (e) {
      // What did not stop stays recorded, in a slot that is no longer live: the expiry timer tries again.
      const retryAt = Date.now() + STOP_RETRY_MS;
      await records.setSlot(svc.name, { ...rec, state: "warm", warmUntil: retryAt });
      this.scheduleExpiry(svc, slot, retryAt);
      this.d.event(svc.name, "retire.error", `${rec.release} (${slot}) is out of rotation but did not stop: ${errorMessage(e)}; trying again in ${STOP_RETRY_MS / 1000}s`);
      return `${rec.release} out of rotation; stopping it failed (${errorMessage(e)}), retried in ${STOP_RETRY_MS / 1000}s`;
    }
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
        try {
          await this.d.fleet.stop(this.d.fleet.list(svc.name, slot), svc.stopTimeoutMs);
        } catch (e) {
          this.d.event(svc.name, "retire.error", `stopping ${rec.release} (${slot}) failed again: ${errorMessage(e)}; trying again in ${STOP_RETRY_MS / 1000}s`);
          return this.scheduleExpiry(svc, slot, Date.now() + STOP_RETRY_MS);
        }
        await records.clearSlot(svc.name, slot);
        this.d.event(svc.name, "warm.expired", `stopped warm ${rec.release} (${slot}) after keep_previous`);
      } catch (e) {
        // A timer has no caller to tell: the event is where an operator sees it.
        this.d.event(svc.name, "warm.error", `expiring warm slot ${slot} failed: ${errorMessage(e)}`);
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
