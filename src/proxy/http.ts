// Small HTTP helpers shared by the data plane and the control API: hop-by-hop header sets, the
// client address as logs show it, and JSON answers on a response or a raw socket.

import http from "node:http";
import type net from "node:net";


// RFC 9110 §7.6.1 connection-specific fields, plus Expect (the proxy already answered 100-continue)
// and the X-Forwarded-* fields the proxy sets itself.
export const DROPPED_REQUEST_HEADERS = new Set([
  "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
  "proxy-authorization", "proxy-authenticate", "expect",
  "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
]);
export const DROPPED_RESPONSE_HEADERS = new Set([
  "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
  "proxy-authenticate",
]);
// A WebSocket handshake must keep Connection and Upgrade.
export const DROPPED_UPGRADE_HEADERS = new Set([
  "keep-alive", "proxy-connection", "te", "trailer", "proxy-authorization",
  "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
]);


/** Removes the fields a Connection header names (RFC 9110 §7.6.1). */
export function dropConnectionTokens(headers: string[], connection: string): void {
  const named = new Set<string>();
  for (const token of connection.split(",")) {
    const t = token.trim().toLowerCase();
    if (t !== "" && t !== "close" && t !== "keep-alive") named.add(t);
  }
  if (named.size === 0) return;
  let w = 0;
  for (let r = 0; r < headers.length; r += 2) {
    if (named.has(headers[r]!.toLowerCase())) continue;
    headers[w++] = headers[r]!;
    headers[w++] = headers[r + 1]!;
  }
  headers.length = w;
}

export function noop(): void {}

/** The client's IP as nginx's $remote_addr shows it: IPv4 clients of a dual-stack socket unmapped. */
export function clientAddress(socket: net.Socket): string {
  const address = socket.remoteAddress ?? "";
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

export function sendJson(res: http.ServerResponse, status: number, body: object): void {
  const text = JSON.stringify(body);
  res.writeHead(status, ["Content-Type", "application/json", "Content-Length", String(Buffer.byteLength(text))]);
  res.end(text);
}

export function rejectUpgrade(client: net.Socket, status: number, body: object): void {
  const text = JSON.stringify(body);
  const reason = http.STATUS_CODES[status] ?? "";
  client.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`);
}


export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

