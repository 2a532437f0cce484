// Renders Turquoise's route table into nginx configuration: the router (one upstream block per
// pool, one server block per host, a loopback control server), from a template the user may
// replace, and the edge, the front that holds the client connections, which only the table's
// client-facing settings change. Everything here is pure: the driver (nginx.ts) writes, tests and
// loads what it returns; nginx-settings.ts says which directive each setting becomes.

import { createHash } from "node:crypto";
import net from "node:net";
import path from "node:path";
import { TurquoiseError } from "../errors.js";
import type { ProxySettings, Route, RouteTable, Upstream } from "./contract.js";
import {
  CONNECTION_ZONE,
  HEAD_TOO_LARGE_PATH,
  PEER_HEADER,
  UPSTREAM_ZONE_SIZE,
  behindEdgeServer,
  clientFacingHttp,
  clientFacingServer,
  forwardingHeaders,
  forwardingMaps,
  retryAfterSeconds,
  routeDirectives,
  tunnelDirectives,
  workerConnections,
} from "./nginx-settings.js";
import { tableSettings } from "./settings.js";
import { normalizeHost, normalizePrefix, validateTable } from "./table.js";

/**
 * The router's nginx.conf. `{{main}}` (pid file, error log, worker user) and `{{http}}` (upstreams,
 * servers, control server) are required once each; `{{version}}`, `{{prefix}}` and
 * `{{worker_connections}}` (from the table's maxConnections) may appear anywhere. Anything else is
 * plain nginx configuration and is kept as written.
 */
export const DEFAULT_NGINX_TEMPLATE = `# Turquoise renders this template into nginx.conf on every route change.
# {{main}} and {{http}} are required, once each. See docs/nginx.md.
worker_processes auto;
{{main}}

events {
    worker_connections {{worker_connections}};
}

http {
    access_log off;
    server_tokens off;

    {{http}}
}
`;

export const CONTROL_VERSION_PATH = "/__turquoise/version";
export const CONTROL_STATUS_PATH = "/__turquoise/status";
/** Idle upstream connections are closed before a Node app's 5 s keep-alive default closes them. */
export const UPSTREAM_KEEPALIVE_TIMEOUT_S = 4;
export const UPSTREAM_KEEPALIVE_CONNECTIONS = 32;
export const EDGE_KEEPALIVE_CONNECTIONS = 64;

/** Stands for the router's limit_conn zone until the configuration's id names it. */
const ROUTER_CONNECTION_ZONE = "__turquoise_connection_zone__";
const REQUIRED_PLACEHOLDERS = ["main", "http"] as const;
const PLACEHOLDERS = ["main", "http", "version", "prefix", "worker_connections"] as const;
const PLACEHOLDER = /\{\{\s*([^{}]*?)\s*\}\}/g;

/** The files of one nginx prefix directory; the driver and the renderer agree on them here. */
export interface NginxLayout {
  /** Absolute nginx prefix (`nginx -p`). */
  prefix: string;
  routerConf: string;
  routerPid: string;
  routerErrorLog: string;
  /** The router's public data socket when an edge is in front of it. */
  routerSocket: string;
  controlSocket: string;
  edgeConf: string;
  edgePid: string;
  edgeErrorLog: string;
  edgeControlSocket: string;
  tempDir: string;
}

export function nginxLayout(prefix: string): NginxLayout {
  const p = path.resolve(prefix);
  return {
    prefix: p,
    routerConf: path.join(p, "nginx.conf"),
    routerPid: path.join(p, "router.pid"),
    routerErrorLog: path.join(p, "logs", "error.log"),
    routerSocket: path.join(p, "router.sock"),
    controlSocket: path.join(p, "control.sock"),
    edgeConf: path.join(p, "edge.conf"),
    edgePid: path.join(p, "edge.pid"),
    edgeErrorLog: path.join(p, "logs", "edge-error.log"),
    edgeControlSocket: path.join(p, "edge-control.sock"),
    tempDir: path.join(p, "temp"),
  };
}

/** Linux's sun_path holds 108 bytes, the terminating NUL included. */
export const MAX_UNIX_SOCKET_PATH = 107;

export type Listen = { host: string; port: number };

