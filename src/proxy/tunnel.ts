// A WebSocket (or other Upgrade) connection piped between a client and an upstream.

import net from "node:net";
import type { Upstream } from "./contract.js";
import type { ExchangeHost } from "./exchange.js";
import type { Cuttable, Pool } from "./table.js";

/** A WebSocket (or other Upgrade) connection piped between client and upstream. */
export class Tunnel implements Cuttable {
  readonly plane: ExchangeHost;
  readonly pool: Pool;
  readonly client: net.Socket;
  readonly head: Buffer;
  readonly preamble: string;
  upstream: Upstream;
  upSocket: net.Socket | undefined;
  attempts = 0;
  connected = false;
  closed = false;

  constructor(plane: ExchangeHost, pool: Pool, client: net.Socket, head: Buffer, preamble: string, upstream: Upstream) {
    this.plane = plane;
    this.pool = pool;
    this.client = client;
    this.head = head;
    this.preamble = preamble;
    this.upstream = upstream;
  }

  connect(): void {
    this.attempts++;
    const up = net.connect({ host: this.upstream.host, port: this.upstream.port, noDelay: true });
    this.upSocket = up;
    up.once("connect", () => {
      this.connected = true;
      up.write(this.preamble);
      if (this.head.length > 0) up.write(this.head);
      up.pipe(this.client);
      this.client.pipe(up);
    });
    up.on("error", (err: NodeJS.ErrnoException) => this.onUpstreamError(up, err));
    up.on("close", () => {
      if (this.upSocket === up && this.connected) this.close(true);
    });
  }

  private onUpstreamError(up: net.Socket, err: NodeJS.ErrnoException): void {
    if (this.upSocket !== up || this.closed) return;
    this.plane.upstreamErrors++;
    if (!this.connected) {
      this.plane.noteFailure(this.upstream, err);
      const next = err.code === "ECONNREFUSED" && this.attempts < 2 ? this.pool.pick(this.plane.router.unhealthy, this.upstream) : undefined;
      if (next) {
        this.plane.retries++;
        this.upstream = next;
        this.connect();
        return;
      }
      const body = JSON.stringify({ error: "upstream failed", code: err.code ?? err.message });
      this.client.end(`HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      this.close(false);
      return;
    }
    this.close(false);
  }

  close(ok: boolean): void {
    if (this.closed) return;
    this.closed = true;
    this.upSocket?.destroy();
    if (ok || this.connected) this.client.destroy();
    this.pool.leave(this, ok);
  }

  cut(): void {
    this.client.destroy();
    this.close(false);
  }
}

