// The JSON Schema of turquoise.yml. The loader validates with it, and editors that know JSON Schema
// (the YAML language server) show its descriptions as hover help, so every property has one.

import { DEFAULT_PROXY_LIMITS, DEFAULT_PROXY_TIMEOUTS } from "../proxy/settings.js";
import { HSTS_PATTERN } from "../proxy/tls-settings.js";
import { DURATION_PATTERN, formatDuration } from "../util/duration.js";
import { formatSize, SIZE_PATTERN } from "../util/size.js";
import { DEFAULT_LOG_FORMAT, DEFAULT_LOG_LEVEL, LOG_FORMATS, LOG_LEVELS } from "../log/settings.js";

export const SERVICE_NAME_PATTERN = "^[a-z][a-z0-9-]{0,62}$";
// Ports 1-65535 spelled out as a regex, so that editors flag a bad port as they do any other bad value.
const PORT = "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})";
export const LISTEN_PATTERN = `^(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9.-]+):${PORT}$`;
export const HOST_PATTERN = "^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$";
/** A certificate's host: a name, or "*." and a name (one label below it). */
export const CERT_HOST_PATTERN = "^(\\*\\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$";
export const URL_PATH_PATTERN = "^/";
export const ENV_NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_]*$";

// Defaults live here once: the schema shows them to editors and the loader applies them.
export const DEFAULT_AGENT_LISTEN = "127.0.0.1:4700";
export const DEFAULT_PROXY_LISTEN = "127.0.0.1:8080";
export const DEFAULT_PROXY_WORKERS = 1;
/** Where Let's Encrypt's production directory is: the ACME default. */
export const DEFAULT_ACME_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory";
/** kamal-proxy's default too: a host with a certificate is reached over https. */
export const DEFAULT_REDIRECT_HTTP = true;
/** More proxy workers than this is a typo, not a machine. */
export const MAX_PROXY_WORKERS = 256;
export const PROXY_WORKERS_AUTO_PATTERN = "^auto$";
export const DEFAULT_CONSUL_DATACENTER = "dc1";
/** Consul's own rule for datacenter names: letters, digits, dashes and underscores. */
export const DATACENTER_PATTERN = "^[A-Za-z0-9_-]{1,64}$";
/** Blocking queries the Consul API holds at once; each is an open socket and a timer. */
export const DEFAULT_CONSUL_MAX_BLOCKING = 512;
export const MAX_CONSUL_MAX_BLOCKING = 16_384;
export const DEFAULT_STATE_DRIVER = "sqlite";
export const DEFAULT_STATE_DIR = ".turquoise";
export const DEFAULT_STATE_FILE = "state.db";
export const DEFAULT_ETCD_PREFIX = "/turquoise/";
export const DEFAULT_ETCD_TIMEOUT = "5s";
/** The leader's lease: a dead leader is replaced this long after its last renewal (renewed every third of it). */
export const DEFAULT_LEADER_TTL = "3s";
/** A member's client URL: scheme, host and port, nothing else (credentials go in username and password_env). */
export const ETCD_ENDPOINT_PATTERN = "^https?://[A-Za-z0-9.-]+:[0-9]{1,5}$|^https?://\\[[0-9A-Fa-f:.]+\\]:[0-9]{1,5}$";
/** "/turquoise/books/": slash-separated names, starting and ending with a slash. */
export const ETCD_PREFIX_PATTERN = "^/([A-Za-z0-9._-]+/)+$";
export const DEFAULT_RUNTIME = "process";
export const DEFAULT_REPLICAS = 1;
export const DEFAULT_ROUTE_PATH = "/";
export const DEFAULT_HEALTH_INTERVAL = "1s";
export const DEFAULT_HEALTH_TIMEOUT = "1s";
export const DEFAULT_SUCCESS_BEFORE_PASSING = 1;
export const DEFAULT_FAILURES_BEFORE_CRITICAL = 2;
export const DEFAULT_SMOKE_METHOD = "GET";
export const DEFAULT_SMOKE_EXPECT_STATUS = 200;
export const DEFAULT_SMOKE_TIMEOUT = "10s";
export const DEFAULT_DEPLOY_TIMEOUT = "30s";
export const DEFAULT_DRAIN_TIMEOUT = "10s";
export const DEFAULT_STOP_TIMEOUT = "10s";
export const DEFAULT_KEEP_PREVIOUS = "0s";
/** Long enough to see a release crash under its first real traffic, short enough not to slow every deploy. */
export const DEFAULT_BAKE = "3s";
export const DEFAULT_CANARY_STEP_INTERVAL = "30s";
/** Percentage points the new slot's error rate may exceed the live slot's by, over one step. */
export const DEFAULT_CANARY_MAX_ERROR_RATE = 1;
export const DEFAULT_CANARY_MAX_P99_RATIO = 3;
export const DEFAULT_CANARY_MIN_REQUESTS = 20;
export const DEFAULT_DATABASE_ENV = "DATABASE_URL";
export const DEFAULT_HOOK_TIMEOUT = "10s";
export const DEFAULT_WATCH_TIMEOUT = "10s";
export const DEFAULT_MIGRATION_LOCK_TIMEOUT = "2s";
export const DEFAULT_MIGRATION_RETRIES = 5;
/** Next to the agent's own port; metrics are off unless turquoise.yml has a metrics section. */
export const EXAMPLE_METRICS_LISTEN = "127.0.0.1:4701";

