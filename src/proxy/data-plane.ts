// The data plane: routes each client request or upgrade to a pool, drains pools, counts, and
// takes an upstream out of rotation at its first refused (or confirmed reset) connection. It also
// keeps the client-facing edge honest: the client server's timeouts and limits follow the table's
// settings, the forwarding headers say what the proxy saw, and every refusal is counted.

import net from "node:net";
import type { ClientConn, ClientRequest, ClientResponse, ClientServer, SentHead } from "./client-server.js";
import type { DrainResult, ProxyMetrics, ProxyRejectionCounts, ProxyStats, ProxyTimeoutCounts, RouteTable, Upstream } from "./contract.js";
import { DURATION_BUCKETS_S, type RequestSeries } from "./counters.js";
import { Exchange, type ExchangeHost, type ExchangeRequest, type ExchangeResponse, type FailedRequest, kExchange, kFailedWith, onClientClose } from "./exchange.js";
import { clientAddress, dropConnectionTokenLines, forwardedElement, noop, rawJsonResponse, rejectUpgrade, sendJson } from "./http.js";
import type { RequestHead } from "./request-head.js";
import type { TrustedPeers } from "./peers.js";
import { type Pool, Router } from "./table.js";
import type { CertStoreOptions } from "./cert-store.js";
import { TlsEdge } from "./tls-edge.js";
import { splitMatch } from "./split-match.js";
import { noRouteBody } from "./no-route.js";
import { Tunnel, type TunnelHost } from "./tunnel.js";
import { UpstreamConnections } from "./upstream.js";

/**
 * After a reset, a fresh connection asks whether the upstream is gone: refused, or closed by the
 * upstream within this long without a word from us, means gone; still open means alive.
 */
export const PROBE_WATCH_MS = 100;
const PROBE_CONNECT_TIMEOUT_MS = 1_000;
/** How often the client server sweeps its connections for clientHeaderMs and clientIdleMs: their precision. */
export const CLIENT_CHECK_INTERVAL_MS = 250;

/** Whether a client connection's peer is trusted, remembered per connection for one table's peers. */
const kTrustedBy = Symbol("trustedBy");
const kTrusted = Symbol("trusted");
type PeerSocket = net.Socket & { [kTrustedBy]?: TrustedPeers; [kTrusted]?: boolean };
/** When a request waiting for a healthy instance gives up (performance.now() ms). */
const kHeldUntil = Symbol("heldUntil");
type HeldRequest = ClientRequest & { [kHeldUntil]?: number };
/** The in-flight response on a client socket (ClientConn sets it): a parse error must not be written into it. */
type ClientSocket = net.Socket & { _httpMessage?: ClientResponse | null };

export function zeroTimeouts(): ProxyTimeoutCounts {
  return { clientHeader: 0, clientIdle: 0, tunnelIdle: 0, tunnelHandshake: 0, upstreamConnect: 0, upstreamResponse: 0, upstreamIdle: 0 };
}

export function zeroRejections(): ProxyRejectionCounts {
  return { connections: 0, headerTooLarge: 0, bodyTooLarge: 0, badRequest: 0, upstreamQueue: 0 };
}

export class DataPlane implements ExchangeHost, TunnelHost {
  readonly router = new Router();
  readonly upstreams = new UpstreamConnections();
  requests = 0;
  upstreamErrors = 0;
  retries = 0;
  /** Waits cut short, by kind. */
  readonly timeouts: ProxyTimeoutCounts = zeroTimeouts();
  /** Connections and requests refused, by reason. */
  readonly rejected: ProxyRejectionCounts = zeroRejections();
  /** Upgraded connections: open now, and ever opened (after a 101). */
  readonly tunnels = { open: 0, total: 0 };
  /** Upstreams this data plane took out of rotation itself, by why (marks passed on from elsewhere are not counted). */
  readonly ejections = { refused: 0, reset: 0 };
  /** Epoch ms: when its counters started. */
  readonly startedAt = Date.now();
  private server: ClientServer | undefined;
  /** The TLS listener's side, when this data plane has one. */
  edge: TlsEdge | undefined;
  /** Probes in flight by upstream id, each with the function that ends it without a verdict. */
  private readonly probes = new Map<string, () => void>();

