// The spec `turquoise init` writes. Every key is present with its default and a comment, so the
// file doubles as the reference; a test keeps it valid.

import { TurquoiseError } from "../errors.js";
import { EXAMPLE_METRICS_LISTEN, SERVICE_NAME_PATTERN } from "./schema.js";

export interface StarterOptions {
  service?: string;
  cwd?: string;
  command?: string[];
}

export function starterSpec(opts: StarterOptions = {}): string {
  const service = opts.service ?? "web";
  const cwd = opts.cwd ?? "releases/{release}";
  const command = opts.command ?? ["node", "server.js"];
  if (!new RegExp(SERVICE_NAME_PATTERN).test(service)) {
    throw new TurquoiseError("USAGE", `invalid service name "${service}": use lowercase letters, digits and dashes, starting with a letter`);
  }
  if (command.length === 0) throw new TurquoiseError("USAGE", "the command must have at least one word");
  // JSON strings and arrays are valid YAML, and quoting them keeps any character safe.
  const q = (value: string) => JSON.stringify(value);
  return `# turquoise.yml: what Turquoise runs and how it deploys it with zero downtime.
# Durations are a number and a unit: 500ms, 10s, 5m, 1h.
# Relative paths are relative to this file's directory.

# Spec format version.
version: 1

# The agent (control plane) and its HTTP API, which the CLI talks to. Keep it on loopback.
agent:
  listen: "127.0.0.1:4700"

# The proxy (data plane) that sends each request to the live slot of its service.
# Use 0.0.0.0:<port> to serve other machines.
proxy:
  listen: "127.0.0.1:8080"
  # builtin: Turquoise's own proxy process. nginx: an nginx Turquoise configures, checks with
  # nginx -t and reloads (see docs/nginx.md); then:
  #   nginx: { binary: nginx, template: nginx.conf.tmpl, container: my-nginx }
  driver: builtin
  # builtin: worker processes on the one listening socket ("auto": one per core). A dead worker
  # is replaced while new connections wait; \`turquoise proxy upgrade\` replaces them in place.
  workers: 1
  # With more than one worker: adaptive accepts on one, and on more while they are saturated
  # and a core sits idle for another; all accepts on every worker, as nginx does.
  accept: adaptive
  # Every wait the proxy bounds; a route may set its own upstream_* and tunnel_idle.
  # timeouts:
  #   client_header: 10s       # slowloris: the whole request head within this, else 408
  #   client_idle: 60s         # an idle keep-alive connection is closed
  #   upstream_connect: 5s     # then the next instance, or 504
  #   upstream_response: 30s   # from request sent to response head, else 504
  #   upstream_idle: 60s       # between two body reads, else the connection closes
  #   tunnel_idle: 10m         # a WebSocket with no byte either way
  # Bounds that keep one slow or hostile service from taking the proxy from the others.
  # limits:
  #   max_connections: 8192            # client connections, all routes together
  #   max_upstream_connections: 512    # per instance; beyond it requests queue, then 503
  #   upstream_queue: 1s
  #   max_header_size: 16KiB           # 431 beyond
  #   max_body_size: 100MiB            # 413 beyond; a route may set its own
  # Peers whose X-Forwarded-For / X-Real-IP / Forwarded are kept (another proxy, a load balancer).
  # trusted_proxies: ["127.0.0.1"]
  # builtin: terminate TLS (1.2+) on a second listener; certificates are picked by SNI. A host
  # without one gets a handshake_failure alert (there is no default certificate).
  # tls:
  #   listen: "0.0.0.0:443"
  #   # From files, reloaded when they change (a broken file keeps the previous one serving):
  #   certificates:
  #     - hosts: [${service}.example.com]          # or "*.example.com"
  #       cert_file: certs/${service}.pem           # chain, leaf first
  #       key_file: certs/${service}.key            # no passphrase
  #   # Or over ACME (HTTP-01 on proxy.listen, which the CA must reach on port 80): every route
  #   # host no file serves, or acme.hosts. Setting it accepts the CA's terms of service.
  #   acme:
  #     directory_url: https://acme-v02.api.letsencrypt.org/directory
  #     email: ops@example.com
  #     # hosts: [${service}.example.com]
  #     # ca_file: pebble-ca.pem                   # a test CA for the directory's own HTTPS
  #   redirect_http: true                         # 308 to https for hosts with a certificate
  #   # hsts: "max-age=31536000"                  # Strict-Transport-Security over TLS

# The read side of Consul's HTTP API (optional), on an address of its own: Prometheus'
# consul_sd_configs, consul-template and other Consul clients read the catalog, health checks
# and user KV here, with the registry token as X-Consul-Token (see docs/registry.md).
# consul:
#   listen: "127.0.0.1:8500"
#   datacenter: dc1      # what /v1/agent/self reports; ?dc= must name it
#   max_blocking: 512    # blocking queries held at once; one more gets 429

# Where Turquoise records live slots, releases, locks and history.
# driver: sqlite keeps it in a file; memory forgets it when the agent stops; etcd keeps it in an
# etcd cluster that several agents share (docs/state.md).
state:
  driver: sqlite
  path: .turquoise/state.db
  # etcd:                              # for driver: etcd
  #   endpoints: ["http://etcd-1.example.internal:2379", "http://etcd-2.example.internal:2379", "http://etcd-3.example.internal:2379"]
  #   prefix: /turquoise/web/          # one per project sharing the cluster
  #   timeout: 5s                      # a state call fails with STATE_UNAVAILABLE after this
  #   leader_ttl: 3s                   # a dead leader agent is replaced this long after its last renewal
  #   username: turquoise              # when the cluster has auth enabled...
  #   password_env: ETCD_PASSWORD      # ...the agent reads the password from this variable
  #   tls: { ca: certs/ca.pem, cert: certs/client.pem, key: certs/client-key.pem }  # https:// endpoints

# Pid files, logs, the API token and the proxy's saved route table.
state_dir: .turquoise

# Consul-style watches (optional): when what a watch looks at changes, its handler runs with the
# JSON of it on stdin (args) or in a POST (http), with TURQUOISE_WATCH and TURQUOISE_INDEX set.
# type is service (a service's instances), checks (health checks, filtered by service and state),
# key (one KV key) or keyprefix (keys under prefix). The seed article's "critical → redeploy":
# watches:
#   - name: page-on-critical
#     type: checks
#     service: ${service}
#     state: critical
#     args: ["./page-oncall.sh"]
#     timeout: 10s
#   - type: key
#     key: config/${service}/banner
#     http: { url: "http://127.0.0.1:9000/hook", method: POST, headers: {} }

# Prometheus metrics of the agent and the proxy at http://<listen>/metrics (optional; see
# docs/metrics.md). token_file: a file with the bearer token scrapers must send; without it the
# endpoint is open to whoever reaches it, so keep it on loopback then.
# metrics:
#   listen: "${EXAMPLE_METRICS_LISTEN}"
#   token_file: metrics-token

services:
  # The service name: lowercase letters, digits and dashes.
  ${service}:
    # How instances run. process: child processes of the agent.
    runtime: process
    # Starts one instance. An argv array, never run through a shell
    # (write ["sh", "-c", "..."] if you need one). The instance must listen on $PORT.
    command: [${command.map(q).join(", ")}]
    # Working directory of an instance. {release} becomes the release being deployed,
    # so blue and green each run their own copy.
    cwd: ${q(cwd)}
    # Extra environment, on top of PORT and TURQUOISE_SERVICE/SLOT/RELEASE/API.
    env:
      NODE_ENV: production
    # Instances get none of the agent's own environment but PATH, HOME, LANG, LC_* and TZ.
    # Name here what they should get from it as well:
    # env_passthrough: [AWS_REGION]
    # runtime: docker runs containers instead, through the Docker Engine API:
    #   runtime: docker
    #   image: "web:{release}"        # present locally; LABEL turquoise.schema=1..2 declares its schema
    #   network: bridge               # publish on 127.0.0.1 (default), or host
    #   volumes: ["/srv/web:/data:ro"] # host paths mounted into each container
    # runtime: swarm runs each slot as one Swarm service through a manager (docs/swarm.md), with a
    # top-level swarm: { manager: /var/run/docker.sock, nodes: { <node address>: <its socket> } } block:
    #   runtime: swarm
    #   image: "web:{release}"        # on every node (docker save | docker load)
    #   placement: ["node.role==worker"]
    #   resources: { cpus: 0.5, memory: 256MiB }
    # Instances per slot.
    replicas: 1
    # Which requests the proxy sends here: a path prefix, a host, or both. With path / alone,
    # every request the proxy gets comes here (curl http://127.0.0.1:8080/). Add a host to
    # serve several services on one port by name; then only requests for that Host match:
    #   host: ${q(`${service}.example.com`)}     # curl -H 'Host: ${service}.example.com' http://127.0.0.1:8080/
    route:
      path: /
      # timeouts: { upstream_response: 30s }   # over proxy.timeouts
      # max_body_size: 10MiB                   # over proxy.limits.max_body_size
      # preview_host: ${q(`green.${service}.localhost`)}   # the new release before it takes traffic (deploy --hold)
    # Checks every instance; it joins traffic when passing, leaves it when critical.
    health:
      # GET this path: 2xx is passing, 429 warning, anything else critical. Or write tcp: true.
      http: /health
      # Time between checks, and how long one check may take.
      interval: 1s
      timeout: 1s
      # Consecutive successes before passing, and failures before critical.
      success_before_passing: 1
      failures_before_critical: 2
    # Run against the new slot before traffic flips to it; any failure aborts the deploy.
    # Each item is an http request or a command, for example
    #   - command: ["curl", "-fsS", "http://{host}:{port}/health"]
    # where {host} and {port} name the new instance. An http item may also set
    # expect_body (text the body must contain) and headers (a mapping of request headers).
    smoke:
      - name: health answers
        http:
          path: /health
          method: GET
          expect_status: 200
        timeout: 5s
    # How long new instances have to turn healthy.
    deploy_timeout: 30s
    # How long in-flight requests on the old slot have to finish after the flip.
    drain_timeout: 10s
    # How long an instance has to exit after SIGTERM before SIGKILL.
    stop_timeout: 10s
    # Keep the old slot running this long for an instant rollback; 0s stops it after the drain.
    keep_previous: 0s
    # After the flip the new release must prove itself in real traffic for this long, the old
    # slot still running: an instance exit, or over 1% of at least 20 requests failing, flips
    # traffic back at once and the deploy ends "reverted". 0s disables it.
    bake: 3s
    # Progressive delivery (optional): each deploy sends these shares of users to the new
    # release in turn, each step judged against the live release from the proxy's own counts
    # (error rate, p99); a failing step sends everyone back at once and ends the deploy "aborted".
    # canary:
    #   steps: [5, 25, 50, 100]
    #   step_interval: 30s
    #   max_error_rate: 1      # percentage points above the live release's
    #   max_p99_ratio: 3       # times the live release's p99
    #   min_requests: 20
    # Actions once traffic is on the new release (optional): a signal to a service's live
    # instances through its runtime (like "turquoise signal"), or a command.
    # hooks:
    #   after_flip:
    #     - signal: { service: nginx, signal: SIGHUP }
    #     - command: ["./notify.sh"]
    #       timeout: 10s
    # Deploys from CI (optional): POST /v1/hooks/<service>, signed as GitHub signs deliveries
    # with the secret in the agent's variable secret_env, or with a deploy token.
    # "turquoise webhook <service>" prints the URL and curl lines.
    # webhook:
    #   secret_env: BOOKS_WEBHOOK_SECRET
    #   release: "{tag}"          # or "{branch}-{sha7}", or "{release}" from the body
    #   branches: [main]
    # The database blue and green share (optional). With it, each release declares the schema
    # versions it runs on in <release dir>/turquoise.json, e.g. {"schema": {"min": 1, "max": 2}},
    # and deploys plan migrations: expand before the flip, contract after, or a turquoise path.
    # database:
    #   driver: postgres                  # or sqlite
    #   url: "\${DATABASE_URL}"            # from the agent's environment; never logged
    #   migrations: migrations            # 0001_name.up.sql / 0001_name.down.sql, or 0001_name.mjs
    #   env: DATABASE_URL                 # the variable that carries the URL into instances
    #   lock_timeout: 2s                  # PostgreSQL: a step waits this long for a lock, then retries
    #   retries: 5

# The agent's and the proxy's logs (.turquoise/agent.log, proxy.log, and \`turquoise up\` in the
# foreground): JSON lines with time, level, component, service, event and message, secrets
# redacted. $TURQUOISE_LOG_LEVEL and $TURQUOISE_LOG_FORMAT override these for one run.
log:
  # debug, info, warn or error: the least severe level written (debug adds every API request).
  level: info
  # json, pretty, or auto: pretty on a terminal, JSON lines to a file or a pipe.
  format: auto
`;
}

export const STARTER_SPEC = starterSpec();