function duration(description: string, fallback: string) {
  return { type: "string", pattern: DURATION_PATTERN, default: fallback, description: `${description} A number and a unit: "500ms", "10s", "5m", "1h".` };
}

function listen(description: string, fallback: string) {
  return {
    type: "object",
    additionalProperties: false,
    description,
    properties: {
      listen: { type: "string", pattern: LISTEN_PATTERN, default: fallback, description: `host:port to listen on, port 1 to 65535. Default ${fallback}.` },
    },
  };
}

function size(description: string, fallbackBytes: number) {
  const fallback = formatSize(fallbackBytes);
  return {
    type: ["string", "integer"],
    pattern: SIZE_PATTERN,
    minimum: 1,
    default: fallback,
    description: `${description} Bytes, or a number and a unit: "16KiB", "10MB". Default ${fallback}.`,
  };
}

const T = DEFAULT_PROXY_TIMEOUTS;
/** The upstream waits a route may set for itself, over the proxy's. */
const ROUTE_TIMEOUTS = {
  upstream_connect: duration("Connecting to an upstream; then the next instance, or 504.", formatDuration(T.upstreamConnectMs)),
  upstream_response: duration("From the request sent to the upstream's response head (kamal-proxy's target timeout): 504.", formatDuration(T.upstreamResponseMs)),
  upstream_idle: duration("Between two reads of the upstream's response body or two writes of the request body: the connection is closed.", formatDuration(T.upstreamIdleMs)),
  tunnel_idle: duration("An upgraded (WebSocket) connection with no byte either way for this long is closed.", formatDuration(T.tunnelIdleMs)),
};

const ARGV = {
  type: "array",
  minItems: 1,
  items: { type: "string", minLength: 1 },
};

