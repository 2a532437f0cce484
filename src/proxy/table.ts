// The proxy's routing state: a compiled route table (immutable, swapped whole) and the pools it
// points at. Pools outlive tables: a pool keeps its id, counters and in-flight requests across
// updates, so an old pool can be drained after the table that named it is gone.

import { RequestSeries, SeriesSet } from "./counters.js";
import { TrustedPeers } from "./peers.js";
import { TlsPolicy } from "./tls-settings.js";
import { shareThreshold } from "./split.js";
import { routeMaxBodyBytes, routeTimeouts, tableSettings, validateRouteSettings, validateSettings } from "./settings.js";
import type { PoolStats, ProxySettings, Route, RouteTable, RouteTableDelta, RouteTimeouts, Upstream, UpstreamDown, UpstreamDownReason, UpstreamEvent, UpstreamEventBatch } from "./contract.js";

/** Anything in flight on a pool that a drain may have to cut. */
export interface Cuttable {
  cut(): void;
  /** Where it is in its pool's `active` list while it is there, else -1: the pool's to keep. */
  poolIndex: number;
}

export class Pool {
  readonly id: string;
  service: string;
  upstreams: readonly Upstream[];
  /** Where its requests are counted: its service's and slot's series, shared with the other pools of both. */
  series: RequestSeries;
  /** False once a newer table stopped naming this pool; it lives on until drained. */
  live = true;
  inFlight = 0;
  served = 0;
  failed = 0;
  /** Responses the upstream itself answered with a 5xx: counted in served, but a bake window must see them. */
  errors5xx = 0;
  /** Requests that ended, for whatever reason; a drain counts completions by its delta. */
  finished = 0;
  /**
   * What is in flight, in no order, each at its poolIndex: entering and leaving cost an array
   * store and a swap, where a Set would hash each item on its first use (measured in bench:proxy).
   */
  readonly active: Cuttable[] = [];
  private cursor = 0;
  private idleWaiters: (() => void)[] = [];

  /** A pool outside any router counts on a series of its own. */
  constructor(route: Route, series: RequestSeries = new RequestSeries(route.service, route.slot ?? "")) {
    this.id = route.poolId;
    this.service = route.service;
    this.upstreams = route.upstreams;
    this.series = series;
  }

  /**
   * Round-robin over healthy upstreams, skipping `avoid` (the one that just failed) when another
   * is available.
   */
  pick(unhealthy: ReadonlySet<string>, avoid?: Upstream): Upstream | undefined {
    const list = this.upstreams;
    const n = list.length;
    let fallback: Upstream | undefined;
    for (let i = 0; i < n; i++) {
      const u = list[(this.cursor + i) % n]!;
      if (unhealthy.size !== 0 && unhealthy.has(u.id)) continue;
      if (u === avoid) {
        fallback = u;
        continue;
      }
      this.cursor = (this.cursor + i + 1) % n;
      return u;
    }
    return fallback;
  }

  hasHealthy(unhealthy: ReadonlySet<string>): boolean {
    if (unhealthy.size === 0) return this.upstreams.length !== 0;
    for (const u of this.upstreams) if (!unhealthy.has(u.id)) return true;
    return false;
  }

  enter(item: Cuttable): void {
    this.inFlight++;
    item.poolIndex = this.active.length;
    this.active.push(item);
  }

  leave(item: Cuttable, ok: boolean): void {
    const active = this.active;
    const at = item.poolIndex;
    if (at < 0 || active[at] !== item) return;
    // The last item takes the leaver's place.
    const last = active.pop()!;
    if (last !== item) {
      active[at] = last;
      last.poolIndex = at;
    }
    item.poolIndex = -1;
    this.inFlight--;
    this.finished++;
    if (ok) this.served++;
    else this.failed++;
    if (this.inFlight === 0 && this.idleWaiters.length !== 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Resolves true once nothing is in flight, or false after timeoutMs. */
  whenIdle(timeoutMs: number): Promise<boolean> {
    if (this.inFlight === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.idleWaiters = this.idleWaiters.filter((w) => w !== done);
        resolve(false);
      }, Math.max(0, timeoutMs));
      const done = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      this.idleWaiters.push(done);
    });
  }

  stats(): PoolStats {
    return { poolId: this.id, inFlight: this.inFlight, served: this.served, failed: this.failed, errors5xx: this.errors5xx };
  }
}