  /** Serves the data plane on `server` and configures it from the current table, now and on each apply. */
  attach(server: ClientServer): void {
    this.server = server;
    // Expect: 100-continue is answered in route(), so that a request refused at its head never gets a 100.
    server.on("request", this.onRequest);
    server.on("upgrade", this.onUpgrade);
    server.on("clientError", this.onClientError);
    server.on("drop", this.onDrop);
    server.on("timeout", this.onIdle);
    this.configure();
  }

  /** Serves TLS as well: connections whose handshake the edge completed reach the same HTTP server. */
  enableTls(storeOptions: CertStoreOptions): TlsEdge {
    if (!this.server) throw new Error("enableTls needs an attached HTTP server");
    this.edge = new TlsEdge({ server: this.server, onDrop: this.onDrop }, storeOptions);
    this.edge.configure(this.router.current);
    return this.edge;
  }

  /** Applies a table (false when it is older than the current one) and its client-side settings. */
  apply(table: RouteTable): boolean {
    if (!this.router.apply(table)) return false;
    this.configure();
    return true;
  }

  /**
   * The table's client-side settings, as ClientServer properties read as it goes: the timeouts at
   * its next sweep, maxConnections at each accept, maxHeaderSize when a connection opens
   * (connections already open keep the limit they had).
   */
  private configure(): void {
    const server = this.server;
    if (!server) return;
    const { timeouts, limits } = this.router.current.settings;
    // From a connection's first byte (or its accept) to the end of a request head: 408 beyond.
    server.headersTimeout = timeouts.clientHeaderMs;
    // Receiving a whole body is not bounded: a long upload is legitimate, and a stalled one is the
    // upstream idle timeout's. An idle keep-alive connection is closed 1 s after this (advertised in seconds).
    server.keepAliveTimeout = timeouts.clientIdleMs;
    server.maxConnections = limits.maxConnections;
    server.maxHeaderSize = limits.maxHeaderBytes;
    this.edge?.configure(this.router.current);
  }

  readonly onRequest = (req: ClientRequest, res: ClientResponse): void => {
    // Only a table with metrics on pays for the clock (and the counting at the end).
    this.route(req, res, this.router.current.metrics ? performance.now() : -1);
  };

  /** `started`: performance.now() at its arrival when counted by series, else -1. */
  private route(req: ClientRequest, res: ClientResponse, started: number): void {
    this.requests++;
    const head = req.head;
    if (head.hosts !== 1 && (head.hosts > 1 || req.httpVersionMinor === 1)) {
      this.rejected.badRequest++;
      if (started >= 0) count(this.router.series.unrouted, 400, started);
      sendJson(res, 400, { error: head.hosts > 1 ? "more than one Host header" : "no Host header" }, true);
      return;
    }
    const url = req.url ?? "/";
    const host = head.host;
    if (this.edge !== undefined && this.edge.intercept(req, res, host, url)) {
      // Answered by the edge itself (a redirect, an ACME challenge): no route's request.
      if (started >= 0) count(this.router.series.unrouted, res.statusCode, started);
      return;
    }
    const table = this.router.current;
    const found = table.lookup(host, url);
    if (!found) {
      if (started >= 0) count(this.router.series.unrouted, 404, started);
      sendJson(res, 404, noRouteBody(table.source.routes, host, url, req.socket, head));
      return;
    }
    let match = found;
    let setCookie: string | undefined;
    if (found.canary !== undefined) ({ match, setCookie } = splitMatch(found, req.rawHeaders, req.socket));
    const bodyFraming = head.chunked ? 2 : head.contentLength > 0 ? 1 : 0;
    if (bodyFraming === 1 && head.contentLength > match.maxBodyBytes) {
      this.rejected.bodyTooLarge++;
      if (started >= 0) count(match.pool.series, 413, started);
      sendJson(res, 413, { error: "request body too large", limit: match.maxBodyBytes }, true);
      return;
    }
    const upstream = match.pool.pick(this.router.unhealthy);
    if (!upstream) {
      this.holdForHealthy(req, res, match.pool, match.settings.limits.upstreamQueueMs, started);
      return;
    }
    // Only an HTTP/1.1 client waits for a 100; an HTTP/1.0 one expects nothing.
    if (head.expect !== undefined && req.httpVersionMinor === 1) res.writeContinue();
    const sent = upstreamHead(req, head, forwardingFields(head, req.socket, table.trusted, req.conn));

    const ex = new Exchange(this, req as ExchangeRequest, res as ExchangeResponse, match, upstream, sent.text, host !== undefined, bodyFraming, started);
    ex.headBytes = sent.bytes;
    if (setCookie !== undefined) ex.setCookie = setCookie;
    match.pool.enter(ex);
    ex.res[kExchange] = ex;
    res.on("close", onClientClose);
    ex.send();
  }