export interface RouterConfigInput {
  layout: NginxLayout;
  table: RouteTable;
  /** Upstream ids rendered `down`. */
  unhealthy: ReadonlySet<string>;
  /** Where clients reach the router: the public address, or undefined behind the edge. */
  listen?: Listen;
  /** Emitted as the `user` directive, so that workers can reach a 0700 state directory. */
  user?: string;
  /** The user's template text and its file name (for errors); the default template otherwise. */
  template?: { text: string; file: string };
}

export interface RenderedConfig {
  text: string;
  /** A hash of the text: the control server answers it, so a reload can be seen to have landed. */
  configId: string;
}

/** Renders the router configuration; throws a TurquoiseError naming the table field or template line. */
export function renderRouterConfig(input: RouterConfigInput): RenderedConfig {
  const problem = validateNginxTable(input.table);
  if (problem) throw new TurquoiseError("USAGE", `invalid route table for nginx: ${problem}`);
  const { layout } = input;
  const main = [
    `pid ${quote(layout.routerPid)};`,
    `error_log ${quote(layout.routerErrorLog)} warn;`,
    ...(input.user ? [`user ${quote(input.user)};`] : []),
  ].join("\n");
  // The control block embeds the id of everything else, so it is rendered last.
  const body = renderHttp(input);
  const template = input.template ?? { text: DEFAULT_NGINX_TEMPLATE, file: "the default template" };
  const values = {
    main,
    http: `${body}\n{{control}}`,
    version: String(input.table.version),
    prefix: layout.prefix,
    worker_connections: String(workerConnections(tableSettings(input.table.settings))),
  };
  const withToken = fillTemplate(template.text, template.file, values);
  const configId = createHash("sha256").update(withToken).digest("hex").slice(0, 16);
  // Without the edge, a drain may kill old workers mid-request, and a killed worker never gives
  // its limit_conn slots back: each configuration counts in a zone of its own, so what a killed
  // worker leaks dies with its generation's zone.
  const draft = withToken.replaceAll(ROUTER_CONNECTION_ZONE, `${CONNECTION_ZONE}_${configId}`);
  const control = indent(controlServer(layout.controlSocket, input.table.version, configId), indentOf(template.text, "http"));
  return { text: draft.replace("{{control}}", control.trimStart()), configId };
}

/**
 * The edge: the public listener, one hop to the router's socket. Routes never change it; the
 * table's client-facing settings (head wait and size, idle keep-alive, connections) do, and a
 * change of those is the only reason the edge is reloaded.
 */
export function renderEdgeConfig(layout: NginxLayout, listen: Listen, settings: ProxySettings, user?: string): RenderedConfig {
  const socket = `unix:${layout.routerSocket}`;
  const server = (lines: string[]): string => lines.map((l) => `        ${l}`).join("\n");
  const draft = `# Turquoise's nginx edge: it holds the client connections and is never reloaded for a route
# change, so no client keep-alive connection is closed by a flip. Generated; do not edit.
worker_processes auto;
pid ${quote(layout.edgePid)};
error_log ${quote(layout.edgeErrorLog)} warn;
${user ? `user ${quote(user)};\n` : ""}
events {
    worker_connections ${workerConnections(settings)};
}

http {
    access_log off;
    server_tokens off;
${tempPaths(layout, "edge")}
    # The router applies the routes' limits and buffering; the edge only streams.
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_http_version 1.1;
    # The router's own timeouts decide; the edge must not cut a request, its body or a WebSocket first.
    proxy_read_timeout 1h;
    proxy_send_timeout 1h;
    client_body_timeout 1h;
${clientFacingHttp(CONNECTION_ZONE).map((l) => `    ${l}`).join("\n")}

    map $http_upgrade $turquoise_connection {
        default upgrade;
        "" "";
    }
    map $http_host $turquoise_host {
        "" $host;
        default $http_host;
    }
    # Idempotent requests reuse connections to the router: one that an exiting router worker
    # closes under them is retried (proxy_next_upstream). POST, PATCH and LOCK, which nginx never
    # retries once sent, take a fresh connection, which the router's listening socket always
    # hands to a worker that answers it.
    map $request_method $turquoise_router {
        default turquoise_router;
        POST turquoise_router_fresh;
        PATCH turquoise_router_fresh;
        LOCK turquoise_router_fresh;
    }
    upstream turquoise_router {
        server ${socket} max_fails=0;
        keepalive ${EDGE_KEEPALIVE_CONNECTIONS};
    }
    upstream turquoise_router_fresh {
        server ${socket} max_fails=0;
    }

    server {
        listen ${listenAddress(listen)};
${server(clientFacingServer(settings, CONNECTION_ZONE))}
${server(clientErrorPages())}
        location / {
            proxy_pass http://$turquoise_router;
            proxy_set_header Host $turquoise_host;
            # The router decides every forwarding field from the peer's address and the table's
            # trusted proxies; the client's own fields pass to it untouched.
            proxy_set_header ${PEER_HEADER} $remote_addr;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $turquoise_connection;
            proxy_next_upstream error timeout;
            # The router down, or its worker killed by a drain: nginx's HTML page would be the only non-JSON answer.
            error_page 502 504 = @turquoise_router_down;
            error_page 503 = @turquoise_busy;
        }
        location @turquoise_router_down {
            default_type application/json;
            return 502 '${nginxJson({ error: "upstream failed" })}';
        }
${server(clientErrorLocations())}
    }

    server {
        listen ${quote(`unix:${layout.edgeControlSocket}`)};
        location = ${CONTROL_STATUS_PATH} {
            stub_status;
        }
{{control}}
        location / {
            return 404;
        }
    }
}
`;
  const configId = createHash("sha256").update(draft).digest("hex").slice(0, 16);
  const version = `        location = ${CONTROL_VERSION_PATH} {
            default_type application/json;
            return 200 '${nginxJson({ config: configId })}';
        }`;
  return { text: draft.replace("{{control}}", version), configId };
}

