// The agent's HTTP API in-process, on a loopback port, over a memory store and a stand-in agent:
// real routes, real auth and real KV rules, with the orchestrator's flows replaced by tiny stubs.
import crypto from "node:crypto";
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { ApiHost } from "../../src/api/host.js";
import { createApi } from "../../src/api/server.js";
import { Registry } from "../../src/api/registry.js";
import { DeployTokens } from "../../src/auth/deploy-tokens.js";
import { Records } from "../../src/deploy/records.js";
import { TurquoiseError } from "../../src/errors.js";
import type { DeployRequest, Progress } from "../../src/deploy/orchestrator.js";
import { MemoryStore } from "../../src/state/memory.js";
import type { SessionOptions } from "../../src/ui/sessions.js";
import { SoleLeadership, type Leadership } from "../../src/state/leader.js";

export interface Harness {
  agent: ApiHost;
  store: MemoryStore;
  registry: Registry;
  adminToken: string;
  registryToken: string;
  port: number;
  /** The server's side of every connection, to see what it buffers and whether it cut one. */
  sockets: Set<Socket>;
  /** Deploys the stub orchestrator ran, by service. */
  deploys: string[];
  /** Who each of those deploys was started by, as history would record it. */
  actors: string[];
  /** Releases the stub refuses as not found, before any history entry ("missing" at first): a test adds one, then removes it as if it were pushed since. */
  missing: Set<string>;
  /** Releases whose deploy fails after it started, as a failing health check does ("broken" at first). */
  broken: Set<string>;
  /** Makes the next deploys wait until this resolves: a running deploy, for --wait tests. */
  holdDeploys(until: Promise<void>): void;
  /** A request with the admin token, another token, or (token: null) none; headers are added as given (a dashboard's cookie). */
  call(method: string, path: string, opts?: { token?: string | null; body?: string; headers?: Record<string, string> }): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }>;
  close(): Promise<void>;
}

export const SERVICES = ["books", "api", "shop"];
/** books takes GitHub deliveries signed with $TQ_TEST_BOOKS_SECRET for pushed tags, or a "release" field with a token. */
export const WEBHOOKS: Record<string, { secretEnv?: string; release?: string; branches?: string[] }> = {
  books: { secretEnv: "TQ_TEST_BOOKS_SECRET" },
  shop: { secretEnv: "TQ_TEST_SHOP_SECRET", release: "main-{sha7}", branches: ["main"] },
};

/** leadership: who leads among agents sharing the store; by default this one, alone, as on SQLite. sessions: the dashboard's (a clock for expiry tests). */
export async function startHarness(opts: { store?: MemoryStore; leadership?: Leadership; leads?: boolean; sessions?: SessionOptions } = {}): Promise<Harness> {
  const store = opts.store ?? new MemoryStore();
  const registry = new Registry(store, 1);
  const records = new Records(store);
  const deployTokens = new DeployTokens(store);
  // As the agent does: a token another agent on this store creates or revokes counts here too.
  await deployTokens.start();
  const adminToken = crypto.randomBytes(32).toString("hex");
  const registryToken = crypto.randomBytes(32).toString("hex");
  const deploys: string[] = [];
  const actors: string[] = [];
  let hold: Promise<void> = Promise.resolve();
  const missing = new Set(["missing"]);
  const broken = new Set(["broken"]);
  const service = (name: string) => {
    if (!SERVICES.includes(name)) throw new TurquoiseError("NOT_FOUND", `no service named "${name}"`);
    return { name, route: { pathPrefix: "/" }, ...(WEBHOOKS[name] ? { webhook: WEBHOOKS[name] } : {}) };
  };
  const flow = async (req: Omit<DeployRequest, "release"> & { release?: string }) => {
    service(req.service);
    // As the planner refuses a release it cannot find, before any history entry.
    if (missing.has(req.release ?? "")) throw new TurquoiseError("NOT_FOUND", `release "${req.release}" of ${req.service} not found`);
    await hold;
    deploys.push(req.service);
    const id = deploys.length;
    actors.push(req.actor);
    req.onStarted?.(id);
    req.onProgress?.({ type: "info", message: `deploying ${req.service}` } satisfies Progress);
    // A broken release fails its deploy after it started, as a failing health check does.
    if (broken.has(req.release ?? "")) throw new TurquoiseError("DEPLOY_FAILED", `deploy of ${req.service} ${req.release} failed at healthy`, { data: { step: "healthy", history: { id } } });
    return { history: { id, service: req.service, release: req.release ?? "previous", actor: req.actor, outcome: "succeeded" } };
  };
  const agent = {
    startedAt: Date.now(), identity: "api-harness", token: adminToken, registryToken, deployTokens, store, records, registry, apiUrl: "http://127.0.0.1:0",
    spec: { services: Object.fromEntries(SERVICES.map((s) => [s, service(s)])), proxy: { host: "127.0.0.1" } },
    orchestrator: { service, deploy: flow, rollback: flow, promote: flow, canaryOf: () => undefined },
    fleet: { list: () => [] },
    monitor: { state: () => undefined },
    proxy: { pid: 0, listenPort: 0, stats: async () => ({}) },
    event: (service: string | null, type: string, message: string, data: Record<string, unknown> = {}) => void store.appendEvent({ service, type, message, data }),
    leads: opts.leads ?? true,
    leadership: opts.leadership ?? new SoleLeadership({ id: "api-harness:1", api: "http://127.0.0.1:0", proxy: "127.0.0.1:0", startedAt: Date.now() }),
  } as unknown as ApiHost;
  const server = http.createServer(createApi(agent, opts.sessions ? { sessions: opts.sessions } : {}));
  const sockets = new Set<Socket>();
  server.on("connection", (s) => sockets.add(s));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  return {
    agent, store, registry, adminToken, registryToken, port, deploys, actors, sockets, missing, broken,
    holdDeploys: (until) => void (hold = until),
    call: (method, path, opts = {}) => new Promise((resolve, reject) => {
      const auth: Record<string, string> = opts.token === null ? {} : { authorization: `Bearer ${opts.token ?? adminToken}` };
      const req = http.request({ host: "127.0.0.1", port, path, method, agent: false, headers: { ...auth, ...opts.headers } }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
      });
      req.on("error", reject);
      req.end(opts.body);
    }),
    close: async () => {
      registry.close();
      deployTokens.stop();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
