// The normalized spec: what the loader returns after schema validation and rules. Durations are
// milliseconds here (the YAML has strings such as "500ms").
import type { LogSettings } from "../log/settings.js";
import type { ProxySettings, RouteTimeouts } from "../proxy/contract.js";

export interface HealthSpec {
  /** HTTP path checked with GET; passing on 2xx, warning on 429, critical otherwise (Consul's meaning). */
  http?: string;
  /** TCP connect check when true (and no http path). */
  tcp?: boolean;
  intervalMs: number;
  timeoutMs: number;
  /** Consecutive successes before an instance turns passing (Consul: success_before_passing). */
  successBeforePassing: number;
  /** Consecutive failures before an instance turns critical (Consul: failures_before_critical). */
  failuresBeforeCritical: number;
}

export type SmokeSpec =
  | { name: string; http: { path: string; method: string; expectStatus: number; expectBody?: string; headers: Record<string, string> }; timeoutMs: number }
  | { name: string; command: string[]; timeoutMs: number };

export interface RouteSpec {
  host?: string;
  pathPrefix: string;
  /** Only the waits the spec sets for this route; the rest come from proxy.settings. */
  timeouts?: Partial<RouteTimeouts>;
  maxBodyBytes?: number;
  /** A host that reaches the new slot (preview or held) while the live one keeps this route. */
  previewHost?: string;
}

/** Progressive delivery (canary in turquoise.yml). */
export interface CanarySpec {
  /** Shares in percent below 100, increasing; the flip to 100 follows the last. */
  steps: number[];
  stepIntervalMs: number;
  /** A fraction: 0.01 for one percentage point above the live release's error rate. */
  maxErrorRate: number;
  maxP99Ratio: number;
  minRequests: number;
}

export type HookSpec =
  | { signal: { service: string; signal: NodeJS.Signals }; timeoutMs: number }
  | { command: string[]; timeoutMs: number };

export interface DatabaseSpec {
  driver: "postgres" | "sqlite";
  /** As written: may hold "${VAR}" references, resolved from the agent's environment at use. Never logged. */
  url: string;
  /** Absolute path of the migrations directory. */
  migrationsDir: string;
  /** Variable that carries the resolved URL into every instance. */
  envName: string;
  lockTimeoutMs: number;
  retries: number;
}

/** "/srv/books:/data:ro": a host directory or file, where it appears in the container, read-only or not. */
export interface VolumeSpec {
  source: string;
  target: string;
  readOnly: boolean;
}

/** runtime: swarm: the manager the agent drives, and the nodes' own daemons where the agent can reach them. */
export interface SwarmSpec {
  /** The manager's Docker socket (a path). */
  manager: string;
  /** Node address (as Swarm reports it) → that node's Docker socket: for signals and exact stop timeouts. */
  nodes: Record<string, string>;
}

export interface ServiceSpec {
  name: string;
  runtime: "process" | "docker" | "swarm";
  /** Docker and swarm: the image of a release, e.g. "books:{release}". */
  image?: string;
  /** Docker: bridge (publish on 127.0.0.1) or host networking. */
  network?: "bridge" | "host";
  /** Docker and swarm: host paths (swarm: on the node) mounted into every container. */
  volumes?: VolumeSpec[];
  /** Swarm: placement constraints, as docker service create --constraint takes them. */
  placement?: string[];
  /** Swarm: limits of each task. */
  resources?: { cpus?: number; memoryBytes?: number };
  command: string[];
  /** May contain "{release}"; resolved against the spec file's directory. */
  cwd: string;
  env: Record<string, string>;
  /** Names of the agent's environment variables that instances get as they are (env_passthrough). */
  envPassthrough: string[];
  replicas: number;
  route: RouteSpec;
  health: HealthSpec;
  smoke: SmokeSpec[];
  deployTimeoutMs: number;
  drainTimeoutMs: number;
  stopTimeoutMs: number;
  keepPreviousMs: number;
  /** The bake window after a flip; 0 disables it. */
  bakeMs: number;
  /** Every deploy goes through these steps unless it names its own. */
  canary?: CanarySpec;
  database?: DatabaseSpec;
  hooks: { afterFlip: HookSpec[] };
  webhook?: WebhookSpec;
}

/** POST /v1/hooks/<service>: how a CI delivery is checked and which release it deploys. */
export interface WebhookSpec {
  /** The agent's environment variable holding GitHub's HMAC secret. */
  secretEnv?: string;
  /** A template over the payload ({tag}, {branch}, {sha}, {sha7}, {release}); default by sender. */
  release?: string;
  /** Only pushes to these branches deploy. */
  branches?: string[];
}

export interface WatchSpec {
  name: string;
  type: "service" | "checks" | "key" | "keyprefix";
  service?: string;
  state?: "passing" | "warning" | "critical";
  key?: string;
  prefix?: string;
  handler: { args: string[] } | { http: { url: string; method: "POST" | "PUT"; headers: Record<string, string> } };
  timeoutMs: number;
}

/** The etcd cluster of state.driver: etcd. The password is named, not given: it is read from the agent's environment when the store opens. */
export interface EtcdSpec {
  endpoints: string[];
  prefix: string;
  timeoutMs: number;
  /** The leader's lease: several agents share the store, one leads. */
  leaderTtlMs: number;
  username?: string;
  passwordEnv?: string;
  /** Absolute paths of PEM files. */
  tls?: { ca: string; cert?: string; key?: string };
}

export interface StateSpec {
  driver: "sqlite" | "memory" | "etcd";
  /** The SQLite file (driver: sqlite). */
  path: string;
  etcd?: EtcdSpec;
}

export interface Spec {
  /** Absolute path of the file the spec was read from. */
  file: string;
  /** Directory that relative paths in the spec are resolved against. */
  dir: string;
  agent: { host: string; port: number };
  proxy: {
    host: string;
    port: number;
    driver: "builtin" | "nginx";
    /** The built-in proxy's worker processes; "auto": one per core of the proxy's machine. */
    workers: number | "auto";
    /** Which of the built-in proxy's workers accept new connections (proxy/supervisor.ts AcceptMode). */
    accept: "adaptive" | "all";
    nginx: { binary: string; template?: string; container?: string };
    /** The built-in proxy's TLS listener; what it serves is in settings.tls. */
    tls?: { host: string; port: number };
    settings: ProxySettings;
  };
  /** Consul's HTTP API, read side, on an address of its own: absent unless consul.listen is set. */
  consul?: { host: string; port: number; datacenter: string; maxBlocking: number };
  state: StateSpec;
  /** Where pid files, logs, the token and the proxy's saved table live. */
  stateDir: string;
  services: Record<string, ServiceSpec>;
  watches: WatchSpec[];
  /** The Prometheus endpoint; absent: no metrics (and the proxy does not count requests by series). */
  metrics?: MetricsSpec;
  /** The agent's and the proxy's logs, before TURQUOISE_LOG_LEVEL / TURQUOISE_LOG_FORMAT override them. */
  log: LogSettings;
  /** runtime: swarm: where the cluster is. */
  swarm?: SwarmSpec;
}

export interface MetricsSpec {
  host: string;
  port: number;
  /** Absolute path of the file with the bearer token scrapers must send; absent: no token asked. */
  tokenFile?: string;
}

export interface SpecProblem {
  file: string;
  line?: number;
  column?: number;
  /** Dotted path to the key, e.g. "services.books.health.interval". */
  path: string;
  message: string;
}

export interface LoadResult {
  spec?: Spec;
  errors: SpecProblem[];
  warnings: SpecProblem[];
}