/** The answers nginx gives by itself while reading a request head, as JSON; server-level, where nginx looks then. */
function clientErrorPages(): string[] {
  return [
    "error_page 400 = @turquoise_bad_request;",
    // nginx's own code for a head over its buffers is 494 (shown as 400), and 414 for a long request line.
    `error_page 494 414 =431 ${HEAD_TOO_LARGE_PATH};`,
    "error_page 503 = @turquoise_busy;",
  ];
}

function clientErrorLocations(): string[] {
  return [
    "location @turquoise_bad_request {",
    "    default_type application/json;",
    `    return 400 '${nginxJson({ error: "bad request" })}';`,
    "}",
    `location = ${HEAD_TOO_LARGE_PATH} {`,
    "    internal;",
    "    default_type application/json;",
    `    return 431 '${nginxJson({ error: "request head too large" })}';`,
    "}",
    "location @turquoise_busy {",
    "    default_type application/json;",
    `    return 503 '${nginxJson({ error: "too many connections" })}';`,
    "}",
  ];
}

/** Fills `{{name}}` placeholders; an unknown, missing or repeated one is an error naming the line. */
export function fillTemplate(text: string, file: string, values: Record<string, string>): string {
  // {{control}} is the renderer's own, filled in after the rest is hashed.
  const counts = new Map<string, number>();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (isComment(lines[i]!)) continue;
    for (const m of lines[i]!.matchAll(PLACEHOLDER)) {
      const name = m[1]!;
      if (!(name in values) || name === "control") {
        const known = PLACEHOLDERS.map((n) => `{{${n}}}`).join(", ");
        throw new TurquoiseError("SPEC_INVALID", `${file}:${i + 1}: unknown placeholder {{${name}}}; the placeholders are ${known}`, {
          details: [{ file, line: i + 1, message: `unknown placeholder {{${name}}}` }],
        });
      }
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }
  }
  for (const name of REQUIRED_PLACEHOLDERS) {
    const n = counts.get(name) ?? 0;
    if (n !== 1) {
      throw new TurquoiseError("SPEC_INVALID", `${file}: {{${name}}} must appear exactly once, found ${n}`, {
        details: [{ file, message: `{{${name}}} must appear exactly once` }],
      });
    }
  }
  return lines
    .map((line) => {
      if (isComment(line)) return line;
      const pad = /^\s*/.exec(line)![0];
      // A block placeholder alone on its line is indented like the line it replaces.
      return line.replace(PLACEHOLDER, (_, name: string) => {
        const value = values[name]!;
        return new RegExp(`^\\{\\{\\s*${name}\\s*\\}\\}$`).test(line.trim()) ? indent(value, pad).trimStart() : value;
      });
    })
    .join("\n");
}

