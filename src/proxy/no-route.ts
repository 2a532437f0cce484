// The proxy's 404 when no route matches: the routes it serves, for a client on this machine only.
// Anyone else gets what it sent back and nothing of the route table, which names hosts and paths
// an operator may not publish.
import type net from "node:net";
import type { Route } from "./contract.js";
import { clientAddress } from "./http.js";

/** A table with more routes than this is shown in part: the 404 stays small. */
export const NO_ROUTE_LISTED_MAX = 20;

/** What the scan of the request head saw of forwarding fields: any of them means a proxy in between. */
export interface ForwardedBy {
  xForwardedFor: string | undefined;
  xRealIp: string | undefined;
  forwarded: string | undefined;
}

/**
 * The 404 body. The routes are listed only when the peer is a loopback address and the request
 * carries no forwarding field: a proxy on this machine in front of ours (nginx, a tunnel) connects
 * from loopback too, on behalf of someone who is not.
 */
export function noRouteBody(routes: readonly Route[], host: string | undefined, path: string, socket: net.Socket, head: ForwardedBy): Record<string, unknown> {
  const body: Record<string, unknown> = { error: "no route", host: host ?? null, path };
  if (!isLoopback(clientAddress(socket)) || head.xForwardedFor !== undefined || head.xRealIp !== undefined || head.forwarded !== undefined) return body;
  const shown = routes.slice(0, NO_ROUTE_LISTED_MAX).map(describeRoute);
  body.routes = routes.length > shown.length ? [...shown, `... and ${routes.length - shown.length} more`] : shown;
  body.hint = routes.length === 0
    ? "this proxy has no routes yet: deploy a release (turquoise deploy <service> --release <release>)"
    : `no route matches host ${host ?? "(none)"} and path ${path}; the routes are <host or *><path prefix>, and a route with a host matches only requests whose Host header names it (curl -H 'Host: <host>' ...)`;
  return body;
}

/** As `turquoise status` shows a route: `<host or *><path prefix>`, then its service. */
function describeRoute(r: Route): string {
  return `${r.host || "*"}${r.pathPrefix || "/"} (${r.service})`;
}

/** 127.0.0.0/8 and ::1, IPv4-mapped or not (clientAddress unmaps a dual-stack socket's IPv4 peer). */
export function isLoopback(address: string): boolean {
  return address === "::1" || address.startsWith("127.") || address.startsWith("::ffff:127.");
}
