// The deploy flow of DESIGN.md, step by step: lock, plan, start the idle slot, wait until healthy,
// smoke, expand migrations, flip, verify, bake, drain, retire the old slot, contract migrations,
// record.
// When the schema change is breaking, the plan walks the turquoise path: start R, flip L → R,
// migrate, re-check R, start T, flip R → T. Every step is journaled before and after it runs, so
// an agent that restarts can finish, undo or resume the flow (recovery.ts). Every write of the
// flow is fenced by its lock (lock.ts); a flow that lost its lock stops at the next step boundary
// and hands its journal over to recovery.
import { formatDuration, parseDuration } from "../util/duration.js";
import { NGINX_NO_CANARY } from "../proxy/split.js";
import { DEFAULT_CANARY_MAX_ERROR_RATE, DEFAULT_CANARY_MAX_P99_RATIO, DEFAULT_CANARY_MIN_REQUESTS, DEFAULT_CANARY_STEP_INTERVAL } from "../spec/schema.js";
import { describeCanary, watchCanaryStep } from "./canary.js";
import { progressRelay } from "./migration-progress.js";
import { TurquoiseError, errorMessage } from "../errors.js";
import { Scrubber } from "../log/scrub.js";
import type { PlanAction } from "../plan/planner.js";
import { otherSlot, type Slot } from "../runtime/contract.js";
import type { CanarySpec, ServiceSpec } from "../spec/types.js";
import type { HistoryEntry, StepTiming } from "../state/contract.js";
import { instanceEnvFor, openDatabase, passFailpoint, serviceNamed, type OrchestratorDeps } from "./deps.js";
import { bake, describeBake } from "./bake.js";
import { waitUntilHealthy } from "./healthy.js";
import { runHooks } from "./hooks.js";
import { DeployLock, isLockLost } from "./lock.js";
import { NO_DATABASE, type ComputedPlan, type Planning, type PlanRequest } from "./planning.js";
import { Records, type Journal } from "./records.js";
import { specSecrets } from "./secrets.js";
import type { RouteTables } from "./routes.js";
import { smokeInstances } from "./smoke.js";
import { runStep, skipStep, StepFailure, type Flow, type Progress } from "./step.js";
import { verifyPublicRoute } from "./verify.js";
import type { WarmSlots } from "./warm.js";
import type { FlowOutcome } from "../metrics/agent.js";

export interface DeployRequest extends PlanRequest {
  actor: string;
  /** Queue behind a running deploy instead of failing at once. */
  wait?: boolean;
  /** How long a queued deploy waits for the lock; no limit when absent (the API always sets one). */
  waitTimeoutMs?: number;
  /** Aborted when the client has gone: a deploy still queued for the lock is dropped. */
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
  /** Called once the flow has its history entry: the id a caller can point to before the flow ends. */
  onStarted?: (historyId: number) => void;
  /** Stop after the smoke checks with the new release held on the preview address, for promote or abort. */
  hold?: boolean;
  /** Canary steps over the spec's (an empty list: flip in one step, whatever the spec says). */
  canary?: { steps: number[]; stepIntervalMs?: number };
}

export interface DeployOutcome {
  history: HistoryEntry;
}

/** What a flow hands over to recovery (recovery.ts), so that no flow is left half done. */
export interface Handover {
  /** A journal a flow that lost its lock left behind: finished or undone, under this flow's lock, before this flow writes its own. */
  recoverLeftBehind(j: Journal, records: Records): Promise<void>;
  /** This flow lost its lock and stopped: recovery takes its journal over once it can take the lock. */
  lockLost(service: string, owner: string): void;
}

export class DeployFlow {
  constructor(
    private readonly d: OrchestratorDeps,
    private readonly planning: Planning,
    private readonly routes: RouteTables,
    private readonly warm: WarmSlots,
    private readonly handover: Handover,
  ) {}