/** Comment lines are kept as written, placeholders and all, so a template can talk about them. */
function isComment(line: string): boolean {
  return line.trimStart().startsWith("#");
}

function renderHttp(input: RouterConfigInput): string {
  const { layout, table, unhealthy } = input;
  const settings = tableSettings(table.settings);
  const behindEdge = input.listen === undefined;
  const out: string[] = [];
  out.push(`# Route table version ${table.version}, rendered by Turquoise. Do not edit: edit the template.`);
  out.push(tempPaths(layout, "router").replace(/^ {4}/gm, ""));
  if (behindEdge) {
    // The edge is the only client of the router's socket; it passes the client's address along.
    out.push("set_real_ip_from unix:;", `real_ip_header ${PEER_HEADER};`);
  } else {
    out.push(...clientFacingHttp(ROUTER_CONNECTION_ZONE));
  }
  out.push(
    "map $http_upgrade $turquoise_connection {",
    "    default upgrade;",
    '    "" "";',
    "}",
    "map $http_host $turquoise_host {",
    '    "" $host;',
    "    default $http_host;",
    "}",
    ...forwardingMaps(settings.trustedProxies),
  );

  // One upstream block per pool; when two routes name a pool, the last one's upstreams win, as in the built-in proxy.
  const pools = new Map<string, { name: string; upstreams: readonly Upstream[] }>();
  for (const route of table.routes) {
    const existing = pools.get(route.poolId);
    if (existing) existing.upstreams = route.upstreams;
    else pools.set(route.poolId, { name: `turquoise_pool_${pools.size + 1}`, upstreams: route.upstreams });
  }
  const healthy = (poolId: string): boolean => pools.get(poolId)!.upstreams.some((u) => !unhealthy.has(u.id));
  const maxConns = settings.limits.maxUpstreamConnections;
  for (const [poolId, pool] of pools) {
    if (!healthy(poolId)) continue;
    // The zone makes max_conns count across workers (without it, each worker counts its own).
    out.push(`upstream ${pool.name} {`, `    # pool ${JSON.stringify(poolId)}`, `    zone ${pool.name} ${UPSTREAM_ZONE_SIZE};`);
    for (const u of pool.upstreams) {
      out.push(`    server ${upstreamAddress(u)} max_conns=${maxConns}${unhealthy.has(u.id) ? " down" : ""};  # ${JSON.stringify(u.id)}`);
    }
    out.push(`    keepalive ${UPSTREAM_KEEPALIVE_CONNECTIONS};`, `    keepalive_timeout ${UPSTREAM_KEEPALIVE_TIMEOUT_S}s;`, "}");
  }

  const serverCommon = [
    ...(behindEdge ? behindEdgeServer(settings) : clientFacingServer(settings, ROUTER_CONNECTION_ZONE)),
    "proxy_http_version 1.1;",
    ...forwardingHeaders(),
    // nginx itself never passes a POST, PATCH or LOCK on once sent: this retries idempotent requests only.
    "proxy_next_upstream error timeout;",
    ...clientErrorPages(),
    ...upstreamErrorPages(),
  ];
  const listen = input.listen ? listenAddress(input.listen) : quote(`unix:${layout.routerSocket}`);
  const retryAfter = retryAfterSeconds(settings);

  const renderServer = (serverName: string | undefined, entries: Map<string, Route>): void => {
    out.push("server {");
    out.push(`    listen ${listen}${serverName === undefined ? " default_server" : ""};`);
    out.push(`    server_name ${serverName ?? '""'};`);
    for (const line of serverCommon) out.push(`    ${line}`);
    // Longest prefix first only for the reader: nginx picks the longest match itself.
    const prefixes = [...entries.keys()].sort((a, b) => b.length - a.length || (a < b ? -1 : 1));
    prefixes.forEach((prefix, i) => {
      const route = entries.get(prefix)!;
      const comment = `# ${JSON.stringify(route.service)} → pool ${JSON.stringify(route.poolId)}`;
      // "/api" matches "/api", "/api/…" and "/api?…" but not "/apix", as in the built-in proxy.
      const locations = prefix === "" ? ["/"] : [`= ${quote(prefix)}`, quote(`${prefix}/`)];
      if (!healthy(route.poolId)) {
        const body = ["default_type application/json;", `return 503 '${nginxJson({ error: "no healthy instance", service: route.service })}';`];
        for (const loc of locations) out.push(`    location ${loc} {  ${comment}`, ...body.map((l) => `        ${l}`), "    }");
        return;
      }
      const pass = `proxy_pass http://${pools.get(route.poolId)!.name};`;
      const tunnel = `@turquoise_tunnel_${i + 1}`;
      const body = [
        ...routeDirectives(route, settings),
        // An upgrade goes to the tunnel location below, which nginx times with the tunnel's idle timeout.
        "if ($http_upgrade) {",
        "    return 418;",
        "}",
        // A location's error_page replaces the server's: all of them again, and the tunnel's may redirect once more.
        ...upstreamErrorPages(),
        "error_page 503 = @turquoise_busy;",
        `error_page 418 = ${tunnel};`,
        "recursive_error_pages on;",
        pass,
      ];
      for (const loc of locations) out.push(`    location ${loc} {  ${comment}`, ...body.map((l) => `        ${l}`), "    }");
      out.push(`    location ${tunnel} {`, ...[...tunnelDirectives(route, settings), pass].map((l) => `        ${l}`), "    }");
    });
    if (!entries.has("")) {
      out.push("    location / {", "        default_type application/json;", `        return 404 '${nginxJson({ error: "no route" })}';`, "    }");
    }
    out.push(
      "    location @turquoise_upstream_failed {",
      "        default_type application/json;",
      // No server could be picked (every one at max_conns, or failed): the pool's name is the last address tried.
      '        if ($upstream_addr ~ "(^|[ ,:])turquoise_pool_[0-9]+$") {',
      `            add_header Retry-After ${retryAfter} always;`,
      `            return 503 '${nginxJson({ error: "upstream busy" })}';`,
      "        }",
      `        return 502 '${nginxJson({ error: "upstream failed" })}';`,
      "    }",
      "    location @turquoise_upstream_timeout {",
      "        default_type application/json;",
      `        return 504 '${nginxJson({ error: "upstream timed out" })}';`,
      "    }",
      "    location @turquoise_body_too_large {",
      "        default_type application/json;",
      `        return 413 '${nginxJson({ error: "request body too large" })}';`,
      "    }",
      ...clientErrorLocations().map((l) => `    ${l}`),
      "}",
    );
  };

  const { anyHost, byHost } = serverEntries(table.routes);
  renderServer(undefined, anyHost);
  for (const [host, entries] of byHost) renderServer(host, entries);
  return out.join("\n");
}

