// The orchestrator runs the deploy flow of DESIGN.md: lock, plan, start the idle slot, wait until
// healthy, smoke, expand migrations, flip, verify, drain, retire the old slot, contract
// migrations, record. When the schema change is breaking, the plan walks the turquoise path:
// start R, flip L → R, migrate, re-check R, start T, flip R → T. Every step is journaled before
// and after it runs, so an agent that restarts can finish, undo or resume the flow (recover()).
import http from "node:http";
import { TurquoiseError, errorMessage } from "../errors.js";
import { waitHealthy, whyNotHealthy } from "../health/checks.js";
import { describePlan, planPath, type PlanAction, type ReleaseInfo, type SchemaRange } from "../plan/planner.js";
import type { Proxy, Route, RouteTable } from "../proxy/contract.js";
import { otherSlot, SLOTS, type InstanceInfo, type ReleaseDescription, type Slot } from "../runtime/contract.js";
import type { Spec, ServiceSpec } from "../spec/types.js";
import type { HistoryEntry, StepTiming, Store } from "../state/contract.js";
import { ServiceDatabase, stepInfos } from "./database.js";
import type { Fleet } from "./fleet.js";
import { keys, type Journal, type Records, type SlotRecord } from "./records.js";
import { formatRange, releaseInfo } from "./release.js";
import { runSmoke } from "./smoke.js";
import { bake, describeBake } from "./bake.js";
import { closeOrphanHistory, releaseDeadOwners } from "./lock-owner.js";
import { runCommand } from "../util/command.js";
import { scrubSecrets } from "../migrate/redact.js";
import { crashPoint } from "../util/failpoint.js";

export const LOCK_TTL_MS = 30_000;
const LOCK_RENEW_MS = 10_000;
const LOCK_POLL_MS = 250;
const LOG_TAIL_LINES = 20;

export type StepStatus = "started" | "done" | "failed" | "skipped";

export type Progress =
  | { type: "plan"; service: string; kind: "deploy" | "rollback"; release: string; via: string | null; from: string | null; steps: string[] }
  | { type: "step"; name: string; status: StepStatus; durationMs?: number; detail?: string }
  | { type: "info"; message: string };

export interface DeployRequest {
  service: string;
  release: string;
  actor: string;
  /** The turquoise release to walk through, when the schema change needs one. */
  via?: string;
  /** Overrides the schema range the target (or via) release declares. */
  schema?: SchemaRange;
  viaSchema?: SchemaRange;
  /** Queue behind a running deploy instead of failing at once. */
  wait?: boolean;
  /** How long a queued deploy waits for the lock; no limit when absent (the API always sets one). */
  waitTimeoutMs?: number;
  /** Aborted when the client has gone: a deploy still queued for the lock is dropped. */
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
}

export interface MigrationRequest {
  action: "status" | "up" | "down" | "to";
  to?: number;
  dryRun?: boolean;
  actor: string;
}

export interface DeployOutcome {
  history: HistoryEntry;
}

export interface ComputedPlan {
  actions: PlanAction[];
  lines: string[];
  via: string | null;
  live: SlotRecord | null;
  schemas: Record<string, SchemaRange>;
}

const NO_DATABASE = "no database configured for this service: nothing to migrate";

class StepFailure extends Error {
  constructor(readonly step: string, message: string, readonly output?: string, readonly figures?: Record<string, unknown>) {
    super(message);
  }
}

export interface OrchestratorDeps {
  spec: Spec;
  store: Store;
  records: Records;
  fleet: Fleet;
  proxy: Proxy;
  apiUrl: string;
  agentId: string;
  event: (service: string | null, type: string, message: string, data?: Record<string, unknown>) => void;
  /**
   * Called at each point of a flow where an agent may die: "lock" once the lock is taken, "history"
   * once its history entry is written, right after each journal write with the entry written
   * ("plan:done", "flip:started", "flip:done"...), and "cleared" once the flow is recorded and its
   * journal removed, before its lock is released. In-process tests abandon the flow here, or break
   * a driver mid-flow. By default, the TURQUOISE_CRASH_AFTER failpoints (util/failpoint.ts).
   */
  failpoint?: (point: string) => void;
}

/** One flow under way: its journal, its step timings, where it reports progress. */
interface Flow {
  svc: ServiceSpec;
  kind: "deploy" | "rollback";
  journal: Journal;
  steps: StepTiming[];
  emit: (p: Progress) => void;
  db?: ServiceDatabase;
  schemas: Record<string, SchemaRange>;
  /** True once any flip of this flow happened: a later failure cannot simply be undone. */
  flipped: boolean;
  /** Whether the schema changes after a flip in this flow: then an old slot must not stay warm. */
  schemaChangesLater: (index: number) => boolean;
}

export class Orchestrator {
  private readonly warmTimers = new Map<string, NodeJS.Timeout>();
  private routesQueue: Promise<unknown> = Promise.resolve();
  /** Colors of flips under way, between their route update and their Store write. */
  private readonly pendingColors = new Map<string, Slot>();
  private readonly resumes = new Set<Promise<unknown>>();

  constructor(private readonly d: OrchestratorDeps) {}

  service(name: string): ServiceSpec {
    const svc = this.d.spec.services[name];
    if (!svc) throw new TurquoiseError("NOT_FOUND", `no service named "${name}" in ${this.d.spec.file}; known: ${Object.keys(this.d.spec.services).join(", ") || "none"}`);
    return svc;
  }

  database(svc: ServiceSpec): ServiceDatabase | undefined {
    return svc.database ? ServiceDatabase.open(svc.database, this.d.spec.dir) : undefined;
  }

  async deploy(req: DeployRequest): Promise<DeployOutcome> {
    return this.run("deploy", req);
  }

  /** Back to the release live before the last deploy, through the same turquoise release, migrating down. */
  async rollback(req: Omit<DeployRequest, "release" | "via">): Promise<DeployOutcome> {
    this.service(req.service);
    const previous = await this.d.records.previous(req.service);
    if (!previous) throw new TurquoiseError("NOT_FOUND", `service "${req.service}" has no previous release to roll back to`);
    return this.run("rollback", { ...req, release: previous.release, ...(previous.via ? { via: previous.via } : {}) });
  }

