// Reads turquoise.yml: YAML → JSON Schema → normalized Spec → rules. Every problem carries the
// line and column of the YAML node it is about, and all problems are reported at once, so one
// run of `turquoise validate` is enough to fix a file.

import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Document } from "yaml";
import { TurquoiseError, errorMessage } from "../errors.js";
import { DEFAULT_LOG_FORMAT, DEFAULT_LOG_LEVEL, type LogFormat, type LogLevel } from "../log/settings.js";
import type { ProxySettings, RouteTimeouts } from "../proxy/contract.js";
import { DEFAULT_PROXY_LIMITS, DEFAULT_PROXY_TIMEOUTS, tableSettings } from "../proxy/settings.js";
import { DURATION_PATTERN, parseDuration } from "../util/duration.js";
import { parseSize, SIZE_PATTERN } from "../util/size.js";
import { runRules, type PathSegment, type RuleContext, type SpecRule } from "./rules.js";
import * as S from "./schema.js";
import type { EtcdSpec, HealthSpec, LoadResult, ServiceSpec, SmokeSpec, Spec, SpecProblem, VolumeSpec, WatchSpec } from "./types.js";

// The YAML as the schema guarantees it, before defaults.
interface RawSmoke {
  name?: string;
  http?: { path: string; method?: string; expect_status?: number; expect_body?: string; headers?: Record<string, string> };
  command?: string[];
  timeout?: string;
}

interface RawService {
  runtime?: "process" | "docker" | "swarm";
  volumes?: string[];
  placement?: string[];
  resources?: { cpus?: number; memory?: string | number };
  command?: string[];
  cwd?: string;
  image?: string;
  network?: "bridge" | "host";
  env?: Record<string, string | number | boolean>;
  env_passthrough?: string[];
  replicas?: number;
  route: { host?: string; path?: string; timeouts?: RawRouteTimeouts; max_body_size?: string | number; preview_host?: string };
  canary?: { steps: number[]; step_interval?: string; max_error_rate?: number; max_p99_ratio?: number; min_requests?: number };
  health: { http?: string; tcp?: true; interval?: string; timeout?: string; success_before_passing?: number; failures_before_critical?: number };
  smoke?: RawSmoke[];
  deploy_timeout?: string;
  drain_timeout?: string;
  stop_timeout?: string;
  keep_previous?: string;
  bake?: string;
  database?: { driver: "postgres" | "sqlite"; url: string; migrations: string; env?: string; lock_timeout?: string; retries?: number };
  hooks?: { after_flip?: Array<{ signal?: { service: string; signal: string }; command?: string[]; timeout?: string }> };
  webhook?: { secret_env?: string; release?: string; branches?: string[] };
}

interface RawRouteTimeouts {
  upstream_connect?: string;
  upstream_response?: string;
  upstream_idle?: string;
  tunnel_idle?: string;
}

interface RawProxy {
  listen?: string;
  driver?: "builtin" | "nginx";
  workers?: number | "auto";
  accept?: "adaptive" | "all";
  nginx?: { binary?: string; template?: string; container?: string };
  timeouts?: RawRouteTimeouts & { client_header?: string; client_idle?: string };
  limits?: { max_connections?: number; max_upstream_connections?: number; upstream_queue?: string; max_header_size?: string | number; max_body_size?: string | number };
  trusted_proxies?: string[];
  tls?: {
    listen: string;
    certificates?: Array<{ hosts: string[]; cert_file: string; key_file: string }>;
    acme?: { directory_url?: string; email?: string; hosts?: string[]; ca_file?: string };
    redirect_http?: boolean;
    hsts?: string;
  };
}

