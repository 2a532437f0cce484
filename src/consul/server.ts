// The read side of Consul's HTTP API, on an address of its own (consul.listen): Prometheus'
// consul_sd, consul-template and Consul client libraries read Turquoise's catalog, health checks
// and user KV in Consul's shapes, with blocking queries. A write, or an endpoint not served here,
// gets a Consul-style refusal that says so; the agent's own records are never served.
import http from "node:http";
import os from "node:os";
import { TurquoiseError, errorMessage } from "../errors.js";
import type { ApiHost } from "../api/host.js";
import { catalogService, type CatalogInstance } from "../api/catalog.js";
import { checkUserKey, checkUserPrefix, userGet, userList } from "../api/kv.js";
import { authenticate } from "../auth/scopes.js";
import { bearerToken } from "../auth/token.js";
import { TURQUOISE_VERSION } from "../util/version.js";
import { BlockingSlots, blockingQuery } from "./blocking.js";
import { catalogEntry, catalogServices, checkEntry, hasTags, healthEntry, kvEntry, kvKeys, type ConsulPlace } from "./shapes.js";

export interface ConsulSettings {
  host: string;
  port: number;
  datacenter: string;
  /** Blocking queries held at once; one more gets 429. */
  maxBlocking: number;
}

/** A client has this long to send its request head; a blocked query is not affected (its request is complete). */
const HEADERS_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
/** Sockets beyond the blocking cap: room for plain reads and refusals while every slot is held. */
const SPARE_CONNECTIONS = 256;
/** What a refused blocking query is told; Prometheus retries after 15 s whatever it is told. */
const RETRY_AFTER_S = 5;
/** Query parameters that change what Consul answers, and that Turquoise does not implement: ignoring them would answer wrongly. */
const UNSUPPORTED_PARAMS = ["filter", "node-meta"];

type Answer =
  | { json: unknown; index?: number }
  /** KV ?raw: the value itself. */
  | { raw: string; index: number }
  /** A missing key: 404 with an empty body and the index, so a client can block on it (as in Consul). */
  | { missing: true; index: number };

interface ReadContext {
  host: ApiHost;
  place: ConsulPlace;
  /** The Consul API's own address, host:port. */
  address: string;
  query: URLSearchParams;
  params: string[];
  /** The registry's index, read before the answer: the answer is at least this new. */
  index: number;
}

interface Route {
  path: RegExp;
  /** For the 404 that lists what is served. */
  name: string;
  read(ctx: ReadContext): Promise<Answer>;
  blocking?: boolean;
  /** No token needed: Consul's status endpoints need none, and they tell only this address. */
  open?: boolean;
  /** Refuses a request before it blocks. */
  guard?(params: string[], query: URLSearchParams): void;
}

const ROUTES: Route[] = [
  {
    path: /^\/v1\/catalog\/services$/, name: "/v1/catalog/services", blocking: true,
    read: async ({ host, index }) => ({ json: catalogServices(await allInstances(host)), index }),
  },
  {
    path: /^\/v1\/catalog\/service\/([^/]+)$/, name: "/v1/catalog/service/<name>", blocking: true,
    read: async ({ host, place, params, query, index }) => ({ json: (await instancesOf(host, params[0]!, query)).map((i) => catalogEntry(i, place, index)), index }),
  },
  {
    path: /^\/v1\/catalog\/datacenters$/, name: "/v1/catalog/datacenters",
    read: async ({ place }) => ({ json: [place.datacenter] }),
  },
  {
    path: /^\/v1\/health\/service\/([^/]+)$/, name: "/v1/health/service/<name>", blocking: true,
    read: async ({ host, place, params, query, index }) => {
      const passingOnly = flag(query, "passing");
      const instances = (await instancesOf(host, params[0]!, query)).filter((i) => !passingOnly || i.health.status === "passing");
      return { json: instances.map((i) => healthEntry(i, place, checkType(host, i.service), index)), index };
    },
  },
  {
    path: /^\/v1\/health\/checks\/([^/]+)$/, name: "/v1/health/checks/<name>", blocking: true,
    read: async ({ host, place, params, query, index }) => ({ json: (await instancesOf(host, params[0]!, query)).map((i) => checkEntry(i, place, checkType(host, i.service), index)), index }),
  },
  { path: /^\/v1\/kv\/(.*)$/, name: "/v1/kv/<key>", blocking: true, read: readKv, guard: (params, query) => (isListing(query) ? checkUserPrefix(params[0]!) : checkUserKey(params[0]!)) },
  {
    path: /^\/v1\/agent\/self$/, name: "/v1/agent/self",
    // Prometheus' consul_sd reads Config.Datacenter when its config names none.
    read: async ({ place, address }) => ({
      json: {
        Config: { Datacenter: place.datacenter, NodeName: place.node, Server: true, Version: TURQUOISE_VERSION, Product: "turquoise" },
        Member: { Name: place.node, Addr: address.slice(0, address.lastIndexOf(":")).replace(/^\[(.*)\]$/, "$1"), Port: Number(address.slice(address.lastIndexOf(":") + 1)), Tags: { dc: place.datacenter }, Status: 1 },
        Meta: {},
      },
    }),
  },
  { path: /^\/v1\/status\/leader$/, name: "/v1/status/leader", open: true, read: async ({ address }) => ({ json: address }) },
  { path: /^\/v1\/status\/peers$/, name: "/v1/status/peers", open: true, read: async ({ address }) => ({ json: [address] }) },
];

