// Self-healing: an instance of a live or warm slot that exits, or that its checks find critical,
// is replaced with the same release in the same slot. Replacements back off exponentially; after
// too many failed in a row, or too many within a window, the live release is rolled back to the
// previous one when that is safe (once per pool), else the service is marked degraded and only
// an empty slot is refilled, slowly. The slot's healthy replicas keep serving throughout.
// A runtime that restarts instances itself (swarm) is followed, not fought: its restarts count as
// the replacements would, a restarted instance rejoins its pool once it passes its checks, and
// nothing else is started.
import { waitHealthy } from "../health/checks.js";
import { instanceEnvFor, type EventLog } from "../deploy/deps.js";
import type { Fleet } from "../deploy/fleet.js";
import { DeployLock } from "../deploy/lock.js";
import type { Records, SlotRecord } from "../deploy/records.js";
import { errorMessage } from "../errors.js";
import type { RouteTables } from "../deploy/routes.js";
import type { InstanceInfo, Slot } from "../runtime/contract.js";
import type { Spec } from "../spec/types.js";
import type { Store } from "../state/contract.js";
import type { AgentMetrics } from "../metrics/agent.js";

/** A crash loop: this many replacements in a row that never turned healthy. */
export const HEAL_MAX_FAILURES = 5;
/** Or instances that keep dying: this many replacements within the window. */
export const HEAL_MAX_RESTARTS = 10;
export const HEAL_WINDOW_MS = 60_000;
export const HEAL_BACKOFF_BASE_MS = 250;
export const HEAL_BACKOFF_MAX_MS = 10_000;
const HEAL_LOCK_TTL_MS = 60_000;
/** A critical instance of a service the spec no longer names gets this long to stop. */
const DEFAULT_CRITICAL_STOP_MS = 10_000;
const HEAL_LOCK_RETRY_MS = 250;

export interface SupervisorDeps {
  spec: Spec;
  store: Store;
  records: Records;
  fleet: Fleet;
  /** A replacement that turned healthy joins the live route table. */
  routes: Pick<RouteTables, "apply">;
  apiUrl: () => string;
  agentId: string;
  event: EventLog;
  /**
   * Rolls a crash-looping live release back to the previous one, when that release is known and
   * runs on the current schema (no migration, no turquoise path); otherwise says why not.
   */
  fallBack?: (service: string, why: string) => Promise<FallBackResult>;
  /** Where replacements are counted; absent without metrics.listen. */
  metrics?: Pick<AgentMetrics, "healed">;
}

export type FallBackResult = { ok: true; release: string } | { ok: false; reason: string };

export class Supervisor {
  /** Pools whose crash-loop verdict is being reached now. */
  private readonly judging = new Set<string>();
  /** Pools whose crash-loop rollback is running now. */
  private readonly rollingBack = new Set<string>();
  /** Replacement attempts per service, for the degraded window. */
  private readonly attempts = new Map<string, number[]>();
  /** Consecutive failed replacements per pool (a deploy's new pool starts from zero), for the backoff. */
  private readonly failures = new Map<string, number>();
  /** The pool each service/slot was last healed in. */
  private readonly poolKey = new Map<string, string>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  /** Pools whose crash loop already triggered a rollback: one try each, never a ping-pong. */
  private readonly fellBack = new Set<string>();
  private stopped = false;

  constructor(private readonly d: SupervisorDeps) {}

  /**
   * An instance exited, or went critical and was stopped: replace it, when it served a live or warm
   * slot. One of a deploy's new slot is the deploy's to judge (it fails, and says so); healing
   * would not replace it, so it does not say it will.
   */
  lost(inst: InstanceInfo, why: string, restarting = false): void {
    void this.d.records.slot(inst.service, inst.slot).then(async (rec) => {
      if (this.stopped || !rec || rec.release !== inst.release || (rec.state !== "live" && rec.state !== "warm")) return;
      if (restarting) return this.followRestart(inst, rec, why);
      this.d.event(inst.service, "heal.scheduled", `${inst.id} (${inst.release}, ${inst.slot}) ${why}: replacing it`);
      this.schedule(inst.service, inst.slot, this.backoff(inst.service, inst.slot));
    }, (e: unknown) => this.d.event(inst.service, "heal.error", `${inst.id} ${why}, and its slot's record could not be read: ${e instanceof Error ? e.message : e}`))
      .catch((e: unknown) => this.d.event(inst.service, "heal.error", `${inst.id} ${why}, and following its restart failed: ${errorMessage(e)}`));
  }