interface RawSpec {
  version: 1;
  agent?: { listen?: string };
  proxy?: RawProxy;
  consul?: { listen: string; datacenter?: string; max_blocking?: number };
  state?: {
    driver?: "sqlite" | "memory" | "etcd";
    path?: string;
    etcd?: { endpoints: string[]; prefix?: string; timeout?: string; leader_ttl?: string; username?: string; password_env?: string; tls?: { ca: string; cert?: string; key?: string } };
  };
  state_dir?: string;
  services: Record<string, RawService>;
  watches?: Array<{ name?: string; type: WatchSpec["type"]; service?: string; state?: WatchSpec["state"]; key?: string; prefix?: string; args?: string[]; http?: { url: string; method?: "POST" | "PUT"; headers?: Record<string, string> }; timeout?: string }>;
  metrics?: { listen: string; token_file?: string };
  log?: { level?: LogLevel; format?: LogFormat };
  swarm?: { manager: string; nodes?: Record<string, string> };
}

/** Whether a problem points at a mapping key (unknown or misnamed keys) or at its value (wrong values). */
type Target = "key" | "value";

type Locate = (path: PathSegment[], target: Target) => { line?: number; column?: number };

export function formatPath(path: PathSegment[]): string {
  return path.reduce<string>((out, seg) => (typeof seg === "number" ? `${out}[${seg}]` : out ? `${out}.${seg}` : seg), "");
}

export function formatProblem(p: SpecProblem): string {
  const where = p.line === undefined ? p.file : `${p.file}:${p.line}:${p.column ?? 1}`;
  return `${where}: ${p.path ? `${p.path}: ` : ""}${p.message}`;
}

/** Which rules run after the schema: all of them, unless a command that only reads asks for fewer. */
export interface LoadOptions {
  rules?: readonly SpecRule[];
}

export function loadSpec(file: string, opts: LoadOptions = {}): LoadResult {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === "ENOENT";
    const message = missing ? `spec file ${file} not found: run \`turquoise init\` to write a starter spec` : `cannot read spec file ${file}: ${errorMessage(err)}`;
    return { errors: [{ file, path: "", message }], warnings: [] };
  }
  return loadSpecText(text, file, opts);
}

export function loadSpecOrThrow(file: string, opts: LoadOptions = {}): { spec: Spec; warnings: SpecProblem[] } {
  const result = loadSpec(file, opts);
  if (result.spec && result.errors.length === 0) return { spec: result.spec, warnings: result.warnings };
  const count = result.errors.length === 1 ? "1 error" : `${result.errors.length} errors`;
  const message = [`invalid spec ${file} (${count}):`, ...result.errors.map(formatProblem)].join("\n");
  throw new TurquoiseError("SPEC_INVALID", message, {
    details: result.errors.map(({ file, line, column, path, message }) => ({ file, line, column, path, message })),
  });
}

export function loadSpecText(text: string, file: string, opts: LoadOptions = {}): LoadResult {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const atOffset = (offset: number) => {
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };

  const syntax = (errs: typeof doc.errors): SpecProblem[] => errs.map((e) => ({ file, ...atOffset(e.pos[0]), path: "", message: firstLine(e.message) }));
  const yamlWarnings = syntax(doc.warnings);
  if (doc.errors.length > 0) return { errors: syntax(doc.errors), warnings: yamlWarnings };

  if (doc.contents === null) {
    return { errors: [{ file, line: 1, column: 1, path: "", message: "the spec is empty: run `turquoise init` to write a starter spec" }], warnings: yamlWarnings };
  }

  const locate = locator(doc, atOffset);
  const problemAt = (path: PathSegment[], message: string, target: Target): SpecProblem => ({ file, ...locate(path, target), path: formatPath(path), message });

  let data: unknown;
  try {
    data = doc.toJS();
  } catch (err) {
    // yaml refuses alias bombs here rather than while parsing.
    return { errors: [{ file, path: "", message: errorMessage(err) }], warnings: yamlWarnings };
  }
  const validate = validator();
  if (!validate(data)) {
    const errors = dedupe(explain(validate.errors ?? [], data).map((p) => problemAt(p.path, p.message, p.target)));
    return { errors: byPosition(errors), warnings: yamlWarnings };
  }

  const spec = normalize(data as RawSpec, file);
  const ctx: RuleContext = {
    at: (path, message) => problemAt(path, message, "key"),
  };
  const ruled = runRules(spec, ctx, opts.rules);
  const warnings = byPosition([...yamlWarnings, ...ruled.warnings]);
  if (ruled.errors.length > 0) return { errors: byPosition(ruled.errors), warnings };
  return { spec, errors: [], warnings };
}

