// A raw HTTP/1.1 client for the proxy contract suite (what http.request will not send or cannot
// show), and an upstream that never accepts a connection, for connect timeouts.

import { spawn } from "node:child_process";
import net from "node:net";
import type { Upstream } from "../../src/proxy/contract.js";

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
export class RawHttpClient {
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

  static connect(baseUrl: string): Promise<RawHttpClient> {
    const { hostname, port } = new URL(baseUrl);
    return new Promise((resolve, reject) => {
      const socket = net.connect(Number(port), hostname, () => {
        socket.off("error", reject);
        resolve(new RawHttpClient(socket));
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
  const c = await RawHttpClient.connect(baseUrl);
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
