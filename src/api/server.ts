// The agent's HTTP API. Loopback only by default; every call but /v1/health needs the token.
// Deploys and rollbacks stream their progress as NDJSON, one event a line, ending with a result.
import type http from "node:http";
import { constants as osConstants } from "node:os";
import { TurquoiseError, errorMessage, type ErrorCode } from "../errors.js";
import type { Agent } from "../agent.js";
import { SLOTS } from "../runtime/contract.js";
import { keys } from "../deploy/records.js";
import { parseSchemaRange } from "../plan/range.js";
import { parseDuration } from "../util/duration.js";
import { DEFAULT_BLOCKING_WAIT_MS } from "./registry.js";
import { catalog, catalogService, checks } from "./catalog.js";
import type { SchemaRange } from "../plan/planner.js";
import { tokenMatches } from "../auth/token.js";

const MAX_BODY_BYTES = 1024 * 1024;

const HTTP_STATUS: Partial<Record<ErrorCode, number>> = {
  USAGE: 400, SPEC_INVALID: 400, NOT_FOUND: 404, LOCKED: 409, CONFLICT: 409, UNAUTHORIZED: 401, DEPLOY_FAILED: 422,
  PLAN_REFUSED: 422, MIGRATION_FAILED: 422, RUNTIME_UNAVAILABLE: 503,
};

type Handler = (ctx: { agent: Agent; req: http.IncomingMessage; res: http.ServerResponse; params: string[]; query: URLSearchParams }) => Promise<unknown>;

/** read: the registry token may call it too (instances get that one); blocking: ?index=&wait= applies. */
interface RouteOptions {
  read?: boolean;
  blocking?: boolean;
}