let compiled: ValidateFunction | undefined;

// Compiled on first use: commands that never read a spec should not pay for it.
function validator(): ValidateFunction {
  compiled ??= new Ajv({ allErrors: true, verbose: true, allowUnionTypes: true }).compile(S.SPEC_JSON_SCHEMA);
  return compiled;
}

function firstLine(message: string): string {
  return message.split("\n")[0]!.trim();
}

function byPosition(problems: SpecProblem[]): SpecProblem[] {
  return [...problems].sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0));
}

function dedupe(problems: SpecProblem[]): SpecProblem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const key = formatProblem(p);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

// Walks the YAML tree along a path. When the path ends at a key the file does not have (a default,
// a missing required key), the problem goes to the nearest ancestor's key instead.
function locator(doc: Document, atOffset: (offset: number) => { line: number; column: number }): Locate {
  return (path, target) => {
    let node: unknown = doc.contents;
    let key: unknown = undefined;
    let found = true;
    for (const seg of path) {
      if (isAlias(node)) node = node.resolve(doc);
      const pair = isMap(node) ? node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg)) : undefined;
      const item = isSeq(node) && typeof seg === "number" ? node.items[seg] : undefined;
      if (pair) {
        key = pair.key;
        node = pair.value;
      } else if (item) {
        key = item;
        node = item;
      } else {
        found = false;
        break;
      }
    }
    const valueRange = found && target === "value" ? rangeOf(node) : undefined;
    // An empty value ("health:") has no text of its own; its key is where the eye goes.
    const range = valueRange && valueRange[1] > valueRange[0] ? valueRange : (rangeOf(key) ?? rangeOf(doc.contents));
    return range ? atOffset(range[0]) : {};
  };
}

function rangeOf(node: unknown): readonly [number, number, number] | undefined {
  const range = (node as { range?: [number, number, number] | null } | null | undefined)?.range;
  return range ?? undefined;
}

// ajv speaks JSON Pointer and schema keywords; people read dotted paths and plain sentences.

interface Explained {
  path: PathSegment[];
  target: Target;
  message: string;
}

const PATTERN_HINTS: Record<string, (value: string) => string> = {
  [DURATION_PATTERN]: (v) => `invalid duration "${v}": write a number and a unit, like "500ms", "10s" or "5m"`,
  [SIZE_PATTERN]: (v) => `invalid size "${v}": write a number of bytes, or a number and a unit, like "16KiB" or "10MB"`,
  [S.SERVICE_NAME_PATTERN]: (v) => `invalid service name "${v}": use lowercase letters, digits and dashes, starting with a letter, at most 63 characters`,
  [S.ENV_NAME_PATTERN]: (v) => `invalid environment variable name "${v}": use letters, digits and underscores, not starting with a digit`,
  [S.LISTEN_PATTERN]: (v) => `invalid address "${v}": write host:port with a port from 1 to 65535, like "127.0.0.1:4700"`,
  [S.HOST_PATTERN]: (v) => `invalid host "${v}": write a host name like books.localhost, without scheme, port or path`,
  [S.URL_PATH_PATTERN]: (v) => `must start with "/", got "${v}"`,
  [S.DATACENTER_PATTERN]: (v) => `invalid datacenter "${v}": use letters, digits, dashes and underscores, at most 64 characters`,
  [S.PROXY_WORKERS_AUTO_PATTERN]: (v) => `must be a number of workers or "auto" (one per core), got "${v}"`,
  [S.ETCD_ENDPOINT_PATTERN]: (v) => `invalid etcd endpoint "${v}": write a member's client URL, like "http://etcd-1.example.internal:2379", without a path or credentials`,
  [S.ETCD_PREFIX_PATTERN]: (v) => `invalid etcd prefix "${v}": write slash-separated names that start and end with "/", like "/turquoise/books/"`,
};