  /**
   * No instance of the route is in rotation: the request waits, up to upstreamQueueMs, for a new
   * table or an instance back (the agent's revert or replacement lands within that), then is
   * routed afresh. Nothing was sent anywhere yet, or only a request without a body that an
   * instance failed before answering (exchange.ts), so routing it again is safe. The wait is
   * counted from the request's first hold, however often it is held.
   */
  holdForHealthy(req: ClientRequest, res: ClientResponse, pool: Pool, waitMs: number, started: number): void {
    const held = req as HeldRequest;
    const now = performance.now();
    const deadline = (held[kHeldUntil] ??= now + waitMs);
    if (now >= deadline || res.destroyed) {
      const failure = (req as FailedRequest)[kFailedWith];
      const status = res.destroyed ? 0 : failure !== undefined ? 502 : 503;
      if (started >= 0) count(pool.series, status, started);
      if (status === 502) sendJson(res, 502, { error: "upstream failed", service: pool.service, code: failure });
      else if (status === 503) sendJson(res, 503, { error: "no healthy instance", service: pool.service });
      return;
    }
    this.requests--; // counted again when it is routed afresh
    // Woken once, by whichever comes first: a change, the deadline, or the client leaving.
    const cancel = (): void => {
      clearTimeout(timer);
      cancelWait();
      res.off("close", gone);
    };
    // The client left while it waited: it was never answered.
    const gone = (): void => {
      cancel();
      if (started >= 0) count(pool.series, 0, started);
    };
    const wake = (): void => {
      if (res.destroyed) return gone();
      cancel();
      this.route(req, res, started);
    };
    const cancelWait = this.router.onNextChange(wake);
    const timer = setTimeout(wake, deadline - now);
    res.once("close", gone);
  }

  readonly onUpgrade = (req: ClientRequest, client: net.Socket, bodyHead: Buffer): void => {
    this.requests++;
    const started = this.router.current.metrics ? performance.now() : -1;
    client.setNoDelay(true);
    client.on("error", noop);
    const head = req.head;
    if (head.hosts !== 1 && (head.hosts > 1 || req.httpVersionMinor === 1)) {
      this.rejected.badRequest++;
      if (started >= 0) count(this.router.series.unrouted, 400, started);
      return rejectUpgrade(client, 400, { error: head.hosts > 1 ? "more than one Host header" : "no Host header" });
    }
    // An upgrade is handed over at the end of its head: a body would reach the upstream as the
    // first bytes of the new protocol, unchecked.
    if (head.chunked || head.contentLength > 0) {
      this.rejected.badRequest++;
      if (started >= 0) count(this.router.series.unrouted, 400, started);
      return rejectUpgrade(client, 400, { error: "an upgrade request has no body" });
    }
    const url = req.url ?? "/";
    const host = head.host;
    if (this.edge !== undefined && this.edge.interceptUpgrade(req, client, host, url)) return;
    const table = this.router.current;
    const found = table.lookup(host, url);
    if (!found) {
      if (started >= 0) count(this.router.series.unrouted, 404, started);
      return rejectUpgrade(client, 404, noRouteBody(table.source.routes, host, url, client, head));
    }
    // An upgrade is split like a request, but its 101 carries no cookie: the next request sets it.
    const match = found.canary !== undefined ? splitMatch(found, req.rawHeaders, client).match : found;
    const upstream = match.pool.pick(this.router.unhealthy);
    if (!upstream) {
      if (started >= 0) count(match.pool.series, 503, started);
      return rejectUpgrade(client, 503, { error: "no healthy instance", service: match.route.service });
    }
    const preamble = `${req.method} ${url} HTTP/1.1\r\n${forwardedLines(head)}Connection: Upgrade\r\nUpgrade: ${head.upgradeProtocols ?? ""}\r\n${forwardingFields(head, client, table.trusted)}\r\n`;
    const tunnel = new Tunnel(this, match, client, bodyHead, preamble, upstream, started);
    match.pool.enter(tunnel);
    tunnel.connect();
  };