export interface Match {
  route: Route;
  pool: Pool;
  /** The settings of the table this match comes from, so a request keeps them for its whole life. */
  settings: ProxySettings;
  /** The route's effective timeouts and body limit, worked out once per table rather than per request. */
  timeouts: RouteTimeouts;
  maxBodyBytes: number;
  /** For a route in canary: the new slot's match, and the point below which a user goes there (split.ts). */
  canary?: { match: Match; threshold: number };
}

interface Entry {
  /** Normalized: no trailing slash, "" for the root. */
  prefix: string;
  match: Match;
}

/** An immutable, pre-sorted view of one RouteTable. Lookups allocate nothing. */
export class CompiledTable {
  readonly source: RouteTable;
  /** The table's settings with the defaults filled in: swapped with the routes, never apart. */
  readonly settings: ProxySettings;
  readonly trusted: TrustedPeers;
  /** Which hosts are served over TLS and from where; undefined without TLS settings. */
  readonly tls: TlsPolicy | undefined;
  /** Whether requests are counted by series (RouteTable.metrics). */
  readonly metrics: boolean;
  private readonly byHost = new Map<string, Entry[]>();
  private readonly anyHost: Entry[] = [];

  constructor(source: RouteTable, pools: ReadonlyMap<string, Pool>) {
    this.source = source;
    const settings = tableSettings(source.settings);
    this.settings = settings;
    this.trusted = settings.trustedProxies.length === 0 ? TrustedPeers.NONE : new TrustedPeers(settings.trustedProxies);
    this.tls = settings.tls ? new TlsPolicy(settings.tls, source.routes) : undefined;
    this.metrics = source.metrics === true || source.routes.some((r) => r.canary !== undefined);
    for (const route of source.routes) {
      const match: Match = { route, pool: pools.get(route.poolId)!, settings, timeouts: routeTimeouts(route, settings), maxBodyBytes: routeMaxBodyBytes(route, settings) };
      if (route.canary) {
        const side = canaryRoute(route);
        match.canary = { match: { ...match, route: side, pool: pools.get(side.poolId)! }, threshold: shareThreshold(route.canary.percent) };
      }
      const entry: Entry = { prefix: normalizePrefix(route.pathPrefix), match };
      if (route.host === undefined || route.host === "") {
        this.anyHost.push(entry);
      } else {
        const host = normalizeHost(route.host);
        let list = this.byHost.get(host);
        if (!list) this.byHost.set(host, (list = []));
        list.push(entry);
      }
    }
    const longestFirst = (a: Entry, b: Entry): number => b.prefix.length - a.prefix.length;
    this.anyHost.sort(longestFirst);
    for (const list of this.byHost.values()) list.sort(longestFirst);
  }

  get version(): number {
    return this.source.version;
  }

  /** `host` is the raw Host header (any case, maybe with a port); `url` the request target. */
  lookup(host: string | undefined, url: string): Match | undefined {
    if (host !== undefined && this.byHost.size !== 0) {
      const list = this.byHost.get(normalizeHost(host));
      if (list) {
        const m = firstMatch(list, url);
        if (m) return m;
      }
    }
    return firstMatch(this.anyHost, url);
  }
}

/** The new slot's side of a route in canary, as a route of its own: its pool is counted under its slot. */
export function canaryRoute(route: Route): Route {
  const c = route.canary!;
  const { canary: _, ...rest } = route;
  return { ...rest, poolId: c.poolId, slot: c.slot, upstreams: c.upstreams };
}

function firstMatch(list: Entry[], url: string): Match | undefined {
  for (let i = 0; i < list.length; i++) {
    const e = list[i]!;
    if (prefixMatches(e.prefix, url)) return e.match;
  }
  return undefined;
}

/** Matches on a segment boundary: "/api" matches "/api", "/api/x" and "/api?q", not "/apix". */
export function prefixMatches(prefix: string, url: string): boolean {
  if (prefix.length === 0) return true;
  if (!url.startsWith(prefix)) return false;
  if (url.length === prefix.length) return true;
  const next = url.charCodeAt(prefix.length);
  return next === 47 /* / */ || next === 63 /* ? */ || next === 35 /* # */;
}