const TYPE_NAMES: Record<string, string> = { object: "mapping", array: "list" };

function expectedType(type: string | string[]): string {
  const types = Array.isArray(type) ? type : [type];
  if (types.length === 1 && types[0] === "integer") return "a number of type integer";
  const names = types.map((t) => TYPE_NAMES[t] ?? t);
  return names.length === 1 ? `a ${names[0]}` : `a ${names.slice(0, -1).join(", ")} or ${names.at(-1)}`;
}

function kindOf(value: unknown): string {
  if (value === null) return "an empty value";
  if (Array.isArray(value)) return "list";
  if (typeof value === "object") return "mapping";
  // "got number" alone would puzzle someone who wrote 1.5 where an integer belongs.
  if (typeof value === "number" && !Number.isInteger(value)) return `number ${value}`;
  return typeof value;
}

function pointerToPath(pointer: string, data: unknown): PathSegment[] {
  const path: PathSegment[] = [];
  let current = data;
  for (const raw of pointer.split("/").slice(1)) {
    const seg = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    const step: PathSegment = Array.isArray(current) ? Number(seg) : seg;
    path.push(step);
    current = (current as Record<PathSegment, unknown> | undefined)?.[step];
  }
  return path;
}

function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(word.length / 3)) + 1;
  for (const candidate of candidates) {
    const d = editDistance(word.toLowerCase(), candidate);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length]!;
}

function explain(errors: ErrorObject[], data: unknown): Explained[] {
  // Once a value has the wrong type, the other complaints about it (missing keys, oneOf) are noise.
  const wrongType = new Set(errors.filter((e) => e.keyword === "type").map((e) => e.instancePath));
  // The branches of oneOf/anyOf each fail on their own; the oneOf error alone says what to do.
  const alternatives = errors.filter((e) => e.keyword === "oneOf" || e.keyword === "anyOf").map((e) => `${e.schemaPath}/`);
  return errors
    .filter((e) => e.keyword === "type" || !wrongType.has(e.instancePath))
    // if/then/else reports its branch's own errors (a missing key) and then "must match then": the first says it all.
    .filter((e) => e.keyword !== "if")
    .filter((e) => !alternatives.some((prefix) => e.schemaPath.startsWith(prefix)))
    .flatMap((e) => {
      const explained = explainOne(e, pointerToPath(e.instancePath, data));
      return explained ? [explained] : [];
    });
}