  /** The client server refused a request (its head, or its chunked body's framing), or a head did not come in time. */
  readonly onClientError = (err: NodeJS.ErrnoException, socket: net.Socket): void => {
    const answer = this.clientErrorAnswer(err.code);
    const inFlight = (socket as ClientSocket)._httpMessage;
    // No answer into a response that has begun.
    if (answer !== undefined && socket.writable && !inFlight?.headersSent) socket.write(answer);
    socket.destroy();
  };

  private clientErrorAnswer(code: string | undefined): string | undefined {
    switch (code) {
      case "ERR_HTTP_REQUEST_TIMEOUT":
        this.timeouts.clientHeader++;
        return rawJsonResponse(408, { error: "request head not received in time" });
      case "HPE_HEADER_OVERFLOW":
        this.rejected.headerTooLarge++;
        return rawJsonResponse(431, { error: "request head too large" });
      case "HPE_CHUNK_EXTENSIONS_OVERFLOW":
        this.rejected.bodyTooLarge++;
        return rawJsonResponse(413, { error: "chunk extensions too large" });
      case "HPE_INVALID_EOF_STATE":
        // The client closed its side in the middle of a request: nobody to answer, nothing to count.
        return undefined;
      default:
        // ECONNRESET and the like: the client went away, there is nobody to answer.
        if (code === undefined || !code.startsWith("HPE_")) return undefined;
        this.rejected.badRequest++;
        return rawJsonResponse(400, { error: "bad request", code });
    }
  }

  /** A connection refused at accept (net's own maxConnections): that many were open. */
  private readonly onDrop = (): void => {
    this.rejected.connections++;
  };

  /** A keep-alive connection idle for clientIdleMs (the only socket timeout the server sets). */
  private readonly onIdle = (socket: net.Socket): void => {
    this.timeouts.clientIdle++;
    socket.destroy();
  };

  async drain(poolId: string, timeoutMs: number): Promise<DrainResult> {
    const started = performance.now();
    const pool = this.router.pools.get(poolId);
    if (!pool) return { poolId, completed: 0, cut: 0, durationMs: 0 };
    const finishedBefore = pool.finished;
    const idle = await pool.whenIdle(timeoutMs);
    let cut = 0;
    if (!idle) {
      for (const item of [...pool.active]) {
        item.cut();
        cut++;
      }
    }
    const completed = pool.finished - finishedBefore - cut;
    this.closeIdleSockets(pool);
    this.router.release(pool);
    return { poolId, completed, cut, durationMs: Math.round(performance.now() - started) };
  }

  /** Idle keep-alive sockets to a drained pool's upstreams would otherwise pin the old instances. */
  private closeIdleSockets(pool: Pool): void {
    for (const u of pool.upstreams) {
      if (this.router.addressInUse(u.host, u.port, pool)) continue;
      this.upstreams.closeIdle(u.host, u.port);
    }
  }

  inFlight(): number {
    let n = 0;
    for (const pool of this.router.pools.values()) n += pool.inFlight;
    return n;
  }