  /**
   * The healer's way out of a crash loop: back to the previous release, but only when that needs
   * no migration and no turquoise release (it runs on the schema the database has now).
   */
  async rollbackIfSafe(service: string, why: string): Promise<{ ok: true; release: string } | { ok: false; reason: string }> {
    let plan: ComputedPlan;
    try {
      plan = await this.plan("rollback", { service, release: "" });
    } catch (e) {
      return { ok: false, reason: errorMessage(e) };
    }
    if (plan.via) return { ok: false, reason: `the way back walks through the turquoise release ${plan.via}` };
    if (plan.actions.some((a) => a.do === "migrate")) return { ok: false, reason: "the previous release needs a migration first" };
    const target = plan.actions.find((a) => a.do === "start");
    const release = target && "release" in target ? target.release : undefined;
    if (!release) return { ok: false, reason: "no previous release to start" };
    const out = await this.rollback({ service, actor: `agent ${this.d.agentId} (healer: ${why})`, wait: true, waitTimeoutMs: LOCK_TTL_MS });
    return out.history.outcome === "succeeded" ? { ok: true, release } : { ok: false, reason: `the rollback ended ${out.history.outcome}` };
  }

  /**
   * `turquoise migrate`: status, or moving the schema by hand, under the deploy lock. A target
   * version outside the live release's range is refused: that change belongs in a deploy plan.
   */
  async migrations(service: string, req: MigrationRequest): Promise<Record<string, unknown>> {
    const svc = this.service(service);
    const db = this.database(svc);
    if (!db) throw new TurquoiseError("USAGE", `${svc.name} has no database block in ${this.d.spec.file}: nothing to migrate`);
    const { status, steps } = await db.state();
    const color = await this.d.records.color(svc.name);
    const live = color ? await this.d.records.slot(svc.name, color) : undefined;
    const liveInfo = live ? await this.releaseInfo(svc, live.release, live.schema) : null;
    const summary = {
      current: status.current,
      latest: steps.length ? steps[steps.length - 1]!.version : 0,
      applied: status.applied,
      pending: status.pending.map((p) => ({ version: p.version, name: p.name, phase: p.phase, transactional: p.transactional, hasDown: p.downFile !== undefined })),
      live: liveInfo ? { release: liveInfo.name, schema: liveInfo.schema } : null,
    };
    if (req.action === "status") return summary;

    const latest = summary.latest;
    const to = req.action === "up" ? (req.to ?? latest) : req.action === "down" ? (req.to ?? Math.max(0, status.current - 1)) : req.to;
    if (to === undefined || !Number.isInteger(to) || to < 0) throw new TurquoiseError("USAGE", `migrate ${req.action} needs a target version (an integer ≥ 0)`);
    if (to > latest) throw new TurquoiseError("USAGE", `no migration step reaches version ${to}: the last step in ${svc.database!.migrationsDir} is ${latest}`);
    const direction = to >= status.current ? "up" : "down";
    if (req.action !== "to" && req.action !== direction && to !== status.current) throw new TurquoiseError("USAGE", `migrate ${req.action} --to ${to}: the database is at ${status.current}, so that is a migrate ${direction}`);
    if (liveInfo && (to < liveInfo.schema.min || to > liveInfo.schema.max)) {
      throw new TurquoiseError("PLAN_REFUSED", `migrating ${svc.name} to ${to} would break the live release ${liveInfo.name}, which runs on schema ${formatRange(liveInfo.schema)}; deploy a release that runs on ${to} (through a turquoise release if needed) and let the deploy migrate`);
    }
    if (req.dryRun) {
      const m = db.migrator();
      try {
        const run = direction === "up" ? await m.up(steps, { to, dryRun: true }) : await m.down(steps, { to, dryRun: true });
        return { ...summary, dryRun: true, from: run.from, to: run.to, steps: run.steps };
      } finally {
        await m.close();
      }
    }
    const owner = `${req.actor} (migrate ${direction} to ${to}, agent ${this.d.agentId}, #${Math.random().toString(36).slice(2, 8)})`;
    await this.takeLock(svc.name, owner, false, () => {});
    // A long migration must not outlive its lock: renew it as a deploy does.
    const renew = this.keepLock(svc.name, owner);
    try {
      const lines: string[] = [];
      const result = await db.migrate(direction, to, (l) => lines.push(l));
      this.d.event(svc.name, "migrate", `${req.actor}: ${result}`, { from: status.current, to });
      return { ...summary, dryRun: false, from: status.current, to, result, log: lines };
    } finally {
      clearInterval(renew);
      await this.d.store.releaseLock(keys.lock(svc.name), owner);
    }
  }

  /** The plan a deploy would run now; changes nothing. */
  async plan(kind: "deploy" | "rollback", req: Omit<DeployRequest, "actor">): Promise<ComputedPlan> {
    const svc = this.service(req.service);
    if (kind === "rollback") {
      const previous = await this.d.records.previous(svc.name);
      if (!previous) throw new TurquoiseError("NOT_FOUND", `service "${svc.name}" has no previous release to roll back to`);
      return this.computePlan(svc, "rollback", { ...req, release: previous.release, ...(previous.via ? { via: previous.via } : {}) });
    }
    return this.computePlan(svc, kind, req);
  }