  /**
   * An instance went critical (the monitor took it out of rotation): stopped, then replaced. On a
   * runtime that restarts instances itself, its run is ended instead and the runtime brings it back.
   */
  critical(inst: InstanceInfo): Promise<void> {
    const stopTimeoutMs = this.d.spec.services[inst.service]?.stopTimeoutMs ?? DEFAULT_CRITICAL_STOP_MS;
    if (this.d.fleet.restartsItself(inst)) {
      return this.d.fleet.restart(inst, stopTimeoutMs).then(
        () => this.d.event(inst.service, "heal.restarting", `${inst.id} went critical: its run was ended, and its runtime restarts it in its slot`),
        (e: unknown) => this.d.event(inst.service, "heal.error", `${inst.id} went critical and stays out of rotation: ${errorMessage(e)}`),
      );
    }
    return this.d.fleet.stop([inst], stopTimeoutMs).then(
      () => this.lost(inst, "went critical"),
      (e: unknown) => this.d.event(inst.service, "heal.error", `stopping critical ${inst.id} failed: ${errorMessage(e)}`),
    );
  }

  /**
   * An instance its runtime restarted (swarm: a new task in its slot, maybe on another node)
   * rejoins its pool once it passes its checks; one that does not is a failed restart, and its run
   * is ended again.
   */
  rejoin(inst: InstanceInfo): void {
    void this.rejoined(inst).catch((e: unknown) => this.d.event(inst.service, "heal.error", `${inst.id} restarted, and following it failed: ${errorMessage(e)}`));
  }