  async run(kind: "deploy" | "rollback", req: DeployRequest): Promise<DeployOutcome> {
    const svc = serviceNamed(this.d.spec, req.service);
    const emit = (p: Progress): void => {
      req.onProgress?.(p);
      this.d.progress?.(svc.name, kind, p);
    };
    const steps: StepTiming[] = [];
    // The nonce keeps two deploys by the same actor from sharing (and so re-taking) one lock.
    const owner = `${req.actor} (${kind} ${req.release}, agent ${this.d.agentId}, #${Math.random().toString(36).slice(2, 8)})`;

    // 1. take the service's deploy lock
    const lockStarted = Date.now();
    // Until the flow gets further: it changed nothing.
    let outcome: FlowOutcome = "refused";
    const finished = () => this.d.metrics?.flowFinished(kind, svc.name, outcome, Date.now() - lockStarted, steps);
    emit({ type: "step", name: "lock", status: "started" });
    let lock: DeployLock;
    try {
      lock = await DeployLock.take(this.d.store, this.d.event, svc.name, owner, {
        wait: !!req.wait, onWait: (message) => emit({ type: "info", message }), ...(req.waitTimeoutMs !== undefined ? { deadline: lockStarted + req.waitTimeoutMs } : {}), ...(req.signal ? { signal: req.signal } : {}),
        onWaited: (result, waitedMs) => this.d.metrics?.lockWaited(svc.name, result, waitedMs),
      });
    } catch (e) {
      finished();
      throw e;
    }
    // Every write of this flow goes through these: once the lock is lost, none of them lands.
    const records = new Records(lock.fencedStore(), this.d.event);
    const store = records.store;
    const failpoint = (point: string) => passFailpoint(this.d, point);
    steps.push({ name: "lock", startedAt: lockStarted, durationMs: Date.now() - lockStarted, ok: true });
    emit({ type: "step", name: "lock", status: "done", durationMs: Date.now() - lockStarted });

    let history: HistoryEntry | undefined;
    let flow: Flow | undefined;
    let canaryOff = false;
    try {
      // Inside the try: an in-process test that ends the agent here still stops the lock's renewals.
      failpoint("lock");
      const left = await records.journal(svc.name);
      if (left) await this.handover.recoverLeftBehind(left, records);

      // 2. plan: live release, target release, schema version, pending migrations
      const planStarted = Date.now();
      emit({ type: "step", name: "plan", status: "started" });
      let plan: ComputedPlan;
      const canary = kind === "deploy" && !req.hold ? canaryFor(svc, req) : undefined;
      try {
        try {
          plan = await this.planning.compute(svc, kind, { ...req, ...(canary ? { inCanary: true } : {}) });
        } catch (e) {
          // The spec's canary is a default: a deploy it cannot apply to (a migration first) flips in one step.
          if (!canary || req.canary || !(e instanceof TurquoiseError) || e.code !== "PLAN_REFUSED") throw e;
          plan = await this.planning.compute(svc, kind, req);
          emit({ type: "info", message: `no canary: ${e.message.replace(/^.*? refused: /, "")}` });
          canaryOff = true;
        }
        if (req.hold && plan.via) throw new TurquoiseError("PLAN_REFUSED", `deploy --hold of ${svc.name} ${req.release} refused: the plan walks through the turquoise release ${plan.via}, which goes live before ${req.release} starts; deploy without --hold`);
      } catch (e) {
        emit({ type: "step", name: "plan", status: "failed", durationMs: Date.now() - planStarted, detail: errorMessage(e) });
        throw e;
      }
      const live = plan.live;
      emit({ type: "plan", service: svc.name, kind, release: req.release, via: plan.via, from: live?.release ?? null, steps: plan.lines });
      const planDetail = `${live ? `${live.release} (${live.slot})` : "nothing live"} → ${plan.via ? `${plan.via} → ` : ""}${req.release}`;
      steps.push({ name: "plan", startedAt: planStarted, durationMs: Date.now() - planStarted, ok: true, detail: planDetail });
      emit({ type: "step", name: "plan", status: "done", durationMs: Date.now() - planStarted, detail: planDetail });

      history = await store.addHistory({
        service: svc.name, kind, release: req.release, previousRelease: live?.release ?? null, via: plan.via, actor: req.actor,
        startedAt: lockStarted, finishedAt: null, outcome: "running", plan: plan.lines, steps, error: null,
      });
      failpoint("history");
      req.onStarted?.(history.id);
      const journal: Journal = {
        historyId: history.id, service: svc.name, kind, release: req.release, via: plan.via, actor: req.actor, owner,
        previousRelease: live?.release ?? null, steps: ["lock:done", "plan:done"], startedAt: lockStarted,
      };
      await records.writeJournal(journal);
      failpoint("plan:done");
      this.d.event(svc.name, `${kind}.started`, `${kind} of ${svc.name} ${req.release}${plan.via ? ` via ${plan.via}` : ""} started by ${req.actor}`, { release: req.release, historyId: history.id });

      const db = openDatabase(this.d.spec, svc);
      flow = {
        svc, kind, lock, records, failpoint, journal, steps, emit, schemas: plan.schemas, flipped: false,
        ...(db ? { db } : {}),
        schemaChangesLater: (i) => plan.actions.slice(i + 1).some((a) => a.do === "migrate"),
        scrubber: new Scrubber(specSecrets(this.d.spec)),
        ...(canary && !canaryOff ? { canary } : {}),
      };
      // 3 to 11, as the plan orders them: a turquoise path starts and flips twice, migrating between.
      for (const [i, action] of plan.actions.entries()) {
        if (req.hold && (action.do === "flip" || action.do === "migrate")) {
          history = await this.hold(flow, history, req.actor);
          outcome = "held";
          return { history };
        }
        if (!db && action.do === "flip") skipStep(flow, "migrate-expand", NO_DATABASE);
        if (action.do === "start") await this.startRelease(flow, action.release);
        else if (action.do === "flip") await this.flip(flow, action.to, flow.schemaChangesLater(i));
        else if (action.do === "migrate") await this.migrate(flow, action);
        else await this.recheck(flow, action.release);
      }
      if (!db) skipStep(flow, "migrate-contract", NO_DATABASE);

      // 12. record the outcome and the step timings, then release the lock
      await lock.check();
      // A resumed path starts at its turquoise release; what rollback returns to is still the release before it.
      if (live && live.release !== req.release && live.release !== plan.via) await records.setPrevious(svc.name, { release: live.release, via: plan.via });
      // A successful deploy is a fresh start for self-healing.
      await records.clearDegraded(svc.name);
      await records.clearQuarantine(svc.name);
      const recordStarted = Date.now();
      steps.push({ name: "record", startedAt: recordStarted, durationMs: 0, ok: true });
      history = await store.updateHistory(history.id, { outcome: "succeeded", finishedAt: Date.now(), steps });
      await records.clearJournal(svc.name);
      failpoint("cleared");
      emit({ type: "step", name: "record", status: "done", durationMs: Date.now() - recordStarted });
      this.d.event(svc.name, `${kind}.succeeded`, `${kind} of ${svc.name} ${req.release} succeeded`, { release: req.release, historyId: history.id });
      outcome = "succeeded";
      return { history };
    } catch (e) {
      if (isLockLost(e)) {
        outcome = "stopped";
        throw this.stopped(kind, req, owner, flow, history, e);
      }
      if (history) {
        const flippedBack = e instanceof StepFailure && e.step === "verify";
        const reverted = e instanceof StepFailure && e.step === "bake";
        const aborted = e instanceof StepFailure && e.step === "canary";
        outcome = reverted ? "reverted" : flippedBack ? "rolled-back" : aborted ? "aborted" : "failed";
        const error = e instanceof StepFailure && e.output ? `${e.message}\n${e.output}` : errorMessage(e);
        try {
          history = await store.updateHistory(history.id, { outcome: reverted ? "reverted" : flippedBack ? "rolled-back" : aborted ? "aborted" : "failed", finishedAt: Date.now(), steps, error });
          await records.clearJournal(svc.name);
          failpoint("cleared");
        } catch (recording) {
          if (isLockLost(recording)) {
            outcome = "stopped";
            throw this.stopped(kind, req, owner, flow, history, recording);
          }
          throw recording;
        }
        if (aborted) this.d.event(svc.name, `${kind}.aborted`, `${kind} of ${svc.name} ${req.release} aborted by its canary: ${e.message}; ${await this.liveDescription(svc)} is live`, { release: req.release, historyId: history.id, ...(e.figures ?? {}) });
        else if (reverted) this.d.event(svc.name, `${kind}.reverted`, `${kind} of ${svc.name} ${req.release} reverted: it failed its bake window (${e.message}); ${await this.liveDescription(svc)} is live`, { release: req.release, historyId: history.id, ...(e.figures ?? {}) });
        else this.d.event(svc.name, `${kind}.failed`, `${kind} of ${svc.name} ${req.release} failed: ${e instanceof Error ? e.message : e}`, { release: req.release, historyId: history.id });
      }
      if (e instanceof StepFailure) {
        const where = await this.liveDescription(svc);
        if (e.step === "canary") {
          throw new TurquoiseError("DEPLOY_FAILED", `${kind} of ${svc.name} ${req.release} aborted by its canary: ${e.message} (every user back on ${where}; ${req.release} stopped)`, {
            data: { step: e.step, outcome: "aborted", figures: e.figures ?? null, output: e.output ?? null, history: history ?? null },
          });
        }
        if (e.step === "bake") {
          throw new TurquoiseError("DEPLOY_FAILED", `${kind} of ${svc.name} ${req.release} reverted: it failed its bake window: ${e.message} (traffic flipped back; ${where} is live)`, {
            data: { step: e.step, outcome: "reverted", figures: e.figures ?? null, output: e.output ?? null, history: history ?? null },
          });
        }
        const after = e.step === "verify" ? ` (traffic flipped back; ${where} is live)` : flow?.flipped ? `; ${where} is live` : "; the live release is untouched";
        throw new TurquoiseError("DEPLOY_FAILED", `${kind} of ${svc.name} ${req.release} failed at ${e.step}: ${e.message}${after}`, {
          data: { step: e.step, output: e.output ?? null, history: history ?? null },
        });
      }
      throw e;
    } finally {
      await lock.release();
      finished();
    }
  }