  cutAll(): void {
    for (const pool of this.router.pools.values()) for (const item of [...pool.active]) item.cut();
  }

  upstreamFailed(pool: Pool): void {
    this.upstreamErrors++;
    pool.series.upstreamErrors++;
  }

  retried(pool: Pool): void {
    this.retries++;
    pool.series.retries++;
  }

  /** The figures behind Prometheus' proxy metrics; a supervisor sums its workers' (and sets startedAt its own). */
  async metrics(): Promise<ProxyMetrics> {
    // Every series a table named, 0 included: a graph line should not come and go with the traffic.
    const inFlight = new Map<RequestSeries, number>(this.router.series.routed().map((s) => [s, 0]));
    for (const pool of this.router.pools.values()) inFlight.set(pool.series, (inFlight.get(pool.series) ?? 0) + pool.inFlight);
    const server = this.server;
    const clientConnections = server ? await new Promise<number>((resolve) => server.getConnections((err, n) => resolve(err ? 0 : n))) : 0;
    return {
      startedAt: this.startedAt,
      durationBuckets: [...DURATION_BUCKETS_S],
      requests: this.router.series.snapshot(),
      inFlight: [...inFlight].map(([s, requests]) => ({ service: s.service, slot: s.slot, requests })),
      open: { clientConnections, upstreamConnections: this.upstreams.openCount, tunnels: this.tunnels.open },
      ejections: { ...this.ejections },
      timeouts: { ...this.timeouts },
      rejected: { ...this.rejected },
      tunnelsOpened: this.tunnels.total,
    };
  }

  stats(): ProxyStats {
    return {
      tableVersion: this.router.current.version,
      pools: [...this.router.pools.values()].map((p) => p.stats()),
      requests: this.requests,
      upstreamErrors: this.upstreamErrors,
      retries: this.retries,
      down: this.router.downList(),
      timeouts: { ...this.timeouts },
      rejected: { ...this.rejected },
      tunnels: { ...this.tunnels },
      ...(this.edge ? { tls: { ...this.edge.store.counts } } : {}),
    };
  }

  /**
   * Passive detection, for a connection that failed before any response byte. A refusal proves
   * that nothing listens: the upstream leaves rotation at once. A reset or a hang-up does not: a
   * keep-alive socket the upstream closed a moment ago, or one handler that crashed, look the
   * same. Since only the agent brings an upstream back, a reset first asks a fresh connection.
   */
  noteFailure(u: Upstream, err: NodeJS.ErrnoException): void {
    const code = err.code;
    if (code === "ECONNREFUSED") {
      if (this.router.markDown(u.id, "refused")) this.ejections.refused++;
    }
    else if (code === "ECONNRESET" || code === "EPIPE") this.probe(u);
  }

  private probe(u: Upstream): void {
    if (this.router.unhealthy.has(u.id) || this.probes.has(u.id)) return;
    const socket = net.connect({ host: u.host, port: u.port });
    let connected = false;
    let ended = false;
    let error: NodeJS.ErrnoException | undefined;
    // Ended by us: the upstream is alive, or did not answer in time, which proves nothing either.
    const end = (): void => {
      ended = true;
      socket.destroy();
    };
    let timer = setTimeout(end, PROBE_CONNECT_TIMEOUT_MS).unref();
    this.probes.set(u.id, end);
    socket.once("connect", () => {
      connected = true;
      clearTimeout(timer);
      timer = setTimeout(end, PROBE_WATCH_MS).unref();
    });
    socket.on("error", (e: NodeJS.ErrnoException) => (error = e));
    socket.on("close", () => {
      clearTimeout(timer);
      if (this.probes.get(u.id) === end) this.probes.delete(u.id);
      if (ended) return;
      if ((connected || error?.code === "ECONNREFUSED" || error?.code === "ECONNRESET") && this.router.markDown(u.id, "reset")) this.ejections.reset++;
    });
    // Flowing, so that the upstream's FIN is seen even though nothing is read.
    socket.resume();
  }