export function createApi(agent: Agent): http.RequestListener {
  const routes: Array<[string, RegExp, Handler, RouteOptions?]> = [
    ["GET", /^\/v1\/catalog\/services$/, async ({ agent }) => catalog(agent), { read: true, blocking: true }],
    ["GET", /^\/v1\/catalog\/service\/([^/]+)$/, async ({ agent, params }) => catalogService(agent, params[0]!), { read: true, blocking: true }],
    ["GET", /^\/v1\/health\/checks$/, async ({ agent, query }) => checks(agent, query.get("service") ?? undefined, query.get("state") ?? undefined), { read: true, blocking: true }],
    ["GET", /^\/v1\/events\/stream$/, async ({ agent, req, res }) => streamEvents(agent, req, res), { read: true }],
    ["GET", /^\/v1\/status$/, async ({ agent }) => status(agent)],
    ["POST", /^\/v1\/services\/([^/]+)\/deploy$/, deployHandler("deploy")],
    ["POST", /^\/v1\/services\/([^/]+)\/rollback$/, deployHandler("rollback")],
    ["POST", /^\/v1\/services\/([^/]+)\/plan$/, async ({ agent, req, params }) => {
      const body = parseJson(await readBody(req));
      const kind = body.kind === "rollback" ? "rollback" : "deploy";
      const opts = releaseOptions(body, kind === "deploy");
      const plan = await agent.orchestrator.plan(kind, { service: params[0]!, release: opts.release ?? "", ...opts });
      return { kind, via: plan.via, live: plan.live?.release ?? null, actions: plan.actions, lines: plan.lines };
    }],
    ["POST", /^\/v1\/services\/([^/]+)\/migrate$/, async ({ agent, req, params }) => {
      const body = parseJson(await readBody(req));
      return agent.migrations(params[0]!, body);
    }],
    ["POST", /^\/v1\/services\/([^/]+)\/signal$/, async ({ agent, req, params }) => {
      const body = parseJson(await readBody(req));
      const signal = typeof body.signal === "string" ? (body.signal.startsWith("SIG") ? body.signal : `SIG${body.signal}`).toUpperCase() : "";
      if (!(signal in osConstants.signals)) throw new TurquoiseError("USAGE", `unknown signal ${JSON.stringify(body.signal)}: use a name such as SIGHUP or HUP`);
      const sent = await agent.orchestrator.signalService(params[0]!, signal as NodeJS.Signals, body.all === true);
      return { signal, sent };
    }],
    ["GET", /^\/v1\/services\/([^/]+)\/history$/, async ({ agent, params, query }) => {
      agent.orchestrator.service(params[0]!);
      return { history: await agent.store.listHistory(params[0]!, intParam(query, "limit", 20, 1, 1_000)) };
    }],
    ["GET", /^\/v1\/services\/([^/]+)\/logs$/, async ({ agent, params, query }) => {
      agent.orchestrator.service(params[0]!);
      const tailLines = intParam(query, "tail", 50, 1, 10_000);
      const instances = agent.fleet.list(params[0]!).filter((i) => !query.get("instance") || i.id === query.get("instance"));
      return { logs: await Promise.all(instances.map(async (i) => ({ instance: i.id, slot: i.slot, release: i.release, text: await agent.fleet.logs(i, tailLines) }))) };
    }],
    ["GET", /^\/v1\/kv$/, async ({ agent, query }) => ({ items: await agent.store.list(query.get("prefix") ?? "") }), { read: true, blocking: true }],
    ["GET", /^\/v1\/kv\/(.+)$/, async ({ agent, params }) => {
      const kv = await agent.store.get(params[0]!);
      if (!kv) throw new TurquoiseError("NOT_FOUND", `no key "${params[0]}"`);
      return kv;
    }, { read: true, blocking: true }],
    ["PUT", /^\/v1\/kv\/(.+)$/, async ({ agent, req, params, query }) => {
      const value = await readBody(req);
      const r = await agent.store.put(params[0]!, value, casOption(query));
      if (!r.ok) throw new TurquoiseError("CONFLICT", `compare-and-set failed on "${params[0]}": its revision is ${r.current?.modRevision ?? "none (absent)"}`);
      return r;
    }],
    ["DELETE", /^\/v1\/kv\/(.+)$/, async ({ agent, params, query }) => {
      const r = await agent.store.delete(params[0]!, casOption(query));
      if (!r.ok) throw new TurquoiseError("CONFLICT", `compare-and-set failed on "${params[0]}"`);
      return r;
    }],
    ["GET", /^\/v1\/events$/, async ({ agent, query }) => ({
      events: await agent.store.listEvents({ afterId: intParam(query, "after", 0, 0, Number.MAX_SAFE_INTEGER), limit: intParam(query, "limit", 100, 1, 10_000), ...(query.get("service") ? { service: query.get("service")! } : {}) }),
    }), { read: true, blocking: true }],
    ["POST", /^\/v1\/shutdown$/, async ({ agent, req, res }) => {
      const body = parseJson(await readBody(req));
      res.on("finish", () => setImmediate(() => void agent.close({ everything: body.everything === true })));
      return { ok: true, everything: body.everything === true };
    }],
  ];

  return (req, res) => {
    let url: URL;
    try {
      url = new URL(req.url ?? "/", "http://agent");
    } catch {
      return send(res, 400, { error: { code: "USAGE", message: "the request path is not a valid URL" } });
    }
    if (req.method === "GET" && url.pathname === "/v1/health") return send(res, 200, { ok: true, pid: process.pid, uptimeMs: Date.now() - agent.startedAt });
    const admin = tokenMatches(agent.token, req.headers.authorization);
    const reader = admin || tokenMatches(agent.registryToken, req.headers.authorization);
    if (!reader) {
      return send(res, 401, { error: { code: "UNAUTHORIZED", message: "missing or wrong API token: send Authorization: Bearer <token from the state dir's token file>" } });
    }
    for (const [method, re, handler, opts = {}] of routes) {
      const m = re.exec(url.pathname);
      if (!m) continue;
      if (method !== req.method) continue;
      if (!admin && !opts.read) return send(res, 401, { error: { code: "UNAUTHORIZED", message: "the registry token only reads the catalog, health, KV and events; this call needs the API token" } });
      let params: string[];
      try {
        params = m.slice(1).map(decodeURIComponent);
      } catch {
        return send(res, 400, { error: { code: "USAGE", message: "the request path has a malformed %-escape" } });
      }
      blockUntilChanged(agent, url.searchParams, opts.blocking === true, req)
        .then(() => handler({ agent, req, res, params, query: url.searchParams }))
        .then((body) => {
          if (res.headersSent) return;
          if (opts.blocking) res.setHeader("x-turquoise-index", String(agent.registry.current));
          send(res, 200, body);
        })
        .catch((e) => { if (!res.headersSent) sendError(res, e); else res.end(); });
      return;
    }
    send(res, 404, { error: { code: "NOT_FOUND", message: `no API route ${req.method} ${url.pathname}` } });
  };
}

const RELEASE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** release, via, schema and via_schema from a deploy or plan body; names what is wrong. */
function releaseOptions(body: Record<string, unknown>, needRelease: boolean): { release?: string; via?: string; schema?: SchemaRange; viaSchema?: SchemaRange } {
  const name = (field: string): string | undefined => {
    const v = body[field];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "string" || !RELEASE_NAME.test(v)) throw new TurquoiseError("USAGE", `body.${field} must be a release name: letters, digits, '.', '_' or '-'`);
    return v;
  };
  const range = (field: string): SchemaRange | undefined => (typeof body[field] === "string" ? parseSchemaRange(body[field] as string) : undefined);
  const release = name("release");
  if (needRelease && !release) throw new TurquoiseError("USAGE", "body.release is required");
  const via = name("via");
  const schema = range("schema");
  const viaSchema = range("via_schema");
  return { ...(release ? { release } : {}), ...(via ? { via } : {}), ...(schema ? { schema } : {}), ...(viaSchema ? { viaSchema } : {}) };
}

