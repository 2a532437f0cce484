// The agent's HTTP API: its routes, and who may call each. Loopback only by default; every call
// but /v1/health needs a token, and the token's scope (auth/scopes.ts) must cover the route. The
// dashboard (/ui) signs a token in once; its session cookie then stands for the token, and every
// call but a GET also needs the session's CSRF token.
import type http from "node:http";
import { constants as osConstants } from "node:os";
import { TurquoiseError, errorMessage } from "../errors.js";
import type { ApiHost } from "./host.js";
import { parseDuration } from "../util/duration.js";
import { DEFAULT_BLOCKING_WAIT_MS } from "./registry.js";
import { catalog, catalogService, checks } from "./catalog.js";
import { checkUserKey, checkUserPrefix, userDelete, userGet, userList, userPut } from "./kv.js";
import { authenticate, describeScope, storedTokenScope, tokenIdentity, type Scope } from "../auth/scopes.js";
import { intParam, parseJson, send, sendError, errorBody } from "./http.js";
import { readBody } from "../util/http-body.js";
import { OpenStreams, StreamSlots, listEvents, sessionHolder, streamEvents, type EventStreams } from "./events.js";
import { abortFlow, releaseOptions, runFlow } from "./flows.js";
import { status } from "./status.js";
import { handleHook } from "./hooks.js";
import type { MigrationRequest } from "../deploy/orchestrator.js";
import { handleUi } from "../ui/routes.js";
import { Sessions, fromOwnOrigin, type Session, type SessionOptions } from "../ui/sessions.js";

/** session: the dashboard session the call came with, when it came with one instead of a token. */
type Handler = (ctx: { agent: ApiHost; scope: Scope; session: Session | undefined; req: http.IncomingMessage; res: http.ServerResponse; params: string[]; query: URLSearchParams }) => Promise<unknown>;

/**
 * Who besides the admin token may call a route: registry, the registry token; deploy, a deploy
 * token ("service": only for a service it names, the route's first parameter; "filtered": the
 * handler shows it its services only); read, a read token (the dashboard's read-only view).
 * blocking: ?index=&wait= applies. guard: refuses a request before it blocks or reads its body.
 */
interface RouteOptions {
  registry?: boolean;
  read?: boolean;
  deploy?: "service" | "filtered";
  blocking?: boolean;
  /** Changes something: only the leading agent takes it (several agents share the store). */
  write?: boolean;
  guard?: (params: string[], query: URLSearchParams) => void;
}