  /**
   * A flow that lost its lock stops where it is: it writes nothing more (its writes are fenced),
   * undoes nothing (its successor owns the slots now) and leaves its journal to recovery.
   */
  private stopped(kind: string, req: DeployRequest, owner: string, flow: Flow | undefined, history: HistoryEntry | undefined, e: TurquoiseError): TurquoiseError {
    const last = flow?.journal.steps.at(-1);
    const at = last ? last.replace(/:(started|done)$/, (_, s: string) => (s === "done" ? " (done)" : " (under way)")) : "plan";
    const message = `${kind} of ${req.service} ${req.release} stopped at ${at}: ${e.message}; it writes nothing more, and recovery finishes or undoes what it did`;
    this.d.event(req.service, `${kind}.stopped`, message, { release: req.release, owner, historyId: history?.id ?? null, reason: e.data.reason ?? null });
    this.handover.lockLost(req.service, owner);
    return new TurquoiseError("LOCK_LOST", message, { data: { ...e.data, step: at, history: history ?? null } });
  }

  private async liveDescription(svc: ServiceSpec): Promise<string> {
    const color = await this.d.records.color(svc.name);
    const rec = color ? await this.d.records.slot(svc.name, color) : undefined;
    return rec ? `${rec.release} (${color})` : "nothing";
  }