const SERVED = ROUTES.map((r) => r.name).join(", ");

/** Consul's boolean flags are set by their presence (?passing), unless spelled false. */
function flag(query: URLSearchParams, name: string): boolean {
  const v = query.get(name);
  return v !== null && !/^(false|0)$/i.test(v);
}

function isListing(query: URLSearchParams): boolean {
  return flag(query, "recurse") || flag(query, "keys");
}

function checkType(host: ApiHost, service: string): "http" | "tcp" {
  return host.spec.services[service]?.health.http !== undefined ? "http" : "tcp";
}

async function allInstances(host: ApiHost): Promise<CatalogInstance[]> {
  return (await Promise.all(Object.keys(host.spec.services).map((name) => catalogService(host, name)))).flat();
}

/** A service's running instances with every ?tag= asked for; an unknown service has none (Consul answers [] too). */
async function instancesOf(host: ApiHost, name: string, query: URLSearchParams): Promise<CatalogInstance[]> {
  if (!Object.hasOwn(host.spec.services, name)) return [];
  const tags = query.getAll("tag");
  return (await catalogService(host, name)).filter((i) => hasTags(i, tags));
}

async function readKv({ host, params, query, index }: ReadContext): Promise<Answer> {
  const key = params[0]!;
  if (flag(query, "keys")) {
    const separator = query.get("separator") || undefined;
    const keys = kvKeys((await userList(host.store, key)).map((kv) => kv.key), key, separator);
    // Consul answers the root with an empty list, any other empty prefix with 404.
    return keys.length === 0 && key !== "" ? { missing: true, index } : { json: keys, index };
  }
  if (flag(query, "recurse")) {
    const items = await userList(host.store, key);
    return items.length === 0 ? { missing: true, index } : { json: items.map(kvEntry), index };
  }
  if (key === "") throw new TurquoiseError("USAGE", "Missing key name: ask for /v1/kv/<key>, or add ?recurse or ?keys to list a prefix");
  const kv = await userGet(host.store, key);
  if (!kv) return { missing: true, index };
  return flag(query, "raw") ? { raw: kv.value, index } : { json: [kvEntry(kv)], index };
}

/** Why a request may not read the registry (a status and a message), or undefined when it may. */
function refusal(req: http.IncomingMessage, query: URLSearchParams, host: ApiHost): { status: number; message: string } | undefined {
  if (query.has("token")) {
    return { status: 400, message: "?token= is not accepted: a token in a URL ends up in access logs and histories; send it in the X-Consul-Token header" };
  }
  const header = req.headers["x-consul-token"];
  const bearer = bearerToken(req.headers.authorization) || undefined;
  const given = (typeof header === "string" ? header.trim() : undefined) || bearer;
  if (!given) return { status: 403, message: "Permission denied: send the registry token (<state_dir>/registry-token; $TURQUOISE_TOKEN in instances) in the X-Consul-Token header" };
  const scope = authenticate(`Bearer ${given}`, { adminToken: host.token, registryToken: host.registryToken, deployTokens: host.deployTokens });
  if (!scope) return { status: 403, message: "ACL not found: the token is not one of this agent's; send the registry token (<state_dir>/registry-token) in the X-Consul-Token header" };
  if (scope.kind === "deploy") return { status: 403, message: "Permission denied: a deploy token deploys, rolls back and reads the status of its services only; read the registry with the registry token" };
  return undefined;
}

function consulHeaders(index: number | undefined): Record<string, string> {
  // Consul's Go client fails a query whose answer lacks X-Consul-LastContact; one agent is always its own leader.
  return { ...(index !== undefined ? { "x-consul-index": String(index) } : {}), "x-consul-knownleader": "true", "x-consul-lastcontact": "0" };
}

function sendText(res: http.ServerResponse, status: number, message: string, headers: Record<string, string> = {}): void {
  const body = Buffer.from(message);
  res.writeHead(status, { ...headers, "content-type": "text/plain; charset=utf-8", "content-length": body.length });
  res.end(body);
}

function sendAnswer(res: http.ServerResponse, answer: Answer, pretty: boolean): void {
  if ("missing" in answer) {
    res.writeHead(404, { ...consulHeaders(answer.index), "content-length": 0 });
    return void res.end();
  }
  if ("raw" in answer) {
    // text/plain and nosniff: a value must never be taken for a page by a browser.
    return sendText(res, 200, answer.raw, { ...consulHeaders(answer.index), "x-content-type-options": "nosniff" });
  }
  const body = Buffer.from(JSON.stringify(answer.json, null, pretty ? 4 : undefined));
  res.writeHead(200, { ...consulHeaders(answer.index), "content-type": "application/json", "content-length": body.length });
  res.end(body);
}