function deployHandler(kind: "deploy" | "rollback"): Handler {
  return async ({ agent, req, res, params }) => {
    const body = parseJson(await readBody(req));
    const service = params[0]!;
    agent.orchestrator.service(service);
    const opts = releaseOptions(body, kind === "deploy");
    const actor = typeof body.actor === "string" && body.actor ? body.actor.slice(0, 200) : "api";
    res.writeHead(200, { "content-type": "application/x-ndjson", "cache-control": "no-store" });
    const line = (o: unknown) => res.write(JSON.stringify(o) + "\n");
    const common = { service, actor, wait: body.wait === true, onProgress: line };
    try {
      const out = kind === "deploy"
        ? await agent.orchestrator.deploy({ ...common, ...opts, release: opts.release! })
        : await agent.orchestrator.rollback(common);
      line({ type: "result", ok: true, history: out.history });
    } catch (e) {
      line({ type: "result", ok: false, error: errorBody(e) });
    }
    res.end();
    return undefined;
  };
}

async function status(agent: Agent): Promise<unknown> {
  const services = [];
  for (const svc of Object.values(agent.spec.services)) {
    const color = (await agent.records.color(svc.name)) ?? null;
    const slots: Record<string, unknown> = {};
    for (const slot of SLOTS) slots[slot] = (await agent.records.slot(svc.name, slot)) ?? null;
    const live = color ? (slots[color] as { release: string } | null) : null;
    const instances = agent.fleet.list(svc.name).map((i) => {
      const check = agent.monitor.state(i.id);
      return {
        id: i.id, slot: i.slot, release: i.release, address: `${i.host}:${i.port}`, ref: i.ref, startedAt: i.startedAt,
        health: check ? { status: check.status, history: check.history } : { status: "unknown", history: [] },
      };
    });
    services.push({
      name: svc.name,
      route: svc.route,
      color,
      release: live?.release ?? null,
      previous: (await agent.records.previous(svc.name)) ?? null,
      slots,
      instances,
      lock: (await agent.store.getLock(keys.lock(svc.name))) ?? null,
      degraded: await agent.store.get(keys.degraded(svc.name)).then((kv) => (kv ? (JSON.parse(kv.value) as unknown) : null)),
    });
  }
  return { agent: { pid: process.pid, api: agent.apiUrl, startedAt: agent.startedAt }, proxy: { pid: agent.proxy.pid, address: `${agent.spec.proxy.host}:${agent.proxy.listenPort}`, stats: await agent.proxy.stats().catch((e) => ({ error: errorMessage(e) })) }, services };
}

/** Consul's blocking read: with ?index=N, hold the request until the index passes N or ?wait= runs out. */
async function blockUntilChanged(agent: Agent, query: URLSearchParams, blocking: boolean, req: http.IncomingMessage): Promise<void> {
  const index = query.get("index");
  if (!blocking || index === null) return;
  if (!/^\d+$/.test(index)) throw new TurquoiseError("USAGE", `?index must be a number from X-Turquoise-Index, got "${index}"`);
  const wait = query.get("wait");
  let waitMs = DEFAULT_BLOCKING_WAIT_MS;
  if (wait !== null) {
    try {
      waitMs = parseDuration(wait);
    } catch (e) {
      throw new TurquoiseError("USAGE", `?wait: ${errorMessage(e)}`);
    }
  }
  await agent.registry.waitFor(Number(index), waitMs, req);
}

/** Server-sent events: every agent event as it happens, until the client goes away. */
async function streamEvents(agent: Agent, req: http.IncomingMessage, res: http.ServerResponse): Promise<undefined> {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store", connection: "keep-alive" });
  res.write(`: turquoise events, index ${agent.registry.current}\n\n`);
  const stop = agent.registry.onEvent((e) => res.write(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`));
  const ping = setInterval(() => res.write(": ping\n\n"), 15_000);
  await new Promise<void>((resolve) => req.on("close", resolve));
  clearInterval(ping);
  stop();
  return undefined;
}

/** An integer query parameter within [min, max], or a usage error naming it. */
function intParam(query: URLSearchParams, name: string, fallback: number, min: number, max: number): number {
  const text = query.get(name);
  if (text === null) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) throw new TurquoiseError("USAGE", `?${name} must be an integer from ${min} to ${max}, got "${text}"`);
  return n;
}

function casOption(query: URLSearchParams): { prevRevision?: number } {
  const cas = query.get("cas");
  if (cas === null) return {};
  if (!/^\d+$/.test(cas)) throw new TurquoiseError("USAGE", `?cas must be a revision number, got "${cas}"`);
  return { prevRevision: Number(cas) };
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) return reject(new TurquoiseError("USAGE", `request body over ${MAX_BODY_BYTES} bytes`));
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function parseJson(text: string): Record<string, unknown> {
  if (!text.trim()) return {};
  try {
    const v = JSON.parse(text) as unknown;
    if (v && typeof v === "object" && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch { /* reported below */ }
  throw new TurquoiseError("USAGE", "request body must be a JSON object");
}

function errorBody(e: unknown): Record<string, unknown> {
  return e instanceof TurquoiseError ? e.toJSON() : { code: "INTERNAL", message: errorMessage(e) };
}

function sendError(res: http.ServerResponse, e: unknown): void {
  const status = e instanceof TurquoiseError ? (HTTP_STATUS[e.code] ?? 500) : 500;
  send(res, status, { error: errorBody(e) });
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const json = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(json) });
  res.end(json);
}