  private step<T>(flow: Flow, name: string, fn: () => Promise<T>): Promise<T> {
    return runStep(flow, name, fn);
  }

  /**
   * Cleans up after a failed step, unless the lock is gone: then the successor owns the slots,
   * and recovery undoes this flow. The caller throws e afterwards.
   */
  private async cleanUp(flow: Flow, e: unknown, fn: () => Promise<void>): Promise<void> {
    if (isLockLost(e)) return;
    await flow.lock.check();
    await fn();
  }

  /** 3 to 5: start, healthy and smoke for a release in the idle slot; a warm slot already running it is reused. */
  private async startRelease(flow: Flow, release: string): Promise<void> {
    const { svc, records } = flow;
    const { fleet, spec } = this.d;
    const color = await records.color(svc.name);
    const slot: Slot = color ? otherSlot(color) : "blue";
    const idle = await records.slot(svc.name, slot);
    if ((idle?.state === "warm" || idle?.state === "held") && idle.release === release && fleet.list(svc.name, slot).length > 0) {
      await this.step(flow, "healthy", async () => waitUntilHealthy(spec, fleet, svc, fleet.list(svc.name, slot), idle.state));
      const { heldBy, ...rest } = idle;
      await records.setSlot(svc.name, { ...rest, state: "preview" });
      // The held deploy did its part (start, healthy, smoke): this flow takes it from here.
      if (heldBy) await records.store.updateHistory(heldBy.historyId, { outcome: "succeeded", error: `promoted by ${flow.journal.actor} (deploy #${flow.journal.historyId})` });
      return;
    }
    try {
      // A release held in this slot is replaced by this one: its deploy ends aborted, not held for ever.
      if (idle?.state === "held" && idle.heldBy) {
        await records.store.updateHistory(idle.heldBy.historyId, { outcome: "aborted", error: `replaced while held by deploy #${flow.journal.historyId} of ${release} (${flow.journal.actor})` });
        this.d.event(svc.name, "deploy.aborted", `held ${idle.release} (${slot}) of ${svc.name} replaced by ${release}`, { release: idle.release, slot, historyId: idle.heldBy.historyId });
      }
      const stale = fleet.list(svc.name, slot);
      if (stale.length) await fleet.stop(stale, svc.stopTimeoutMs);
      const schema = flow.schemas[release];
      const poolId = `${svc.name}/${slot}/${release}/${Date.now().toString(36)}`;
      await records.setSlot(svc.name, { slot, release, poolId, state: "preview", startedAt: Date.now(), ...(schema ? { schema } : {}) });
      const fresh = await this.step(flow, "start", async () => fleet.startSlot(svc, slot, release, this.d.apiUrl, instanceEnvFor(spec, svc)));
      await this.step(flow, "healthy", async () => waitUntilHealthy(spec, fleet, svc, fresh, "new"));
      await this.step(flow, "smoke", async () => smokeInstances(svc, fresh, fleet.releaseDir(svc, release)));
      // From here the preview address reaches the new release, until its flip or its end.
      if (svc.route.previewHost) await this.routes.apply();
    } catch (e) {
      await this.cleanUp(flow, e, () => undoPreview(this.d, records, svc, slot));
      throw e;
    }
  }