  private async computePlan(svc: ServiceSpec, kind: "deploy" | "rollback", req: Omit<DeployRequest, "actor">): Promise<ComputedPlan> {
    const { records, fleet } = this.d;
    const color = await records.color(svc.name);
    const live = (color ? await records.slot(svc.name, color) : undefined) ?? null;
    // Asked once per release: for docker each answer is an image inspect.
    const described = new Map<string, ReleaseDescription>();
    for (const r of [req.release, req.via]) {
      if (!r) continue;
      const d = await fleet.describeRelease(svc, r);
      described.set(r, d);
      if (!d.exists && !(await this.warmWith(svc, r))) throw new TurquoiseError("NOT_FOUND", `${d.reason ?? `release "${r}" of ${svc.name} not found`} (${this.d.spec.file})`);
    }
    const db = this.database(svc);
    if (!db) {
      if (req.via) throw new TurquoiseError("USAGE", `--via needs a database: ${svc.name} has no database block, so there is no schema to walk`);
      const actions: PlanAction[] = [{ do: "start", release: req.release }, { do: "flip", from: live?.release ?? null, to: req.release }];
      return { actions, lines: this.describeSimple(svc, live, req.release), via: null, live, schemas: {} };
    }

    const schemas: Record<string, SchemaRange> = {};
    const info = async (release: string, override?: SchemaRange) => {
      const rec = live?.release === release ? live.schema : undefined;
      const i = await this.releaseInfo(svc, release, override ?? rec, described.get(release));
      schemas[release] = i.schema;
      return i;
    };
    const liveInfo = live ? await info(live.release) : null;
    const target = await info(req.release, req.schema);
    const via = req.via ? await info(req.via, req.viaSchema) : undefined;
    const { status, steps } = await db.state();
    const plan = planPath({ kind, live: liveInfo, target, ...(via ? { via } : {}), current: status.current, steps: stepInfos(steps) });
    if (!plan.ok) {
      throw new TurquoiseError("PLAN_REFUSED", `${kind} of ${svc.name} ${req.release} refused:\n${plan.reasons.map((r) => `  - ${r}`).join("\n")}`, { data: { reasons: plan.reasons, need: plan.need ?? null } });
    }
    const actions = plan.actions;
    const lines = [`database schema at ${status.current}; ${Object.entries(schemas).map(([r, s]) => `${r} runs on ${formatRange(s)}`).join(", ")}`, ...describePlan(plan)];
    return { actions, lines, via: via?.name ?? null, live, schemas };
  }

  /** The release's declared schema range (or the override), as the planner needs it. */
  private async releaseInfo(svc: ServiceSpec, release: string, override?: SchemaRange, known?: ReleaseDescription): Promise<ReleaseInfo> {
    const declared = override ? null : (known ?? (await this.d.fleet.describeRelease(svc, release))).schema;
    const where = svc.runtime === "docker" ? `the image's label turquoise.schema (e.g. LABEL turquoise.schema=1..2)` : `${this.d.fleet.releaseDir(svc, release)}/turquoise.json as {"schema": {"min": N, "max": M}}`;
    return releaseInfo(svc.name, release, declared, where, override);
  }

  private describeSimple(svc: ServiceSpec, live: SlotRecord | null, release: string): string[] {
    const n = svc.replicas;
    const lines = [
      `start ${n} instance${n > 1 ? "s" : ""} of ${release} in the idle slot (or reuse it if warm), wait until healthy (deploy_timeout ${svc.deployTimeoutMs}ms), smoke checks: ${svc.smoke.length ? svc.smoke.map((s) => s.name).join(", ") : "none defined"}`,
      `expand migrations: none (${NO_DATABASE})`,
      `flip ${svc.route.host ?? "*"}${svc.route.pathPrefix} to ${release}, verify through the public route, flip back on failure`,
      live ? `drain ${live.release} (${live.slot}) up to ${svc.drainTimeoutMs}ms, then ${svc.keepPreviousMs > 0 ? `keep it warm for ${svc.keepPreviousMs}ms` : "stop it"}` : "nothing live to drain",
      `contract migrations: none (${NO_DATABASE})`,
    ];
    return lines.map((l, n) => `${n + 1}. ${l}`);
  }

  private async run(kind: "deploy" | "rollback", req: DeployRequest): Promise<DeployOutcome> {
    const svc = this.service(req.service);
    const { records, store } = this.d;
    const emit = req.onProgress ?? (() => {});
    const steps: StepTiming[] = [];
    // The nonce keeps two deploys by the same actor from sharing (and so re-taking) one lock.
    const owner = `${req.actor} (${kind} ${req.release}, agent ${this.d.agentId}, #${Math.random().toString(36).slice(2, 8)})`;

    const lockStarted = Date.now();
    emit({ type: "step", name: "lock", status: "started" });
    await this.takeLock(svc.name, owner, !!req.wait, emit, { ...(req.waitTimeoutMs !== undefined ? { deadline: lockStarted + req.waitTimeoutMs } : {}), ...(req.signal ? { signal: req.signal } : {}) });
    // Before the renewals start: an in-process test that ends the agent here leaves no timer behind.
    this.failpoint("lock");
    const renew = this.keepLock(svc.name, owner);
    steps.push({ name: "lock", startedAt: lockStarted, durationMs: Date.now() - lockStarted, ok: true });
    emit({ type: "step", name: "lock", status: "done", durationMs: Date.now() - lockStarted });

    let history: HistoryEntry | undefined;
    let flow: Flow | undefined;
    try {
      const planStarted = Date.now();
      emit({ type: "step", name: "plan", status: "started" });
      let plan: ComputedPlan;
      try {
        plan = await this.computePlan(svc, kind, req);
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
        service: svc.name, kind, release: req.release, previousRelease: live?.release ?? null, actor: req.actor,
        startedAt: lockStarted, finishedAt: null, outcome: "running", plan: plan.lines, steps, error: null,
      });
      this.failpoint("history");
      const journal: Journal = {
        historyId: history.id, service: svc.name, kind, release: req.release, via: plan.via, actor: req.actor, owner,
        previousRelease: live?.release ?? null, steps: ["lock:done", "plan:done"], startedAt: lockStarted,
      };
      await this.writeJournal(journal);
      this.d.event(svc.name, `${kind}.started`, `${kind} of ${svc.name} ${req.release}${plan.via ? ` via ${plan.via}` : ""} started by ${req.actor}`, { release: req.release, historyId: history.id });

      const db = this.database(svc);
      flow = {
        svc, kind, journal, steps, emit, schemas: plan.schemas, flipped: false,
        ...(db ? { db } : {}),
        schemaChangesLater: (i) => plan.actions.slice(i + 1).some((a) => a.do === "migrate"),
      };
      for (const [i, action] of plan.actions.entries()) {
        if (!db && action.do === "flip") await this.skip(flow, "migrate-expand", NO_DATABASE);
        if (action.do === "start") await this.startRelease(flow, action.release);
        else if (action.do === "flip") await this.flip(flow, action.to, flow.schemaChangesLater(i));
        else if (action.do === "migrate") await this.migrate(flow, action);
        else await this.recheck(flow, action.release);
      }
      if (!db) await this.skip(flow, "migrate-contract", NO_DATABASE);

      // A resumed path starts at its turquoise release; what rollback returns to is still the release before it.
      if (live && live.release !== req.release && live.release !== plan.via) await records.setPrevious(svc.name, { release: live.release, via: plan.via });
      // A successful deploy is a fresh start for self-healing.
      await records.clearDegraded(svc.name);
      await records.clearQuarantine(svc.name);
      const recordStarted = Date.now();
      steps.push({ name: "record", startedAt: recordStarted, durationMs: 0, ok: true });
      history = await store.updateHistory(history.id, { outcome: "succeeded", finishedAt: Date.now(), steps });
      await this.clearJournal(svc.name);
      emit({ type: "step", name: "record", status: "done", durationMs: Date.now() - recordStarted });
      this.d.event(svc.name, `${kind}.succeeded`, `${kind} of ${svc.name} ${req.release} succeeded`, { release: req.release, historyId: history.id });
      return { history };
    } catch (e) {
      if (history) {
        const flippedBack = e instanceof StepFailure && e.step === "verify";
        const reverted = e instanceof StepFailure && e.step === "bake";
        const error = e instanceof StepFailure && e.output ? `${e.message}\n${e.output}` : errorMessage(e);
        history = await store.updateHistory(history.id, { outcome: reverted ? "reverted" : flippedBack ? "rolled-back" : "failed", finishedAt: Date.now(), steps, error });
        await this.clearJournal(svc.name);
        if (reverted) this.d.event(svc.name, `${kind}.reverted`, `${kind} of ${svc.name} ${req.release} reverted: it failed its bake window (${e.message}); ${await this.liveDescription(svc)} is live`, { release: req.release, historyId: history.id, ...(e.figures ?? {}) });
        else this.d.event(svc.name, `${kind}.failed`, `${kind} of ${svc.name} ${req.release} failed: ${e instanceof Error ? e.message : e}`, { release: req.release, historyId: history.id });
      }
      if (e instanceof StepFailure) {
        const where = await this.liveDescription(svc);
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
      clearInterval(renew);
      await store.releaseLock(keys.lock(svc.name), owner);
    }
  }

