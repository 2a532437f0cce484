// Real upstream servers, an in-process proxy and tiny HTTP clients (one over a raw socket) for the proxy tests.

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
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
  opts: { method?: string; headers?: http.OutgoingHttpHeaders; body?: string | Buffer | Buffer[]; agent?: http.Agent | false; timeoutMs?: number } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method ?? "GET", headers: opts.headers, agent: opts.agent ?? false, timeout: opts.timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(chunks).toString("utf8") }));
    });
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error(`no answer within ${opts.timeoutMs} ms`)));
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

/** One parsed HTTP/1.1 response, its header fields as sent (names lower-cased), in order. */
export interface RawResponse {
  status: number;
  fields: [string, string][];
  body: string;
}

/** The values of every field named `name` (lower case), in order. */
export function fieldValues(fields: readonly [string, string][], name: string): string[] {
  return fields.filter(([n]) => n === name).map(([, v]) => v);
}

/**
 * An HTTP/1.1 client over a raw socket, for what http.request will not send (two Host fields, a
 * head sent byte by byte, a body never sent) or cannot show (a connection closed without an answer).
 */
export class RawClient {
  readonly socket: net.Socket;
  /** Set once the peer closed or reset the connection. */
  closedAt: number | undefined;
  private buf = Buffer.alloc(0);
  private wake: (() => void) | undefined;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      this.wake?.();
    });
    // A reset is a close without an answer, which is what several tests wait for.
    socket.on("error", () => undefined);
    socket.on("close", () => {
      this.closedAt = Date.now();
      this.wake?.();
    });
  }

  static connect(baseUrl: string): Promise<RawClient> {
    const { hostname, port } = new URL(baseUrl);
    return new Promise((resolve, reject) => {
      const socket = net.connect(Number(port), hostname, () => {
        socket.off("error", reject);
        resolve(new RawClient(socket));
      });
      socket.once("error", reject);
    });
  }

  write(text: string | Buffer): void {
    if (!this.socket.destroyed) this.socket.write(text);
  }

  get closed(): boolean {
    return this.closedAt !== undefined;
  }

  /** Resolves true once the connection is closed, or false after timeoutMs. */
  async waitClosed(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await this.more(deadline).catch(() => undefined);
    return this.closed;
  }

  /**
   * The next response on this connection; undefined when the connection closed before a whole
   * head arrived. Rejects when nothing conclusive happened within timeoutMs.
   */
  async response(timeoutMs = 5_000): Promise<RawResponse | undefined> {
    const deadline = Date.now() + timeoutMs;
    let end: number;
    while ((end = this.buf.indexOf("\r\n\r\n")) === -1) {
      if (this.closed) return undefined;
      await this.more(deadline);
    }
    const lines = this.buf.subarray(0, end).toString("latin1").split("\r\n");
    const status = Number(lines[0]!.slice(9, 12));
    const fields = lines.slice(1).map((l): [string, string] => [l.slice(0, l.indexOf(":")).trim().toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]);
    this.buf = this.buf.subarray(end + 4);
    const length = fieldValues(fields, "content-length")[0];
    const chunked = /chunked/i.test(fieldValues(fields, "transfer-encoding").join(","));
    let body: Buffer;
    if (status < 200 || status === 204 || status === 304) {
      body = Buffer.alloc(0);
    } else if (length !== undefined) {
      while (this.buf.length < Number(length) && !this.closed) await this.more(deadline);
      body = this.buf.subarray(0, Number(length));
      this.buf = this.buf.subarray(body.length);
    } else if (chunked) {
      const pieces: Buffer[] = [];
      for (;;) {
        let nl: number;
        while ((nl = this.buf.indexOf("\r\n")) === -1) {
          if (this.closed) throw new Error("connection closed inside a chunked body");
          await this.more(deadline);
        }
        const size = parseInt(this.buf.subarray(0, nl).toString("latin1"), 16);
        while (this.buf.length < nl + 2 + size + 2) {
          if (this.closed) throw new Error("connection closed inside a chunked body");
          await this.more(deadline);
        }
        pieces.push(this.buf.subarray(nl + 2, nl + 2 + size));
        this.buf = this.buf.subarray(nl + 2 + size + 2);
        if (size === 0) break;
      }
      body = Buffer.concat(pieces);
    } else {
      while (!this.closed) await this.more(deadline);
      body = this.buf;
      this.buf = Buffer.alloc(0);
    }
    return { status, fields, body: body.toString("utf8") };
  }

  close(): void {
    this.socket.destroy();
  }

  private more(deadline: number): Promise<void> {
    const left = deadline - Date.now();
    if (left <= 0) return Promise.reject(new Error("no conclusive answer in time"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.wake = undefined;
        reject(new Error("no conclusive answer in time"));
      }, left);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
    });
  }
}

/** Sends one raw request on a fresh connection and reads its answer (undefined: closed without one). */
export async function rawRequest(baseUrl: string, text: string, timeoutMs = 5_000): Promise<RawResponse | undefined> {
  const c = await RawClient.connect(baseUrl);
  try {
    c.write(text);
    return await c.response(timeoutMs);
  } finally {
    c.close();
  }
}

/**
 * An upstream address whose connections are never accepted, so that connecting to it hangs: a
 * child process listens with a backlog of 1 and blocks, and filler connections take the queue.
 * Further SYNs are dropped, as from a host that went away.
 */
export async function startUnacceptingUpstream(id: string): Promise<{ upstream: Upstream; close(): Promise<void> }> {
  const script = `
    const s = require("node:net").createServer();
    s.listen({ port: 0, host: "127.0.0.1", backlog: 1 }, () => {
      process.stdout.write(s.address().port + "\\n");
      // Blocks the event loop without using the CPU: nothing is ever accepted.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000);
    });`;
  const child = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "ignore"] });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.once("data", (d: Buffer) => resolve(Number(d.toString().trim())));
    child.once("error", reject);
  });
  const fillers: net.Socket[] = [];
  // The queue takes backlog + 1 connections; keep connecting until one hangs.
  for (let i = 0; i < 16; i++) {
    const socket = net.connect(port, "127.0.0.1");
    socket.on("error", () => undefined);
    fillers.push(socket);
    const connected = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 250);
      socket.once("connect", () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    if (!connected) break;
  }
  return {
    upstream: { id, host: "127.0.0.1", port },
    close: async () => {
      for (const s of fillers) s.destroy();
      child.kill("SIGKILL");
    },
  };
}
