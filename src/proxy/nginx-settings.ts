// How the route table's timeouts, limits and trusted peers become nginx directives, and which
// forwarding fields nginx sets: one home for the mapping that docs/nginx.md tabulates.
// Pure: nginx-template.ts places these lines; nginx -t checks them before any reload.

import type { ProxySettings, Route } from "./contract.js";
import { routeMaxBodyBytes, routeTimeouts } from "./settings.js";

/**
 * Carries the client's address from the edge to the router (the realip module reads it from the
 * unix socket only). The edge overwrites whatever a client sent; the router never passes it on.
 */
export const PEER_HEADER = "X-Turquoise-Peer";
/** Where a too-large request head is answered; a URI, since a 414 has no parsed URI to keep. */
export const HEAD_TOO_LARGE_PATH = "/__turquoise/head-too-large";
/** The edge's limit_conn zone; the router without the edge names one per configuration (see nginx-template.ts). */
export const CONNECTION_ZONE = "turquoise_connections";
/** nginx refuses large header buffers smaller than connection_pool_size (512 bytes on 64-bit). */
export const MIN_LARGE_HEADER_BUFFER = 512;
/** nginx's first read buffer for a request head; a longer head moves to the large buffer. */
export const CLIENT_HEADER_BUFFER = 1_024;
/** Shared memory per pool, so that every worker counts the same max_conns. */
export const UPSTREAM_ZONE_SIZE = "64k";
/** Never fewer worker connections than this: idle upstream keep-alive connections take slots too. */
export const MIN_WORKER_CONNECTIONS = 1_024;

function ms(n: number): string {
  return `${n}ms`;
}

/**
 * worker_connections for one worker. nginx counts a proxied client twice (its own connection and
 * the one to the upstream) plus idle upstream keep-alive connections, and refuses connections at
 * accept only per worker: so this is a resource bound sized to hold maxConnections busy clients,
 * and limit_conn (below) is the exact bound across workers.
 */
export function workerConnections(settings: ProxySettings): number {
  return Math.max(MIN_WORKER_CONNECTIONS, 2 * settings.limits.maxConnections + 256);
}

/** http-level definitions for a tier that faces clients: the connection counter, keyed on one constant. */
export function clientFacingHttp(zone: string): string[] {
  return [
    "geo $turquoise_connection_key {",
    "    default all;",
    "}",
    `limit_conn_zone $turquoise_connection_key zone=${zone}:1m;`,
  ];
}

/**
 * server-level bounds on clients. These sit in every server block (not at http level) so that
 * they win over the same directives a user's template sets around {{http}}.
 */
export function clientFacingServer(settings: ProxySettings, zone: string): string[] {
  const { timeouts, limits } = settings;
  return [
    // nginx's timer runs from the first byte to the end of the head, as clientHeaderMs; on expiry it closes without a 408.
    `client_header_timeout ${ms(timeouts.clientHeaderMs)};`,
    `keepalive_timeout ${ms(timeouts.clientIdleMs)};`,
    ...headerBuffers(limits.maxHeaderBytes),
    // Requests in flight on all connections together; idle keep-alive connections are not counted.
    `limit_conn ${zone} ${limits.maxConnections};`,
    "limit_conn_status 503;",
  ];
}

/**
 * One head may take the first buffer plus one large buffer of maxHeaderBytes: nginx's bound is
 * maxHeaderBytes to maxHeaderBytes + 1 KiB, and no single line may exceed maxHeaderBytes.
 */
function headerBuffers(maxHeaderBytes: number): string[] {
  return [
    `client_header_buffer_size ${Math.min(CLIENT_HEADER_BUFFER, maxHeaderBytes)};`,
    `large_client_header_buffers 1 ${Math.max(MIN_LARGE_HEADER_BUFFER, maxHeaderBytes)};`,
  ];
}

/** The router behind the edge takes any head the edge let through, plus the fields the edge adds. */
export function behindEdgeServer(settings: ProxySettings): string[] {
  return [`large_client_header_buffers 4 ${Math.max(8_192, settings.limits.maxHeaderBytes + CLIENT_HEADER_BUFFER)};`];
}