  stopProbes(): void {
    for (const end of [...this.probes.values()]) end();
    this.probes.clear();
  }
}


/** Counts a request the data plane answered itself; `started` as route() takes it, ≥ 0. */
function count(series: RequestSeries, status: number, started: number): void {
  series.record(status, performance.now() - started);
}

/** The client's field lines to forward, without those its Connection field names (RFC 9110 §7.6.1). */
/**
 * The request line and fields sent upstream, without the blank line: the client's end-to-end field
 * lines as it wrote them, and a chunked body goes out re-chunked (the client server de-chunked
 * it), without a length. The same head and forwarding fields as the connection's last request give
 * the same text, made once.
 */
function upstreamHead(req: ClientRequest, head: RequestHead, forwarding: string): SentHead {
  const conn = req.conn;
  const sent = conn.sent;
  if (sent !== undefined && sent.head === head && sent.forwarding === forwarding) {
    sent.bytes ??= Buffer.from(`${sent.text}\r\n`, "latin1");
    return sent;
  }
  const length = head.contentLengthText === undefined || head.chunked ? "" : `Content-Length: ${head.contentLengthText}\r\n`;
  const text = `${head.method} ${head.url} HTTP/1.1\r\n${forwardedLines(head)}${length}${forwarding}`;
  return (conn.sent = { head, forwarding, text, bytes: undefined });
}

function forwardedLines(head: RequestHead): string {
  return head.connection === undefined ? head.forward : dropConnectionTokenLines(head.forward, head.connection);
}

/**
 * The forwarding fields the proxy always writes. From an untrusted peer they say only what the
 * proxy saw (the client's own are dropped); from a trusted one (another proxy, a load balancer)
 * its X-Forwarded-For and Forwarded are kept and extended, and its other fields believed.
 */
function forwardingFields(head: RequestHead, socket: net.Socket, trusted: TrustedPeers, conn?: ClientConn): string {
  const host = head.host;
  const untrusted = trusted.empty || !isTrusted(socket as PeerSocket, trusted);
  // From an untrusted peer the fields depend on the peer, the scheme and Host alone: a keep-alive
  // connection's requests reuse the text of its previous one when Host is the same.
  if (untrusted && conn !== undefined && conn.forwardedHost === host) return conn.forwarded;
  const remote = clientAddress(socket);
  const proto = (socket as { encrypted?: boolean }).encrypted === true ? "https" : "http";
  const element = forwardedElement(remote, host, proto);
  if (untrusted) {
    const xfh = host === undefined ? "" : `X-Forwarded-Host: ${host}\r\n`;
    const text = `X-Forwarded-For: ${remote}\r\nX-Forwarded-Proto: ${proto}\r\n${xfh}X-Real-IP: ${remote}\r\nForwarded: ${element}\r\n`;
    if (conn !== undefined) {
      conn.forwardedHost = host;
      conn.forwarded = text;
    }
    return text;
  }
  const xff = head.xForwardedFor === undefined ? remote : `${head.xForwardedFor}, ${remote}`;
  const forwardedHost = head.xForwardedHost ?? host;
  const xfh = forwardedHost === undefined ? "" : `X-Forwarded-Host: ${forwardedHost}\r\n`;
  const forwarded = head.forwarded === undefined ? element : `${head.forwarded}, ${element}`;
  return `X-Forwarded-For: ${xff}\r\nX-Forwarded-Proto: ${head.xForwardedProto ?? proto}\r\n${xfh}X-Real-IP: ${head.xRealIp ?? remote}\r\nForwarded: ${forwarded}\r\n`;
}

/** Asked once per connection and table: a keep-alive connection's peer does not change. */
function isTrusted(socket: PeerSocket, trusted: TrustedPeers): boolean {
  if (socket[kTrustedBy] !== trusted) {
    socket[kTrustedBy] = trusted;
    socket[kTrusted] = trusted.has(clientAddress(socket));
  }
  return socket[kTrusted]!;
}
