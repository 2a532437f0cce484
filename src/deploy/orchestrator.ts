// The orchestrator: what the agent and its API ask of the deploy side, put together from one file
// per concept: the flow (flow.ts), planning, the lock, the route table, warm slots, recovery and
// the migrate command. It holds no logic of its own beyond handing each call to its part.
import { TurquoiseError, errorMessage } from "../errors.js";
import type { RouteTable } from "../proxy/contract.js";
import type { Slot } from "../runtime/contract.js";
import type { ServiceSpec } from "../spec/types.js";
import type { ServiceDatabase } from "./database.js";
import { instanceEnvFor, openDatabase, serviceNamed, type OrchestratorDeps } from "./deps.js";
import { DeployFlow, type DeployOutcome, type DeployRequest } from "./flow.js";
import { LOCK_TTL_MS } from "./lock.js";
import { runMigrations, type MigrationRequest } from "./migrations.js";
import { Planning, type ComputedPlan, type PlanRequest } from "./planning.js";
import { abortHeld, heldSlot, type AbortOutcome } from "./held.js";
import { Recovery } from "./recovery.js";
import { RouteTables, type CanaryShare } from "./routes.js";
import { signalService } from "./signal.js";
import { WarmSlots } from "./warm.js";

// What callers of the orchestrator pass and get back, named where they call it.
export type { DeployOutcome, DeployRequest } from "./flow.js";
export type { MigrationRequest } from "./migrations.js";
export type { AbortOutcome } from "./held.js";
export type { ComputedPlan, PlanRequest } from "./planning.js";
export type { Progress } from "./step.js";

export class Orchestrator {
  private readonly planning: Planning;
  /** The route table builder: healing and a restarted proxy apply tables through it too. */
  readonly routes: RouteTables;
  private readonly warm: WarmSlots;
  private readonly flow: DeployFlow;
  private readonly recovery: Recovery;

  constructor(private readonly d: OrchestratorDeps) {
    this.planning = new Planning(d);
    this.routes = new RouteTables(d);
    this.warm = new WarmSlots(d);
    // Recovery resumes flows, and flows hand what they cannot finish to recovery.
    this.recovery = new Recovery(d, this.routes, this.warm, (kind, req) => this.flow.run(kind, req));
    this.flow = new DeployFlow(d, this.planning, this.routes, this.warm, this.recovery);
  }

  service(name: string): ServiceSpec {
    return serviceNamed(this.d.spec, name);
  }

  database(svc: ServiceSpec): ServiceDatabase | undefined {
    return openDatabase(this.d.spec, svc);
  }

  async deploy(req: DeployRequest): Promise<DeployOutcome> {
    return this.flow.run("deploy", req);
  }

  /** `turquoise promote`: the held release goes through the rest of the deploy (canary steps, flip, drain). */
  async promote(req: Omit<DeployRequest, "release" | "via" | "hold">): Promise<DeployOutcome> {
    const held = await heldSlot(this.d.records, this.service(req.service));
    return this.flow.run("deploy", { ...req, release: held.release });
  }

  /** `turquoise abort`: stops the held release; the live one never noticed it. */
  abort(service: string, actor: string): Promise<AbortOutcome> {
    return abortHeld(this.d, this.routes, this.service(service), actor);
  }

  /** The share of users a deploy under way sends to the new slot of a service, for status. */
  canaryOf(service: string): CanaryShare | undefined {
    return this.routes.canaryOf(service);
  }

  /** Back to the release live before the last deploy, through the same turquoise release, migrating down. */
  async rollback(req: Omit<DeployRequest, "release" | "via">): Promise<DeployOutcome> {
    this.service(req.service);
    const previous = await this.d.records.previous(req.service);
    if (!previous) throw new TurquoiseError("NOT_FOUND", `service "${req.service}" has no previous release to roll back to`);
    return this.flow.run("rollback", { ...req, release: previous.release, ...(previous.via ? { via: previous.via } : {}) });
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

  /** `turquoise migrate`: status, or moving the schema by hand under the deploy lock. */
  async migrations(service: string, req: MigrationRequest): Promise<Record<string, unknown>> {
    return runMigrations(this.d, this.planning, service, req);
  }

  /** The plan a deploy would run now; changes nothing. */
  async plan(kind: "deploy" | "rollback", req: PlanRequest): Promise<ComputedPlan> {
    return this.planning.plan(kind, req);
  }

  /** `turquoise signal`: sends a signal to a service's live instances (or all of them) through their runtime. */
  async signalService(service: string, signal: NodeJS.Signals, all = false): Promise<number> {
    return signalService(this.d, service, signal, all);
  }

  /** The environment Turquoise adds to a service's instances: its database URL, when it has one. */
  instanceEnvFor(svc: ServiceSpec): Record<string, string> {
    return instanceEnvFor(this.d.spec, svc);
  }

  /** Builds the route table from the Store's live colors and applies it; resolves once the proxy uses it. */
  applyRoutes(override: Record<string, Slot> = {}): Promise<RouteTable> {
    return this.routes.apply(override);
  }

  /** Stops a warm slot when keep_previous runs out, unless it went live again meanwhile. */
  scheduleWarmExpiry(svc: ServiceSpec, slot: Slot, warmUntil: number): void {
    this.warm.scheduleExpiry(svc, slot, warmUntil);
  }

  /** Finishes or undoes the flows an agent that died (or a leader that was replaced) left behind; see recovery.ts. */
  recover(by: "restart" | "takeover" = "restart"): Promise<string[]> {
    return this.recovery.recover(by);
  }

  async stopTimers(): Promise<void> {
    this.warm.stop();
    await this.recovery.settled();
  }
}