  private async liveDescription(svc: ServiceSpec): Promise<string> {
    const color = await this.d.records.color(svc.name);
    const rec = color ? await this.d.records.slot(svc.name, color) : undefined;
    return rec ? `${rec.release} (${color})` : "nothing";
  }

  /** Runs one journaled step: "started" is written before it runs, "done" after. */
  private async step<T>(flow: Flow, name: string, fn: () => Promise<T>): Promise<T> {
    const { journal, steps, emit } = flow;
    const startedAt = Date.now();
    journal.steps.push(`${name}:started`);
    await this.writeJournal(journal);
    emit({ type: "step", name, status: "started" });
    try {
      const out = await fn();
      const durationMs = Date.now() - startedAt;
      journal.steps.push(`${name}:done`);
      await this.writeJournal(journal);
      const detail = typeof out === "string" ? out : undefined;
      steps.push({ name, startedAt, durationMs, ok: true, ...(detail ? { detail } : {}) });
      emit({ type: "step", name, status: "done", durationMs, ...(detail ? { detail } : {}) });
      return out;
    } catch (e) {
      const durationMs = Date.now() - startedAt;
      const detail = e instanceof StepFailure && e.output ? `${e.message}\n${e.output}` : errorMessage(e);
      steps.push({ name, startedAt, durationMs, ok: false, detail });
      emit({ type: "step", name, status: "failed", durationMs, detail });
      throw e;
    }
  }

  /** Every journal write of a flow goes through here, so that each one is a failpoint. */
  private async writeJournal(journal: Journal): Promise<void> {
    await this.d.records.writeJournal(journal);
    this.failpoint(journal.steps[journal.steps.length - 1]!);
  }

  private async clearJournal(service: string): Promise<void> {
    await this.d.records.clearJournal(service);
    this.failpoint("cleared");
  }

  private failpoint(point: string): void {
    if (this.d.failpoint) return this.d.failpoint(point);
    // The end-to-end tests name a step for the point right after its "done" (TURQUOISE_CRASH_AFTER=flip).
    crashPoint(point.endsWith(":done") ? point.slice(0, -":done".length) : point);
  }

  private async skip(flow: Flow, name: string, why: string): Promise<void> {
    flow.steps.push({ name, startedAt: Date.now(), durationMs: 0, ok: true, detail: `skipped: ${why}` });
    flow.emit({ type: "step", name, status: "skipped", durationMs: 0, detail: why });
  }

  private async warmWith(svc: ServiceSpec, release: string): Promise<Slot | undefined> {
    for (const slot of SLOTS) {
      const rec = await this.d.records.slot(svc.name, slot);
      if (rec?.state === "warm" && rec.release === release && this.d.fleet.list(svc.name, slot).length > 0) return slot;
    }
    return undefined;
  }

  /** Start, healthy and smoke for a release in the idle slot; a warm slot already running it is reused. */
  private async startRelease(flow: Flow, release: string): Promise<void> {
    const { svc } = flow;
    const { records, fleet } = this.d;
    const color = await records.color(svc.name);
    const slot: Slot = color ? otherSlot(color) : "blue";
    const idle = await records.slot(svc.name, slot);
    if (idle?.state === "warm" && idle.release === release && fleet.list(svc.name, slot).length > 0) {
      await this.step(flow, "healthy", async () => this.waitHealthy(svc, fleet.list(svc.name, slot), "warm instances"));
      await records.setSlot(svc.name, { ...idle, state: "preview" });
      return;
    }
    try {
      const stale = fleet.list(svc.name, slot);
      if (stale.length) await fleet.stop(stale, svc.stopTimeoutMs);
      const schema = flow.schemas[release];
      const poolId = `${svc.name}/${slot}/${release}/${Date.now().toString(36)}`;
      await records.setSlot(svc.name, { slot, release, poolId, state: "preview", startedAt: Date.now(), ...(schema ? { schema } : {}) });
      const fresh = await this.step(flow, "start", async () => fleet.startSlot(svc, slot, release, this.d.apiUrl, this.instanceEnvFor(svc)));
      await this.step(flow, "healthy", async () => this.waitHealthy(svc, fresh, "new instances"));
      await this.step(flow, "smoke", async () => this.smoke(svc, fresh, release));
    } catch (e) {
      await this.undoPreview(svc, slot);
      throw e;
    }
  }