function upstreamErrorPages(): string[] {
  return ["error_page 413 = @turquoise_body_too_large;", "error_page 502 = @turquoise_upstream_failed;", "error_page 504 = @turquoise_upstream_timeout;"];
}

/**
 * The locations of each server block, with the built-in proxy's precedence: a route of the
 * request's host beats any wildcard route, whatever their lengths. nginx only knows "longest
 * prefix wins", so a wildcard prefix inside a host block is routed to the longest host prefix that
 * covers it, when there is one.
 */
export function serverEntries(routes: readonly Route[]): { anyHost: Map<string, Route>; byHost: Map<string, Map<string, Route>> } {
  const anyHost = new Map<string, Route>();
  const byHost = new Map<string, Map<string, Route>>();
  // The first of two routes with the same host and prefix wins, as in the built-in proxy.
  for (const route of routes) {
    const prefix = normalizePrefix(route.pathPrefix);
    if (route.host === undefined || route.host === "") {
      if (!anyHost.has(prefix)) anyHost.set(prefix, route);
      continue;
    }
    const host = normalizeHost(route.host);
    let entries = byHost.get(host);
    if (!entries) byHost.set(host, (entries = new Map()));
    if (!entries.has(prefix)) entries.set(prefix, route);
  }
  for (const entries of byHost.values()) {
    const own = [...entries.keys()];
    for (const [prefix, route] of anyHost) {
      if (entries.has(prefix)) continue;
      let cover: string | undefined;
      for (const p of own) if (coversPrefix(p, prefix) && (cover === undefined || p.length > cover.length)) cover = p;
      entries.set(prefix, cover === undefined ? route : entries.get(cover)!);
    }
  }
  return { anyHost, byHost };
}

/** Whether every URL under `inner` also matches `outer` (both normalized, "" for the root). */
function coversPrefix(outer: string, inner: string): boolean {
  return outer === "" || inner === outer || inner.startsWith(`${outer}/`);
}

