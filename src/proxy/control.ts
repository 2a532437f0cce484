// The proxy's control API on loopback, behind the agent's bearer token: the route table (persisted,
// then swapped), drains, upstream health marks, stats, the metrics behind the agent's /metrics,
// the upstream event long-poll, in-place upgrades, and the TLS certificates (their state, an ACME
// renewal on demand). It drives a ControlBackend: one data plane in this process, or a supervisor's workers.

import http from "node:http";
import type net from "node:net";
import path from "node:path";
import { tokenMatches } from "../auth/token.js";
import { writeFileAtomic } from "../util/fs.js";
import type { AcmeHostStatus } from "./acme.js";
import type { CertificateStatus } from "./cert-store.js";
import type { DrainResult, ProxyMetrics, ProxyStats, RouteTable, RouteTableDelta } from "./contract.js";
import type { DataPlane } from "./data-plane.js";
import { noop, sendJson } from "./http.js";
import { mergeDelta, type UpstreamEventLog, validateDelta, validateTable } from "./table.js";

export const TABLE_FILE = "proxy-table.json";
const MAX_CONTROL_BODY_BYTES = 16 * 1024 * 1024;
/** The longest a GET /events long-poll waits for an event. */
export const MAX_EVENTS_WAIT_MS = 30_000;

/** One worker process of a supervised proxy, as GET /health lists it. */
export interface WorkerInfo {
  pid: number;
  /**
   * starting: not yet serving; standby: the spare, with the table applied, not accepting until a
   * worker dies; serving; retiring: draining before it exits.
   */
  state: "starting" | "standby" | "serving" | "retiring";
  /** Epoch ms. */
  startedAt: number;
  /** Serving and accepting new connections (a serving worker that does not serves the ones it has). */
  accepting?: boolean;
  /** Grows by one with each in-place upgrade. */
  generation: number;
}

export interface HealthInfo {
  ok: boolean;
  pid: number;
  tableVersion: number;
  /** A supervised proxy's workers, and how many it keeps serving. */
  workers?: WorkerInfo[];
  workerCount?: number;
  /** How the serving workers share new connections (supervisor.ts AcceptMode). */
  accept?: "adaptive" | "all";
}

/** GET /tls: the TLS listener, the certificates the workers serve, and the ACME hosts. */
export interface TlsStatus {
  listen?: { host: string; port: number };
  certificates: CertificateStatus[];
  acme: AcmeHostStatus[];
}

export interface UpgradeOptions {
  /** How many workers the new generation has; the current count when absent. */
  workers?: number;
  /** Which of them accept new connections from then on; as now when absent. */
  accept?: "adaptive" | "all";
  /** How long the old workers may finish in-flight requests (and tunnels) before they are cut. */
  drainTimeoutMs?: number;
}

export interface UpgradeResult {
  /** The pids of the new workers, serving. */
  started: number[];
  /** The pids of the old workers, drained and gone. */
  retired: number[];
  generation: number;
  /** Until the new workers served. */
  readyMs: number;
  durationMs: number;
}

/** What the control API drives: one in-process data plane, or a supervisor and its workers. */
export interface ControlBackend {
  /** The table in use. */
  table(): RouteTable;
  /**
   * Swaps in a table that is valid, not older than the current one and already saved; resolves
   * once new requests use it (every worker's, for a supervisor).
   */
  apply(table: RouteTable): Promise<void>;
  /**
   * Optional: swaps in `merged`, the table `delta` makes of the current one (already valid and
   * saved). A supervisor sends its workers the delta alone; without it, apply(merged) runs.
   */
  applyDelta?(delta: RouteTableDelta, merged: RouteTable): Promise<void>;
  drain(poolId: string, timeoutMs: number): Promise<DrainResult>;
  stats(): Promise<ProxyStats>;
  /** The figures the agent's /metrics renders (JSON here: the agent writes the text format). */
  metrics(): Promise<ProxyMetrics>;
  setUpstreamHealth(id: string, healthy: boolean): Promise<void>;
  /** The upstream.down/up events behind GET /events. */
  readonly events: UpstreamEventLog;
  health(): HealthInfo;
  /** Only a supervisor upgrades in place. */
  upgrade?(opts: UpgradeOptions): Promise<UpgradeResult>;
  /** Only a supervisor terminates TLS. */
  tls?(): Promise<TlsStatus>;
  renewCertificate?(host: string): Promise<AcmeHostStatus>;
}

/** The control API over one data plane in this process. */
export class PlaneBackend implements ControlBackend {
  private readonly plane: DataPlane;

  constructor(plane: DataPlane) {
    this.plane = plane;
  }

  get events(): UpstreamEventLog {
    return this.plane.router.events;
  }

  table(): RouteTable {
    return this.plane.router.current.source;
  }

  async apply(table: RouteTable): Promise<void> {
    this.plane.apply(table);
  }