  /** 7 to 10: flip to the preview slot, verify, bake, drain and retire the old slot. */
  private async flip(flow: Flow, release: string, schemaChangesLater: boolean): Promise<void> {
    const { svc, records } = flow;
    const fromSlot = (await records.color(svc.name)) ?? null;
    const live = fromSlot ? await records.slot(svc.name, fromSlot) : undefined;
    const toSlot: Slot = fromSlot ? otherSlot(fromSlot) : "blue";
    const preview = await records.slot(svc.name, toSlot);
    if (!preview || preview.release !== release) throw new StepFailure("flip", `nothing of ${release} is running in ${toSlot} to flip to`);
    // The instances traffic goes to, as the flip sends it: the bake judges each, even one that exits before the window opens.
    const flippedTo = this.d.fleet.list(svc.name, toSlot).map((i) => i.id);

    if (flow.canary && (!live || !fromSlot)) skipStep(flow, "canary", "nothing live to compare with");
    else if (flow.canary && live && fromSlot) await this.canarySteps(flow, flow.canary, fromSlot, toSlot, release, preview.poolId, flippedTo);

    try {
      await this.step(flow, "flip", async () => {
        await records.setSlot(svc.name, { ...preview, state: "live" });
        // The flip takes every user: no canary share is left for the next tables.
        this.routes.forgetCanary(svc.name);
        try {
          await this.routes.apply({ [svc.name]: toSlot });
          await records.setColor(svc.name, toSlot);
        } finally {
          this.routes.settle(svc.name);
        }
        return `traffic → ${toSlot} (${release})`;
      });
    } catch (e) {
      await this.cleanUp(flow, e, async () => {
        try {
          await this.restoreColor(flow, fromSlot, toSlot);
        } catch (restoring) {
          if (isLockLost(restoring)) throw restoring;
          // The proxy acknowledged neither table, so it still serves the last one it did: the old
          // slot's. The records say so already; the next table applied carries it again.
          this.d.event(svc.name, "route.error", `the proxy refused the table that restores ${live ? `${live.release} (${fromSlot})` : "no route"} after a failed flip: ${errorMessage(restoring)}; ${release} is stopped anyway`);
        }
        await undoPreview(this.d, records, svc, toSlot);
      });
      throw e;
    }
    try {
      await this.step(flow, "verify", async () => verifyPublicRoute(this.d.spec, svc));
    } catch (e) {
      await this.cleanUp(flow, e, async () => {
        await this.restoreColor(flow, fromSlot, toSlot);
        await this.d.proxy.drain(preview.poolId, svc.drainTimeoutMs).catch(() => undefined);
        await undoPreview(this.d, records, svc, toSlot);
        this.d.event(svc.name, "flip.reverted", `verification failed; traffic back on ${live ? `${live.release} (${fromSlot})` : "nothing"}`);
      });
      throw e;
    }
    // The old slot is untouched (still running, its record live) until the new release proved itself.
    if (!live || !fromSlot) skipStep(flow, "bake", "nothing to go back to");
    else if (svc.bakeMs <= 0) skipStep(flow, "bake", "bake: 0s");
    else {
      try {
        await this.step(flow, "bake", async () => {
          const v = await bake({ proxy: this.d.proxy, poolId: preview.poolId, instanceIds: flippedTo, isAlive: (id) => this.d.fleet.isAlive(id), windowMs: svc.bakeMs, onExit: (l) => this.d.fleet.onUnexpectedExit((inst) => l(inst.id)) });
          if (!v.ok) throw new StepFailure("bake", v.reason, `bake window of ${formatDuration(svc.bakeMs)}: ${describeBake(v.figures)}`, { ...v.figures });
          return `passed: ${describeBake(v.figures)}`;
        });
      } catch (e) {
        if (isLockLost(e)) throw e;
        // Back at once: the old slot never stopped, so this is one route update.
        await this.step(flow, "revert", async () => {
          // The route first: every millisecond here is a request on a release that just failed.
          try {
            await this.routes.apply({ [svc.name]: fromSlot });
            await this.restoreColor(flow, fromSlot, toSlot);
          } finally {
            this.routes.settle(svc.name);
          }
          await this.d.proxy.drain(preview.poolId, svc.drainTimeoutMs).catch((err) => this.d.event(svc.name, "drain.error", `draining the reverted ${release} failed: ${errorMessage(err)}`));
          await undoPreview(this.d, records, svc, toSlot);
          return `traffic back on ${live.release} (${fromSlot}); ${release} stopped`;
        });
        throw e;
      }
    }
    flow.flipped = true;
    if (!live || !fromSlot) {
      skipStep(flow, "drain", "nothing was live");
      skipStep(flow, "retire", "nothing was live");
    } else {
      await this.step(flow, "drain", async () => {
        let r;
        try {
          r = await this.d.proxy.drain(live.poolId, svc.drainTimeoutMs);
        } catch (e) {
          // The new release is live: the old slot is retired all the same. Its instances get SIGTERM,
          // and the app contract has them finish what they hold before they exit.
          this.d.event(svc.name, "drain.error", `draining ${live.release} (${fromSlot}) failed: ${errorMessage(e)}; retiring it anyway`);
          return `drain failed (${errorMessage(e)}); the old slot is retired anyway`;
        }
        if (r.cut > 0) this.d.event(svc.name, "drain.cut", `drain of ${live.release} cut ${r.cut} request(s) after ${formatDuration(svc.drainTimeoutMs)}`, { ...r });
        return `${r.completed} in-flight request(s) finished${r.cut ? `, ${r.cut} cut after drain_timeout` : ""}`;
      });
      await this.step(flow, "retire", async () => this.warm.retire(records, svc, fromSlot, live, schemaChangesLater ? "the schema changes next" : undefined));
    }
    // After the retire, so a failing hook leaves one live slot behind it, not two.
    if (svc.hooks.afterFlip.length) await this.step(flow, "hooks", async () => runHooks(this.d, svc, release));
  }

