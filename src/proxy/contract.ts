// The Proxy contract, seen from the agent. Implementations: builtin (a separate OS process,
// driven over loopback HTTP), nginx, and memory (the builtin's data plane in-process, for tests).
// test/proxy/contract.test-suite.ts runs against each.

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
  /** The slot the pool's instances run in: the label its requests are counted under (ProxyMetrics). */
  slot?: "blue" | "green";
  upstreams: Upstream[];
  /** This route's own upstream timeouts, over the table's settings. */
  timeouts?: Partial<RouteTimeouts>;
  /** Largest request body this route accepts (413 beyond), over the table's settings. */
  maxBodyBytes?: number;
  /** A share of this route's users goes to another pool: the new slot of a progressive deploy. */
  canary?: CanaryRoute;
}

/** The new slot's side of a route in canary (split.ts says which user goes where). */
export interface CanaryRoute {
  poolId: string;
  slot: "blue" | "green";
  upstreams: Upstream[];
  /** The share of users sent here, 0 to 100. */
  percent: number;
}

/** Every wait the proxy bounds. A timed-out wait is counted in the stats. */
export interface ProxyTimeouts {
  /** From a client connection's first byte to the end of its request head (slowloris): 408. */
  clientHeaderMs: number;
  /** A keep-alive client connection with no request in flight is closed after this long. */
  clientIdleMs: number;
  /** Connecting to an upstream: then the next upstream, or 504. */
  upstreamConnectMs: number;
  /** From the request sent to the upstream's response head: 504. */
  upstreamResponseMs: number;
  /** Between two reads of an upstream's response body (or two writes of the client's request body): the connection is closed. */
  upstreamIdleMs: number;
  /** An upgraded connection (WebSocket) with no byte either way for this long is closed. */
  tunnelIdleMs: number;
}

export type RouteTimeouts = Pick<ProxyTimeouts, "upstreamConnectMs" | "upstreamResponseMs" | "upstreamIdleMs" | "tunnelIdleMs">;

export interface ProxyLimits {
  /** Client connections open at once, all routes together; beyond it new connections are refused at accept. */
  maxConnections: number;
  /** Connections to one upstream address at once; beyond it requests queue. */
  maxUpstreamConnections: number;
  /** How long a request waits for a free upstream connection before a 503 with Retry-After. */
  upstreamQueueMs: number;
  /** Largest request head (request line and header fields): 431 beyond. */
  maxHeaderBytes: number;
  /** Largest request body: 413 beyond. */
  maxBodyBytes: number;
}

export interface ProxySettings {
  timeouts: ProxyTimeouts;
  limits: ProxyLimits;
  /**
   * Peers (IPv4/IPv6 addresses or CIDR blocks) whose X-Forwarded-For, X-Real-IP and Forwarded
   * headers are believed, as nginx's set_real_ip_from. Everyone else's are replaced.
   */
  trustedProxies: string[];
  /** TLS at the built-in proxy's TLS listener; absent: plain HTTP only. */
  tls?: TlsSettings;
}

/**
 * What the built-in proxy does with TLS (its listener itself is a process option, bound by the
 * supervisor). A host is served over TLS when a certificate file names it, or when ACME covers it.
 */
export interface TlsSettings {
  /** Certificates from PEM files, each for the hosts it lists; reloaded when the files change. */
  certificates: TlsCertificateFiles[];
  acme?: AcmeSettings;
  /**
   * A plain-HTTP request for a host with a certificate loaded is answered 308 with its https://
   * URL (ACME challenges excepted). Hosts without one (an ACME host until it is issued) stay on plain HTTP.
   */
  redirectHttp: boolean;
  /** The Strict-Transport-Security value of every answer over TLS ("max-age=31536000"); none when absent. */
  hsts?: string;
}

export interface TlsCertificateFiles {
  /** Exact host names, or "*.example.com" for any one label below example.com. */
  hosts: string[];
  /** Absolute paths: the certificate chain (leaf first) and its private key, PEM. */
  certFile: string;
  keyFile: string;
}

export interface AcmeSettings {
  /** The ACME directory (RFC 8555), https://. */
  directoryUrl: string;
  /** The account's contact. */
  email?: string;
  /** The hosts to get certificates for; absent: every route host that no certificate file lists. */
  hosts?: string[];
  /** A CA (PEM, absolute path) trusted for the directory's own HTTPS besides the system's: a test CA. */
  caFile?: string;
}

export interface RouteTable {
  /** Grows with each update; the proxy ignores an update older than its table. */
  version: number;
  routes: Route[];
  /** Timeouts, limits and trusted peers for the whole proxy; the defaults when absent. */
  settings?: ProxySettings;
  /**
   * Count every request by service, slot and status class, with its duration (ProxyMetrics.requests).
   * The agent sets it when turquoise.yml has metrics.listen; without it the proxy skips that work.
   * A table with a route in canary is counted all the same: the canary is judged from these counts.
   */
  metrics?: boolean;
}

