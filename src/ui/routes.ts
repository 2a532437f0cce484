// The dashboard's routes on the agent's API address: its files under /ui, and sign-in and sign-out
// at /ui/session. Every answer carries a strict Content-Security-Policy (scripts from /ui only, no
// inline script), refuses framing and sniffing. The page's API calls go to /v1 with the session cookie.
import type http from "node:http";
import type { TLSSocket } from "node:tls";
import { authenticate, type Credentials } from "../auth/scopes.js";
import { errorMessage } from "../errors.js";
import { BodyTooLarge, readBody } from "../util/http-body.js";
import { loadAssets, type Asset } from "./assets.js";
import { clearedCookie, fromOwnOrigin, type Session, type Sessions } from "./sessions.js";

export const UI_HEADERS: Readonly<Record<string, string>> = {
  "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  "x-frame-options": "DENY",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
};

/** The longest sign-in body: a token is 64 characters; anything much longer is not one. */
const MAX_SIGN_IN_BYTES = 4_096;

export interface UiDeps {
  sessions: Sessions;
  credentials: () => Credentials;
}

/** Answers a /ui request and returns true, or returns false for a path that is not the dashboard's. */
export function handleUi(req: http.IncomingMessage, res: http.ServerResponse, pathname: string, deps: UiDeps): boolean {
  if (pathname !== "/ui" && !pathname.startsWith("/ui/")) return false;
  if (pathname === "/ui") {
    res.writeHead(308, { ...UI_HEADERS, location: "/ui/", "content-length": 0 });
    res.end();
    return true;
  }
  if (pathname === "/ui/session") {
    void session(req, res, deps).catch((e: unknown) => reply(res, 500, { error: { code: "INTERNAL", message: errorMessage(e) } }));
    return true;
  }
  if (req.method !== "GET" && req.method !== "HEAD") {
    reply(res, 405, { error: { code: "USAGE", message: `the dashboard's files are read with GET, not ${req.method}` } }, { allow: "GET, HEAD" });
    return true;
  }
  let asset: Asset | undefined;
  try {
    asset = assets().get(pathname);
  } catch (e) {
    reply(res, 500, { error: { code: "INTERNAL", message: `the dashboard's files cannot be read: ${errorMessage(e)}` } });
    return true;
  }
  if (!asset) {
    reply(res, 404, { error: { code: "NOT_FOUND", message: `no dashboard file ${pathname}` } });
    return true;
  }
  res.writeHead(200, { ...UI_HEADERS, "content-type": asset.type, "content-length": asset.body.length, "cache-control": "no-cache" });
  res.end(req.method === "HEAD" ? undefined : asset.body);
  return true;
}

let cached: Map<string, Asset> | undefined;
function assets(): Map<string, Asset> {
  cached ??= loadAssets();
  return cached;
}

/** GET: who is signed in (and the CSRF token the page sends back); POST: sign in with a token; DELETE: sign out. */
async function session(req: http.IncomingMessage, res: http.ServerResponse, deps: UiDeps): Promise<void> {
  const secure = (req.socket as Partial<TLSSocket>).encrypted === true;
  const current = deps.sessions.fromCookie(req.headers.cookie);
  if (req.method === "GET") {
    if (!current) return reply(res, 401, { error: { code: "UNAUTHORIZED", message: "not signed in" } });
    return reply(res, 200, describe(current));
  }
  if (!fromOwnOrigin(req.headers)) return reply(res, 403, { error: { code: "FORBIDDEN", message: `a request from ${String(req.headers.origin).slice(0, 100)} is not from the dashboard's own origin` } });
  if (req.method === "DELETE") {
    if (!current) return reply(res, 200, { signedOut: true }, { "set-cookie": clearedCookie(secure) });
    if (!deps.sessions.csrfMatches(current, req.headers["x-csrf-token"])) return reply(res, 403, { error: { code: "FORBIDDEN", message: "sign-out needs the session's X-CSRF-Token header" } });
    deps.sessions.end(current);
    return reply(res, 200, { signedOut: true }, { "set-cookie": clearedCookie(secure) });
  }
  if (req.method !== "POST") return reply(res, 405, { error: { code: "USAGE", message: "sign in with POST, sign out with DELETE" } }, { allow: "GET, POST, DELETE" });
  // A form on another site can post text/plain or a form, never JSON without a CORS preflight we do not answer.
  if (!/^application\/json\b/.test(req.headers["content-type"] ?? "")) return reply(res, 415, { error: { code: "USAGE", message: "sign in with a JSON body {\"token\": \"...\"}" } });
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > MAX_SIGN_IN_BYTES) return tooLarge(res);
  let token: unknown;
  try {
    const text = await readBody(req);
    if (text.length > MAX_SIGN_IN_BYTES) return tooLarge(res);
    token = (JSON.parse(text) as { token?: unknown } | null)?.token;
  } catch (e) {
    // A chunked body declares no length: it is refused when it grows past the API's limit, and that is still a 413.
    if (e instanceof BodyTooLarge) return tooLarge(res);
    return reply(res, 400, { error: { code: "USAGE", message: "sign in with a JSON body {\"token\": \"...\"}" } }, { connection: "close" });
  }
  if (typeof token !== "string" || token.trim() === "") return reply(res, 400, { error: { code: "USAGE", message: "body.token must be the admin token or a read token" } });
  const scope = authenticate(`Bearer ${token.trim()}`, deps.credentials());
  if (!scope) return reply(res, 401, { error: { code: "UNAUTHORIZED", message: "wrong or revoked token: use the admin token (the state dir's token file) or a read token (turquoise token create --read)" } });
  if (scope.kind !== "admin" && scope.kind !== "read") {
    return reply(res, 403, { error: { code: "FORBIDDEN", message: `a ${scope.kind} token cannot sign in to the dashboard: use the admin token or a read token (turquoise token create --read)` } });
  }
  if (current) deps.sessions.end(current);
  const created = deps.sessions.create(scope);
  return reply(res, 200, describe(created), { "set-cookie": deps.sessions.cookie(created, secure) });
}

/** A sign-in body over MAX_SIGN_IN_BYTES, declared, sent or chunked: 413, and the connection closes so the rest is never read. */
function tooLarge(res: http.ServerResponse): void {
  reply(res, 413, { error: { code: "USAGE", message: `a sign-in body holds at most ${MAX_SIGN_IN_BYTES} bytes` } }, { connection: "close" });
}

function describe(s: Session): Record<string, unknown> {
  return { scope: s.scope.kind, ...(s.scope.kind === "read" ? { token: { id: s.scope.id, name: s.scope.name } } : {}), csrf: s.csrf, expiresAt: s.expiresAt };
}

function reply(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const json = JSON.stringify(body);
  res.writeHead(status, { ...UI_HEADERS, ...headers, "cache-control": "no-store", "content-type": "application/json", "content-length": Buffer.byteLength(json) });
  res.end(json);
}