  /**
   * The canary: each step sends its share of users to the new slot and is judged over its window.
   * A failing step sends everyone back to the live slot at once, then stops the new release.
   */
  private async canarySteps(flow: Flow, canary: CanarySpec, fromSlot: Slot, toSlot: Slot, release: string, poolId: string, instanceIds: string[]): Promise<void> {
    const { svc, records } = flow;
    const metrics = this.d.proxy.metrics?.bind(this.d.proxy);
    if (!metrics) throw new StepFailure("canary", NGINX_NO_CANARY);
    try {
      for (const percent of canary.steps) {
        await this.step(flow, "canary", async () => {
          await this.routes.setCanary(svc.name, { slot: toSlot, percent, steps: canary.steps, stepStartedAt: Date.now(), stepIntervalMs: canary.stepIntervalMs });
          this.d.event(svc.name, "canary.step", `${release} (${toSlot}) takes ${percent} % of users of ${svc.name} for ${formatDuration(canary.stepIntervalMs)}`, { release, percent });
          const v = await watchCanaryStep({
            metrics, service: svc.name, liveSlot: fromSlot, canarySlot: toSlot, percent, windowMs: canary.stepIntervalMs, thresholds: canary, instanceIds, isAlive: (id) => this.d.fleet.isAlive(id),
          });
          if (!v.ok) throw new StepFailure("canary", `at ${percent} %: ${v.reason}`, describeCanary(v.figures), { ...v.figures });
          return `passed: ${describeCanary(v.figures)}`;
        });
      }
    } catch (e) {
      if (isLockLost(e)) throw e;
      await this.step(flow, "revert", async () => {
        // The route first: every millisecond here is a request on a release that just failed.
        await this.routes.setCanary(svc.name, undefined);
        await this.d.proxy.drain(poolId, svc.drainTimeoutMs).catch((err) => this.d.event(svc.name, "drain.error", `draining the aborted ${release} failed: ${errorMessage(err)}`));
        await undoPreview(this.d, records, svc, toSlot);
        return `every user back on ${fromSlot}; ${release} stopped`;
      });
      throw e;
    }
  }

