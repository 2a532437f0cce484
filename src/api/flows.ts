// Deploys and rollbacks over the API: the body's release options, then the flow's progress
// streamed as NDJSON, one event a line, ending with a result line.
import type http from "node:http";
import type { ApiHost } from "./host.js";
import type { Scope } from "../auth/scopes.js";
import { TurquoiseError, errorMessage } from "../errors.js";
import type { SchemaRange } from "../plan/planner.js";
import { checkReleaseName } from "../deploy/release.js";
import { parseSchemaRange } from "../plan/range.js";
import { errorBody, parseJson } from "./http.js";
import { readBody } from "../util/http-body.js";
import { formatDuration, parseDuration } from "../util/duration.js";

/** How long a queued deploy waits for the lock when the client names no limit. */
export const DEFAULT_WAIT_TIMEOUT_MS = 10 * 60_000;
/** The longest a client may ask a deploy to queue. */
export const MAX_WAIT_TIMEOUT_MS = 60 * 60_000;

/** body.wait_timeout ("30s", "10m"), within [1ms, MAX_WAIT_TIMEOUT_MS]. */
export function waitTimeout(body: Record<string, unknown>): number {
  const v = body.wait_timeout;
  if (v === undefined || v === null) return DEFAULT_WAIT_TIMEOUT_MS;
  let ms: number;
  try {
    if (typeof v !== "string") throw new Error("it must be a string");
    ms = parseDuration(v);
  } catch (e) {
    throw new TurquoiseError("USAGE", `body.wait_timeout: ${errorMessage(e)}`);
  }
  if (ms < 1 || ms > MAX_WAIT_TIMEOUT_MS) throw new TurquoiseError("USAGE", `body.wait_timeout must be from 1ms to ${formatDuration(MAX_WAIT_TIMEOUT_MS)}, got "${v}"`);
  return ms;
}

/** release, via, schema and via_schema from a deploy or plan body; names what is wrong. */
export function releaseOptions(body: Record<string, unknown>, needRelease: boolean): { release?: string; via?: string; schema?: SchemaRange; viaSchema?: SchemaRange } {
  const name = (field: string): string | undefined => {
    const v = body[field];
    if (v === undefined || v === null) return undefined;
    return checkReleaseName(v, `body.${field}`);
  };
  const range = (field: string): SchemaRange | undefined => (typeof body[field] === "string" ? parseSchemaRange(body[field] as string) : undefined);
  const release = name("release");
  if (needRelease && !release) throw new TurquoiseError("USAGE", "body.release is required");
  const via = name("via");
  const schema = range("schema");
  const viaSchema = range("via_schema");
  return { ...(release ? { release } : {}), ...(via ? { via } : {}), ...(schema ? { schema } : {}), ...(viaSchema ? { viaSchema } : {}) };
}

/** The most steps a canary may have: each is a window of real traffic. */
export const MAX_CANARY_STEPS = 20;