function explainOne(e: ErrorObject, path: PathSegment[]): Explained | undefined {
  const value = (path: PathSegment[], message: string): Explained => ({ path, target: "value", message });
  const key = (path: PathSegment[], message: string): Explained => ({ path, target: "key", message });
  const params = e.params as Record<string, unknown>;
  const parent = (e.parentSchema ?? {}) as Record<string, unknown>;

  switch (e.keyword) {
    case "additionalProperties": {
      const name = String(params.additionalProperty);
      const known = Object.keys((parent.properties ?? {}) as object);
      const suggestion = closest(name, known);
      const where = path.length > 0 ? ` in ${formatPath(path)}` : "";
      return key([...path, name], `unknown key "${name}"${where}${suggestion ? `; did you mean "${suggestion}"?` : ""}`);
    }
    case "required":
      return key(path, `missing required key "${String(params.missingProperty)}"`);
    case "dependencies":
      return key([...path, String(params.property)], `${String(params.property)} needs ${String(params.missingProperty)} beside it`);
    case "propertyNames":
      return undefined;
    case "type": {
      if (path.at(-1) === "command" && typeof e.data === "string") {
        return value(path, `must be an argv array like ["node", "server.js"], not a string: commands run without a shell (write ["sh", "-c", "..."] if you need one)`);
      }
      if (parent.pattern === DURATION_PATTERN) return value(path, `must be a duration with a unit, like "10s" or "500ms", got ${kindOf(e.data)}`);
      return value(path, `must be ${expectedType(params.type as string | string[])}, got ${kindOf(e.data)}`);
    }
    case "pattern": {
      const hint = PATTERN_HINTS[String(params.pattern)];
      // A propertyNames failure is about the key itself, not its value.
      if (e.propertyName !== undefined) return key([...path, e.propertyName], hint ? hint(e.propertyName) : `invalid name "${e.propertyName}"`);
      return value(path, hint ? hint(String(e.data)) : `must match ${String(params.pattern)}`);
    }
    case "enum":
      return value(path, `must be one of ${(params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(", ")}, got ${JSON.stringify(e.data)}`);
    case "const":
      return value(path, `must be ${JSON.stringify(params.allowedValue)}, got ${JSON.stringify(e.data)}`);
    case "minimum":
      return value(path, `must be at least ${String(params.limit)}, got ${String(e.data)}`);
    case "maximum":
      return value(path, `must be at most ${String(params.limit)}, got ${String(e.data)}`);
    case "minItems":
    case "minLength":
    case "minProperties":
      return value(path, params.limit === 1 ? "must not be empty" : `must have at least ${String(params.limit)} entries`);
    case "uniqueItems":
      return value(path, `lists ${JSON.stringify((e.data as unknown[])[params.i as number])} twice`);
    case "oneOf":
    case "anyOf": {
      const keys = (e.schema as Array<{ required: string[] }>).map((branch) => `"${branch.required[0]}"`).join(" or ");
      if (e.keyword === "oneOf" && Array.isArray(params.passingSchemas)) return key(path, `set only one of ${keys}, not both`);
      return key(path, `set ${e.keyword === "oneOf" ? "exactly" : "at least"} one of ${keys}`);
    }
    default:
      return value(path, e.message ?? "is invalid");
  }
}

// Defaults, durations in ms, absolute paths. The schema has already vouched for every value here.
function normalize(raw: RawSpec, file: string): Spec {
  const absFile = resolve(file);
  const dir = dirname(absFile);
  const stateDir = resolve(dir, raw.state_dir ?? S.DEFAULT_STATE_DIR);
  const services: Record<string, ServiceSpec> = {};
  for (const [name, svc] of Object.entries(raw.services)) services[name] = normalizeService(name, svc, dir);
  return {
    file: absFile,
    dir,
    agent: parseListen(raw.agent?.listen ?? S.DEFAULT_AGENT_LISTEN),
    proxy: {
      ...parseListen(raw.proxy?.listen ?? S.DEFAULT_PROXY_LISTEN),
      driver: raw.proxy?.driver ?? "builtin",
      workers: raw.proxy?.workers ?? S.DEFAULT_PROXY_WORKERS,
      accept: raw.proxy?.accept ?? "adaptive",
      nginx: {
        binary: raw.proxy?.nginx?.binary ?? "nginx",
        ...(raw.proxy?.nginx?.template !== undefined ? { template: resolve(dir, raw.proxy.nginx.template) } : {}),
        ...(raw.proxy?.nginx?.container !== undefined ? { container: raw.proxy.nginx.container } : {}),
      },
      settings: normalizeProxySettings(raw.proxy, dir),
      ...(raw.proxy?.tls ? { tls: parseListen(raw.proxy.tls.listen) } : {}),
    },
    ...(raw.consul
      ? { consul: { ...parseListen(raw.consul.listen), datacenter: raw.consul.datacenter ?? S.DEFAULT_CONSUL_DATACENTER, maxBlocking: raw.consul.max_blocking ?? S.DEFAULT_CONSUL_MAX_BLOCKING } }
      : {}),
    state: {
      driver: raw.state?.driver ?? S.DEFAULT_STATE_DRIVER,
      path: raw.state?.path === undefined ? resolve(stateDir, S.DEFAULT_STATE_FILE) : resolve(dir, raw.state.path),
      ...(raw.state?.etcd ? { etcd: normalizeEtcd(raw.state.etcd, dir) } : {}),
    },
    stateDir,
    services,
    watches: (raw.watches ?? []).map((w) => ({
      name: w.name ?? `${w.type} ${w.service ?? w.key ?? w.prefix ?? ""}`.trim(),
      type: w.type,
      ...(w.service !== undefined ? { service: w.service } : {}),
      ...(w.state !== undefined ? { state: w.state } : {}),
      ...(w.key !== undefined ? { key: w.key } : {}),
      ...(w.prefix !== undefined ? { prefix: w.prefix } : {}),
      handler: w.args ? { args: [...w.args] } : { http: { url: w.http!.url, method: w.http!.method ?? "POST", headers: { ...w.http!.headers } } },
      timeoutMs: ms(w.timeout, S.DEFAULT_WATCH_TIMEOUT),
    })),
    ...(raw.metrics
      ? { metrics: { ...parseListen(raw.metrics.listen), ...(raw.metrics.token_file !== undefined ? { tokenFile: resolve(dir, raw.metrics.token_file) } : {}) } }
      : {}),
    log: { level: raw.log?.level ?? DEFAULT_LOG_LEVEL, format: raw.log?.format ?? DEFAULT_LOG_FORMAT },
    ...(raw.swarm !== undefined ? { swarm: { manager: socketPath(raw.swarm.manager, dir), nodes: Object.fromEntries(Object.entries(raw.swarm.nodes ?? {}).map(([addr, sock]) => [addr, socketPath(sock, dir)])) } } : {}),
  };
}