  /** deploy --hold: the new release stays on the preview address, its deploy recorded as held, the lock released. */
  private async hold(flow: Flow, history: HistoryEntry, actor: string): Promise<HistoryEntry> {
    const { svc, records } = flow;
    await flow.lock.check();
    const color = await records.color(svc.name);
    const slot: Slot = color ? otherSlot(color) : "blue";
    const rec = await records.slot(svc.name, slot);
    if (!rec) throw new StepFailure("hold", `nothing of ${flow.journal.release} is running in ${slot} to hold`);
    const since = Date.now();
    const where = svc.route.previewHost ? `on http://${svc.route.previewHost}${svc.route.pathPrefix === "/" ? "" : svc.route.pathPrefix}` : "(no route.preview_host: reach it with turquoise status --json's instances)";
    const detail = `${rec.release} held in ${slot} ${where}; turquoise promote ${svc.name} flips to it, turquoise abort ${svc.name} stops it`;
    flow.steps.push({ name: "hold", startedAt: since, durationMs: 0, ok: true, detail });
    const held = await records.store.updateHistory(history.id, { outcome: "held", finishedAt: since, steps: flow.steps });
    await records.setSlot(svc.name, { ...rec, state: "held", heldBy: { historyId: history.id, since, actor } });
    // Where recovery must keep the hold: recorded, with its journal still there.
    flow.failpoint("held");
    await records.clearJournal(svc.name);
    flow.emit({ type: "step", name: "hold", status: "done", durationMs: 0, detail });
    await this.routes.apply().catch((e) => this.d.event(svc.name, "route.error", `the proxy refused the table with the preview of ${rec.release}: ${errorMessage(e)}`));
    this.d.event(svc.name, "deploy.held", `deploy of ${svc.name} ${rec.release} held in ${slot} by ${actor}`, { release: rec.release, historyId: history.id, slot });
    return held;
  }