/**
 * http-level maps deciding the forwarding fields. Trust is decided on the peer's address with
 * `geo`, not by letting the realip module rewrite $remote_addr from X-Forwarded-For: the router
 * behind the edge already spends realip on the edge's peer header, and a rewritten $remote_addr
 * would make $proxy_add_x_forwarded_for append the client's claim instead of the peer.
 */
export function forwardingMaps(trustedProxies: readonly string[]): string[] {
  return [
    "geo $remote_addr $turquoise_trusted {",
    "    default 0;",
    ...trustedProxies.map((cidr) => `    ${cidr} 1;`),
    "}",
    // A trusted peer's chain is kept and the peer appended; anyone else's is replaced by the peer.
    "map $turquoise_trusted $turquoise_forwarded_for {",
    "    1 $proxy_add_x_forwarded_for;",
    "    default $remote_addr;",
    "}",
    "map $turquoise_trusted$http_x_real_ip $turquoise_real_ip {",
    '    "~^1(?<turquoise_client_real_ip>.+)$" $turquoise_client_real_ip;',
    "    default $remote_addr;",
    "}",
    "map $turquoise_trusted$http_forwarded $turquoise_forwarded_before {",
    '    "~^1(?<turquoise_client_forwarded>.+)$" "$turquoise_client_forwarded, ";',
    '    default "";',
    "}",
    // RFC 7239 quotes an IPv6 node in brackets.
    "map $remote_addr $turquoise_forwarded_node {",
    '    "~:" "\\"[$remote_addr]\\"";',
    "    default $remote_addr;",
    "}",
  ];
}

/** server-level proxy_set_header lines; locations set none, so that all of them inherit these. */
export function forwardingHeaders(): string[] {
  return [
    "Host $turquoise_host",
    "X-Forwarded-For $turquoise_forwarded_for",
    "X-Forwarded-Proto $scheme",
    "X-Forwarded-Host $turquoise_host",
    "X-Real-IP $turquoise_real_ip",
    'Forwarded "${turquoise_forwarded_before}for=${turquoise_forwarded_node};host=\\"${turquoise_host}\\";proto=${scheme}"',
    `${PEER_HEADER} ""`,
    // nginx already drops Connection, Keep-Alive, TE and Upgrade; this one is hop-by-hop in practice too.
    'Proxy-Connection ""',
    "Upgrade $http_upgrade",
    "Connection $turquoise_connection",
  ].map((h) => `proxy_set_header ${h};`);
}

/** A route's location: its upstream waits and body limit, its own or the table's. */
export function routeDirectives(route: Route, settings: ProxySettings): string[] {
  const t = routeTimeouts(route, settings);
  return [
    `client_max_body_size ${routeMaxBodyBytes(route, settings)};`,
    `proxy_connect_timeout ${ms(t.upstreamConnectMs)};`,
    // One read timeout for the head and every later read: upstreamResponseMs (capability separateHeadAndIdleTimeouts: false).
    `proxy_read_timeout ${ms(t.upstreamResponseMs)};`,
    // A request body stalls on either side: nginx times its writes upstream and its reads from the client apart.
    `proxy_send_timeout ${ms(t.upstreamIdleMs)};`,
    `client_body_timeout ${ms(t.upstreamIdleMs)};`,
    // A connect timeout moves on to the next upstream, but a request that already waited out
    // upstreamResponseMs on one is answered 504 rather than sent to another for as long again.
    `proxy_next_upstream_timeout ${ms(t.upstreamResponseMs)};`,
  ];
}

/** The same route's WebSocket (upgrade) location: nginx times a tunnel with its read and send timeouts. */
export function tunnelDirectives(route: Route, settings: ProxySettings): string[] {
  const t = routeTimeouts(route, settings);
  return [`proxy_connect_timeout ${ms(t.upstreamConnectMs)};`, `proxy_read_timeout ${ms(t.tunnelIdleMs)};`, `proxy_send_timeout ${ms(t.tunnelIdleMs)};`];
}

/** Retry-After for a request refused because every upstream is at its max_conns: the queue wait, in whole seconds. */
export function retryAfterSeconds(settings: ProxySettings): number {
  return Math.max(1, Math.ceil(settings.limits.upstreamQueueMs / 1_000));
}
