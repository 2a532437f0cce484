// The route table the proxy serves, built from the Store's live colors. Flips, healing, recovery
// and a restarted proxy all go through here, one build at a time.
import type { Route, RouteTable, RouteTableDelta, Upstream } from "../proxy/contract.js";
import { mergeDelta } from "../proxy/table.js";
import { otherSlot, type Slot } from "../runtime/contract.js";
import type { ServiceSpec } from "../spec/types.js";
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
  /** The table the proxy acknowledged last, as built here: the base of the next delta. */
  private acked: RouteTable | undefined;

  constructor(private readonly d: Pick<OrchestratorDeps, "spec" | "records" | "fleet" | "proxy" | "publishRoutes">) {}

  /**
   * Builds the route table from the Store's live colors (and flips under way) and applies it;
   * resolves once the proxy uses it. One build at a time: two services flipping at once, or a
   * proxy restart during a flip, must not apply a table that undoes the other's flip. The services
   * of `override` (a flip) are the only ones rebuilt when the proxy's table is known: the others'
   * routes are those it serves; any other call rebuilds every service.
   */
  apply(override: Record<string, Slot> = {}): Promise<RouteTable> {
    for (const [svc, slot] of Object.entries(override)) this.pendingColors.set(svc, slot);
    const only = Object.keys(override);
    const run = this.queue.then(() => this.buildAndApply(only));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** The proxy's table is no longer the one this agent last had acknowledged (another agent led, the proxy restarted): the next goes whole. */
  forgetApplied(): void {
    this.acked = undefined;
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

  /** One service's routes: its live slot (and canary), and its preview address. */
  private async routesOf(svc: ServiceSpec): Promise<Route[]> {
    const routes: Route[] = [];
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
    return routes;
  }

  /**
   * Sends the proxy only the services whose routes changed, on top of the table it acknowledged
   * last (with 100 services a whole table is 35 KB that the proxy and each worker parse, check and
   * save for a flip that moved one route: bench:scale). A proxy at another version refuses the
   * delta and gets the whole table, rebuilt from the Store.
   */
  private async buildAndApply(only: string[]): Promise<RouteTable> {
    const last = this.acked;
    this.acked = undefined;
    const settings = this.d.spec.proxy.settings;
    const metrics = this.d.spec.metrics ? true : undefined;
    try {
      if (last && sameJson(last.settings, settings) && last.metrics === metrics && (await this.publishedIs(last))) {
        const delta = await this.changes(last, only);
        const merged = mergeDelta(last, delta);
        // Published before this agent's own proxy uses it: a table an ex-leader may no longer write reaches no proxy.
        if (this.d.publishRoutes) await this.d.records.publishTable(merged);
        if ((await this.d.proxy.applyDelta?.(delta)) === "applied") {
          this.acked = merged;
          return merged;
        }
      }
      const table = await this.whole();
      if (this.d.publishRoutes) await this.d.records.publishTable(table);
      await this.d.proxy.apply(table);
      this.acked = table;
      return table;
    } catch (e) {
      // Whether the proxy took it is unknown: the next table goes whole.
      this.acked = undefined;
      throw e;
    }
  }

  /**
   * With several agents the table published last must be the one this agent's delta builds on:
   * the other agents' proxies apply what is published, so a table merged onto an older one (another
   * leader published since) must never be published, even for the moment before a 409.
   */
  private async publishedIs(last: RouteTable): Promise<boolean> {
    return !this.d.publishRoutes || (await this.d.records.publishedVersion()) === last.version;
  }

  /** Every service's routes, in the spec's order. */
  private async whole(): Promise<RouteTable> {
    const routes: Route[] = [];
    for (const svc of Object.values(this.d.spec.services)) routes.push(...(await this.routesOf(svc)));
    return {
      version: await this.d.records.nextTableVersion(), routes, settings: this.d.spec.proxy.settings,
      // Requests by service, slot and status class are counted only for a /metrics that shows them.
      ...(this.d.spec.metrics ? { metrics: true } : {}),
    };
  }

  /**
   * The delta from `last`: the services of `only` rebuilt (a flip), or every service when it is
   * empty, and of those the ones whose routes differ; a service `last` routes that the spec no
   * longer has loses its routes.
   */
  private async changes(last: RouteTable, only: string[]): Promise<RouteTableDelta> {
    const before = new Map<string, Route[]>();
    for (const r of last.routes) {
      const list = before.get(r.service);
      if (list) list.push(r);
      else before.set(r.service, [r]);
    }
    const rebuilt = only.length ? only.map((n) => this.d.spec.services[n]).filter((s): s is ServiceSpec => s !== undefined) : Object.values(this.d.spec.services);
    const services: string[] = [];
    const routes: Route[] = [];
    for (const svc of rebuilt) {
      const now = await this.routesOf(svc);
      if (sameJson(now, before.get(svc.name) ?? [])) continue;
      services.push(svc.name);
      routes.push(...now);
    }
    if (!only.length) for (const name of before.keys()) if (!this.d.spec.services[name]) services.push(name);
    return { base: last.version, version: await this.d.records.nextTableVersion(), services, routes };
  }
}

/** Routes and settings are plain JSON built in one fixed key order: equal text, equal value. */
function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