  /** The environment Turquoise adds to a service's instances: its database URL, when it has one. */
  instanceEnvFor(svc: ServiceSpec): Record<string, string> {
    const db = this.database(svc);
    return db ? { [db.spec.envName]: db.url } : {};
  }

  /** Flip to the preview slot, verify, drain and retire the old slot. */
  private async flip(flow: Flow, release: string, schemaChangesLater: boolean): Promise<void> {
    const { svc } = flow;
    const { records } = this.d;
    const fromSlot = (await records.color(svc.name)) ?? null;
    const live = fromSlot ? await records.slot(svc.name, fromSlot) : undefined;
    const toSlot: Slot = fromSlot ? otherSlot(fromSlot) : "blue";
    const preview = await records.slot(svc.name, toSlot);
    if (!preview || preview.release !== release) throw new StepFailure("flip", `nothing of ${release} is running in ${toSlot} to flip to`);

    try {
      await this.step(flow, "flip", async () => {
        await records.setSlot(svc.name, { ...preview, state: "live" });
        try {
          await this.applyRoutes({ [svc.name]: toSlot });
          await records.setColor(svc.name, toSlot);
        } finally {
          this.settleColor(svc.name);
        }
        return `traffic → ${toSlot} (${release})`;
      });
    } catch (e) {
      await this.restoreColor(svc, fromSlot, toSlot);
      await this.undoPreview(svc, toSlot);
      throw e;
    }
    try {
      await this.step(flow, "verify", async () => this.verify(svc));
    } catch (e) {
      await this.restoreColor(svc, fromSlot, toSlot);
      await this.d.proxy.drain(preview.poolId, svc.drainTimeoutMs).catch(() => undefined);
      await this.undoPreview(svc, toSlot);
      this.d.event(svc.name, "flip.reverted", `verification failed; traffic back on ${live ? `${live.release} (${fromSlot})` : "nothing"}`);
      throw e;
    }
    // The old slot is untouched (still running, its record live) until the new release proved itself.
    if (!live || !fromSlot) await this.skip(flow, "bake", "nothing to go back to");
    else if (svc.bakeMs <= 0) await this.skip(flow, "bake", "bake: 0s");
    else {
      try {
        await this.step(flow, "bake", async () => {
          const instances = this.d.fleet.list(svc.name, toSlot);
          const v = await bake({ proxy: this.d.proxy, poolId: preview.poolId, instanceIds: instances.map((i) => i.id), isAlive: (id) => this.d.fleet.isAlive(id), windowMs: svc.bakeMs, onExit: (l) => this.d.fleet.onUnexpectedExit((inst) => l(inst.id)) });
          if (!v.ok) throw new StepFailure("bake", v.reason, `bake window of ${svc.bakeMs}ms: ${describeBake(v.figures)}`, { ...v.figures });
          return `passed: ${describeBake(v.figures)}`;
        });
      } catch (e) {
        // Back at once: the old slot never stopped, so this is one route update.
        await this.step(flow, "revert", async () => {
          // The route first: every millisecond here is a request on a release that just failed.
          try {
            await this.applyRoutes({ [svc.name]: fromSlot });
            await this.restoreColor(svc, fromSlot, toSlot);
          } finally {
            this.settleColor(svc.name);
          }
          await this.d.proxy.drain(preview.poolId, svc.drainTimeoutMs).catch((err) => this.d.event(svc.name, "drain.error", `draining the reverted ${release} failed: ${errorMessage(err)}`));
          await this.undoPreview(svc, toSlot);
          return `traffic back on ${live.release} (${fromSlot}); ${release} stopped`;
        });
        throw e;
      }
    }
    flow.flipped = true;
    if (!live || !fromSlot) {
      await this.skip(flow, "drain", "nothing was live");
      await this.skip(flow, "retire", "nothing was live");
    } else {
      await this.step(flow, "drain", async () => {
        const r = await this.d.proxy.drain(live.poolId, svc.drainTimeoutMs);
        if (r.cut > 0) this.d.event(svc.name, "drain.cut", `drain of ${live.release} cut ${r.cut} request(s) after ${svc.drainTimeoutMs}ms`, { ...r });
        return `${r.completed} in-flight request(s) finished${r.cut ? `, ${r.cut} cut after drain_timeout` : ""}`;
      });
      await this.step(flow, "retire", async () => this.retire(svc, fromSlot, live, schemaChangesLater ? "the schema changes next" : undefined));
    }
    // After the retire, so a failing hook leaves one live slot behind it, not two.
    if (svc.hooks.afterFlip.length) await this.step(flow, "hooks", async () => this.runHooks(svc, release));
  }

  /** after_flip hooks, in order: a signal to a service's live instances, or a command. */
  private async runHooks(svc: ServiceSpec, release: string): Promise<string> {
    const done: string[] = [];
    for (const hook of svc.hooks.afterFlip) {
      if ("signal" in hook) {
        const n = await this.signalService(hook.signal.service, hook.signal.signal);
        done.push(`${hook.signal.signal} → ${n} instance(s) of ${hook.signal.service}`);
      } else {
        const r = await runCommand(hook.command, { cwd: this.d.spec.dir, env: { TURQUOISE_SERVICE: svc.name, TURQUOISE_RELEASE: release }, timeoutMs: hook.timeoutMs });
        if (!r.ok) throw new StepFailure("hooks", `after_flip hook ${JSON.stringify(hook.command)} failed`, r.output);
        done.push(`${hook.command.join(" ")}: ${r.output.split("\n")[0]}`);
      }
    }
    return done.join("; ");
  }

