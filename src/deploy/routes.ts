// The route table the proxy serves, built from the Store's live colors. Flips, healing, recovery
// and a restarted proxy all go through here, one build at a time.
import type { Route, RouteTable } from "../proxy/contract.js";
import type { Slot } from "../runtime/contract.js";
import type { OrchestratorDeps } from "./deps.js";

export class RouteTables {
  private queue: Promise<unknown> = Promise.resolve();
  /** Colors of flips under way, between their route update and their Store write. */
  private readonly pendingColors = new Map<string, Slot>();

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
        slot,
        // Only instances that passed their checks: a replacement still starting gets no traffic.
        upstreams: this.d.fleet.list(svc.name, slot).filter((i) => this.d.fleet.isReady(i.id)).map((i) => ({ id: i.id, host: i.host, port: i.port })),
      });
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