/**
 * Some services' routes replaced on top of the table the proxy has (mergeDelta, table.ts): a flip
 * sends one service's routes instead of every service's. It names the version it was built on;
 * a proxy at any other version refuses it, so a lost or late delta can never be applied to a
 * table it was not made for: the sender then sends the whole table.
 */
export interface RouteTableDelta {
  /** The version of the table this delta applies to. */
  base: number;
  /** The version of the table it makes: above base. */
  version: number;
  /** The services whose routes are replaced: every route of theirs goes, and `routes` take their place. None: only the version moves. */
  services: string[];
  /** The new routes of those services (none: they lose their routes). */
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
  /** Of served, responses whose upstream answered ≥ 500; absent from proxies that do not count them. */
  errors5xx?: number;
}

/**
 * Why an upstream is out of rotation: the proxy saw its connection refused, or reset before any
 * response byte (and a fresh connection confirmed it gone); or the agent marked it.
 */
export type UpstreamDownReason = "refused" | "reset" | "marked";

export interface UpstreamDown {
  id: string;
  /** Epoch ms when it left rotation. */
  since: number;
  reason: UpstreamDownReason;
}

export interface UpstreamEvent {
  /** Grows by one per event, from 1, for the life of the proxy process. */
  seq: number;
  /** Epoch ms. */
  at: number;
  type: "upstream.down" | "upstream.up";
  id: string;
  /** Why it went down; "marked" for an upstream.up, which only the agent's mark causes. */
  reason: UpstreamDownReason;
}

export interface UpstreamEventBatch {
  /** The latest seq: pass it as `after` to the next call. */
  seq: number;
  /** The events after `after`, oldest first. */
  events: UpstreamEvent[];
}

export interface ProxyStats {
  tableVersion: number;
  pools: PoolStats[];
  requests: number;
  /** Failed upstream attempts (a retried one counts too), timeouts included. */
  upstreamErrors: number;
  retries: number;
  /** Upstreams out of rotation; absent from proxies that do not report it. */
  down?: UpstreamDown[];
  /** Waits the proxy cut short, by kind, since it started; absent from proxies that do not count them. */
  timeouts?: ProxyTimeoutCounts;
  /** Connections and requests the proxy refused at the edge, by reason, since it started. */
  rejected?: ProxyRejectionCounts;
  /** Upgraded (WebSocket) connections. */
  tunnels?: TunnelCounts;
  /** TLS handshakes at the TLS listener; absent from proxies that do not count them. */
  tls?: TlsCounts;
}

export interface TlsCounts {
  /** Handshakes completed: a client connection that then speaks HTTP. */
  handshakes: number;
  /** Of those, the ones that resumed an earlier session (a ticket): no certificate signature. */
  resumed: number;
  /** Handshakes that failed, for any reason: garbage instead of a ClientHello, an old protocol, no certificate, a timeout. */
  failed: number;
  /** Handshakes not done within clientHeaderMs: the connection is closed. */
  timedOut: number;
  /** Handshakes for a name the proxy has no certificate for (or none at all): refused with an alert. */
  noCertificate: number;
}

export interface ProxyTimeoutCounts {
  /** Client connections without a whole request head within clientHeaderMs: answered 408, closed. */
  clientHeader: number;
  /** Keep-alive client connections closed after clientIdleMs without a request. */
  clientIdle: number;
  /** Tunnels closed after tunnelIdleMs without a byte either way. */
  tunnelIdle: number;
  /** Upgrade requests whose upstream did not connect (upstreamConnectMs) or answer (upstreamResponseMs) in time. */
  tunnelHandshake: number;
  /** Connections to an upstream not established within upstreamConnectMs. */
  upstreamConnect: number;
  /** Requests sent whose response head did not come within upstreamResponseMs. */
  upstreamResponse: number;
  /** Response (or request) bodies that stalled for upstreamIdleMs. */
  upstreamIdle: number;
}

export interface ProxyRejectionCounts {
  /** Connections closed at accept because maxConnections were open. */
  connections: number;
  /** Request heads beyond maxHeaderBytes: 431. */
  headerTooLarge: number;
  /** Request bodies beyond the route's maxBodyBytes (by Content-Length, or counted as they came): 413. */
  bodyTooLarge: number;
  /** Requests that could not be parsed or trusted (duplicate or missing Host, a body on an upgrade): 400. */
  badRequest: number;
  /** Waited upstreamQueueMs for a connection to an upstream at maxUpstreamConnections: 503. */
  upstreamQueue: number;
}

/**
 * The proxy's figures for Prometheus (docs/metrics.md), summed over its workers. Counters run from
 * the start of the proxy process (startedAt) and never go back within it, workers replaced or not;
 * gauges are the state now.
 */