  /** `turquoise signal`: sends a signal to a service's live instances (or all of them) through their runtime. */
  async signalService(service: string, signal: NodeJS.Signals, all = false): Promise<number> {
    const svc = this.service(service);
    const color = await this.d.records.color(svc.name);
    const targets = all ? this.d.fleet.list(svc.name) : color ? this.d.fleet.list(svc.name, color) : [];
    if (targets.length === 0) throw new TurquoiseError("NOT_FOUND", `${svc.name} has no ${all ? "" : "live "}instances to signal`);
    await this.d.fleet.signal(targets, signal);
    this.d.event(svc.name, "signal", `${signal} sent to ${targets.length} instance(s)`);
    return targets.length;
  }

  private async restoreColor(svc: ServiceSpec, fromSlot: Slot | null, toSlot: Slot): Promise<void> {
    if (fromSlot) await this.d.records.setColor(svc.name, fromSlot);
    else await this.d.records.clearColor(svc.name);
    const rec = await this.d.records.slot(svc.name, toSlot);
    if (rec) await this.d.records.setSlot(svc.name, { ...rec, state: "preview" });
    await this.applyRoutes();
  }

  private async migrate(flow: Flow, action: Extract<PlanAction, { do: "migrate" }>): Promise<void> {
    const name = action.phase === "expand" ? "migrate-expand" : action.phase === "contract" ? "migrate-contract" : "migrate";
    const db = flow.db!;
    try {
      await this.step(flow, name, async () => db.migrate(action.direction, action.to, (line) => flow.emit({ type: "info", message: line })));
    } catch (e) {
      if (e instanceof StepFailure) throw e;
      // Before any flip the new slot is still a preview: stop it. After one, the live release runs on every version along this path.
      if (!flow.flipped) {
        const color = await this.d.records.color(flow.svc.name);
        await this.undoPreview(flow.svc, color ? otherSlot(color) : "blue");
      }
      throw new StepFailure(name, `migration ${action.direction} to ${action.to} failed`, errorMessage(e));
    }
  }

  /** After a migration, the live turquoise release must still pass its health and smoke checks. */
  private async recheck(flow: Flow, release: string): Promise<void> {
    const { svc } = flow;
    const color = await this.d.records.color(svc.name);
    const instances = color ? this.d.fleet.list(svc.name, color) : [];
    await this.step(flow, "recheck", async () => {
      const healthy = await this.waitHealthy(svc, instances, `${release} instances`);
      const smoke = await this.smoke(svc, instances, release);
      return `${healthy}; ${typeof smoke === "string" ? smoke : "no smoke checks"}`;
    });
  }

  /** Renews a held deploy lock until cleared; a lost lock or a store error is an event, never a crash. */
  keepLock(service: string, owner: string): NodeJS.Timeout {
    return setInterval(() => {
      this.d.store.renewLock(keys.lock(service), owner, LOCK_TTL_MS).then(
        (held) => { if (!held) this.d.event(service, "lock.lost", `the deploy lock held by ${owner} expired before it was renewed`); },
        (e) => this.d.event(service, "lock.error", `renewing the deploy lock failed: ${errorMessage(e)}`),
      );
    }, LOCK_RENEW_MS);
  }

  private async takeLock(service: string, owner: string, wait: boolean, emit: (p: Progress) => void, bounds: { deadline?: number; signal?: AbortSignal } = {}): Promise<void> {
    let told = false;
    for (;;) {
      const r = await this.d.store.acquireLock(keys.lock(service), owner, LOCK_TTL_MS);
      if (r.ok) return;
      const since = new Date(r.holder.since).toISOString();
      if (!wait) {
        throw new TurquoiseError("LOCKED", `a deploy of ${service} is already running: lock held by ${r.holder.owner} since ${since} (${Math.round((Date.now() - r.holder.since) / 1000)}s ago); use --wait to queue behind it`, { data: { holder: r.holder } });
      }
      // A queue without bounds grows with every client that gave up, and holds each one forever.
      const why = bounds.signal?.aborted ? "its client went away" : bounds.deadline !== undefined && Date.now() >= bounds.deadline ? "its --wait-timeout ran out" : undefined;
      if (why) {
        this.d.event(service, "deploy.dropped", `a queued ${owner} was dropped: ${why} while ${r.holder.owner} held the lock`, { owner, holder: r.holder.owner });
        throw new TurquoiseError("LOCKED", `gave up waiting for the deploy lock of ${service} (${why}): held by ${r.holder.owner} since ${since}`, { data: { holder: r.holder } });
      }
      if (!told) emit({ type: "info", message: `waiting for the deploy lock, held by ${r.holder.owner} since ${since}` });
      told = true;
      await new Promise((res) => setTimeout(res, LOCK_POLL_MS));
    }
  }

  private async waitHealthy(svc: ServiceSpec, instances: InstanceInfo[], what: string): Promise<string> {
    const started = Date.now();
    const r = await waitHealthy(instances.map((i) => ({ id: i.id, host: i.host, port: i.port })), svc.health, {
      deadline: started + svc.deployTimeoutMs,
      isAlive: (id) => this.d.fleet.isAlive(id),
    });
    if (r.ok) {
      await this.runtimeHealthy(svc, instances, started + svc.deployTimeoutMs);
      this.d.fleet.markReady(instances);
      return `${instances.length} ${what} passing after ${Date.now() - started}ms`;
    }
    const byId = new Map(instances.map((i) => [i.id, i]));
    const lines: string[] = [];
    for (const f of r.failing) {
      const inst = byId.get(f.id);
      const raw = inst ? (await this.d.fleet.logs(inst, LOG_TAIL_LINES).catch(() => "")).trim() : "";
      // Apps print their database URL at start more often than one would like; history must not keep it.
      const db = this.database(svc);
      const log = db ? scrubSecrets(raw, db.url) : raw;
      // How it exited, or where it listens instead of its PORT: what the check alone cannot say.
      const diagnosis = inst ? await this.d.fleet.diagnose(inst).catch(() => undefined) : undefined;
      lines.push(`${f.id}: ${f.status}: ${f.output}${diagnosis ? ` (${diagnosis})` : ""}${log ? `\n  last output:\n  ${log.split("\n").join("\n  ")}` : ""}`);
    }
    throw new StepFailure("healthy", whyNotHealthy(r, svc.health, svc.deployTimeoutMs), lines.join("\n"));
  }

