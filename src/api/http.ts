// The API's HTTP plumbing: query parameters, JSON answers and error statuses (bodies: util/http-body.ts).
import type http from "node:http";
import { TurquoiseError, errorMessage, type ErrorCode } from "../errors.js";
import { BodyTooLarge } from "../util/http-body.js";

const HTTP_STATUS: Partial<Record<ErrorCode, number>> = {
  USAGE: 400, SPEC_INVALID: 400, NOT_FOUND: 404, LOCKED: 409, CONFLICT: 409, UNAUTHORIZED: 401, FORBIDDEN: 403, DEPLOY_FAILED: 422,
  PLAN_REFUSED: 422, MIGRATION_FAILED: 422, RUNTIME_UNAVAILABLE: 503, LOCK_LOST: 409, STATE_UNAVAILABLE: 503, NOT_LEADER: 421, LIMIT_REACHED: 429,
};

export function parseJson(text: string): Record<string, unknown> {
  if (!text.trim()) return {};
  try {
    const v = JSON.parse(text) as unknown;
    if (v && typeof v === "object" && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch { /* reported below */ }
  throw new TurquoiseError("USAGE", "request body must be a JSON object");
}

/** An integer query parameter within [min, max], or a usage error naming it. */
export function intParam(query: URLSearchParams, name: string, fallback: number, min: number, max: number): number {
  const text = query.get(name);
  if (text === null) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) throw new TurquoiseError("USAGE", `?${name} must be an integer from ${min} to ${max}, got "${text}"`);
  return n;
}

export function errorBody(e: unknown): Record<string, unknown> {
  return e instanceof TurquoiseError ? e.toJSON() : { code: "INTERNAL", message: errorMessage(e) };
}

export function sendError(res: http.ServerResponse, e: unknown): void {
  if (e instanceof BodyTooLarge) return send(res, 413, { error: errorBody(e) }, { connection: "close" });
  const status = e instanceof TurquoiseError ? (HTTP_STATUS[e.code] ?? 500) : 500;
  send(res, status, { error: errorBody(e) });
}

/**
 * On every JSON answer: an error can echo what a caller put in a path (a KV key, a service name),
 * so a browser opening one must never sniff it as a page, run anything in it or frame it.
 */
export const JSON_HEADERS: Readonly<Record<string, string>> = {
  "content-type": "application/json",
  "x-content-type-options": "nosniff",
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
};

export function send(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const json = JSON.stringify(body);
  res.writeHead(status, { ...headers, ...JSON_HEADERS, "content-length": Buffer.byteLength(json) });
  res.end(json);
}