export interface ProxyMetrics {
  /** Epoch ms: when the proxy process started, and so its counters. */
  startedAt: number;
  /** Upper bounds, in seconds, of the buckets of every series' durations; the +Inf bucket is implied. */
  durationBuckets: number[];
  /** One series per service and slot the route table named (and "" for requests no route took). */
  requests: RequestSeriesCounts[];
  /** Requests (and tunnels) in flight now, by service and slot. */
  inFlight: Array<{ service: string; slot: string; requests: number }>;
  /** Open now: client connections, connections to upstreams, switched tunnels. */
  open: { clientConnections: number; upstreamConnections: number; tunnels: number };
  /** Upstreams the proxy took out of rotation itself (passive detection), by why. */
  ejections: { refused: number; reset: number };
  timeouts: ProxyTimeoutCounts;
  rejected: ProxyRejectionCounts;
  /** Tunnels opened (an upstream answered 101). */
  tunnelsOpened: number;
  /** A supervised proxy's worker processes: by state now, and those that died unasked and were replaced. */
  workers?: { states: Record<string, number>; restarts: number; accepting?: number };
}

export interface RequestSeriesCounts {
  /** "" for requests answered before any route took them (no route, a bad Host). */
  service: string;
  /** "" when the route names no slot. */
  slot: string;
  /** Requests by the class of the status they were answered with, indexed as STATUS_CLASSES (counters.ts): none, 1xx to 5xx. */
  statuses: number[];
  /** How many took at most each of durationBuckets (not cumulative), the +Inf bucket last. */
  durations: number[];
  /** Seconds, all requests together. */
  durationSum: number;
  /** Failed upstream attempts (retried ones too), timeouts included. */
  upstreamErrors: number;
  retries: number;
}

export interface TunnelCounts {
  /** Tunnels open now (an upstream answered 101). */
  open: number;
  /** Tunnels opened since the proxy started. */
  total: number;
}

/**
 * What a driver can and cannot do of the contract. The shared test suite reads these: for a flag
 * that is false it checks the fallback described here instead, so each gap is stated and tested,
 * and the agent and the docs can tell an operator which settings a driver only approximates.
 */
export interface ProxyCapabilities {
  /**
   * No request fails because an apply landed, whatever connection it came on. false: requests on
   * fresh connections never do, but one sent on a kept-alive client connection just as an apply
   * lands may (nginx without its edge closes idle client connections on every reload).
   */
  hitlessApply: boolean;
  /** stats().pools counts each pool's requests. false: pools is empty (nginx counts nginx-wide only). */
  poolStats: boolean;
  /**
   * upstreamResponseMs bounds the wait for the response head and upstreamIdleMs each wait after it.
   * false: one wait between any two reads from the upstream, head or body, bounded by upstreamResponseMs.
   */
  separateHeadAndIdleTimeouts: boolean;
  /**
   * A request that finds its upstreams at maxUpstreamConnections waits up to upstreamQueueMs for a
   * free connection before its 503 + Retry-After. false: it is answered 503 + Retry-After at once.
   */
  upstreamQueue: boolean;
  /** A client that has not sent its whole request head within clientHeaderMs gets a 408. false: its connection is closed without an answer. */
  clientHeaderTimeout408: boolean;
  /**
   * maxConnections counts every open client connection, and one beyond it is closed at accept.
   * false: it counts the connections with a request in flight, and a request beyond it is answered
   * 503; idle keep-alive connections are bounded only by the driver's own per-process limits.
   */
  connectionLimitAtAccept: boolean;
  /**
   * Header fields that the client's Connection header names are removed (RFC 9110 §7.6.1), except
   * Host and the proxy's own forwarding fields. false: only the standard hop-by-hop fields are.
   */
  connectionNamedHeadersRemoved: boolean;
}

export interface Proxy {
  readonly name: string;
  readonly capabilities: ProxyCapabilities;
  /** Resolves only once new requests use the table. */
  apply(table: RouteTable): Promise<void>;
  /**
   * Optional: applies a delta on top of the table at version delta.base; resolves once new
   * requests use the result. "stale" (and nothing changed) when the proxy's table is at another
   * version: send the whole table then. A proxy without it (nginx) takes whole tables only.
   */
  applyDelta?(delta: RouteTableDelta): Promise<"applied" | "stale">;
  /** Waits until no request is in flight on the pool, up to timeoutMs, then cuts what remains. */
  drain(poolId: string, timeoutMs: number): Promise<DrainResult>;
  stats(): Promise<ProxyStats>;
  /** Marks an upstream out of rotation (or back in) without a new table. */
  setUpstreamHealth(upstreamId: string, healthy: boolean): Promise<void>;
  /**
   * Optional: the upstream.down/up events after seq `after`, as soon as there is one, or none once
   * waitMs ran out. A proxy that takes an upstream out by itself (passive detection) tells the
   * agent here; only setUpstreamHealth(id, true) brings it back.
   */
  events?(after: number, waitMs: number): Promise<UpstreamEventBatch>;
  /** Optional: the figures behind the agent's /metrics. nginx has none (docs/metrics.md says what to use there). */
  metrics?(): Promise<ProxyMetrics>;
}