export function normalizePrefix(prefix: string | undefined): string {
  let p = prefix ?? "/";
  if (!p.startsWith("/")) p = "/" + p;
  while (p.endsWith("/")) p = p.slice(0, -1);
  return p;
}

/** Lower-cases and strips the port, IPv6 brackets kept: "Example.COM:8080" → "example.com". */
export function normalizeHost(host: string): string {
  let h = host;
  if (h.charCodeAt(0) === 91 /* [ */) {
    const end = h.indexOf("]");
    if (end !== -1) h = h.slice(0, end + 1);
  } else {
    const colon = h.indexOf(":");
    if (colon !== -1) h = h.slice(0, colon);
  }
  if (h.endsWith(".")) h = h.slice(0, -1);
  return h.toLowerCase();
}

export const MAX_RETIRED_POOLS = 64;
/** Events kept for /events; a caller further behind reads the oldest kept and checks /stats. */
export const MAX_UPSTREAM_EVENTS = 1_000;

/** The upstream.down/up events, numbered, with listeners told once per turn of the event loop. */
export class UpstreamEventLog {
  seq = 0;
  private readonly kept: UpstreamEvent[] = [];
  private readonly listeners = new Set<() => void>();
  private notifying = false;

  push(type: UpstreamEvent["type"], id: string, reason: UpstreamDownReason, at: number): void {
    this.kept.push({ seq: ++this.seq, at, type, id, reason });
    if (this.kept.length > MAX_UPSTREAM_EVENTS) this.kept.splice(0, this.kept.length - MAX_UPSTREAM_EVENTS);
    // Deferred so that marks made in one burst (a dead upstream fails several requests at once)
    // reach a long-poll as one batch, and a listener never runs inside the data path.
    if (this.listeners.size !== 0 && !this.notifying) {
      this.notifying = true;
      setImmediate(() => {
        this.notifying = false;
        for (const listener of [...this.listeners]) listener();
      });
    }
  }

  /**
   * The events after seq `after`. An `after` beyond the latest seq comes from an earlier proxy
   * process (seqs restart with it), so the caller gets every event kept.
   */
  since(after: number): UpstreamEventBatch {
    const from = after > this.seq ? 0 : after;
    const events: UpstreamEvent[] = [];
    for (const e of this.kept) if (e.seq > from) events.push({ ...e });
    return { seq: this.seq, events };
  }

  /** Calls listener after new events; returns the function that stops it. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

/**
 * Owns the current table and every pool, live or retired. `apply` swaps the table reference
 * synchronously, so a request resolved before the call keeps its old pool and every request
 * resolved after uses the new one.
 */
export class Router {
  current: CompiledTable;
  readonly pools = new Map<string, Pool>();
  /** The request counters of every service and slot a table named, for the life of this router. */
  readonly series = new SeriesSet();
  /**
   * Upstream ids out of rotation, whoever took them out: the set the data path checks. Kept
   * across tables because ids are stable per instance; forgotten once the table drops the id.
   */
  readonly unhealthy: ReadonlySet<string>;
  private readonly outIds = new Set<string>();
  /** The same ids, with when and why each went out. */
  private readonly down = new Map<string, UpstreamDown>();
  readonly events = new UpstreamEventLog();
  /** Called once at the next new table or upstream back in rotation: requests waiting for a healthy instance. */
  private changeWaiters = new Set<() => void>();

  constructor() {
    this.unhealthy = this.outIds;
    this.current = new CompiledTable({ version: 0, routes: [] }, this.pools);
  }

  /** Returns false (and changes nothing) when the table is older than the current one. */
  apply(table: RouteTable): boolean {
    if (table.version < this.current.version) return false;
    const named = new Set<string>();
    const sides = table.routes.flatMap((r) => (r.canary ? [r, canaryRoute(r)] : [r]));
    for (const route of sides) {
      named.add(route.poolId);
      const existing = this.pools.get(route.poolId);
      const series = this.series.get(route.service, route.slot);
      if (existing) {
        existing.service = route.service;
        existing.upstreams = route.upstreams;
        existing.series = series;
        existing.live = true;
      } else {
        this.pools.set(route.poolId, new Pool(route, series));
      }
    }
    let retired = 0;
    for (const pool of this.pools.values()) {
      if (!named.has(pool.id)) {
        pool.live = false;
        retired++;
      }
    }
    // Retired pools wait for their drain, which reads their counters; if drains never come, the
    // oldest idle ones are forgotten so that a long-lived proxy does not collect them forever.
    for (const [id, pool] of this.pools) {
      if (retired <= MAX_RETIRED_POOLS) break;
      if (!pool.live && pool.inFlight === 0) {
        this.pools.delete(id);
        retired--;
      }
    }
    this.current = new CompiledTable(table, this.pools);
    if (this.down.size !== 0) this.forgetMarksNotIn(table);
    this.changed();
    return true;
  }

