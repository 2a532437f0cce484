// The Proxy contract, seen from the agent. Implementations: builtin (a separate OS process,
// driven over loopback HTTP) and nginx (later).

export interface Upstream {
  /** Stable id of the instance behind this address. */
  id: string;
  host: string;
  port: number;
}

export interface Route {
  service: string;
  /** Exact host match (port ignored); undefined matches any host. */
  host?: string;
  /** Path prefix, "/" by default. Longest prefix wins; a host-specific route beats a wildcard. */
  pathPrefix: string;
  /** Identifies the pool, e.g. "books:green:v2". A new pool id means a new pool. */
  poolId: string;
  upstreams: Upstream[];
}

export interface RouteTable {
  /** Grows with each update; the proxy ignores an update older than its table. */
  version: number;
  routes: Route[];
}

export interface DrainResult {
  poolId: string;
  /** Requests that finished during the drain. */
  completed: number;
  /** Requests still in flight when drain_timeout ran out, which were cut. */
  cut: number;
  durationMs: number;
}

export interface PoolStats {
  poolId: string;
  inFlight: number;
  served: number;
  failed: number;
}

export interface ProxyStats {
  tableVersion: number;
  pools: PoolStats[];
  requests: number;
  upstreamErrors: number;
  retries: number;
}

export interface Proxy {
  readonly name: string;
  /** Resolves only once new requests use the table. */
  apply(table: RouteTable): Promise<void>;
  /** Waits until no request is in flight on the pool, up to timeoutMs, then cuts what remains. */
  drain(poolId: string, timeoutMs: number): Promise<DrainResult>;
  stats(): Promise<ProxyStats>;
  /** Marks an upstream out of rotation (or back in) without a new table. */
  setUpstreamHealth(upstreamId: string, healthy: boolean): Promise<void>;
}