  /** The records first, then the route: a proxy that refuses the table leaves the records right. */
  private async restoreColor(flow: Flow, fromSlot: Slot | null, toSlot: Slot): Promise<void> {
    const { svc, records } = flow;
    if (fromSlot) await records.setColor(svc.name, fromSlot);
    else await records.clearColor(svc.name);
    const rec = await records.slot(svc.name, toSlot);
    if (rec) await records.setSlot(svc.name, { ...rec, state: "preview" });
    await this.routes.apply();
  }

  /** 6 and 11: expand or contract migrations, or the migration between a turquoise path's two flips. */
  private async migrate(flow: Flow, action: Extract<PlanAction, { do: "migrate" }>): Promise<void> {
    const name = action.phase === "expand" ? "migrate-expand" : action.phase === "contract" ? "migrate-contract" : "migrate";
    const db = flow.db!;
    try {
      const progress = progressRelay(flow.svc.name, { live: ({ type: _, ...p }) => flow.emit({ type: "progress", ...p }), event: this.d.event, ...(this.d.migrationMetrics ? { metrics: this.d.migrationMetrics } : {}) });
      const applied = () => this.d.metrics?.migrationApplied(flow.svc.name, action.direction);
      await this.step(flow, name, async () => db.migrate(action.direction, action.to, (line) => flow.emit({ type: "info", message: line }), progress, applied));
    } catch (e) {
      if (e instanceof StepFailure || isLockLost(e)) throw e;
      // Before any flip the new slot is still a preview: stop it. After one, the live release runs on every version along this path.
      if (!flow.flipped) {
        await this.cleanUp(flow, e, async () => {
          const color = await flow.records.color(flow.svc.name);
          await undoPreview(this.d, flow.records, flow.svc, color ? otherSlot(color) : "blue");
        });
      }
      throw new StepFailure(name, `migration ${action.direction} to ${action.to} failed`, errorMessage(e));
    }
  }

  /** After a migration, the live turquoise release must still pass its health and smoke checks. */
  private async recheck(flow: Flow, release: string): Promise<void> {
    const { svc, records } = flow;
    const { fleet, spec } = this.d;
    const color = await records.color(svc.name);
    const instances = color ? fleet.list(svc.name, color) : [];
    await this.step(flow, "recheck", async () => {
      const healthy = await waitUntilHealthy(spec, fleet, svc, instances, release);
      const smoke = await smokeInstances(svc, instances, fleet.releaseDir(svc, release));
      return `${healthy}; ${typeof smoke === "string" ? smoke : "no smoke checks"}`;
    });
  }
}

/** The canary a deploy runs: its own steps over the spec's, the spec's thresholds; none without steps below 100. */
export function canaryFor(svc: ServiceSpec, req: Pick<DeployRequest, "canary">): CanarySpec | undefined {
  const base = svc.canary;
  const steps = (req.canary?.steps ?? base?.steps ?? []).filter((p) => p < 100);
  if (steps.length === 0) return undefined;
  return {
    steps,
    stepIntervalMs: req.canary?.stepIntervalMs ?? base?.stepIntervalMs ?? parseDuration(DEFAULT_CANARY_STEP_INTERVAL),
    maxErrorRate: base?.maxErrorRate ?? DEFAULT_CANARY_MAX_ERROR_RATE / 100,
    maxP99Ratio: base?.maxP99Ratio ?? DEFAULT_CANARY_MAX_P99_RATIO,
    minRequests: base?.minRequests ?? DEFAULT_CANARY_MIN_REQUESTS,
  };
}

/** Stops what a failed deploy started; the live slot is never touched. records: as the caller writes them. */
export async function undoPreview(d: Pick<OrchestratorDeps, "fleet">, records: Records, svc: ServiceSpec, slot: Slot): Promise<void> {
  const color = await records.color(svc.name);
  if (slot === color) return;
  const rec = await records.slot(svc.name, slot);
  await d.fleet.stop(d.fleet.list(svc.name, slot), svc.stopTimeoutMs);
  if (rec) await records.clearSlot(svc.name, slot);
}
