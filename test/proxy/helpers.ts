// Real upstream servers, an in-process proxy and a tiny HTTP client for the proxy tests.

import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { BuiltinProxy } from "../../src/proxy/builtin.js";
import type { Route, RouteTable, Upstream } from "../../src/proxy/contract.js";
import { type ProxyServer, startProxyServer } from "../../src/proxy/server.js";

export interface TestUpstream {
  id: string;
  port: number;
  upstream: Upstream;
  server: http.Server;
  hits: number;
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

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

export function request(
  url: string,
  opts: { method?: string; headers?: http.OutgoingHttpHeaders; body?: string | Buffer | Buffer[]; agent?: http.Agent | false } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method ?? "GET", headers: opts.headers, agent: opts.agent ?? false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(chunks).toString("utf8") }));
    });
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
