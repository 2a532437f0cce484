// Real upstream servers, an in-process proxy and a tiny HTTP client for the proxy tests.

import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { BuiltinProxy, type RunningProxy } from "../../src/proxy/builtin.js";
import { pidAlive } from "../../src/util/proc.js";
import type { ProxyLimits, ProxyTimeouts, Route, RouteTable, TlsSettings, Upstream } from "../../src/proxy/contract.js";
import { type ProxyServer, startProxyServer } from "../../src/proxy/server.js";
import { DEFAULT_PROXY_LIMITS, DEFAULT_PROXY_TIMEOUTS } from "../../src/proxy/settings.js";

export interface TestUpstream {
  id: string;
  port: number;
  upstream: Upstream;
  server: http.Server;
  hits: number;
  /** "METHOD url" of every request it got, in order. */
  seen: string[];
  close(): Promise<void>;
}

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer) => void;

/** Echoes what it received as JSON: who answered, method, url, headers and body. */
export const echo: (id: string) => Handler = (id) => (req, res, body) => {
  const text = JSON.stringify({ id, method: req.method, url: req.url, headers: req.headers, body: body.toString("utf8") });
  res.writeHead(200, { "content-type": "application/json", "x-upstream": id }).end(text);
};

export async function startUpstream(id: string, handler: Handler = echo(id)): Promise<TestUpstream> {
  const server = http.createServer((req, res) => {
    t.hits++;
    t.seen.push(`${req.method} ${req.url}`);
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => handler(req, res, Buffer.concat(chunks)));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const t: TestUpstream = {
    id,
    port,
    upstream: { id, host: "127.0.0.1", port },
    server,
    hits: 0,
    seen: [],
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return t;
}

/** A port on 127.0.0.1 where nothing listens: connections to it are refused. */
export async function refusedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface TestProxy {
  server: ProxyServer;
  proxy: BuiltinProxy;
  stateDir: string;
  token: string;
  base: string;
  controlUrl: string;
  close(): Promise<void>;
}

export async function startTestProxy(): Promise<TestProxy> {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), "turquoise-proxy-test-"));
  const token = randomBytes(16).toString("hex");
  const server = await startProxyServer({ listenHost: "127.0.0.1", listenPort: 0, stateDir, token });
  const controlUrl = `http://127.0.0.1:${server.controlPort}`;
  return {
    server,
    proxy: new BuiltinProxy({ controlUrl, token }),
    stateDir,
    token,
    base: `http://127.0.0.1:${server.listenPort}`,
    controlUrl,
    close: async () => {
      await server.close(200);
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}

export function route(service: string, poolId: string, upstreams: Upstream[], extra: Partial<Route> = {}): Route {
  return { service, pathPrefix: "/", poolId, upstreams, ...extra };
}

export function table(version: number, ...routes: Route[]): RouteTable {
  return { version, routes };
}

export interface TestSettings {
  timeouts?: Partial<ProxyTimeouts>;
  limits?: Partial<ProxyLimits>;
  trustedProxies?: string[];
  tls?: TlsSettings;
}

/** A table with settings: the defaults, with what `settings` sets over them. */
export function tableWith(version: number, settings: TestSettings, ...routes: Route[]): RouteTable {
  return {
    version,
    routes,
    settings: {
      timeouts: { ...DEFAULT_PROXY_TIMEOUTS, ...settings.timeouts },
      limits: { ...DEFAULT_PROXY_LIMITS, ...settings.limits },
      trustedProxies: settings.trustedProxies ?? [],
      ...(settings.tls ? { tls: settings.tls } : {}),
    },
  };
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

export function request(
  url: string,
  opts: { method?: string; headers?: http.OutgoingHttpHeaders; body?: string | Buffer | Buffer[]; agent?: http.Agent | false; localAddress?: string; timeoutMs?: number } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method ?? "GET", headers: opts.headers, agent: opts.agent ?? false, localAddress: opts.localAddress, timeout: opts.timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(chunks).toString("utf8") }));
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${opts.timeoutMs} ms`)));
    req.on("error", reject);
    if (Array.isArray(opts.body)) {
      // Written piece by piece without a length, so the body goes out chunked.
      for (const piece of opts.body) req.write(piece);
      req.end();
    } else {
      req.end(opts.body);
    }
  });
}

export function json<T = Record<string, unknown>>(reply: Reply): T {
  return JSON.parse(reply.text) as T;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A client connection at the byte level, for what an HTTP client library would not send (two
 * Host headers, a header trickled a byte at a time, a request after an upgrade) and for watching
 * when the proxy closes the connection.
 */
export class RawClient {
  readonly socket: net.Socket;
  /** Everything received so far, as latin1. */
  received = "";
  closed = false;
  readonly opened = performance.now();
  closedAfterMs = -1;
  error: string | undefined;
  private readonly waiters = new Set<() => void>();

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (d: Buffer) => {
      this.received += d.toString("latin1");
      this.wake();
    });
    socket.on("error", (e: NodeJS.ErrnoException) => (this.error = e.code ?? e.message));
    socket.on("close", () => {
      this.closed = true;
      this.closedAfterMs = performance.now() - this.opened;
      this.wake();
    });
  }

  /** `localAddress`: the client's own address, e.g. 127.0.0.2 to stand for a second peer. */
  static connect(port: number, localAddress?: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: "127.0.0.1", port, localAddress });
      socket.once("connect", () => resolve(new RawClient(socket)));
      socket.once("error", reject);
    });
  }

  write(data: string | Buffer): void {
    if (!this.socket.destroyed) this.socket.write(data);
  }

  /** Resolves true once `test` holds for what was received, false when the connection closed or ms ran out first. */
  waitFor(test: (received: string) => boolean, ms = 5_000): Promise<boolean> {
    return new Promise((resolve) => {
      const check = (): void => {
        if (test(this.received)) return finish(true);
        if (this.closed) return finish(false);
      };
      const finish = (ok: boolean): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(ok);
      };
      const timer = setTimeout(() => finish(false), ms);
      this.waiters.add(check);
      check();
    });
  }

  /** Resolves true once the proxy closed the connection, false when ms ran out first. */
  async waitClose(ms = 5_000): Promise<boolean> {
    await this.waitFor(() => false, ms);
    return this.closed;
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }
}

/** The status codes of every response in a raw byte stream, in order. */
export function statuses(received: string): number[] {
  return [...received.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
}

/** SIGKILLs proxy processes a test spawned, their workers first: nothing outlives the test file. */
export async function killProxies(running: readonly RunningProxy[]): Promise<void> {
  for (const p of running) {
    for (const w of (await p.proxy.health().catch(() => undefined))?.workers ?? []) if (pidAlive(w.pid)) process.kill(w.pid, "SIGKILL");
    if (pidAlive(p.pid)) process.kill(p.pid, "SIGKILL");
  }
}

/** A proxy with one route (`app.test`, or every host) to one echoing upstream, and the proxy's plain port. */
export interface AppProxy {
  p: TestProxy;
  u: TestUpstream;
  port: number;
  close(): Promise<void>;
}

export async function startAppProxy(extra: Partial<Route> = {}): Promise<AppProxy> {
  const p = await startTestProxy();
  const u = await startUpstream("u");
  await p.proxy.apply(table(1, route("app", "app:1", [u.upstream], extra)));
  return {
    p,
    u,
    port: Number(new URL(p.base).port),
    close: async () => {
      await p.close();
      await u.close();
    },
  };
}