export function createApi(agent: ApiHost, opts: { sessions?: SessionOptions } = {}): http.RequestListener {
  const streams: EventStreams = { slots: new StreamSlots(), open: new OpenStreams() };
  // What a revoked token or an ended session held open ends with it, on this agent whichever agent revoked it.
  agent.deployTokens.onRevoked((t) => {
    const scope = storedTokenScope(t);
    const n = streams.open.end(tokenIdentity(scope), `${scope.kind} token ${t.id} was revoked`);
    if (n > 0) agent.event(null, "stream.revoked", `${n} event stream${n === 1 ? "" : "s"} of ${scope.kind} token ${t.id}${t.name ? ` (${t.name})` : ""} ended: the token was revoked`, { token: t.id, streams: n });
  });
  const routes: Array<[string, RegExp, Handler, RouteOptions?]> = [
    ["GET", /^\/v1\/catalog\/services$/, async ({ agent }) => catalog(agent), { registry: true, blocking: true }],
    ["GET", /^\/v1\/catalog\/service\/([^/]+)$/, async ({ agent, params }) => catalogService(agent, params[0]!), { registry: true, blocking: true }],
    ["GET", /^\/v1\/health\/checks$/, async ({ agent, query }) => checks(agent, query.get("service") ?? undefined, query.get("state") ?? undefined), { registry: true, blocking: true }],
    ["GET", /^\/v1\/events\/stream$/, async ({ agent, scope, session, req, res, query }) => streamEvents(agent, streams, scope, req, res, query, session && { id: session.id, expiresAt: session.expiresAt }), { registry: true, read: true }],
    ["GET", /^\/v1\/status$/, async ({ agent, scope }) => status(agent, scope.kind === "deploy" ? scope.services : undefined), { deploy: "filtered", read: true }],
    ["POST", /^\/v1\/services\/([^/]+)\/deploy$/, async ({ agent, scope, req, res, params }) => runFlow("deploy", agent, scope, params[0]!, req, res), { deploy: "service", write: true }],
    ["POST", /^\/v1\/services\/([^/]+)\/rollback$/, async ({ agent, scope, req, res, params }) => runFlow("rollback", agent, scope, params[0]!, req, res), { deploy: "service", write: true }],
    ["POST", /^\/v1\/services\/([^/]+)\/promote$/, async ({ agent, scope, req, res, params }) => runFlow("promote", agent, scope, params[0]!, req, res), { deploy: "service", write: true }],
    ["POST", /^\/v1\/services\/([^/]+)\/abort$/, async ({ agent, scope, req, params }) => abortFlow(agent, scope, params[0]!, req), { deploy: "service", write: true }],
    ["POST", /^\/v1\/services\/([^/]+)\/plan$/, async ({ agent, req, params }) => {
      const body = parseJson(await readBody(req));
      const kind = body.kind === "rollback" ? "rollback" : "deploy";
      const opts = releaseOptions(body, kind === "deploy");
      // canary: true asks whether the deploy could go out in canary steps (the planner says why not).
      const plan = await agent.orchestrator.plan(kind, { service: params[0]!, release: opts.release ?? "", ...opts, ...(body.canary === true && kind === "deploy" ? { inCanary: true } : {}) });
      return { kind, via: plan.via, live: plan.live?.release ?? null, actions: plan.actions, lines: plan.lines, warnings: plan.warnings ?? [] };
    }],
    ["POST", /^\/v1\/services\/([^/]+)\/migrate$/, async ({ agent, req, res, params }) => {
      const body = parseJson(await readBody(req));
      const request = migrationRequest(body);
      if (body.stream !== true) return agent.orchestrator.migrations(params[0]!, request);
      // Streamed (NDJSON, as deploys are): backfill progress while it runs, then one result line.
      res.writeHead(200, { "content-type": "application/x-ndjson", "cache-control": "no-store" });
      const line = (o: unknown) => { if (!res.destroyed) res.write(JSON.stringify(o) + "\n"); };
      try {
        const out = await agent.orchestrator.migrations(params[0]!, { ...request, onProgress: ({ type: _, ...p }) => line({ type: "progress", ...p }) });
        line({ type: "result", ok: true, ...out });
      } catch (e) {
        line({ type: "result", ok: false, error: errorBody(e) });
      }
      res.end();
      return undefined;
    }, { write: true }],
    ["POST", /^\/v1\/services\/([^/]+)\/signal$/, async ({ agent, req, params }) => {
      const body = parseJson(await readBody(req));
      const signal = typeof body.signal === "string" ? (body.signal.startsWith("SIG") ? body.signal : `SIG${body.signal}`).toUpperCase() : "";
      if (!(signal in osConstants.signals)) throw new TurquoiseError("USAGE", `unknown signal ${JSON.stringify(body.signal)}: use a name such as SIGHUP or HUP`);
      const sent = await agent.orchestrator.signalService(params[0]!, signal as NodeJS.Signals, body.all === true);
      return { signal, sent };
    }, { write: true }],
    ["GET", /^\/v1\/services\/([^/]+)\/history$/, async ({ agent, params, query }) => {
      agent.orchestrator.service(params[0]!);
      return { history: await agent.store.listHistory(params[0]!, intParam(query, "limit", 20, 1, 1_000)) };
    }, { read: true }],
    // The schema version and pending migrations, read-only: what `turquoise migrate status` shows.
    ["GET", /^\/v1\/services\/([^/]+)\/migrations$/, async ({ agent, params }) => agent.orchestrator.migrations(params[0]!, { action: "status", dryRun: false, actor: "api" }), { read: true }],
    ["GET", /^\/v1\/services\/([^/]+)\/logs$/, async ({ agent, params, query }) => {
      agent.orchestrator.service(params[0]!);
      const tailLines = intParam(query, "tail", 50, 1, 10_000);
      const instances = agent.fleet.list(params[0]!).filter((i) => !query.get("instance") || i.id === query.get("instance"));
      return { logs: await Promise.all(instances.map(async (i) => ({ instance: i.id, slot: i.slot, release: i.release, text: await agent.fleet.logs(i, tailLines) }))) };
    }],
    ["GET", /^\/v1\/kv$/, async ({ agent, query }) => ({ items: await userList(agent.store, query.get("prefix") ?? "") }), {
      registry: true, blocking: true, guard: (_p, query) => checkUserPrefix(query.get("prefix") ?? ""),
    }],
    ["GET", /^\/v1\/kv\/(.+)$/, async ({ agent, params }) => {
      const kv = await userGet(agent.store, params[0]!);
      if (!kv) throw new TurquoiseError("NOT_FOUND", `no key "${params[0]}"`);
      return kv;
    }, { registry: true, blocking: true, guard: (params) => checkUserKey(params[0]!) }],
    ["PUT", /^\/v1\/kv\/(.+)$/, async ({ agent, req, params, query }) => {
      const value = await readBody(req);
      const r = await userPut(agent.store, params[0]!, value, casOption(query));
      if (!r.ok) throw new TurquoiseError("CONFLICT", `compare-and-set failed on "${params[0]}": its revision is ${r.current?.modRevision ?? "none (absent)"}`);
      return r;
    }, { write: true, guard: (params) => checkUserKey(params[0]!) }],
    ["DELETE", /^\/v1\/kv\/(.+)$/, async ({ agent, params, query }) => {
      const r = await userDelete(agent.store, params[0]!, casOption(query));
      if (!r.ok) throw new TurquoiseError("CONFLICT", `compare-and-set failed on "${params[0]}"`);
      return r;
    }, { write: true, guard: (params) => checkUserKey(params[0]!) }],
    ["GET", /^\/v1\/events$/, async ({ agent, scope, query }) => listEvents(agent, scope, query), { registry: true, read: true, blocking: true }],
    ["POST", /^\/v1\/tokens$/, async ({ agent, req }) => {
      const body = parseJson(await readBody(req));
      if (body.name !== undefined && typeof body.name !== "string") throw new TurquoiseError("USAGE", "body.name must be a string");
      const name = (body.name as string | undefined) ?? null;
      if (body.read === true) {
        if (body.deploy !== undefined) throw new TurquoiseError("USAGE", "a token is either read (body.read) or deploy (body.deploy), not both");
        const { token, info } = await agent.deployTokens.create("read", name);
        return { ...info, scope: "read", token };
      }
      const services = body.deploy;
      if (!Array.isArray(services) || services.length === 0 || !services.every((s) => typeof s === "string")) throw new TurquoiseError("USAGE", "body.deploy must be a list of service names, e.g. [\"books\"], or body.read true for a read token");
      for (const s of services as string[]) agent.orchestrator.service(s);
      const { token, info } = await agent.deployTokens.create(services as string[], name);
      return { ...info, scope: "deploy", token };
    }, { write: true }],
    ["GET", /^\/v1\/tokens$/, async ({ agent }) => ({ tokens: agent.deployTokens.list().map((t) => ({ ...t, scope: t.scope ?? "deploy" })) })],
    ["DELETE", /^\/v1\/tokens\/([^/]+)$/, async ({ agent, params }) => ({ revoked: await agent.deployTokens.revoke(params[0]!) }), { write: true }],
    ["POST", /^\/v1\/shutdown$/, async ({ agent, req, res }) => {
      const body = parseJson(await readBody(req));
      res.on("finish", () => setImmediate(() => void agent.close({ everything: body.everything === true })));
      return { ok: true, everything: body.everything === true };
    }],
  ];

  const log = agent.log?.child("api");
  const credentials = () => ({ adminToken: agent.token, registryToken: agent.registryToken, deployTokens: agent.deployTokens });
  const stillGranted = (scope: Scope): boolean => (scope.kind !== "read" && scope.kind !== "deploy") || agent.deployTokens.has(scope.id);
  const sessions = new Sessions({
    ...opts.sessions,
    stillGranted,
    onEnded: (s, why) => {
      opts.sessions?.onEnded?.(s, why);
      streams.open.end(sessionHolder(s.id), `the dashboard session ended: ${why}`);
    },
  });
  return (req, res) => {
    // Method, path without the query, status, scope and time: never a header, a body or a query value.
    if (log?.isEnabled("debug")) {
      const started = performance.now();
      res.once("close", () => {
        const path = (req.url ?? "/").split("?")[0]!;
        log.debug("api.request", `${req.method} ${path} ${res.statusCode} in ${Math.round(performance.now() - started)}ms`, {
          data: { method: req.method, path, status: res.statusCode, durationMs: Math.round(performance.now() - started), remote: req.socket.remoteAddress ?? null },
        });
      });
    }
    let url: URL;
    try {
      url = new URL(req.url ?? "/", "http://agent");
    } catch {
      return send(res, 400, { error: { code: "USAGE", message: "the request path is not a valid URL" } });
    }
    if (req.method === "GET" && url.pathname === "/v1/health") return send(res, 200, { ok: true, pid: process.pid, uptimeMs: Date.now() - agent.startedAt, agent: agent.identity });
    // A CI delivery proves itself by its signature or token: hooks.ts checks both.
    const hook = /^\/v1\/hooks\/([^/]+)$/.exec(url.pathname);
    if (hook) {
      if (req.method !== "POST") return send(res, 405, { error: { code: "USAGE", message: "webhooks are POST /v1/hooks/<service>" } }, { allow: "POST" });
      let service: string;
      try {
        service = decodeURIComponent(hook[1]!);
      } catch {
        return send(res, 400, { error: { code: "USAGE", message: "the request path has a malformed %-escape" } });
      }
      return void handleHook(agent, service, req, res);
    }
    if (handleUi(req, res, url.pathname, { sessions, credentials })) return;
    let scope = authenticate(req.headers.authorization, credentials());
    // A signed-in dashboard: its cookie stands for the token, only when no Authorization header is sent.
    const session = req.headers.authorization === undefined ? sessions.fromCookie(req.headers.cookie) : undefined;
    if (session) {
      if (req.method !== "GET" && req.method !== "HEAD" && !sessions.csrfMatches(session, req.headers["x-csrf-token"])) {
        return send(res, 403, { error: { code: "FORBIDDEN", message: `${req.method} ${url.pathname} from a dashboard session needs its X-CSRF-Token header` } });
      }
      if (!fromOwnOrigin(req.headers)) {
        return send(res, 403, { error: { code: "FORBIDDEN", message: `${req.method} ${url.pathname} with a dashboard session from ${String(req.headers.origin).slice(0, 100)}, not the dashboard's own origin` } });
      }
      scope = session.scope;
    }
    if (!scope) {
      return send(res, 401, { error: { code: "UNAUTHORIZED", message: "missing, wrong or revoked API token: send Authorization: Bearer <token from the state dir's token file, or a deploy token>" } });
    }
    const caller = scope;
    for (const [method, re, handler, opts = {}] of routes) {
      const m = re.exec(url.pathname);
      if (!m) continue;
      if (method !== req.method) continue;
      let params: string[];
      try {
        params = m.slice(1).map(decodeURIComponent);
      } catch {
        return send(res, 400, { error: { code: "USAGE", message: "the request path has a malformed %-escape" } });
      }
      if (!permits(scope, opts, params)) {
        return send(res, 403, { error: { code: "FORBIDDEN", message: `${describeScope(scope)}; ${req.method} ${url.pathname} is outside that scope` } });
      }
      Promise.resolve()
        .then(() => opts.guard?.(params, url.searchParams))
        .then(async () => {
          // Refused, not forwarded: each agent has its own tokens, and a deploy's stream is best held by the agent that runs it.
          if (opts.write && !agent.leads) throw await agent.leadership.notLeader(`${req.method} ${url.pathname}`);
        })
        .then(() => blockUntilChanged(agent, url.searchParams, opts.blocking === true, req))
        .then(() => {
          // A blocking read waits up to minutes: a token revoked or a session ended meanwhile gets no answer but this.
          if (!stillGranted(caller) || (session && !sessions.live(session))) throw new TurquoiseError("UNAUTHORIZED", "the token or dashboard session this request came with was revoked or ended while it waited");
        })
        .then(async () => {
          // The index as the answer starts to be read, not after: a change made while the handler
          // awaits is then newer than the index the client waits past, so it is seen again, never missed.
          const index = agent.registry.current;
          return { index, body: await handler({ agent, scope, session, req, res, params, query: url.searchParams }) };
        })
        .then(({ index, body }) => {
          if (res.headersSent) return;
          if (opts.blocking) res.setHeader("x-turquoise-index", String(index));
          send(res, 200, body);
        })
        .catch((e) => { if (!res.headersSent) sendError(res, e); else res.end(); });
      return;
    }
    send(res, 404, { error: { code: "NOT_FOUND", message: `no API route ${req.method} ${url.pathname}` } });
  };
}