  /** A runtime's own verdict (a Docker HEALTHCHECK) counts beside Turquoise's checks: wait while it starts, fail when it says unhealthy. */
  private async runtimeHealthy(svc: ServiceSpec, instances: InstanceInfo[], deadline: number): Promise<void> {
    for (;;) {
      const states = await Promise.all(instances.map((i) => this.d.fleet.runtime(i).inspect(i)));
      const bad = states.findIndex((s) => s.running && s.health === "unhealthy");
      if (bad >= 0) throw new StepFailure("healthy", `${instances[bad]!.id}: the image's HEALTHCHECK reports unhealthy`);
      if (!states.some((s) => s.running && s.health === "starting")) return;
      if (Date.now() > deadline) throw new StepFailure("healthy", `the image's HEALTHCHECK was still starting at deploy_timeout (${svc.deployTimeoutMs}ms)`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  private async smoke(svc: ServiceSpec, instances: InstanceInfo[], release: string): Promise<string> {
    if (svc.smoke.length === 0) return "no smoke checks defined";
    const cwd = this.d.fleet.releaseDir(svc, release);
    for (const check of svc.smoke) {
      for (const inst of instances) {
        const r = await runSmoke(check, inst, cwd);
        if (!r.ok) throw new StepFailure("smoke", `smoke check "${check.name}" failed against ${inst.host}:${inst.port}`, r.output);
      }
    }
    return `${svc.smoke.length} check(s) passed on ${instances.length} instance(s)`;
  }

  /** One request through the proxy's public address, on the new route, must not fail. */
  private async verify(svc: ServiceSpec): Promise<string> {
    const { host, port } = this.d.spec.proxy;
    const prefix = svc.route.pathPrefix;
    const healthPath = svc.health.http;
    const path = healthPath && (prefix === "/" || healthPath.startsWith(prefix)) ? healthPath : prefix;
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.get({ host: host === "0.0.0.0" ? "127.0.0.1" : host, port, path, agent: false, headers: { host: svc.route.host ?? "localhost", "user-agent": "turquoise-verify" }, timeout: svc.health.timeoutMs }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      });
      req.on("timeout", () => req.destroy(new Error(`no answer within ${svc.health.timeoutMs}ms`)));
      req.on("error", reject);
    }).catch((e: Error) => {
      throw new StepFailure("verify", `request through the public route failed: ${e.message}`);
    });
    if (status >= 500) throw new StepFailure("verify", `GET ${path} through the public route answered ${status}`);
    return `GET ${path} through the proxy → ${status}`;
  }

  /** Stops what a failed deploy started; the live slot is never touched. */
  private async undoPreview(svc: ServiceSpec, slot: Slot): Promise<void> {
    const color = await this.d.records.color(svc.name);
    if (slot === color) return;
    const rec = await this.d.records.slot(svc.name, slot);
    await this.d.fleet.stop(this.d.fleet.list(svc.name, slot), svc.stopTimeoutMs);
    if (rec) await this.d.records.clearSlot(svc.name, slot);
  }

  private async retire(svc: ServiceSpec, slot: Slot, rec: SlotRecord, noWarmBecause?: string): Promise<string> {
    if (svc.keepPreviousMs > 0 && !noWarmBecause) {
      const warmUntil = Date.now() + svc.keepPreviousMs;
      await this.d.records.setSlot(svc.name, { ...rec, state: "warm", warmUntil });
      this.scheduleWarmExpiry(svc, slot, warmUntil);
      return `${rec.release} kept warm in ${slot} until ${new Date(warmUntil).toISOString()}`;
    }
    const instances = this.d.fleet.list(svc.name, slot);
    const { killed } = await this.d.fleet.stop(instances, svc.stopTimeoutMs);
    await this.d.records.clearSlot(svc.name, slot);
    const why = noWarmBecause && svc.keepPreviousMs > 0 ? ` (not kept warm: ${noWarmBecause})` : "";
    return `stopped ${instances.length} instance(s) of ${rec.release}${why}${killed ? `, ${killed} killed after stop_timeout` : ""}`;
  }

  /** Stops a warm slot when keep_previous runs out, unless it went live again meanwhile. */
  scheduleWarmExpiry(svc: ServiceSpec, slot: Slot, warmUntil: number): void {
    const key = `${svc.name}/${slot}`;
    clearTimeout(this.warmTimers.get(key));
    const timer = setTimeout(async () => {
      this.warmTimers.delete(key);
      const owner = `agent ${this.d.agentId} (warm expiry)`;
      const lock = await this.d.store.acquireLock(keys.lock(svc.name), owner, LOCK_TTL_MS);
      if (!lock.ok) return this.scheduleWarmExpiry(svc, slot, Date.now() + 1_000);
      try {
        const rec = await this.d.records.slot(svc.name, slot);
        if (rec?.state !== "warm" || (rec.warmUntil ?? 0) > Date.now()) return;
        await this.d.fleet.stop(this.d.fleet.list(svc.name, slot), svc.stopTimeoutMs);
        await this.d.records.clearSlot(svc.name, slot);
        this.d.event(svc.name, "warm.expired", `stopped warm ${rec.release} (${slot}) after keep_previous`);
      } finally {
        await this.d.store.releaseLock(keys.lock(svc.name), owner);
      }
    }, Math.max(0, warmUntil - Date.now()));
    timer.unref();
    this.warmTimers.set(key, timer);
  }

  async stopTimers(): Promise<void> {
    for (const t of this.warmTimers.values()) clearTimeout(t);
    this.warmTimers.clear();
    await Promise.allSettled([...this.resumes]);
  }