  drain(poolId: string, timeoutMs: number): Promise<DrainResult> {
    return this.plane.drain(poolId, timeoutMs);
  }

  async stats(): Promise<ProxyStats> {
    return this.plane.stats();
  }

  metrics(): Promise<ProxyMetrics> {
    return this.plane.metrics();
  }

  async setUpstreamHealth(id: string, healthy: boolean): Promise<void> {
    // Healthy clears any mark, the proxy's own included: only the agent's check brings an upstream back.
    if (healthy) this.plane.router.markUp(id);
    else this.plane.router.markDown(id, "marked");
  }

  health(): HealthInfo {
    return { ok: true, pid: process.pid, tableVersion: this.plane.router.current.version };
  }
}

/** Starts the control API on 127.0.0.1 (port 0: any free one). */
export function startControlServer(backend: ControlBackend, stateDir: string, token: string, port = 0): Promise<http.Server> {
  if (token.length === 0) throw new Error("the proxy control token is empty");
  const server = http.createServer(new ControlPlane(backend, stateDir, token).onRequest);
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => {
      server.off("error", reject);
      resolve(server);
    });
  });
}

export function controlPort(server: http.Server): number {
  return (server.address() as net.AddressInfo).port;
}

export class ControlPlane {
  private readonly backend: ControlBackend;
  private readonly stateDir: string;
  private readonly token: string;
  /** Table writes run one at a time so the file and the live table never disagree. */
  private applying: Promise<unknown> = Promise.resolve();

  constructor(backend: ControlBackend, stateDir: string, token: string) {
    this.backend = backend;
    this.stateDir = stateDir;
    this.token = token;
  }