/** hold, canary ([5, 25, 50] or "5,25,50") and step_interval from a deploy body; names what is wrong. */
export function stagingOptions(body: Record<string, unknown>): { hold?: boolean; canary?: { steps: number[]; stepIntervalMs?: number } } {
  const out: { hold?: boolean; canary?: { steps: number[]; stepIntervalMs?: number } } = {};
  if (body.hold !== undefined && body.hold !== null) {
    if (typeof body.hold !== "boolean") throw new TurquoiseError("USAGE", "body.hold must be true or false");
    if (body.hold) out.hold = true;
  }
  if (body.canary !== undefined && body.canary !== null) {
    const raw = typeof body.canary === "string" ? body.canary.split(",").map((x) => x.trim()) : body.canary;
    if (!Array.isArray(raw) || raw.length === 0 || raw.length > MAX_CANARY_STEPS) throw new TurquoiseError("USAGE", `body.canary must be 1 to ${MAX_CANARY_STEPS} percentages, e.g. "5,25,50,100"`);
    const steps = raw.map((x) => (typeof x === "string" && /^\d{1,3}$/.test(x) ? Number(x) : x));
    for (const p of steps) if (typeof p !== "number" || !Number.isInteger(p) || p < 0 || p > 100) throw new TurquoiseError("USAGE", `body.canary: ${JSON.stringify(p).slice(0, 40)} is not a percentage from 0 to 100`);
    const nums = steps as number[];
    for (let i = 1; i < nums.length; i++) if (nums[i]! <= nums[i - 1]!) throw new TurquoiseError("USAGE", `body.canary: steps must increase, got ${nums[i - 1]} then ${nums[i]}`);
    out.canary = { steps: nums.filter((p) => p > 0) };
  }
  if (body.step_interval !== undefined && body.step_interval !== null) {
    let ms: number;
    try {
      if (typeof body.step_interval !== "string") throw new Error("it must be a string");
      ms = parseDuration(body.step_interval);
    } catch (e) {
      throw new TurquoiseError("USAGE", `body.step_interval: ${errorMessage(e)}`);
    }
    if (ms < 1 || ms > MAX_WAIT_TIMEOUT_MS) throw new TurquoiseError("USAGE", `body.step_interval must be from 1ms to ${formatDuration(MAX_WAIT_TIMEOUT_MS)}, got "${body.step_interval}"`);
    if (!out.canary) throw new TurquoiseError("USAGE", "body.step_interval goes with body.canary");
    out.canary.stepIntervalMs = ms;
  }
  if (out.hold && out.canary) throw new TurquoiseError("USAGE", "hold and canary do not go together on deploy: hold, then `turquoise promote --canary`");
  return out;
}

/** Who a flow was started by, as history records it: a deploy token is named, whatever the body says. */
function actorOf(body: Record<string, unknown>, scope: Scope): string {
  const given = typeof body.actor === "string" && body.actor ? body.actor.slice(0, 200) : "api";
  return scope.kind === "deploy" ? `${given} (deploy token ${scope.id}${scope.name ? ` ${scope.name}` : ""})` : given;
}

export async function runFlow(kind: "deploy" | "rollback" | "promote", agent: ApiHost, scope: Scope, service: string, req: http.IncomingMessage, res: http.ServerResponse): Promise<undefined> {
  const body = parseJson(await readBody(req));
  agent.orchestrator.service(service);
  const opts = kind === "promote" ? {} : releaseOptions(body, kind === "deploy");
  const staging = kind === "rollback" ? {} : stagingOptions(body);
  if (kind === "promote" && staging.hold) throw new TurquoiseError("USAGE", "body.hold: a promote does not hold");
  const waitTimeoutMs = waitTimeout(body);
  // A client that goes away while its deploy is queued takes the deploy with it; one that runs carries on.
  const gone = new AbortController();
  res.on("close", () => { if (!res.writableFinished) gone.abort(); });
  res.writeHead(200, { "content-type": "application/x-ndjson", "cache-control": "no-store" });
  const line = (o: unknown) => res.write(JSON.stringify(o) + "\n");
  const common = { service, actor: actorOf(body, scope), wait: body.wait === true, waitTimeoutMs, signal: gone.signal, onProgress: line };
  try {
    const out = kind === "deploy"
      ? await agent.orchestrator.deploy({ ...common, ...opts, ...staging, release: opts.release! })
      : kind === "promote"
        ? await agent.orchestrator.promote({ ...common, ...staging })
        : await agent.orchestrator.rollback(common);
    line({ type: "result", ok: true, history: out.history });
  } catch (e) {
    line({ type: "result", ok: false, error: errorBody(e) });
  }
  res.end();
  return undefined;
}

/** POST /v1/services/<name>/abort: stops the held release. */
export async function abortFlow(agent: ApiHost, scope: Scope, service: string, req: http.IncomingMessage): Promise<Record<string, unknown>> {
  const body = parseJson(await readBody(req));
  return { ...(await agent.orchestrator.abort(service, actorOf(body, scope))) };
}