  /**
   * Builds the route table from the Store's live colors (and flips under way) and applies it;
   * resolves once the proxy uses it. One build at a time: two services flipping at once, or a
   * proxy restart during a flip, must not apply a table that undoes the other's flip.
   */
  applyRoutes(override: Record<string, Slot> = {}): Promise<RouteTable> {
    for (const [svc, slot] of Object.entries(override)) this.pendingColors.set(svc, slot);
    const run = this.routesQueue.then(() => this.buildAndApply());
    this.routesQueue = run.catch(() => undefined);
    return run;
  }

  /** A flip's color is stored: later tables read it from the Store. */
  private settleColor(service: string): void {
    this.pendingColors.delete(service);
  }

  private async buildAndApply(): Promise<RouteTable> {
    const routes: Route[] = [];
    for (const svc of Object.values(this.d.spec.services)) {
      const slot = this.pendingColors.get(svc.name) ?? (await this.d.records.color(svc.name));
      if (!slot) continue;
      const rec = await this.d.records.slot(svc.name, slot);
      if (!rec) continue;
      routes.push({
        service: svc.name,
        ...(svc.route.host ? { host: svc.route.host } : {}),
        pathPrefix: svc.route.pathPrefix,
        ...(svc.route.timeouts !== undefined ? { timeouts: svc.route.timeouts } : {}),
        ...(svc.route.maxBodyBytes !== undefined ? { maxBodyBytes: svc.route.maxBodyBytes } : {}),
        poolId: rec.poolId,
        // Only instances that passed their checks: a replacement still starting gets no traffic.
        upstreams: this.d.fleet.list(svc.name, slot).filter((i) => this.d.fleet.isReady(i.id)).map((i) => ({ id: i.id, host: i.host, port: i.port })),
      });
    }
    const table: RouteTable = { version: await this.d.records.nextTableVersion(), routes, settings: this.d.spec.proxy.settings };
    await this.d.proxy.apply(table);
    return table;
  }

  /**
   * Called when the agent starts, after it adopted the running instances. A journal left behind
   * means an agent died mid-flow. The color key decides: a preview slot that never went live is
   * stopped (undo); an old slot still marked live behind a finished flip is retired (finish); a
   * turquoise path stopped at its turquoise release is resumed.
   */
  async recover(): Promise<string[]> {
    const notes: string[] = [];
    const services = Object.keys(this.d.spec.services);
    // Locks taken before their flow was journaled: their dead owner is the only trace.
    for (const s of await releaseDeadOwners(this.d.store, services, this.d.event)) notes.push(`released the deploy lock of ${s}: its agent is gone`);
    for (const j of await this.d.records.journals()) {
      const svc = this.d.spec.services[j.service];
      let note: string;
      if (!svc) {
        note = `journal for unknown service ${j.service} dropped`;
      } else {
        const color = await this.d.records.color(j.service);
        // The proxy may serve a slot whose flip never reached the Store: put it back on the stored color first.
        await this.applyRoutes().catch(() => undefined);
        for (const slot of SLOTS) {
          const rec = await this.d.records.slot(j.service, slot);
          if (!rec || slot === color) continue;
          if (rec.state === "preview" || (rec.state === "live" && rec.release === j.release && rec.release !== j.previousRelease)) await this.undoPreview(svc, slot);
          else if (rec.state === "live") {
            // The flip away from this slot happened: let its in-flight requests finish, then retire it.
            await this.d.proxy.drain(rec.poolId, svc.drainTimeoutMs).catch(() => undefined);
            await this.retire(svc, slot, rec, j.via ? "a turquoise path was interrupted" : undefined);
          }
        }
        const liveRec = color ? await this.d.records.slot(j.service, color) : undefined;
        const nowLive = liveRec?.release ?? null;
        const during = lastStep(j);
        if (nowLive === j.release) {
          if (j.previousRelease && j.previousRelease !== j.release) await this.d.records.setPrevious(j.service, { release: j.previousRelease, via: j.via });
          await this.d.store.updateHistory(j.historyId, { outcome: "succeeded", finishedAt: Date.now(), error: `agent restarted during ${during}; the flow was finished on restart` });
          note = `${j.kind} of ${j.service} ${j.release} was interrupted after its last flip: finished`;
        } else if (j.via && nowLive === j.via) {
          await this.d.store.updateHistory(j.historyId, { outcome: "aborted", finishedAt: Date.now(), error: `agent restarted during ${during} with ${j.via} live; the path to ${j.release} resumes` });
          note = `${j.kind} of ${j.service} ${j.release} was interrupted at ${j.via}: resuming`;
          if (j.previousRelease && j.previousRelease !== j.via) await this.d.records.setPrevious(j.service, { release: j.previousRelease, via: j.via });
          this.resume(j);
        } else {
          await this.d.store.updateHistory(j.historyId, { outcome: "aborted", finishedAt: Date.now(), error: `agent restarted during ${during}; undone, ${nowLive ?? "nothing"} stays live` });
          note = `${j.kind} of ${j.service} ${j.release} was interrupted before its flip: undone, ${nowLive ?? "nothing"} stays live`;
        }
      }
      await this.d.store.releaseLock(keys.lock(j.service), j.owner);
      await this.d.records.clearJournal(j.service);
      this.d.event(j.service, "recovered", note);
      notes.push(note);
    }
    // Resumed paths hold their lock again, so their entries are left alone.
    const closed = await closeOrphanHistory(this.d.store, services, await this.d.records.journals(), this.d.event);
    if (closed) notes.push(`${closed} history entr${closed === 1 ? "y" : "ies"} left running by a dead agent marked aborted`);
    return notes;
  }

  private resume(j: Journal): void {
    const p = this.run(j.kind, { service: j.service, release: j.release, via: j.via!, actor: `${j.actor} (resumed by the agent)`, wait: true })
      .catch((e) => this.d.event(j.service, "resume.failed", `resuming the path to ${j.release} failed: ${errorMessage(e)}`))
      .finally(() => this.resumes.delete(p));
    this.resumes.add(p);
  }
}

function lastStep(j: Journal): string {
  return (j.steps[j.steps.length - 1] ?? "lock").replace(/:(started|done)$/, "");
}