  readonly onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    if (!tokenMatches(this.token, req.headers.authorization)) {
      req.resume();
      sendJson(res, 401, { error: "unauthorized", message: "the proxy control API needs Authorization: Bearer <token>" });
      return;
    }
    this.route(req, res).catch((e: unknown) => {
      const status = e instanceof HttpError ? e.status : 500;
      if (!res.headersSent) sendJson(res, status, { error: e instanceof Error ? e.message : String(e) });
      else res.destroy();
    });
  };

  private async route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const key = `${req.method} ${(req.url ?? "/").split("?")[0]}`;
    switch (key) {
      case "GET /health":
        req.resume();
        return sendJson(res, 200, this.backend.health());
      case "GET /stats":
        req.resume();
        return sendJson(res, 200, await this.backend.stats());
      case "GET /metrics":
        req.resume();
        return sendJson(res, 200, await this.backend.metrics());
      case "GET /table":
        req.resume();
        return sendJson(res, 200, this.backend.table());
      case "PUT /table": {
        const table = await readJson(req);
        const problem = validateTable(table);
        if (problem) throw new HttpError(400, `invalid route table: ${problem}`);
        const result = await this.applyTable(table as RouteTable);
        return sendJson(res, 200, result);
      }
      case "PATCH /table": {
        const delta = await readJson(req);
        const problem = validateDelta(delta);
        if (problem) throw new HttpError(400, `invalid route table delta: ${problem}`);
        const result = await this.applyDelta(delta as RouteTableDelta);
        return sendJson(res, result.applied ? 200 : 409, result.applied ? result : { error: `the delta is for table version ${(delta as RouteTableDelta).base}, this proxy serves version ${result.version}: send the whole table`, version: result.version });
      }
      case "POST /drain": {
        const body = (await readJson(req)) as { poolId?: unknown; timeoutMs?: unknown };
        if (typeof body?.poolId !== "string") throw new HttpError(400, "poolId must be a string");
        if (typeof body.timeoutMs !== "number" || !(body.timeoutMs >= 0)) throw new HttpError(400, "timeoutMs must be a number ≥ 0");
        return sendJson(res, 200, await this.backend.drain(body.poolId, body.timeoutMs));
      }
      case "POST /upstreams/health": {
        const body = (await readJson(req)) as { id?: unknown; healthy?: unknown };
        if (typeof body?.id !== "string" || typeof body.healthy !== "boolean") throw new HttpError(400, "body must be {id: string, healthy: boolean}");
        await this.backend.setUpstreamHealth(body.id, body.healthy);
        return sendJson(res, 200, { id: body.id, healthy: body.healthy });
      }
      case "GET /events": {
        req.resume();
        const query = new URL(req.url ?? "/", "http://control").searchParams;
        const after = queryInteger(query, "after");
        const waitMs = queryInteger(query, "wait");
        return this.events(res, after, Math.min(waitMs, MAX_EVENTS_WAIT_MS));
      }
      case "POST /upgrade": {
        const body = (await readJson(req)) as { workers?: unknown; accept?: unknown; drainTimeoutMs?: unknown } | null;
        if (!this.backend.upgrade) throw new HttpError(404, "this proxy runs without a supervisor: it cannot upgrade in place");
        const opts: UpgradeOptions = {};
        if (body?.workers !== undefined) {
          if (typeof body.workers !== "number" || !Number.isInteger(body.workers) || body.workers < 1 || body.workers > MAX_WORKERS) throw new HttpError(400, `workers must be an integer from 1 to ${MAX_WORKERS}`);
          opts.workers = body.workers;
        }
        if (body?.accept !== undefined) {
          if (body.accept !== "adaptive" && body.accept !== "all") throw new HttpError(400, `accept must be adaptive or all, got ${JSON.stringify(body.accept)}`);
          opts.accept = body.accept;
        }
        if (body?.drainTimeoutMs !== undefined) {
          if (typeof body.drainTimeoutMs !== "number" || !(body.drainTimeoutMs >= 0)) throw new HttpError(400, "drainTimeoutMs must be a number ≥ 0");
          opts.drainTimeoutMs = body.drainTimeoutMs;
        }
        return sendJson(res, 200, await this.backend.upgrade(opts));
      }
      case "GET /tls":
        req.resume();
        if (!this.backend.tls) throw new HttpError(404, "this proxy runs without a supervisor: it terminates no TLS");
        return sendJson(res, 200, await this.backend.tls());
      case "POST /tls/renew": {
        const body = (await readJson(req)) as { host?: unknown } | null;
        if (typeof body?.host !== "string" || body.host === "" || body.host.length > 253) throw new HttpError(400, "body must be {host: string}");
        if (!this.backend.renewCertificate) throw new HttpError(404, "this proxy runs without a supervisor: it gets no certificates");
        return sendJson(res, 200, await this.backend.renewCertificate(body.host.toLowerCase()));
      }
      default:
        req.resume();
        throw new HttpError(404, `no such control endpoint: ${key}`);
    }
  }

  /** Answers with the events after `after` as soon as there is one, or with none after waitMs. */
  private events(res: http.ServerResponse, after: number, waitMs: number): void {
    const log = this.backend.events;
    const ready = log.since(after);
    if (ready.events.length !== 0 || waitMs === 0) return sendJson(res, 200, ready);
    const answer = (): void => {
      clearTimeout(timer);
      unsubscribe();
      if (!res.destroyed && !res.writableEnded) sendJson(res, 200, log.since(after));
    };
    const timer = setTimeout(answer, waitMs);
    const unsubscribe = log.subscribe(answer);
    res.once("close", () => {
      clearTimeout(timer);
      unsubscribe();
    });
  }

  /** Persists first, then swaps: an acknowledged table is both live and on disk. */
  private applyTable(table: RouteTable): Promise<{ applied: boolean; version: number }> {
    const run = async (): Promise<{ applied: boolean; version: number }> => {
      const current = this.backend.table().version;
      if (table.version < current) return { applied: false, version: current };
      await writeFileAtomic(path.join(this.stateDir, TABLE_FILE), JSON.stringify(table));
      await this.backend.apply(table);
      return { applied: true, version: table.version };
    };
    const next = this.applying.then(run, run);
    this.applying = next.catch(noop);
    return next;
  }

  /**
   * A delta applies only to the exact version it names: any other (a delta lost before this one,
   * two sent out of order, a proxy restored from an older file) is refused, and nothing changes.
   * Persisted and swapped like a whole table, in the same queue.
   */
  private applyDelta(delta: RouteTableDelta): Promise<{ applied: boolean; version: number }> {
    const run = async (): Promise<{ applied: boolean; version: number }> => {
      const current = this.backend.table();
      if (current.version !== delta.base) return { applied: false, version: current.version };
      const merged = mergeDelta(current, delta);
      const problem = validateTable(merged);
      if (problem) throw new HttpError(400, `invalid route table delta: the table it makes is invalid: ${problem}`);
      await writeFileAtomic(path.join(this.stateDir, TABLE_FILE), JSON.stringify(merged));
      if (this.backend.applyDelta) await this.backend.applyDelta(delta, merged);
      else await this.backend.apply(merged);
      return { applied: true, version: merged.version };
    };
    const next = this.applying.then(run, run);
    this.applying = next.catch(noop);
    return next;
  }
}

/** More workers than this is a typo, not a machine. */
export const MAX_WORKERS = 256;

export class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** A non-negative integer query parameter, 0 when absent. */
function queryInteger(query: URLSearchParams, name: string): number {
  const text = query.get(name);
  if (text === null || text === "") return 0;
  if (!/^\d{1,15}$/.test(text)) throw new HttpError(400, `${name} must be a non-negative integer`);
  return Number(text);
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_CONTROL_BODY_BYTES) throw new HttpError(413, "body too large");
    chunks.push(chunk);
  }
  // No body at all is no settings at all (POST /upgrade); what needs fields says so.
  if (size === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new HttpError(400, "body is not valid JSON");
  }
}
