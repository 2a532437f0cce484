// The proxy's control API on loopback, behind the agent's bearer token: the route table (persisted,
// then swapped), drains, upstream health marks, stats and the upstream event long-poll.

import http from "node:http";
import path from "node:path";
import { tokenMatches } from "../auth/token.js";
import { writeFileAtomic } from "../util/fs.js";
import type { RouteTable } from "./contract.js";
import type { DataPlane } from "./data-plane.js";
import { noop, sendJson } from "./http.js";
import { validateTable } from "./table.js";

export const TABLE_FILE = "proxy-table.json";
const MAX_CONTROL_BODY_BYTES = 16 * 1024 * 1024;
/** The longest a GET /events long-poll waits for an event. */
export const MAX_EVENTS_WAIT_MS = 30_000;

export class ControlPlane {
  private readonly plane: DataPlane;
  private readonly stateDir: string;
  private readonly token: string;
  /** Table writes run one at a time so the file and the live table never disagree. */
  private applying: Promise<unknown> = Promise.resolve();

  constructor(plane: DataPlane, stateDir: string, token: string) {
    this.plane = plane;
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
        return sendJson(res, 200, { ok: true, pid: process.pid, tableVersion: this.plane.router.current.version });
      case "GET /stats":
        req.resume();
        return sendJson(res, 200, this.plane.stats());
      case "GET /table":
        req.resume();
        return sendJson(res, 200, this.plane.router.current.source);
      case "PUT /table": {
        const table = await readJson(req);
        const problem = validateTable(table);
        if (problem) throw new HttpError(400, `invalid route table: ${problem}`);
        const result = await this.applyTable(table as RouteTable);
        return sendJson(res, 200, result);
      }
      case "POST /drain": {
        const body = (await readJson(req)) as { poolId?: unknown; timeoutMs?: unknown };
        if (typeof body?.poolId !== "string") throw new HttpError(400, "poolId must be a string");
        if (typeof body.timeoutMs !== "number" || !(body.timeoutMs >= 0)) throw new HttpError(400, "timeoutMs must be a number ≥ 0");
        return sendJson(res, 200, await this.plane.drain(body.poolId, body.timeoutMs));
      }
      case "POST /upstreams/health": {
        const body = (await readJson(req)) as { id?: unknown; healthy?: unknown };
        if (typeof body?.id !== "string" || typeof body.healthy !== "boolean") throw new HttpError(400, "body must be {id: string, healthy: boolean}");
        // Healthy clears any mark, the proxy's own included: only the agent's check brings an upstream back.
        if (body.healthy) this.plane.router.markUp(body.id);
        else this.plane.router.markDown(body.id, "marked");
        return sendJson(res, 200, { id: body.id, healthy: body.healthy });
      }
      case "GET /events": {
        req.resume();
        const query = new URL(req.url ?? "/", "http://control").searchParams;
        const after = queryInteger(query, "after");
        const waitMs = queryInteger(query, "wait");
        return this.events(res, after, Math.min(waitMs, MAX_EVENTS_WAIT_MS));
      }
      default:
        req.resume();
        throw new HttpError(404, `no such control endpoint: ${key}`);
    }
  }

  /** Answers with the events after `after` as soon as there is one, or with none after waitMs. */
  private events(res: http.ServerResponse, after: number, waitMs: number): void {
    const log = this.plane.router.events;
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
      const router = this.plane.router;
      if (table.version < router.current.version) return { applied: false, version: router.current.version };
      await writeFileAtomic(path.join(this.stateDir, TABLE_FILE), JSON.stringify(table));
      this.plane.apply(table);
      return { applied: true, version: table.version };
    };
    const next = this.applying.then(run, run);
    this.applying = next.catch(noop);
    return next;
  }
}

class HttpError extends Error {
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
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new HttpError(400, "body is not valid JSON");
  }
}