function normalizeEtcd(raw: NonNullable<NonNullable<RawSpec["state"]>["etcd"]>, dir: string): EtcdSpec {
  const tls = raw.tls;
  return {
    endpoints: [...raw.endpoints],
    prefix: raw.prefix ?? S.DEFAULT_ETCD_PREFIX,
    timeoutMs: ms(raw.timeout, S.DEFAULT_ETCD_TIMEOUT),
    leaderTtlMs: ms(raw.leader_ttl, S.DEFAULT_LEADER_TTL),
    ...(raw.username !== undefined ? { username: raw.username } : {}),
    ...(raw.password_env !== undefined ? { passwordEnv: raw.password_env } : {}),
    ...(tls ? { tls: { ca: resolve(dir, tls.ca), ...(tls.cert ? { cert: resolve(dir, tls.cert) } : {}), ...(tls.key ? { key: resolve(dir, tls.key) } : {}) } } : {}),
  };
}

// The schema has checked the form and the port range; this only splits it.
function parseListen(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(":");
  return { host: address.slice(0, colon).replace(/^\[(.*)\]$/, "$1"), port: Number(address.slice(colon + 1)) };
}

function normalizeProxySettings(raw: RawProxy | undefined, dir: string): ProxySettings {
  const t = raw?.timeouts;
  const l = raw?.limits;
  const tls = raw?.tls;
  return tableSettings({
    timeouts: {
      ...DEFAULT_PROXY_TIMEOUTS,
      ...(t?.client_header !== undefined ? { clientHeaderMs: parseDuration(t.client_header) } : {}),
      ...(t?.client_idle !== undefined ? { clientIdleMs: parseDuration(t.client_idle) } : {}),
      ...normalizeRouteTimeouts(t),
    },
    limits: {
      ...DEFAULT_PROXY_LIMITS,
      ...(l?.max_connections !== undefined ? { maxConnections: l.max_connections } : {}),
      ...(l?.max_upstream_connections !== undefined ? { maxUpstreamConnections: l.max_upstream_connections } : {}),
      ...(l?.upstream_queue !== undefined ? { upstreamQueueMs: parseDuration(l.upstream_queue) } : {}),
      ...(l?.max_header_size !== undefined ? { maxHeaderBytes: parseSize(l.max_header_size) } : {}),
      ...(l?.max_body_size !== undefined ? { maxBodyBytes: parseSize(l.max_body_size) } : {}),
    },
    trustedProxies: [...(raw?.trusted_proxies ?? [])],
    ...(tls
      ? {
          tls: {
            certificates: (tls.certificates ?? []).map((c) => ({ hosts: c.hosts.map((h) => h.toLowerCase()), certFile: resolve(dir, c.cert_file), keyFile: resolve(dir, c.key_file) })),
            ...(tls.acme
              ? {
                  acme: {
                    directoryUrl: tls.acme.directory_url ?? S.DEFAULT_ACME_DIRECTORY,
                    ...(tls.acme.email !== undefined ? { email: tls.acme.email } : {}),
                    ...(tls.acme.hosts !== undefined ? { hosts: tls.acme.hosts.map((h) => h.toLowerCase()) } : {}),
                    ...(tls.acme.ca_file !== undefined ? { caFile: resolve(dir, tls.acme.ca_file) } : {}),
                  },
                }
              : {}),
            redirectHttp: tls.redirect_http ?? S.DEFAULT_REDIRECT_HTTP,
            ...(tls.hsts !== undefined ? { hsts: tls.hsts } : {}),
          },
        }
      : {}),
  });
}

