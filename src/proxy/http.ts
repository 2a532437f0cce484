// Small HTTP helpers shared by the data plane and the control API: hop-by-hop header sets, the
// client address as logs show it, and JSON answers on a response or a raw socket.

import http from "node:http";
import type net from "node:net";
// A Forwarded parameter value made of tchar (RFC 9110 §5.6.2) needs no quotes.
import { TOKEN } from "./http-syntax.js";


// RFC 9110 §7.6.1 connection-specific fields, plus Expect (the proxy answers 100-continue itself)
// and the forwarding fields, which the proxy always writes itself (building on a trusted peer's).
export const DROPPED_REQUEST_HEADERS = new Set([
  "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
  "proxy-authorization", "proxy-authenticate", "expect",
  "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "forwarded",
]);
export const DROPPED_RESPONSE_HEADERS = new Set([
  "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
  "proxy-authenticate",
]);

/**
 * Fields a request's Connection header may not remove: Host (the proxy routed on it) and
 * Content-Length (the body's framing, which the upstream must see as the proxy read it). The
 * forwarding fields are safe already: the proxy writes them after the client's fields.
 */
const PROTECTED_FROM_CONNECTION = new Set(["host", "content-length"]);

/** The field names a Connection header names (RFC 9110 §7.6.1), lowercase, but the protected ones; undefined when none. */
function namedByConnection(connection: string): Set<string> | undefined {
  // The usual values name no field: answered without splitting.
  if (connection.length <= 10) {
    const v = connection.toLowerCase();
    if (v === "keep-alive" || v === "close" || v === "upgrade") return undefined;
  }
  const named = new Set<string>();
  for (const token of connection.split(",")) {
    const t = token.trim().toLowerCase();
    if (t !== "" && t !== "close" && t !== "keep-alive" && !PROTECTED_FROM_CONNECTION.has(t)) named.add(t);
  }
  return named.size === 0 ? undefined : named;
}

/** Removes the field lines a Connection header names (RFC 9110 §7.6.1), except the protected ones: `lines` are "name: value\r\n" each. */
export function dropConnectionTokenLines(lines: string, connection: string): string {
  const named = namedByConnection(connection);
  if (named === undefined) return lines;
  let kept = "";
  for (let at = 0; at < lines.length; ) {
    const eol = lines.indexOf("\r\n", at) + 2;
    if (!named.has(lines.slice(at, lines.indexOf(":", at)).toLowerCase())) kept += lines.slice(at, eol);
    at = eol;
  }
  return kept;
}


/**
 * One RFC 7239 Forwarded element for a client the proxy saw: IPv6 nodes bracketed and quoted,
 * a host with a port (":" is no token character) quoted.
 */
export function forwardedElement(remote: string, host: string | undefined, proto: "http" | "https" = "http"): string {
  const node = remote === "" ? "unknown" : remote.includes(":") ? `"[${remote}]"` : remote;
  if (host === undefined) return `for=${node};proto=${proto}`;
  return `for=${node};proto=${proto};host=${TOKEN.test(host) ? host : `"${host.replace(/["\\]/g, "\\$&")}"`}`;
}

export function noop(): void {}

/** The client's IP as nginx's $remote_addr shows it: IPv4 clients of a dual-stack socket unmapped. */
export function clientAddress(socket: net.Socket): string {
  const address = socket.remoteAddress ?? "";
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

/** What sendJson writes to: Node's ServerResponse (the control API) or the data plane's ClientResponse. */
export interface JsonResponse {
  shouldKeepAlive: boolean;
  writeHead(status: number, fields: string[]): unknown;
  end(text: string): unknown;
}

/** `close`: the client's connection is closed after the answer (a request that cannot be trusted, or a body left unread). */
export function sendJson(res: JsonResponse, status: number, body: object, close = false): void {
  const text = JSON.stringify(body);
  if (close) res.shouldKeepAlive = false;
  res.writeHead(status, ["Content-Type", "application/json", "Content-Length", String(Buffer.byteLength(text))]);
  res.end(text);
}

/** How long a client gets to close its side after a final answer on a raw socket, before it is cut. */
export const LINGER_MS = 2_000;

/** A JSON answer on a connection that no longer speaks HTTP through Node (an upgrade, a parse error). */
export function rawJsonResponse(status: number, body: object): string {
  const text = JSON.stringify(body);
  const reason = http.STATUS_CODES[status] ?? "";
  return `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`;
}

/**
 * Answers an upgrade request the proxy will not tunnel and closes the connection: what the client
 * sends meanwhile is read and dropped (never forwarded), and a client that does not close its
 * side within LINGER_MS is cut.
 */
export function rejectUpgrade(client: net.Socket, status: number, body: object): void {
  endRaw(client, rawJsonResponse(status, body));
}

/** Ends a raw client connection after `last`, reading and dropping whatever still comes. */
export function endRaw(client: net.Socket, last?: string): void {
  client.resume();
  client.setTimeout(LINGER_MS, () => client.destroy());
  if (last === undefined) client.end();
  else client.end(last);
}


export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