function permits(scope: Scope, opts: RouteOptions, params: string[]): boolean {
  switch (scope.kind) {
    case "admin":
      return true;
    case "registry":
      return opts.registry === true;
    case "read":
      return opts.read === true;
    case "deploy":
      return opts.deploy === "filtered" || (opts.deploy === "service" && scope.services.includes(params[0]!));
  }
}

/** Consul's blocking read: with ?index=N, hold the request until the index passes N or ?wait= runs out. */
async function blockUntilChanged(agent: ApiHost, query: URLSearchParams, blocking: boolean, req: http.IncomingMessage): Promise<void> {
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

/** The body of `turquoise migrate`, checked: the action, the target version, dry run, actor. */
function migrationRequest(body: Record<string, unknown>): MigrationRequest {
  const action = body.action ?? "status";
  if (action !== "status" && action !== "up" && action !== "down" && action !== "to") throw new TurquoiseError("USAGE", `body.action must be status, up, down or to, got ${JSON.stringify(action)}`);
  if (body.to !== undefined && (typeof body.to !== "number" || !Number.isInteger(body.to) || body.to < 0)) throw new TurquoiseError("USAGE", "body.to must be an integer ≥ 0");
  return {
    action, dryRun: body.dry_run === true, actor: typeof body.actor === "string" ? body.actor.slice(0, 200) : "api",
    ...(typeof body.to === "number" ? { to: body.to } : {}),
  };
}

function casOption(query: URLSearchParams): { prevRevision?: number } {
  const cas = query.get("cas");
  if (cas === null) return {};
  if (!/^\d+$/.test(cas)) throw new TurquoiseError("USAGE", `?cas must be a revision number, got "${cas}"`);
  return { prevRevision: Number(cas) };
}