/** Only the waits that are set: a route's unset ones follow the proxy's. */
function normalizeRouteTimeouts(t: RawRouteTimeouts | undefined): Partial<RouteTimeouts> {
  return {
    ...(t?.upstream_connect !== undefined ? { upstreamConnectMs: parseDuration(t.upstream_connect) } : {}),
    ...(t?.upstream_response !== undefined ? { upstreamResponseMs: parseDuration(t.upstream_response) } : {}),
    ...(t?.upstream_idle !== undefined ? { upstreamIdleMs: parseDuration(t.upstream_idle) } : {}),
    ...(t?.tunnel_idle !== undefined ? { tunnelIdleMs: parseDuration(t.tunnel_idle) } : {}),
  };
}

function ms(value: string | undefined, fallback: string): number {
  return parseDuration(value ?? fallback);
}

/** "source:target" or "source:target:ro"; a relative source is the spec file's directory's (the schema checked the shape). */
export function parseVolume(text: string, dir: string): VolumeSpec {
  const [source, target, mode] = text.split(":") as [string, string, string | undefined];
  return { source: resolve(dir, source), target, readOnly: mode === "ro" };
}

/** "unix:///run/docker.sock" or a path; relative paths are the spec file's directory's. */
function socketPath(text: string, dir: string): string {
  return resolve(dir, text.startsWith("unix://") ? text.slice("unix://".length) : text);
}

