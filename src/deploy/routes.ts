// The route table the proxy serves, built from the Store's live colors. Flips, healing, recovery
// and a restarted proxy all go through here, one build at a time.
import type { Route, RouteTable, Upstream } from "../proxy/contract.js";
import { otherSlot, type Slot } from "../runtime/contract.js";
import type { OrchestratorDeps } from "./deps.js";

/** A service's canary now: what the proxy is told (slot, percent) and what status shows of the rollout. */
export interface CanaryShare {
  slot: Slot;
  percent: number;
  /** Every step of the rollout, the flip's 100 implied; when this step began and how long it lasts. */
  steps?: number[];
  stepStartedAt?: number;
  stepIntervalMs?: number;
}

export class RouteTables {
  private queue: Promise<unknown> = Promise.resolve();
  /** Colors of flips under way, between their route update and their Store write. */
  private readonly pendingColors = new Map<string, Slot>();
  /** Services in canary: their new slot and its share of users. */
  private readonly canaries = new Map<string, CanaryShare>();

  constructor(private readonly d: Pick<OrchestratorDeps, "spec" | "records" | "fleet" | "proxy" | "publishRoutes">) {}

  /**
   * Builds the route table from the Store's live colors (and flips under way) and applies it;
   * resolves once the proxy uses it. One build at a time: two services flipping at once, or a
   * proxy restart during a flip, must not apply a table that undoes the other's flip.
   */
  apply(override: Record<string, Slot> = {}): Promise<RouteTable> {
    for (const [svc, slot] of Object.entries(override)) this.pendingColors.set(svc, slot);
    const run = this.queue.then(() => this.buildAndApply());
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** A flip's color is stored: later tables read it from the Store. */
  settle(service: string): void {
    this.pendingColors.delete(service);
  }

  /**
   * Sends `percent` of the service's users to its new slot from the next table on; undefined
   * sends them all back to the live slot. Kept in memory only: an agent that restarts mid-canary
   * undoes the deploy (recovery.ts), so its first table must carry no canary.
   */
  setCanary(service: string, canary: CanaryShare | undefined): Promise<RouteTable> {
    if (canary) this.canaries.set(service, canary);
    else this.canaries.delete(service);
    return this.apply();
  }

  /** The flip took every user (or recovery undid the deploy): no share is left for later tables. */
  forgetCanary(service: string): void {
    this.canaries.delete(service);
  }

  /** The share of users on the new slot of each service in canary now. */
  canaryOf(service: string): CanaryShare | undefined {
    return this.canaries.get(service);
  }

  private upstreams(service: string, slot: Slot): Upstream[] {
    // Only instances that passed their checks: a replacement still starting gets no traffic.
    return this.d.fleet.list(service, slot).filter((i) => this.d.fleet.isReady(i.id)).map((i) => ({ id: i.id, host: i.host, port: i.port }));
  }

  private async buildAndApply(): Promise<RouteTable> {
    const routes: Route[] = [];
    for (const svc of Object.values(this.d.spec.services)) {
      const slot = this.pendingColors.get(svc.name) ?? (await this.d.records.color(svc.name));
      const rec = slot ? await this.d.records.slot(svc.name, slot) : undefined;
      const idleSlot = slot ? otherSlot(slot) : "blue";
      const idle = await this.d.records.slot(svc.name, idleSlot);
      const common = {
        service: svc.name,
        pathPrefix: svc.route.pathPrefix,
        ...(svc.route.timeouts !== undefined ? { timeouts: svc.route.timeouts } : {}),
        ...(svc.route.maxBodyBytes !== undefined ? { maxBodyBytes: svc.route.maxBodyBytes } : {}),
      };
      if (slot && rec) {
        const canary = this.canaries.get(svc.name);
        routes.push({
          ...common,
          ...(svc.route.host ? { host: svc.route.host } : {}),
          poolId: rec.poolId,
          slot,
          upstreams: this.upstreams(svc.name, slot),
          ...(canary && idle && canary.slot === idleSlot ? { canary: { poolId: idle.poolId, slot: idleSlot, upstreams: this.upstreams(svc.name, idleSlot), percent: canary.percent } } : {}),
        });
      }
      // The preview address: the new release, reachable before (or without) any public traffic.
      if (svc.route.previewHost && idle && (idle.state === "preview" || idle.state === "held")) {
        routes.push({ ...common, host: svc.route.previewHost, poolId: idle.poolId, slot: idleSlot, upstreams: this.upstreams(svc.name, idleSlot) });
      }
    }
    const table: RouteTable = {
      version: await this.d.records.nextTableVersion(), routes, settings: this.d.spec.proxy.settings,
      // Requests by service, slot and status are counted only for a /metrics that shows them.
      ...(this.d.spec.metrics ? { metrics: true } : {}),
    };
    // Published before this agent's own proxy uses it: a table an ex-leader may no longer write reaches no proxy.
    if (this.d.publishRoutes) await this.d.records.publishTable(table);
    await this.d.proxy.apply(table);
    return table;
  }
}