function sendError(res: http.ServerResponse, e: unknown): void {
  if (res.headersSent) return void res.end();
  if (!(e instanceof TurquoiseError)) return sendText(res, 500, `Internal error: ${errorMessage(e)}`);
  switch (e.code) {
    case "USAGE":
      return sendText(res, 400, e.message);
    case "FORBIDDEN":
      return sendText(res, 403, `Permission denied: ${e.message}`);
    case "NOT_FOUND":
      return sendText(res, 404, e.message);
    default:
      return sendText(res, 500, e.message);
  }
}

/** The request listener of the Consul API. `address` is where it listens, host:port. */
export function createConsulApi(host: ApiHost, settings: ConsulSettings, address: () => string): http.RequestListener {
  const slots = new BlockingSlots(settings.maxBlocking);
  const place: ConsulPlace = { node: os.hostname(), datacenter: settings.datacenter };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    let url: URL;
    try {
      url = new URL(req.url ?? "/", "http://consul");
    } catch {
      return sendText(res, 400, "Invalid request path");
    }
    const path = url.pathname;
    if (req.method !== "GET") {
      const hint = path.startsWith("/v1/kv/") ? "; write keys with `turquoise kv put` or PUT /v1/kv/<key> on the agent's own API" : "";
      return sendText(res, 405, `Turquoise serves the read side of Consul's HTTP API only: ${String(req.method).slice(0, 20)} ${path.slice(0, 200)} is not served${hint}`, { allow: "GET" });
    }
    const route = ROUTES.find((r) => r.path.test(path));
    if (!route) return sendText(res, 404, `Turquoise does not serve GET ${path.slice(0, 200)}: of Consul's HTTP API it serves ${SERVED} (docs/registry.md)`);
    let params: string[];
    try {
      params = route.path.exec(path)!.slice(1).map(decodeURIComponent);
    } catch {
      return sendText(res, 400, "Invalid request path: it has a malformed %-escape");
    }
    const query = url.searchParams;
    if (!route.open) {
      const refused = refusal(req, query, host);
      if (refused) return sendText(res, refused.status, refused.message);
    }
    const dc = query.get("dc");
    if (dc && dc !== settings.datacenter) return sendText(res, 500, `No path to datacenter "${dc.slice(0, 64)}": this agent serves datacenter "${settings.datacenter}" only`);
    const unsupported = UNSUPPORTED_PARAMS.find((p) => query.has(p));
    if (unsupported) return sendText(res, 400, `?${unsupported} is not supported by Turquoise's Consul API: it would change the answer, so the query is refused rather than answered unfiltered`);
    route.guard?.(params, query);

    const blocking = route.blocking ? blockingQuery(query) : undefined;
    if (blocking) {
      if (!slots.take()) {
        return sendText(res, 429, `Too many blocking queries: this agent holds at most ${slots.max} at once (consul.max_blocking); retry later`, { "retry-after": String(RETRY_AFTER_S) });
      }
      try {
        await host.registry.waitFor(blocking.index, blocking.waitMs, req);
      } finally {
        slots.give();
      }
      if (res.destroyed) return;
    }
    const index = host.registry.current;
    sendAnswer(res, await route.read({ host, place, address: address(), query, params, index }), flag(query, "pretty"));
  };

  return (req, res) => void handle(req, res).catch((e) => sendError(res, e));
}

export interface ConsulServer {
  /** http://host:port */
  readonly url: string;
  close(): Promise<void>;
}

/** The Consul API's socket, bound before the agent starts anything; serve() hands it the agent. */
export interface BoundConsulServer extends ConsulServer {
  serve(host: ApiHost): void;
}

/**
 * Binds settings.host:port, answering 503 until serve(): a taken port is a CONFLICT that names
 * consul.listen, raised before the agent has started a proxy or an instance that would outlive it.
 */
export async function bindConsulServer(settings: ConsulSettings, specFile: string): Promise<BoundConsulServer> {
  let bound = `${settings.host.includes(":") ? `[${settings.host}]` : settings.host}:${settings.port}`;
  let handler: http.RequestListener = (_req, res) => {
    res.writeHead(503, { "content-type": "text/plain; charset=utf-8", "retry-after": "1" });
    res.end("the agent is starting: try again in a moment\n");
  };
  const server = http.createServer({ headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS }, (req, res) => handler(req, res));
  // Every socket costs a file descriptor: hung clients beyond this are closed at accept.
  server.maxConnections = settings.maxBlocking + SPARE_CONNECTIONS;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e: NodeJS.ErrnoException) =>
      reject(e.code === "EADDRINUSE" ? new TurquoiseError("CONFLICT", `the Consul API cannot listen on ${bound}: address in use (set consul.listen in ${specFile})`) : e),
    );
    server.listen(settings.port, settings.host, () => resolve());
  });
  const addr = server.address() as { address: string; port: number };
  bound = `${addr.address.includes(":") ? `[${addr.address}]` : addr.address}:${addr.port}`;
  return {
    url: `http://${bound}`,
    serve(host) {
      handler = createConsulApi(host, settings, () => bound);
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