function normalizeService(name: string, raw: RawService, dir: string): ServiceSpec {
  const h = raw.health;
  const health: HealthSpec = {
    ...(h.http !== undefined ? { http: h.http } : { tcp: true }),
    intervalMs: ms(h.interval, S.DEFAULT_HEALTH_INTERVAL),
    timeoutMs: ms(h.timeout, S.DEFAULT_HEALTH_TIMEOUT),
    successBeforePassing: h.success_before_passing ?? S.DEFAULT_SUCCESS_BEFORE_PASSING,
    failuresBeforeCritical: h.failures_before_critical ?? S.DEFAULT_FAILURES_BEFORE_CRITICAL,
  };
  return {
    name,
    runtime: raw.runtime ?? S.DEFAULT_RUNTIME,
    command: [...(raw.command ?? [])],
    cwd: resolve(dir, raw.cwd ?? "."),
    ...(raw.image !== undefined ? { image: raw.image } : {}),
    ...(raw.network !== undefined ? { network: raw.network } : {}),
    ...(raw.volumes !== undefined ? { volumes: raw.volumes.map((v) => parseVolume(v, dir)) } : {}),
    ...(raw.placement !== undefined ? { placement: [...raw.placement] } : {}),
    ...(raw.resources !== undefined
      ? { resources: { ...(raw.resources.cpus !== undefined ? { cpus: raw.resources.cpus } : {}), ...(raw.resources.memory !== undefined ? { memoryBytes: parseSize(raw.resources.memory) } : {}) } }
      : {}),
    env: Object.fromEntries(Object.entries(raw.env ?? {}).map(([k, v]) => [k, String(v)])),
    envPassthrough: [...(raw.env_passthrough ?? [])],
    replicas: raw.replicas ?? S.DEFAULT_REPLICAS,
    route: {
      ...(raw.route.host !== undefined ? { host: raw.route.host.toLowerCase() } : {}),
      pathPrefix: raw.route.path ?? S.DEFAULT_ROUTE_PATH,
      ...(raw.route.timeouts !== undefined ? { timeouts: normalizeRouteTimeouts(raw.route.timeouts) } : {}),
      ...(raw.route.max_body_size !== undefined ? { maxBodyBytes: parseSize(raw.route.max_body_size) } : {}),
      ...(raw.route.preview_host !== undefined ? { previewHost: raw.route.preview_host.toLowerCase() } : {}),
    },
    health,
    smoke: (raw.smoke ?? []).map(normalizeSmoke),
    deployTimeoutMs: ms(raw.deploy_timeout, S.DEFAULT_DEPLOY_TIMEOUT),
    drainTimeoutMs: ms(raw.drain_timeout, S.DEFAULT_DRAIN_TIMEOUT),
    stopTimeoutMs: ms(raw.stop_timeout, S.DEFAULT_STOP_TIMEOUT),
    keepPreviousMs: ms(raw.keep_previous, S.DEFAULT_KEEP_PREVIOUS),
    bakeMs: ms(raw.bake, S.DEFAULT_BAKE),
    ...(raw.canary
      ? {
          canary: {
            steps: raw.canary.steps.filter((p) => p < 100),
            stepIntervalMs: ms(raw.canary.step_interval, S.DEFAULT_CANARY_STEP_INTERVAL),
            maxErrorRate: (raw.canary.max_error_rate ?? S.DEFAULT_CANARY_MAX_ERROR_RATE) / 100,
            maxP99Ratio: raw.canary.max_p99_ratio ?? S.DEFAULT_CANARY_MAX_P99_RATIO,
            minRequests: raw.canary.min_requests ?? S.DEFAULT_CANARY_MIN_REQUESTS,
          },
        }
      : {}),
    hooks: {
      afterFlip: (raw.hooks?.after_flip ?? []).map((h) => {
        const timeoutMs = ms(h.timeout, S.DEFAULT_HOOK_TIMEOUT);
        return h.signal ? { signal: { service: h.signal.service, signal: h.signal.signal as NodeJS.Signals }, timeoutMs } : { command: [...h.command!], timeoutMs };
      }),
    },
    ...(raw.webhook
      ? {
          webhook: {
            ...(raw.webhook.secret_env ? { secretEnv: raw.webhook.secret_env } : {}),
            ...(raw.webhook.release ? { release: raw.webhook.release } : {}),
            ...(raw.webhook.branches ? { branches: [...raw.webhook.branches] } : {}),
          },
        }
      : {}),
    ...(raw.database
      ? {
          database: {
            driver: raw.database.driver,
            url: raw.database.url,
            migrationsDir: resolve(dir, raw.database.migrations),
            envName: raw.database.env ?? S.DEFAULT_DATABASE_ENV,
            lockTimeoutMs: ms(raw.database.lock_timeout, S.DEFAULT_MIGRATION_LOCK_TIMEOUT),
            retries: raw.database.retries ?? S.DEFAULT_MIGRATION_RETRIES,
          },
        }
      : {}),
  };
}

function normalizeSmoke(raw: RawSmoke): SmokeSpec {
  const timeoutMs = ms(raw.timeout, S.DEFAULT_SMOKE_TIMEOUT);
  if (raw.http) {
    const method = raw.http.method ?? S.DEFAULT_SMOKE_METHOD;
    return {
      name: raw.name ?? `${method} ${raw.http.path}`,
      http: {
        path: raw.http.path,
        method,
        expectStatus: raw.http.expect_status ?? S.DEFAULT_SMOKE_EXPECT_STATUS,
        ...(raw.http.expect_body !== undefined ? { expectBody: raw.http.expect_body } : {}),
        headers: { ...raw.http.headers },
      },
      timeoutMs,
    };
  }
  const command = [...raw.command!];
  return { name: raw.name ?? command.join(" "), command, timeoutMs };
}