export const SPEC_JSON_SCHEMA = {
  $schema: "http://json-schema.org/draft-07/schema#",
  title: "turquoise.yml",
  description: "Turquoise deployment spec: the services it runs and how it deploys them with zero downtime.",
  type: "object",
  additionalProperties: false,
  required: ["version", "services"],
  properties: {
    version: { const: 1, description: "Spec format version. Always 1." },
    agent: listen("The agent (control plane) and its HTTP API. Keep it on loopback: the CLI talks to it locally.", DEFAULT_AGENT_LISTEN),
    proxy: {
      ...listen("The proxy (data plane) that routes traffic to the live slot of each service.", DEFAULT_PROXY_LISTEN),
      properties: {
        ...listen("", DEFAULT_PROXY_LISTEN).properties,
        driver: { enum: ["builtin", "nginx"], default: "builtin", description: "builtin: Turquoise's own proxy process. nginx: an nginx that Turquoise configures, validates (nginx -t) and reloads." },
        workers: {
          type: ["string", "integer"],
          minimum: 1,
          maximum: MAX_PROXY_WORKERS,
          pattern: PROXY_WORKERS_AUTO_PATTERN,
          default: DEFAULT_PROXY_WORKERS,
          description: `builtin: worker processes serving the proxy's one listening socket, as nginx's worker_processes; "auto" starts one per core. A supervisor replaces a dead worker while new connections wait, and upgrades them in place. Limits such as max_connections apply per worker. Default ${DEFAULT_PROXY_WORKERS}.`,
        },
        accept: {
          enum: ["adaptive", "all"],
          default: "adaptive",
          description: "builtin, with more than one worker: which workers accept new connections. adaptive: one, and more while the ones accepting are saturated and a core sits idle for another (a worker that stops accepting serves the connections it has); on a host the apps share, a second worker then costs nothing until it helps. all: every worker, as nginx's.",
        },
        nginx: {
          type: "object",
          additionalProperties: false,
          description: "driver: nginx.",
          properties: {
            binary: { type: "string", minLength: 1, default: "nginx", description: "The nginx executable." },
            template: { type: "string", minLength: 1, description: "Your own config template, relative to the spec file (see docs/nginx.md); the default renders one server per route." },
            container: { type: "string", minLength: 1, description: "nginx runs in this Docker container (sharing the rendered config through a mount): reloads signal the container through the Docker API." },
          },
        },
        timeouts: {
          type: "object",
          additionalProperties: false,
          description: "Every wait the proxy bounds (see docs/how-it-works.md for nginx's and kamal-proxy's defaults). A route may set its own upstream waits.",
          properties: {
            client_header: duration("From a client connection's first byte to the end of its request head (slowloris): 408.", formatDuration(T.clientHeaderMs)),
            client_idle: duration("A keep-alive client connection with no request in flight is closed after this long.", formatDuration(T.clientIdleMs)),
            ...ROUTE_TIMEOUTS,
          },
        },
        limits: {
          type: "object",
          additionalProperties: false,
          description: "Bounds that keep one slow or hostile service from taking the proxy from the others.",
          properties: {
            max_connections: { type: "integer", minimum: 1, default: DEFAULT_PROXY_LIMITS.maxConnections, description: `Client connections open at once, all routes together; beyond it new connections are closed at accept. Default ${DEFAULT_PROXY_LIMITS.maxConnections}.` },
            max_upstream_connections: { type: "integer", minimum: 1, default: DEFAULT_PROXY_LIMITS.maxUpstreamConnections, description: `Connections to one instance at once; beyond it requests queue for upstream_queue, then get 503 with Retry-After. Default ${DEFAULT_PROXY_LIMITS.maxUpstreamConnections}.` },
            upstream_queue: duration("How long a request waits for a free connection to an instance at its cap before a 503.", formatDuration(DEFAULT_PROXY_LIMITS.upstreamQueueMs)),
            max_header_size: size("Largest request head (request line and header fields): 431 beyond.", DEFAULT_PROXY_LIMITS.maxHeaderBytes),
            max_body_size: size("Largest request body: 413 beyond. A route may set its own.", DEFAULT_PROXY_LIMITS.maxBodyBytes),
          },
        },
        trusted_proxies: {
          type: "array",
          description: "Peers (addresses or CIDR blocks) whose X-Forwarded-For, X-Real-IP and Forwarded headers are kept, as nginx's set_real_ip_from. Everyone else's are replaced.",
          items: { type: "string", pattern: "^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$" },
        },
        tls: {
          type: "object",
          additionalProperties: false,
          required: ["listen"],
          description:
            "builtin: terminate TLS (1.2 and 1.3) on a second listener, with certificates from files or from an ACME CA, picked by SNI. A handshake for a host without a certificate is refused with a handshake_failure alert: there is no default certificate.",
          properties: {
            listen: { type: "string", pattern: LISTEN_PATTERN, description: 'host:port of the TLS listener: "0.0.0.0:443". Changing it restarts the proxy.' },
            certificates: {
              type: "array",
              description: "Certificates from PEM files, reloaded when the files change (a broken file keeps the previous certificate serving).",
              items: {
                type: "object",
                additionalProperties: false,
                required: ["hosts", "cert_file", "key_file"],
                properties: {
                  hosts: { type: "array", minItems: 1, uniqueItems: true, items: { type: "string", pattern: CERT_HOST_PATTERN }, description: 'The hosts this certificate serves: names it holds, or "*.example.com" for any one label below example.com.' },
                  cert_file: { type: "string", minLength: 1, description: "The certificate chain, PEM, leaf first; relative to the spec file." },
                  key_file: { type: "string", minLength: 1, description: "Its private key, PEM, without a passphrase; relative to the spec file. May be the same file as cert_file." },
                },
              },
            },
            acme: {
              type: "object",
              additionalProperties: false,
              description: "Get certificates over ACME (HTTP-01, answered by the proxy on proxy.listen, which the CA must reach on port 80). Setting this accepts the CA's terms of service.",
              properties: {
                directory_url: { type: "string", pattern: "^https?://", default: DEFAULT_ACME_DIRECTORY, description: `The CA's ACME directory. Default Let's Encrypt: ${DEFAULT_ACME_DIRECTORY}.` },
                email: { type: "string", pattern: "^[^\\s@]+@[^\\s@]+$", description: "The account's contact, for the CA's expiry and policy notices." },
                hosts: {
                  type: "array",
                  uniqueItems: true,
                  items: { type: "string", pattern: HOST_PATTERN },
                  description: "The hosts to get certificates for. Default: every service's route host that no certificates entry serves.",
                },
                ca_file: { type: "string", minLength: 1, description: "A CA (PEM) trusted for the directory's HTTPS besides the system's: a test CA such as pebble's. Relative to the spec file." },
              },
            },
            redirect_http: { type: "boolean", default: DEFAULT_REDIRECT_HTTP, description: "Answer plain-HTTP requests for a host with a certificate with a 308 to its https:// URL (ACME challenges excepted). Hosts without one (an ACME host until it is issued too) stay on plain HTTP." },
            hsts: { type: "string", pattern: HSTS_PATTERN, description: 'The Strict-Transport-Security header of every answer over TLS: "max-age=31536000; includeSubDomains". None by default: browsers remember it.' },
          },
        },
      },
    },
    consul: {
      type: "object",
      additionalProperties: false,
      required: ["listen"],
      description: "The read side of Consul's HTTP API for the registry (catalog, health, user KV, blocking queries), for Prometheus' consul_sd_configs, consul-template and other Consul clients, with the registry token as X-Consul-Token (docs/registry.md). Off unless set.",
      properties: {
        listen: { type: "string", pattern: LISTEN_PATTERN, description: "host:port of the Consul API, e.g. 127.0.0.1:8500 (Consul's own port). An address of its own: the agent's API keeps its shapes." },
        datacenter: { type: "string", pattern: DATACENTER_PATTERN, default: DEFAULT_CONSUL_DATACENTER, description: `The datacenter /v1/agent/self reports; a query whose ?dc= names another is refused. Default ${DEFAULT_CONSUL_DATACENTER}.` },
        max_blocking: {
          type: "integer",
          minimum: 1,
          maximum: MAX_CONSUL_MAX_BLOCKING,
          default: DEFAULT_CONSUL_MAX_BLOCKING,
          description: `Blocking queries (?index=) held open at once; one more gets 429 and Retry-After, so hung or runaway clients cannot take the agent's sockets. Default ${DEFAULT_CONSUL_MAX_BLOCKING}.`,
        },
      },
    },
    state: {
      type: "object",
      additionalProperties: false,
      description: "Where Turquoise keeps its state: live slots, releases, locks, history.",
      if: { properties: { driver: { const: "etcd" } }, required: ["driver"] },
      then: { required: ["etcd"] },
      properties: {
        driver: {
          enum: ["sqlite", "memory", "etcd"],
          default: DEFAULT_STATE_DRIVER,
          description: "sqlite keeps state in a file across restarts; memory forgets it when the agent stops (tests, demos); etcd keeps it in an etcd cluster that several agents share (see docs/state.md).",
        },
        path: { type: "string", minLength: 1, description: `driver: sqlite. SQLite file, relative to the spec file's directory. Default <state_dir>/${DEFAULT_STATE_FILE}.` },
        etcd: {
          type: "object",
          additionalProperties: false,
          required: ["endpoints"],
          description: "driver: etcd. The cluster, and where in it this project's state lives.",
          dependencies: { username: ["password_env"], password_env: ["username"] },
          properties: {
            endpoints: {
              type: "array",
              minItems: 1,
              uniqueItems: true,
              items: { type: "string", pattern: ETCD_ENDPOINT_PATTERN },
              description: 'Client URLs of the cluster\'s members, all of them: ["http://etcd-1.example.internal:2379", "http://etcd-2.example.internal:2379", "http://etcd-3.example.internal:2379"]. A member that is down or hangs is skipped. https:// for all of them with TLS.',
            },
            prefix: {
              type: "string",
              pattern: ETCD_PREFIX_PATTERN,
              default: DEFAULT_ETCD_PREFIX,
              description: `Every key Turquoise writes lives under this prefix. Give each project that shares a cluster its own: "/turquoise/books/". Default ${DEFAULT_ETCD_PREFIX}.`,
            },
            timeout: duration("How long one state read or write may take, retries on other members included, before it fails with STATE_UNAVAILABLE (exit 16).", DEFAULT_ETCD_TIMEOUT),
            leader_ttl: duration("Time to live of the leader's lease (several agents, one leader). The leader renews it every third of it; a leader that dies, hangs or loses etcd is replaced this long after its last renewal. Between 2s (etcd's shortest lease) and 60s.", DEFAULT_LEADER_TTL),
            username: { type: "string", minLength: 1, description: "etcd user, when the cluster has authentication enabled. Its role needs readwrite on the prefix." },
            password_env: { type: "string", pattern: ENV_NAME_PATTERN, description: "Environment variable of the agent that holds the etcd user's password: ETCD_PASSWORD. The password itself never goes in this file, and is never logged." },
            tls: {
              type: "object",
              additionalProperties: false,
              required: ["ca"],
              dependencies: { cert: ["key"], key: ["cert"] },
              description: "TLS to the members (https:// endpoints), relative to the spec file's directory.",
              properties: {
                ca: { type: "string", minLength: 1, description: "PEM file of the CA that signed the members' certificates." },
                cert: { type: "string", minLength: 1, description: "PEM client certificate, when the members require one (--client-cert-auth)." },
                key: { type: "string", minLength: 1, description: "PEM private key of the client certificate." },
              },
            },
          },
        },
      },
    },
    state_dir: {
      type: "string",
      minLength: 1,
      default: DEFAULT_STATE_DIR,
      description: "Directory for pid files, logs, the API token and the proxy's saved route table, relative to the spec file's directory.",
    },
    watches: {
      type: "array",
      description: "Consul-style watches: when what a watch looks at changes, its handler runs with the JSON on stdin (args) or in a POST (http).",
      items: { $ref: "#/definitions/watch" },
    },
    metrics: {
      type: "object",
      additionalProperties: false,
      required: ["listen"],
      description: "Prometheus metrics of the agent and the built-in proxy at http://<listen>/metrics (see docs/metrics.md). Without this section there is no metrics endpoint, and the proxy does not count requests by service.",
      properties: {
        listen: { type: "string", pattern: LISTEN_PATTERN, description: `host:port of the metrics endpoint, its own listener apart from the agent API, e.g. "${EXAMPLE_METRICS_LISTEN}".` },
        token_file: {
          type: "string",
          minLength: 1,
          description: "A file (relative to the spec file) holding the bearer token a scraper must send (Prometheus: authorization.credentials_file). Without it /metrics is open to whoever reaches the listener.",
        },
      },
    },
    services: {
      type: "object",
      minProperties: 1,
      description: "The services to deploy, by name.",
      propertyNames: { pattern: SERVICE_NAME_PATTERN },
      additionalProperties: { $ref: "#/definitions/service" },
    },
    swarm: {
      type: "object",
      additionalProperties: false,
      required: ["manager"],
      description: "runtime: swarm. The cluster: a manager's Docker socket, and each node's own socket where the agent can reach it (for signals and exact stop timeouts). See docs/swarm.md.",
      properties: {
        manager: { type: "string", minLength: 1, description: 'A Swarm manager\'s Docker socket: "/var/run/docker.sock" or "unix:///run/turquoise-lab/node1/docker.sock".' },
        nodes: {
          type: "object",
          description: 'Node address, as Swarm reports it (docker node inspect: Status.Addr) → that node\'s Docker socket: {"198.18.100.12": "/run/turquoise-lab/node2/docker.sock"}.',
          additionalProperties: { type: "string", minLength: 1 },
        },
      },
    },
    log: {
      type: "object",
      additionalProperties: false,
      description: "The agent's and the proxy's logs (agent.log, proxy.log, the foreground `up`): JSON lines with time, level, component, service, event and message; secrets redacted. See docs/logs.md.",
      properties: {
        level: { enum: [...LOG_LEVELS], default: DEFAULT_LOG_LEVEL, description: `The least severe level written: debug adds every API request. $TURQUOISE_LOG_LEVEL overrides it. Default ${DEFAULT_LOG_LEVEL}.` },
        format: { enum: [...LOG_FORMATS], default: DEFAULT_LOG_FORMAT, description: `json: one JSON object a line. pretty: one readable line each. auto: pretty on a terminal, JSON to a file or a pipe. $TURQUOISE_LOG_FORMAT overrides it. Default ${DEFAULT_LOG_FORMAT}.` },
      },
    },
  },
  definitions: {
    service: {
      type: "object",
      additionalProperties: false,
      description: "One HTTP service, run as blue and green slots behind the proxy.",
      required: ["route", "health"],
      // What each runtime needs to start an instance.
      if: { properties: { runtime: { enum: ["docker", "swarm"] } }, required: ["runtime"] },
      then: { required: ["image"] },
      else: { required: ["command", "cwd"] },
      properties: {
        runtime: {
          enum: ["process", "docker", "swarm"],
          default: DEFAULT_RUNTIME,
          description: "How instances run. process: local child processes (needs command and cwd). docker: containers through the Docker Engine API (needs image). swarm: one Swarm service per slot, its tasks the instances, through a manager's Engine API (needs image and the top-level swarm block; see docs/swarm.md).",
        },
        volumes: {
          type: "array",
          items: { type: "string", pattern: "^[^:]+:/[^:]*(:(ro|rw))?$" },
          description: 'runtime: docker and swarm. Host paths mounted into every container: "/srv/books:/data" or "/srv/books:/data:ro". With swarm the path is on the node that runs the task.',
        },
        placement: {
          type: "array",
          items: { type: "string", minLength: 1 },
          description: 'runtime: swarm. Placement constraints of each task, as docker service create --constraint takes them: ["node.role==worker"].',
        },
        resources: {
          type: "object",
          additionalProperties: false,
          description: "runtime: swarm. Limits of each task.",
          properties: {
            cpus: { type: "number", exclusiveMinimum: 0, description: "CPUs, e.g. 0.5." },
            memory: { type: ["string", "integer"], pattern: SIZE_PATTERN, description: 'Memory, e.g. "256MiB".' },
          },
        },
        image: {
          type: "string",
          minLength: 1,
          description: 'runtime: docker. The image of a release, present locally (no registry is pulled from): "books:{release}". Its label turquoise.schema="1..3" declares the schema versions it runs on.',
        },
        network: { enum: ["bridge", "host"], default: "bridge", description: "runtime: docker. bridge publishes each container's port on 127.0.0.1 only; host shares the host's network." },
        command: {
          ...ARGV,
          description: 'Command that starts one instance, as an argv array: ["node", "server.js"]. No shell is involved; write ["sh", "-c", "..."] if you want one. The instance must listen on $PORT.',
        },
        cwd: {
          type: "string",
          minLength: 1,
          description: "Working directory of an instance, relative to the spec file's directory. {release} is replaced by the release being deployed.",
        },
        env: {
          type: "object",
          description: "Environment variables given to every instance, on top of PORT and TURQUOISE_*. Numbers and booleans become strings.",
          propertyNames: { pattern: ENV_NAME_PATTERN },
          additionalProperties: { type: ["string", "number", "boolean"] },
        },
        env_passthrough: {
          type: "array",
          uniqueItems: true,
          description:
            "Variables of the agent's own environment that every instance gets too, by name: [AWS_REGION]. Otherwise an instance gets none of the agent's environment but PATH, HOME, LANG, LC_* and TZ (runtime: process). A name the agent's environment lacks is skipped.",
          items: { type: "string", pattern: ENV_NAME_PATTERN },
        },
        replicas: { type: "integer", minimum: 1, default: DEFAULT_REPLICAS, description: "Instances per slot." },
        route: {
          type: "object",
          additionalProperties: false,
          description: "Which requests the proxy sends to this service: a host, a path prefix, or both.",
          anyOf: [{ required: ["host"] }, { required: ["path"] }],
          properties: {
            host: { type: "string", pattern: HOST_PATTERN, description: "Host header to match, without scheme or port: books.localhost." },
            path: { type: "string", pattern: URL_PATH_PATTERN, default: DEFAULT_ROUTE_PATH, description: "Path prefix to match, starting with /." },
            timeouts: {
              type: "object",
              additionalProperties: false,
              description: "This route's upstream waits, over proxy.timeouts.",
              properties: ROUTE_TIMEOUTS,
            },
            max_body_size: size("Largest request body for this route: 413 beyond. Over proxy.limits.max_body_size.", DEFAULT_PROXY_LIMITS.maxBodyBytes),
            preview_host: {
              type: "string",
              pattern: HOST_PATTERN,
              description: "A host that reaches the new slot while the live one keeps the route: during a deploy from its smoke checks to its flip, and while `deploy --hold` keeps it waiting for `promote` or `abort`: green.books.localhost.",
            },
          },
        },
        canary: {
          type: "object",
          additionalProperties: false,
          required: ["steps"],
          description: "Progressive delivery: every deploy sends these shares of users to the new release, one step each interval, judged at each step against the live release by the proxy's own counters. A failing step sends everyone back at once and retires the new release. deploy --canary overrides the steps.",
          properties: {
            steps: {
              type: "array",
              minItems: 1,
              maxItems: 20,
              description: "Shares in percent, increasing: [5, 25, 50, 100]. 100 (the flip itself) is implied after the last step.",
              items: { type: "integer", minimum: 1, maximum: 100 },
            },
            step_interval: duration("How long each step lasts: its window.", DEFAULT_CANARY_STEP_INTERVAL),
            max_error_rate: {
              type: "number", minimum: 0, maximum: 100, default: DEFAULT_CANARY_MAX_ERROR_RATE,
              description: "Percentage points by which the new release's error rate (5xx answers, upstream failures included) may exceed the live release's over a step.",
            },
            max_p99_ratio: {
              type: "number", minimum: 1, default: DEFAULT_CANARY_MAX_P99_RATIO,
              description: "How many times the live release's p99 latency the new release's may reach over a step.",
            },
            min_requests: {
              type: "integer", minimum: 1, default: DEFAULT_CANARY_MIN_REQUESTS,
              description: "Requests the new release must answer in a step before its error rate and p99 are judged; below that a step passes only without a single error.",
            },
          },
        },
        health: {
          type: "object",
          additionalProperties: false,
          description: "Health check for every instance (Consul's names and meanings). Set exactly one of http or tcp.",
          oneOf: [{ required: ["http"] }, { required: ["tcp"] }],
          properties: {
            http: { type: "string", pattern: URL_PATH_PATTERN, description: "Path checked with GET: passing on 2xx, warning on 429, critical otherwise." },
            tcp: { const: true, description: "Check only that the port accepts TCP connections." },
            interval: duration("Time between checks.", DEFAULT_HEALTH_INTERVAL),
            timeout: duration("How long one check may take.", DEFAULT_HEALTH_TIMEOUT),
            success_before_passing: {
              type: "integer",
              minimum: 1,
              default: DEFAULT_SUCCESS_BEFORE_PASSING,
              description: "Consecutive successful checks before an instance turns passing.",
            },
            failures_before_critical: {
              type: "integer",
              minimum: 1,
              default: DEFAULT_FAILURES_BEFORE_CRITICAL,
              description: "Consecutive failed checks before an instance turns critical and leaves rotation.",
            },
          },
        },
        smoke: {
          type: "array",
          description: "Checks run against the new slot before traffic flips to it. Any failure aborts the deploy.",
          items: { $ref: "#/definitions/smoke" },
        },
        deploy_timeout: duration("How long new instances have to turn healthy.", DEFAULT_DEPLOY_TIMEOUT),
        drain_timeout: duration("How long in-flight requests on the old slot have to finish after the flip.", DEFAULT_DRAIN_TIMEOUT),
        stop_timeout: duration("How long an instance has to exit after SIGTERM before it gets SIGKILL.", DEFAULT_STOP_TIMEOUT),
        keep_previous: duration("How long the old slot stays warm after the drain for an instant rollback. 0s stops it at once.", DEFAULT_KEEP_PREVIOUS),
        bake: duration("After the flip, how long the new release must prove itself in real traffic while the old slot stays warm: an instance exit, or more than 1% of at least 20 requests failing (5xx, refused, reset), flips traffic back at once and the deploy ends reverted. 0s disables.", DEFAULT_BAKE),
        hooks: {
          type: "object",
          additionalProperties: false,
          description: "Actions run at points of a deploy. A failing hook fails the deploy at that point.",
          properties: {
            after_flip: { type: "array", items: { $ref: "#/definitions/hook" }, description: "Run once traffic is on the new release and verified: e.g. HUP an nginx container that reads the registry." },
          },
        },
        webhook: {
          type: "object",
          additionalProperties: false,
          description: "POST /v1/hooks/<service> deploys this service from CI: GitHub's X-Hub-Signature-256 with the secret below, or a deploy token as Authorization: Bearer. `turquoise webhook <service>` prints the URL and a curl line.",
          properties: {
            secret_env: { type: "string", pattern: ENV_NAME_PATTERN, description: "Environment variable of the agent that holds the HMAC secret GitHub signs deliveries with. Never logged." },
            release: {
              type: "string",
              minLength: 1,
              pattern: "^[A-Za-z0-9._{}-]+$",
              description: "The release to deploy, as a template over the payload: {tag} (a pushed tag, or a GitHub release's tag), {branch}, {sha}, {sha7} (of a push), {release} (a \"release\" field, for other CIs). Default: {tag} for GitHub deliveries, {release} otherwise.",
            },
            branches: { type: "array", items: { type: "string", minLength: 1 }, description: "Only pushes to these branches deploy; others are answered 200 and ignored. Default: every branch." },
          },
        },
        database: {
          type: "object",
          additionalProperties: false,
          description: "The database blue and green share. With it, every release must declare the schema versions it runs on, and deploys plan migrations (the turquoise path).",
          required: ["driver", "url", "migrations"],
          properties: {
            driver: { enum: ["postgres", "sqlite"], description: "postgres (advisory lock, lock_timeout, retries) or sqlite (exclusive transactions)." },
            url: {
              type: "string",
              minLength: 1,
              description: 'Database URL, e.g. "${DATABASE_URL}" to take it from the agent\'s environment, or sqlite:data/books.db (relative to the spec file). Never logged.',
            },
            migrations: { type: "string", minLength: 1, description: "Directory of versioned steps (0001_name.up.sql, 0001_name.down.sql, or a module 0001_name.mjs, .js, .ts or .mts), relative to the spec file." },
            env: { type: "string", pattern: ENV_NAME_PATTERN, default: DEFAULT_DATABASE_ENV, description: "Environment variable that carries the URL into every instance." },
            lock_timeout: duration("PostgreSQL lock_timeout for each step, so a migration never blocks live traffic for long.", DEFAULT_MIGRATION_LOCK_TIMEOUT),
            retries: { type: "integer", minimum: 0, default: DEFAULT_MIGRATION_RETRIES, description: "How often a step that hit lock_timeout is retried, with exponential backoff." },
          },
        },
      },
    },
    watch: {
      type: "object",
      additionalProperties: false,
      description: "One watch. type service: a service's instances; checks: health checks (filter with service and state); key: one KV key; keyprefix: the keys under a prefix.",
      required: ["type"],
      oneOf: [{ required: ["args"] }, { required: ["http"] }],
      properties: {
        name: { type: "string", minLength: 1, description: "Shown in the handler's log lines. Default: the type and what it looks at." },
        type: { enum: ["service", "checks", "key", "keyprefix"], description: "What the watch looks at." },
        service: { type: "string", pattern: SERVICE_NAME_PATTERN, description: "type service (required) and checks (optional): the service." },
        state: { enum: ["passing", "warning", "critical"], description: "type checks: only checks in this state." },
        key: { type: "string", minLength: 1, description: "type key: the KV key." },
        prefix: { type: "string", description: "type keyprefix: the KV prefix." },
        args: { ...ARGV, description: "Handler: a command (argv). It gets the JSON on stdin, and TURQUOISE_WATCH and TURQUOISE_INDEX in its environment." },
        http: {
          type: "object",
          additionalProperties: false,
          required: ["url"],
          description: "Handler: an HTTP request with the JSON as its body.",
          properties: {
            url: { type: "string", pattern: "^https?://", description: "Where to send it." },
            method: { enum: ["POST", "PUT"], default: "POST", description: "The method." },
            headers: { type: "object", additionalProperties: { type: "string" }, description: "Extra request headers." },
          },
        },
        timeout: duration("How long a handler may run before it is killed (args) or abandoned (http).", DEFAULT_WATCH_TIMEOUT),
      },
    },
    hook: {
      type: "object",
      additionalProperties: false,
      description: "One hook: send a signal to a service's live instances through its runtime, or run a command (argv).",
      oneOf: [{ required: ["signal"] }, { required: ["command"] }],
      properties: {
        signal: {
          type: "object",
          additionalProperties: false,
          required: ["service", "signal"],
          description: "Like `turquoise signal <service> <SIGNAL>`.",
          properties: {
            service: { type: "string", pattern: SERVICE_NAME_PATTERN, description: "The service whose live instances get the signal." },
            signal: { type: "string", pattern: "^SIG[A-Z0-9]+$", description: "The signal name: SIGHUP, SIGUSR1, ..." },
          },
        },
        command: { ...ARGV, description: "A command run from the spec file's directory, with TURQUOISE_SERVICE and TURQUOISE_RELEASE set." },
        timeout: duration("How long the hook may take.", DEFAULT_HOOK_TIMEOUT),
      },
    },
    smoke: {
      type: "object",
      additionalProperties: false,
      description: "One smoke check. Set exactly one of http or command.",
      oneOf: [{ required: ["http"] }, { required: ["command"] }],
      properties: {
        name: { type: "string", minLength: 1, description: "Name shown in deploy output. Default: the method and path, or the command." },
        http: {
          type: "object",
          additionalProperties: false,
          description: "An HTTP request sent to one new instance.",
          required: ["path"],
          properties: {
            path: { type: "string", pattern: URL_PATH_PATTERN, description: "Request path, starting with /." },
            method: {
              enum: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
              default: DEFAULT_SMOKE_METHOD,
              description: "HTTP method.",
            },
            expect_status: { type: "integer", minimum: 100, maximum: 599, default: DEFAULT_SMOKE_EXPECT_STATUS, description: "Status code the response must have." },
            expect_body: { type: "string", description: "Text the response body must contain." },
            headers: {
              type: "object",
              description: "Request headers.",
              additionalProperties: { type: "string" },
            },
          },
        },
        command: {
          ...ARGV,
          description: 'A command that must exit 0, as an argv array. {host} and {port} are replaced by the new instance\'s address: ["curl", "-fsS", "http://{host}:{port}/health"].',
        },
        timeout: duration("How long the check may take.", DEFAULT_SMOKE_TIMEOUT),
      },
    },
  },
} as const;
