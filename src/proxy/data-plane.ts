// The data plane: routes each client request or upgrade to a pool, drains pools, counts, and
// takes an upstream out of rotation at its first refused (or confirmed reset) connection.

import type http from "node:http";
import net from "node:net";
import type { DrainResult, ProxyStats, RejectCounts, TimeoutCounts, Upstream } from "./contract.js";
import { Exchange, type ExchangeHost, type ExchangeRequest, type ExchangeResponse, kExchange, onClientClose } from "./exchange.js";
import { clientAddress, DROPPED_REQUEST_HEADERS, DROPPED_UPGRADE_HEADERS, dropConnectionTokens, noop, rejectUpgrade, sendJson } from "./http.js";
import { type Pool, Router } from "./table.js";
import { Tunnel } from "./tunnel.js";
import { UpstreamConnections } from "./upstream.js";

/**
 * After a reset, a fresh connection asks whether the upstream is gone: refused, or closed by the
 * upstream within this long without a word from us, means gone; still open means alive.
 */
export const PROBE_WATCH_MS = 100;
const PROBE_CONNECT_TIMEOUT_MS = 1_000;

export class DataPlane implements ExchangeHost {
  readonly router = new Router();
  readonly upstreams = new UpstreamConnections();
  requests = 0;
  upstreamErrors = 0;
  retries = 0;
  readonly timeouts: TimeoutCounts = { upstreamConnect: 0, upstreamResponse: 0, upstreamIdle: 0 };
  readonly rejected: RejectCounts = { upstreamQueue: 0 };
  /** Probes in flight by upstream id, each with the function that ends it without a verdict. */
  private readonly probes = new Map<string, () => void>();

  readonly onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    this.requests++;
    const raw = req.rawHeaders;
    const headers: string[] = [];
    let host: string | undefined;
    let xff: string | undefined;
    let connection: string | undefined;
    let bodyFraming: 0 | 1 | 2 = 0;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
      const value = raw[i + 1]!;
      const lower = name.toLowerCase();
      if (DROPPED_REQUEST_HEADERS.has(lower)) {
        if (lower === "x-forwarded-for") xff = xff === undefined ? value : `${xff}, ${value}`;
        else if (lower === "transfer-encoding") bodyFraming = 2;
        else if (lower === "connection") connection = value;
        continue;
      }
      if (lower === "host") host = value;
      else if (lower === "content-length" && value !== "0" && bodyFraming === 0) bodyFraming = 1;
      headers.push(name, value);
    }
    const url = req.url ?? "/";
    const match = this.router.current.lookup(host, url);
    if (!match) {
      sendJson(res, 404, { error: "no route", host: host ?? null, path: url });
      return;
    }
    const upstream = match.pool.pick(this.router.unhealthy);
    if (!upstream) {
      sendJson(res, 503, { error: "no healthy instance", service: match.route.service });
      return;
    }
    if (connection !== undefined) dropConnectionTokens(headers, connection);
    let head = `${req.method} ${url} HTTP/1.1\r\n`;
    for (let i = 0; i < headers.length; i += 2) {
      // Node's parser already de-chunked the body; it goes out re-chunked, without a length.
      if (bodyFraming === 2 && headers[i]!.length === 14 && headers[i]!.toLowerCase() === "content-length") continue;
      head += `${headers[i]}: ${headers[i + 1]}\r\n`;
    }
    const remote = clientAddress(req.socket);
    head += `X-Forwarded-For: ${xff === undefined ? remote : `${xff}, ${remote}`}\r\nX-Forwarded-Proto: http\r\n`;
    if (host !== undefined) head += `X-Forwarded-Host: ${host}\r\n`;

    const ex = new Exchange(this, req as ExchangeRequest, res as ExchangeResponse, match, upstream, head, host !== undefined, bodyFraming);
    match.pool.enter(ex);
    ex.res[kExchange] = ex;
    res.on("close", onClientClose);
    ex.send();
  };

  readonly onUpgrade = (req: http.IncomingMessage, client: net.Socket, head: Buffer): void => {
    this.requests++;
    client.setNoDelay(true);
    client.on("error", noop);
    const raw = req.rawHeaders;
    const url = req.url ?? "/";
    let host: string | undefined;
    let xff: string | undefined;
    let preamble = `${req.method} ${url} HTTP/1.1\r\n`;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
      const value = raw[i + 1]!;
      const lower = name.toLowerCase();
      if (lower === "x-forwarded-for") xff = xff === undefined ? value : `${xff}, ${value}`;
      if (DROPPED_UPGRADE_HEADERS.has(lower)) continue;
      if (lower === "host") host = value;
      preamble += `${name}: ${value}\r\n`;
    }
    const match = this.router.current.lookup(host, url);
    if (!match) return rejectUpgrade(client, 404, { error: "no route", host: host ?? null, path: url });
    const upstream = match.pool.pick(this.router.unhealthy);
    if (!upstream) return rejectUpgrade(client, 503, { error: "no healthy instance", service: match.route.service });
    const remote = clientAddress(client);
    preamble += `X-Forwarded-For: ${xff === undefined ? remote : `${xff}, ${remote}`}\r\nX-Forwarded-Proto: http\r\n`;
    if (host !== undefined) preamble += `X-Forwarded-Host: ${host}\r\n`;
    preamble += "\r\n";
    const tunnel = new Tunnel(this, match.pool, client, head, preamble, upstream);
    match.pool.enter(tunnel);
    client.on("close", () => tunnel.close(tunnel.connected));
    tunnel.connect();
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
    if (code === "ECONNREFUSED") this.router.markDown(u.id, "refused");
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
      if (connected || error?.code === "ECONNREFUSED" || error?.code === "ECONNRESET") this.router.markDown(u.id, "reset");
    });
    // Flowing, so that the upstream's FIN is seen even though nothing is read.
    socket.resume();
  }

  stopProbes(): void {
    for (const end of [...this.probes.values()]) end();
    this.probes.clear();
  }
}
