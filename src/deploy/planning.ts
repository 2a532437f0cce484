// Step 2 of the flow, and `turquoise plan`: what is live, what the releases declare, where the
// database stands, and the path the pure planner (plan/planner.ts) computes from those facts.
import { TurquoiseError } from "../errors.js";
import { NGINX_NO_CANARY } from "../proxy/split.js";
import { canaryRefusal, describePlan, planPath, type PlanAction, type ReleaseInfo, type SchemaRange } from "../plan/planner.js";
import { SLOTS, type ReleaseDescription, type Slot } from "../runtime/contract.js";
import type { ServiceSpec } from "../spec/types.js";
import { stepInfos } from "./database.js";
import { openDatabase, serviceNamed, type OrchestratorDeps } from "./deps.js";
import type { SlotRecord } from "./records.js";
import { formatRange } from "../plan/range.js";
import { releaseInfo } from "./release.js";
import { formatDuration } from "../util/duration.js";
import { formatLintWarning, lintSteps, type LintWarning } from "../migrate/lint.js";
import type { MigrationStep } from "../migrate/contract.js";

export const NO_DATABASE = "no database configured for this service: nothing to migrate";

/** What a plan is asked for: the target release, the turquoise release to walk through, schema overrides. */
export interface PlanRequest {
  service: string;
  release: string;
  /** The turquoise release to walk through, when the schema change needs one. */
  via?: string;
  /** Overrides the schema range the target (or via) release declares. */
  schema?: SchemaRange;
  viaSchema?: SchemaRange;
  /** The deploy goes out in canary steps: refused unless both releases run on the current schema. */
  inCanary?: boolean;
}

export interface ComputedPlan {
  actions: PlanAction[];
  lines: string[];
  via: string | null;
  live: SlotRecord | null;
  schemas: Record<string, SchemaRange>;
  /** Statements in the planned steps known to lock a big table for long (migrate/lint.ts). */
  warnings?: LintWarning[];
}

export class Planning {
  constructor(private readonly d: Pick<OrchestratorDeps, "spec" | "records" | "fleet">) {}

  /** The plan a deploy would run now; changes nothing. */
  async plan(kind: "deploy" | "rollback", req: PlanRequest): Promise<ComputedPlan> {
    const svc = serviceNamed(this.d.spec, req.service);
    if (kind === "rollback") {
      const previous = await this.d.records.previous(svc.name);
      if (!previous) throw new TurquoiseError("NOT_FOUND", `service "${svc.name}" has no previous release to roll back to`);
      return this.compute(svc, "rollback", { ...req, release: previous.release, ...(previous.via ? { via: previous.via } : {}) });
    }
    return this.compute(svc, kind, req);
  }

  async compute(svc: ServiceSpec, kind: "deploy" | "rollback", req: PlanRequest): Promise<ComputedPlan> {
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
    if (req.inCanary && this.d.spec.proxy.driver !== "builtin") throw new TurquoiseError("PLAN_REFUSED", `${kind} of ${svc.name} ${req.release} refused: ${NGINX_NO_CANARY}`, { data: { reasons: [NGINX_NO_CANARY], need: null } });
    const db = openDatabase(this.d.spec, svc);
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
    const refusal = req.inCanary ? canaryRefusal(actions, liveInfo, target, status.current) : undefined;
    if (refusal) throw new TurquoiseError("PLAN_REFUSED", `${kind} of ${svc.name} ${req.release} refused: ${refusal}; deploy without --canary (or after the migration)`, { data: { reasons: [refusal], need: null } });
    const warnings = await lintPlannedSteps(steps, actions, svc.database!.driver);
    const lines = [`database schema at ${status.current}; ${Object.entries(schemas).map(([r, s]) => `${r} runs on ${formatRange(s)}`).join(", ")}`, ...describePlan(plan), ...warnings.map(formatLintWarning)];
    return { actions, lines, via: via?.name ?? null, live, schemas, warnings };
  }

  /** The release's declared schema range (or the override), as the planner needs it. */
  async releaseInfo(svc: ServiceSpec, release: string, override?: SchemaRange, known?: ReleaseDescription): Promise<ReleaseInfo> {
    const declared = override ? null : (known ?? (await this.d.fleet.describeRelease(svc, release))).schema;
    const where = svc.runtime !== "process" ? `the image's label turquoise.schema (e.g. LABEL turquoise.schema=1..2)` : `${this.d.fleet.releaseDir(svc, release)}/turquoise.json as {"schema": {"min": N, "max": M}}`;
    return releaseInfo(svc.name, release, declared, where, override);
  }

  private describeSimple(svc: ServiceSpec, live: SlotRecord | null, release: string): string[] {
    const n = svc.replicas;
    const lines = [
      `start ${n} instance${n > 1 ? "s" : ""} of ${release} in the idle slot (or reuse it if warm), wait until healthy (deploy_timeout ${formatDuration(svc.deployTimeoutMs)}), smoke checks: ${svc.smoke.length ? svc.smoke.map((s) => s.name).join(", ") : "none defined"}`,
      `expand migrations: none (${NO_DATABASE})`,
      `flip ${svc.route.host ?? "*"}${svc.route.pathPrefix} to ${release}, verify through the public route, flip back on failure`,
      live ? `drain ${live.release} (${live.slot}) up to ${formatDuration(svc.drainTimeoutMs)}, then ${svc.keepPreviousMs > 0 ? `keep it warm for ${formatDuration(svc.keepPreviousMs)}` : "stop it"}` : "nothing live to drain",
      `contract migrations: none (${NO_DATABASE})`,
    ];
    return lines.map((l, n) => `${n + 1}. ${l}`);
  }

  /** A release that no longer exists on disk can still be deployed from a warm slot that runs it. */
  private async warmWith(svc: ServiceSpec, release: string): Promise<Slot | undefined> {
    for (const slot of SLOTS) {
      const rec = await this.d.records.slot(svc.name, slot);
      if (rec?.state === "warm" && rec.release === release && this.d.fleet.list(svc.name, slot).length > 0) return slot;
    }
    return undefined;
  }
}

/** The lint of every file the plan's migrations would run, each step once. */
async function lintPlannedSteps(steps: MigrationStep[], actions: PlanAction[], driver: "sqlite" | "postgres"): Promise<LintWarning[]> {
  const out: LintWarning[] = [];
  for (const a of actions) {
    if (a.do !== "migrate") continue;
    const lo = Math.min(a.from, a.to);
    const hi = Math.max(a.from, a.to);
    const run = steps.filter((s) => s.version > lo && s.version <= hi);
    out.push(...(await lintSteps(a.direction === "down" ? run.reverse() : run, a.direction, driver)));
  }
  return out;
}