  /** Calls fn once, at the next table applied or upstream put back; returns a cancel function. */
  onNextChange(fn: () => void): () => void {
    this.changeWaiters.add(fn);
    return () => this.changeWaiters.delete(fn);
  }

  private changed(): void {
    if (this.changeWaiters.size === 0) return;
    const waiters = this.changeWaiters;
    this.changeWaiters = new Set();
    for (const w of waiters) w();
  }

  /**
   * Takes an upstream out of rotation, in every pool. Returns false when it already was out: the
   * first mark keeps its time and reason.
   */
  markDown(id: string, reason: UpstreamDownReason, at = Date.now()): boolean {
    if (this.down.has(id)) return false;
    this.down.set(id, { id, since: at, reason });
    this.outIds.add(id);
    this.events.push("upstream.down", id, reason, at);
    return true;
  }

  /** Puts an upstream back in rotation, whatever took it out. Returns false when it was not out. */
  markUp(id: string, at = Date.now()): boolean {
    if (!this.down.delete(id)) return false;
    this.outIds.delete(id);
    this.events.push("upstream.up", id, "marked", at);
    this.changed();
    return true;
  }

  /** The upstreams out of rotation, longest out first. */
  downList(): UpstreamDown[] {
    return [...this.down.values()].map((d) => ({ ...d })).sort((a, b) => a.since - b.since);
  }

  /** An id the table no longer names belongs to a gone instance: keeping its mark would leak. */
  private forgetMarksNotIn(table: RouteTable): void {
    const named = new Set<string>();
    for (const route of table.routes) {
      for (const u of route.upstreams) named.add(u.id);
      for (const u of route.canary?.upstreams ?? []) named.add(u.id);
    }
    for (const id of this.down.keys()) {
      if (named.has(id)) continue;
      this.down.delete(id);
      this.outIds.delete(id);
    }
  }

  /** Forgets a retired pool once it is drained. */
  release(pool: Pool): void {
    if (!pool.live && pool.inFlight === 0 && this.pools.get(pool.id) === pool) this.pools.delete(pool.id);
  }

  /** Whether any live pool other than `except` sends traffic to host:port. */
  addressInUse(host: string, port: number, except: Pool): boolean {
    for (const pool of this.pools.values()) {
      if (pool === except || !pool.live) continue;
      for (const u of pool.upstreams) if (u.host === host && u.port === port) return true;
    }
    return false;
  }
}

/** Checks a RouteTable received from outside; returns the problem, or undefined when valid. */
/**
 * The table a delta makes of `base`: the named services' routes replaced by the delta's, in the
 * place of the first route they had (at the end for a service that had none), every other route
 * as it was. The agent and the proxy compute it alike, so both know the same table by its version.
 */
export function mergeDelta(base: RouteTable, delta: RouteTableDelta): RouteTable {
  const replaced = new Set(delta.services);
  const routes: Route[] = [];
  let placed = false;
  for (const r of base.routes) {
    if (!replaced.has(r.service)) routes.push(r);
    else if (!placed) {
      routes.push(...delta.routes);
      placed = true;
    }
  }
  if (!placed) routes.push(...delta.routes);
  return { ...base, version: delta.version, routes };
}

/** The shape of a delta (its routes are judged within the table it makes, by validateTable). */
export function validateDelta(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null) return "delta must be an object";
  const d = value as Record<string, unknown>;
  if (typeof d.base !== "number" || !Number.isFinite(d.base)) return "base must be a number";
  if (typeof d.version !== "number" || !Number.isFinite(d.version)) return "version must be a number";
  if (d.version <= d.base) return `version (${d.version}) must be above base (${d.base})`;
  // None: only the version moves (nothing changed, and the sender learns that the proxy is where it thought).
  if (!Array.isArray(d.services) || !d.services.every((s) => typeof s === "string" && s !== "")) return "services must be an array of service names";
  if (!Array.isArray(d.routes)) return "routes must be an array";
  const named = new Set(d.services as string[]);
  for (let i = 0; i < d.routes.length; i++) {
    const service = (d.routes[i] as { service?: unknown } | null)?.service;
    // A route of a service the delta does not name would sit beside that service's own routes.
    if (typeof service === "string" && !named.has(service)) return `routes[${i}].service "${service}" is not one of the delta's services`;
  }
  return undefined;
}