function controlServer(socket: string, version: number, configId: string): string {
  return `server {
    listen ${quote(`unix:${socket}`)};
    location = ${CONTROL_VERSION_PATH} {
        default_type application/json;
        return 200 '${nginxJson({ version, config: configId })}';
    }
    location = ${CONTROL_STATUS_PATH} {
        stub_status;
    }
    location / {
        return 404;
    }
}`;
}

function tempPaths(layout: NginxLayout, tier: "router" | "edge"): string {
  const dir = path.join(layout.tempDir, tier);
  return ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    .map((kind) => `    ${kind}_temp_path ${quote(path.join(dir, kind))};`)
    .join("\n");
}

function listenAddress(listen: Listen): string {
  const host = listen.host === "" ? "0.0.0.0" : listen.host;
  return net.isIPv6(host) ? `[${host}]:${listen.port}` : `${host}:${listen.port}`;
}

function upstreamAddress(u: Upstream): string {
  const host = u.host.startsWith("[") ? u.host.slice(1, -1) : u.host;
  return net.isIPv6(host) ? `[${host}]:${u.port}` : `${host}:${u.port}`;
}

const HOSTNAME = /^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

function validHost(host: string): boolean {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  return net.isIP(bare) !== 0 || HOSTNAME.test(host);
}

/**
 * What the shared table validation lets through but nginx would read differently, or as more
 * configuration: host names with wildcards or punctuation, control characters in prefixes.
 */
export function validateNginxTable(table: RouteTable): string | undefined {
  const shared = validateTable(table);
  if (shared) return shared;
  for (let i = 0; i < table.routes.length; i++) {
    const r = table.routes[i]!;
    const at = `routes[${i}]`;
    if (r.host !== undefined && r.host !== "" && !validHost(normalizeHost(r.host))) {
      return `${at}.host ${JSON.stringify(r.host)} is not a host name or IP address (nginx would read it as a pattern)`;
    }
    if (/[\u0000-\u001f\u007f]/.test(r.pathPrefix)) return `${at}.pathPrefix must not contain control characters`;
    for (let j = 0; j < r.upstreams.length; j++) {
      const u = r.upstreams[j]!;
      if (!validHost(u.host)) return `${at}.upstreams[${j}].host ${JSON.stringify(u.host)} is not a host name or IP address`;
    }
  }
  return undefined;
}

/** Checks a listen host for the edge or the router: an IP address or a host name. */
export function validateListenHost(host: string): string | undefined {
  return host === "" || validHost(host) ? undefined : `listen host ${JSON.stringify(host)} is not a host name or IP address`;
}

/**
 * A config token: bare when it is plain, else double-quoted. Newlines and NUL cannot be written
 * safely at all, so they are refused rather than escaped.
 */
export function quote(token: string): string {
  if (/[\u0000\n\r]/.test(token)) throw new TurquoiseError("USAGE", `cannot write ${JSON.stringify(token)} into nginx configuration`);
  if (/^[A-Za-z0-9_\-./:@+=,]+$/.test(token)) return token;
  return `"${token.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/**
 * JSON for a single-quoted nginx `return` text. nginx reads `$name` there as a variable and
 * turns `\\`, `\n`, `\t`, `\r` and quote escapes into characters, but leaves `\u` alone, so every
 * character that could mean something to nginx or to JSON is written as a \uXXXX escape.
 */
export function nginxJson(value: Record<string, string | number | boolean | null>): string {
  const str = (s: string): string => `"${s.replace(/[^A-Za-z0-9 _.:/@+=,#()-]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)}"`;
  const fields = Object.entries(value).map(([k, v]) => `${str(k)}:${typeof v === "string" ? str(v) : JSON.stringify(v)}`);
  return `{${fields.join(",")}}`;
}

function indent(text: string, pad: string): string {
  return text
    .split("\n")
    .map((line) => (line === "" ? line : pad + line))
    .join("\n");
}

/** The indentation of the line holding `{{name}}` in the template, so nested blocks line up. */
function indentOf(template: string, name: string): string {
  for (const line of template.split("\n")) {
    const m = new RegExp(`^(\\s*)\\{\\{\\s*${name}\\s*\\}\\}`).exec(line);
    if (m) return m[1]!;
  }
  return "";
}
