// The data plane's client-facing server (client-server.ts): listening on an address (the in-process proxy) or on
// a listening socket inherited as a file descriptor (a supervised worker), with a TLS listener
// beside it when the proxy terminates TLS, and closed gracefully: stop accepting, send keep-alive
// clients elsewhere, let in-flight requests finish, cut the rest.

import net from "node:net";
import { type ClientRequest, type ClientResponse, ClientServer } from "./client-server.js";
import type { CertStoreOptions } from "./cert-store.js";
import { CLIENT_CHECK_INTERVAL_MS, type DataPlane } from "./data-plane.js";

/**
 * The accept queue asked of the kernel (which caps it at net.core.somaxconn). Larger than Node's
 * 511 because while a supervised worker is replaced, new connections wait in this queue.
 */
export const LISTEN_BACKLOG = 4_096;
const CLOSE_POLL_MS = 25;

export interface DataServerCloseOptions {
  /** How long in-flight requests and tunnels may go on before they are cut. */
  graceMs: number;
  /**
   * How long a keep-alive connection may sit without a request before it is closed. 0 closes
   * idle connections at once, when nobody will take their next request anyway. When another
   * process takes the socket, a while lets the client's next request arrive here and be answered
   * with Connection: close, rather than meet a connection closed under it.
   */
  idleGraceMs: number;
}

export class DataServer {
  readonly server: ClientServer;
  private readonly plane: DataPlane;
  private closing: Promise<void> | undefined;

  constructor(plane: DataPlane) {
    this.plane = plane;
    // The timeouts and limits come from the table (plane.attach, then each apply); only how often
    // they are checked is fixed here. A missing Host is the data plane's 400, and counted there.
    this.server = new ClientServer({ checkIntervalMs: CLIENT_CHECK_INTERVAL_MS });
    plane.attach(this.server);
  }

  /** `{ host, port }`, or `{ fd }` for a listening socket this process inherited. */
  listen(where: ListenAt): Promise<net.AddressInfo> {
    return listenOn(this.server, where);
  }

  /**
   * Stops accepting on both listeners and goes on serving the connections it has: their requests,
   * timeouts and keep-alive are as before. A supervised worker's sockets stay its supervisor's.
   */
  pauseAccepting(): void {
    // net.Server's close, not ClientServer's: that one also stops the sweep of idle and slow connections.
    if (this.server.listening) net.Server.prototype.close.call(this.server);
    const edge = this.plane.edge;
    // No callback: each would wait, one more listener a pause, for the edge's last connection.
    if (edge?.server.listening) net.Server.prototype.close.call(edge.server);
  }

  /** Terminates TLS on a second listener, with the certificates the table names; its connections join this server's. */
  async listenTls(where: ListenAt, storeOptions: CertStoreOptions): Promise<net.AddressInfo> {
    const edge = this.plane.edge ?? this.plane.enableTls(storeOptions);
    const address = await listenOn(edge.server, where);
    edge.httpsPort = address.port;
    return address;
  }

  /** Stops accepting, then lets in-flight requests finish for up to graceMs and cuts the rest. */
  close(opts: DataServerCloseOptions): Promise<void> {
    return (this.closing ??= this.shutdown(opts));
  }

  private async shutdown({ graceMs, idleGraceMs }: DataServerCloseOptions): Promise<void> {
    const server = this.server;
    const edge = this.plane.edge;
    // From now on every response says Connection: close, so that a keep-alive client sends its
    // next request on a new connection, which whoever holds the socket next accepts.
    const lastOnThisConnection = (_req: ClientRequest, res: ClientResponse): void => {
      res.shouldKeepAlive = false;
    };
    server.prependListener("request", lastOnThisConnection);
    // net.Server's close, not ClientServer's: that one also stops the sweep, which must go on
    // ending idle and slow connections while in-flight requests finish.
    const closed = new Promise<void>((resolve) => net.Server.prototype.close.call(server, () => resolve()));
    const tlsClosed = edge === undefined ? Promise.resolve() : new Promise<void>((resolve) => edge.stopAccepting(resolve));
    const started = Date.now();
    for (;;) {
      const elapsedMs = Date.now() - started;
      const idleDue = elapsedMs >= idleGraceMs;
      if (idleDue) server.closeIdleConnections();
      if (elapsedMs >= graceMs) break;
      if (this.plane.inFlight() === 0 && (idleDue || (await connectionCount(server)) + (edge ? await edge.connectionCount() : 0) === 0)) break;
      await sleep(CLOSE_POLL_MS);
    }
    this.plane.cutAll();
    // TLS connections are the HTTP server's too once their handshake is done: closed with its own.
    server.closeAllConnections();
    edge?.cutAll();
    // The server's own close now, for what it adds: it stops the client-timeout sweep.
    server.close();
    await closed;
    await tlsClosed;
    this.plane.upstreams.destroy();
    this.plane.stopProbes();
  }
}

/** An address; a listening socket inherited as a file descriptor; or one's handle, handed over IPC. */
export type ListenAt = { host: string; port: number } | { fd: number } | { handle: object };

function listenOn(server: net.Server, where: ListenAt): Promise<net.AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    const listening = (): void => {
      server.off("error", reject);
      resolve(server.address() as net.AddressInfo);
    };
    if ("host" in where) {
      server.listen({ ...where, backlog: LISTEN_BACKLOG }, listening);
      return;
    }
    if ("fd" in where) server.listen({ fd: where.fd }, listening);
    else server.listen(where.handle, listening);
    // On a descriptor or a handle Node listens with its default backlog of 511, whatever it is
    // asked for, and the backlog is the socket's: the queue the connections wait in while workers
    // are replaced would shrink to it. The same listen() again, at once, sets it.
    (server as unknown as { _handle?: { listen?(backlog: number): number } })._handle?.listen?.(LISTEN_BACKLOG);
  });
}

function connectionCount(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.getConnections((err, count) => resolve(err ? 0 : count)));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