  /** Heals again after stop(): an agent that leads again. */
  resume(): void {
    this.stopped = false;
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  /** A crash-looping live release goes back to the previous one, once per pool; true when it did. */
  private async fallBack(service: string, slot: Slot, release: string, pool: string, reason: string): Promise<boolean> {
    if (!this.d.fallBack || this.fellBack.has(pool) || (await this.d.records.color(service)) !== slot) return false;
    this.fellBack.add(pool);
    this.rollingBack.add(pool);
    this.d.event(service, "heal.rollback", `${release} is crash-looping (${reason}): trying to roll ${service} back to the previous release`, { release, reason });
    const r = await this.d.fallBack(service, reason)
      .catch((e): FallBackResult => ({ ok: false, reason: e instanceof Error ? e.message : String(e) }))
      .finally(() => this.rollingBack.delete(pool));
    if (r.ok) {
      this.d.event(service, "service.rolled-back", `${service} rolled back from crash-looping ${release} to ${r.release}`, { from: release, to: r.release, reason });
      return true;
    }
    this.d.event(service, "heal.rollback-refused", `${service} stays on ${release}: no safe rollback (${r.reason})`, { release, reason: r.reason });
    return false;
  }

  /**
   * Too many failed replacements in a row, or too many within the window: the live release is
   * rolled back (once per pool), else the service is marked degraded. undefined: neither.
   * "pending": another verdict on the pool is under way (two instances that die together), and decides.
   */
  private async crashLoop(service: string, slot: Slot, rec: SlotRecord, attempts: number, restartedByRuntime: boolean): Promise<"rolled-back" | "degraded" | "pending" | undefined> {
    const failedInARow = this.failures.get(rec.poolId) ?? 0;
    if (failedInARow < HEAL_MAX_FAILURES && attempts < HEAL_MAX_RESTARTS) return undefined;
    if (this.judging.has(rec.poolId) || this.rollingBack.has(rec.poolId)) return "pending";
    this.judging.add(rec.poolId);
    try {
      return await this.judge(service, slot, rec, failedInARow, attempts, restartedByRuntime);
    } finally {
      this.judging.delete(rec.poolId);
    }
  }

  private async judge(service: string, slot: Slot, rec: SlotRecord, failedInARow: number, attempts: number, restartedByRuntime: boolean): Promise<"rolled-back" | "degraded"> {
    const what = restartedByRuntime ? "restarts" : "replacements";
    const reason = failedInARow >= HEAL_MAX_FAILURES
      ? `${failedInARow} ${what} in a row never turned healthy (a crash loop)`
      : `${attempts} ${what} within ${HEAL_WINDOW_MS / 1000}s`;
    if (await this.fallBack(service, slot, rec.release, rec.poolId, reason)) return "rolled-back";
    await this.d.records.setDegraded(service, { since: Date.now(), slot, release: rec.release, reason });
    this.d.event(service, "service.degraded", restartedByRuntime
      ? `${service} is degraded: ${reason}; its runtime keeps restarting its instances at its own pace until the next deploy`
      : `${service} is degraded: ${reason}; no more automatic restarts until the next deploy, except to refill an empty slot every ${HEAL_BACKOFF_MAX_MS / 1000}s`);
    return "degraded";
  }

  /** The runtime restarts the instance itself: its restart counts as a replacement would, for the crash-loop verdict. */
  private async followRestart(inst: InstanceInfo, rec: SlotRecord, why: string): Promise<void> {
    const pool = rec.poolId;
    if (this.rollingBack.has(pool)) return;
    this.poolKey.set(`${inst.service}/${inst.slot}`, pool);
    const now = Date.now();
    const recent = [...(this.attempts.get(pool) ?? []).filter((t) => now - t < HEAL_WINDOW_MS), now];
    this.attempts.set(pool, recent);
    this.d.event(inst.service, "heal.following", `${inst.id} (${inst.release}, ${inst.slot}) ${why}: its runtime restarts it in its slot; it rejoins the pool once it passes its checks`);
    // Out of the table at once: its address is gone, and a mark on its id must not outlive it.
    if ((await this.d.records.color(inst.service)) === inst.slot) await this.d.routes.apply();
    if (!(await this.d.records.degraded(inst.service))) await this.crashLoop(inst.service, inst.slot, rec, recent.length, true);
  }

  private async rejoined(inst: InstanceInfo): Promise<void> {
    const svc = this.d.spec.services[inst.service];
    const rec = await this.d.records.slot(inst.service, inst.slot);
    if (this.stopped || !svc || !rec || rec.release !== inst.release || (rec.state !== "live" && rec.state !== "warm")) return;
    const pool = rec.poolId;
    const started = Date.now();
    // This run only: one that ends (or is replaced by the next) before it passes is a failed restart.
    const sameRun = () => this.d.fleet.isAlive(inst.id) && this.d.fleet.list(inst.service, inst.slot).find((i) => i.id === inst.id)?.startedAt === inst.startedAt;
    const r = await waitHealthy([{ id: inst.id, host: inst.host, port: inst.port }], svc.health, { deadline: started + svc.deployTimeoutMs, isAlive: sameRun });
    // Meanwhile a rollback (or a deploy) may have retired the pool: its verdicts are over.
    const now = await this.d.records.slot(inst.service, inst.slot);
    if (this.stopped || this.rollingBack.has(pool) || now?.poolId !== pool || (now.state !== "live" && now.state !== "warm")) return;
    if (!r.ok) {
      this.failures.set(pool, (this.failures.get(pool) ?? 0) + 1);
      this.d.metrics?.healed(inst.service, "failed", 1);
      this.d.event(inst.service, "heal.failed", `${inst.id} restarted at ${inst.host}:${inst.port} but did not turn healthy (${r.reason}): ${r.failing.map((f) => f.output).join("; ").slice(0, 300)}`);
      if (sameRun()) await this.d.fleet.restart(inst, svc.stopTimeoutMs).catch((e: unknown) => this.d.event(inst.service, "heal.error", `${inst.id} stays out of rotation: ${errorMessage(e)}`));
      const now = Date.now();
      if (!(await this.d.records.degraded(inst.service))) await this.crashLoop(inst.service, inst.slot, rec, (this.attempts.get(pool) ?? []).filter((t) => now - t < HEAL_WINDOW_MS).length, true);
      return;
    }
    this.failures.delete(pool);
    this.d.metrics?.healed(inst.service, "replaced", 1);
    this.d.fleet.markReady([inst]);
    if ((await this.d.records.color(inst.service)) === inst.slot) await this.d.routes.apply();
    this.d.event(inst.service, "instance.rejoined", `${inst.id} (${inst.release}) restarted by its runtime at ${inst.host}:${inst.port}, healthy in ${inst.slot} after ${Date.now() - started}ms`, { slot: inst.slot, release: inst.release, address: `${inst.host}:${inst.port}` });
  }

  private backoff(service: string, slot: Slot): number {
    const n = this.failures.get(this.poolKey.get(`${service}/${slot}`) ?? "") ?? 0;
    return n === 0 ? 0 : Math.min(HEAL_BACKOFF_BASE_MS * 2 ** (n - 1), HEAL_BACKOFF_MAX_MS);
  }

  private schedule(service: string, slot: Slot, delayMs: number): void {
    const key = `${service}/${slot}`;
    if (this.stopped || this.timers.has(key)) return;
    const timer = setTimeout(() => {
      this.timers.delete(key);
      void this.heal(service, slot).catch((e) => this.d.event(service, "heal.error", `healing ${slot} failed: ${e instanceof Error ? e.message : e}`));
    }, delayMs);
    timer.unref();
    this.timers.set(key, timer);
  }

  private async heal(service: string, slot: Slot): Promise<void> {
    const svc = this.d.spec.services[service];
    const rec = await this.d.records.slot(service, slot);
    if (!svc || !rec || (rec.state !== "live" && rec.state !== "warm") || this.stopped) return;
    // Degraded: no restarts while anything of the slot still runs; an empty slot is refilled, at the slowest pace,
    // since instances that serve for a while before they crash beat a 503 for every request.
    const degraded = !!(await this.d.records.degraded(service));
    const running = this.d.fleet.list(service, slot).length;
    if (degraded && running > 0) return;
    const missing = svc.replicas - running;
    if (missing <= 0) return;

    const now = Date.now();
    const pool = rec.poolId;
    // The rollback under way decides; a crash meanwhile must not mark the service degraded beside it.
    if (this.rollingBack.has(pool)) return;
    this.poolKey.set(`${service}/${slot}`, pool);
    const recent = (this.attempts.get(pool) ?? []).filter((t) => now - t < HEAL_WINDOW_MS);
    const verdict = degraded ? undefined : await this.crashLoop(service, slot, rec, recent.length, false);
    if (verdict) {
      if (verdict === "degraded" && running === 0) this.schedule(service, slot, HEAL_BACKOFF_MAX_MS);
      return;
    }

    // A deploy holds the lock: it owns the slots now. Try again shortly.
    const owner = `agent ${this.d.agentId} (healing ${service} ${slot})`;
    const lock = await DeployLock.tryTake(this.d.store, this.d.event, service, owner, HEAL_LOCK_TTL_MS);
    if (!lock) return this.schedule(service, slot, HEAL_LOCK_RETRY_MS);
    try {
      const current = await this.d.records.slot(service, slot);
      const stillMissing = svc.replicas - this.d.fleet.list(service, slot).length;
      if (current?.release !== rec.release || stillMissing <= 0) return;
      recent.push(now);
      this.attempts.set(pool, recent);
      const started = Date.now();
      let fresh: InstanceInfo[];
      try {
        fresh = await this.d.fleet.startSlot({ ...svc, replicas: stillMissing }, slot, rec.release, this.d.apiUrl(), instanceEnvFor(this.d.spec, svc));
      } catch (e) {
        // Could not even start (a runtime error): a failure like any other, with the same backoff.
        this.failures.set(pool, (this.failures.get(pool) ?? 0) + 1);
        this.d.metrics?.healed(service, "failed", stillMissing);
        this.d.event(service, "heal.failed", `replacement ${rec.release} in ${slot} could not start: ${e instanceof Error ? e.message : e}`);
        this.schedule(service, slot, this.backoff(service, slot));
        return;
      }
      const r = await waitHealthy(fresh.map((i) => ({ id: i.id, host: i.host, port: i.port })), svc.health, {
        deadline: started + svc.deployTimeoutMs,
        isAlive: (id) => this.d.fleet.isAlive(id),
      });
      if (!r.ok) {
        await this.d.fleet.stop(fresh.filter((i) => this.d.fleet.isAlive(i.id)), svc.stopTimeoutMs);
        this.failures.set(pool, (this.failures.get(pool) ?? 0) + 1);
        this.d.metrics?.healed(service, "failed", fresh.length);
        this.d.event(service, "heal.failed", `replacement ${rec.release} in ${slot} did not turn healthy (${r.reason}): ${r.failing.map((f) => f.output).join("; ").slice(0, 300)}`);
        this.schedule(service, slot, this.backoff(service, slot));
        return;
      }
      this.failures.delete(pool);
      this.d.metrics?.healed(service, "replaced", fresh.length);
      this.d.fleet.markReady(fresh);
      if ((await this.d.records.color(service)) === slot) await this.d.routes.apply();
      this.d.event(service, "instance.replaced", `${fresh.map((i) => i.id).join(", ")} (${rec.release}) healthy in ${slot} after ${Date.now() - started}ms`, { slot, release: rec.release, healthyMs: Date.now() - started });
    } finally {
      await lock.release();
    }
  }
}