export function validateTable(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null) return "table must be an object";
  const t = value as Record<string, unknown>;
  if (typeof t.version !== "number" || !Number.isFinite(t.version)) return "version must be a number";
  if (!Array.isArray(t.routes)) return "routes must be an array";
  if (t.metrics !== undefined && typeof t.metrics !== "boolean") return "metrics must be a boolean";
  const poolServices = new Map<string, string>();
  for (let i = 0; i < t.routes.length; i++) {
    const r = t.routes[i] as Record<string, unknown> | null;
    const at = `routes[${i}]`;
    if (typeof r !== "object" || r === null) return `${at} must be an object`;
    if (typeof r.service !== "string" || r.service === "") return `${at}.service must be a non-empty string`;
    if (r.host !== undefined && typeof r.host !== "string") return `${at}.host must be a string`;
    if (typeof r.pathPrefix !== "string" || !r.pathPrefix.startsWith("/")) return `${at}.pathPrefix must start with "/"`;
    if (typeof r.poolId !== "string" || r.poolId === "") return `${at}.poolId must be a non-empty string`;
    if (r.slot !== undefined && r.slot !== "blue" && r.slot !== "green") return `${at}.slot must be "blue" or "green"`;
    const ups = validateUpstreams(r.upstreams, `${at}.upstreams`);
    if (ups) return ups;
    // Two routes may share a pool (same instances, two prefixes) but then must agree on its service.
    const own = validateRouteSettings(r, at) ?? validateCanary(r.canary, `${at}.canary`, r.poolId);
    if (own) return own;
    if (r.canary !== undefined) {
      const c = r.canary as { poolId: string };
      const seenCanary = poolServices.get(c.poolId);
      if (seenCanary !== undefined && seenCanary !== r.service) return `${at}.canary.poolId "${c.poolId}" is already used by service "${seenCanary}"`;
      poolServices.set(c.poolId, r.service);
    }
    const seen = poolServices.get(r.poolId);
    if (seen !== undefined && seen !== r.service) return `${at}.poolId "${r.poolId}" is already used by service "${seen}"`;
    poolServices.set(r.poolId, r.service);
  }
  return validateSettings(t.settings);
}

function validateUpstreams(list: unknown, at: string): string | undefined {
  if (!Array.isArray(list)) return `${at} must be an array`;
  for (let j = 0; j < list.length; j++) {
    const u = list[j] as Record<string, unknown> | null;
    const uat = `${at}[${j}]`;
    if (typeof u !== "object" || u === null) return `${uat} must be an object`;
    if (typeof u.id !== "string" || u.id === "") return `${uat}.id must be a non-empty string`;
    if (typeof u.host !== "string" || u.host === "") return `${uat}.host must be a non-empty string`;
    if (typeof u.port !== "number" || !Number.isInteger(u.port) || u.port < 1 || u.port > 65535) return `${uat}.port must be a port number`;
  }
  return undefined;
}

function validateCanary(value: unknown, at: string, mainPool: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "object" || value === null) return `${at} must be an object`;
  const c = value as Record<string, unknown>;
  if (typeof c.poolId !== "string" || c.poolId === "") return `${at}.poolId must be a non-empty string`;
  if (c.poolId === mainPool) return `${at}.poolId must differ from the route's own pool`;
  if (c.slot !== "blue" && c.slot !== "green") return `${at}.slot must be "blue" or "green"`;
  if (typeof c.percent !== "number" || !Number.isFinite(c.percent) || c.percent < 0 || c.percent > 100) return `${at}.percent must be a number from 0 to 100`;
  return validateUpstreams(c.upstreams, `${at}.upstreams`);
}
