// The proxy's listening socket as the supervisor holds it: bound, its file descriptor handed to
// every worker, and never watched by the supervisor itself, so that the supervisor never accepts a
// connection and the socket (with its accept queue) outlives any worker.

import dns from "node:dns/promises";
import net from "node:net";
import util from "node:util";

/** Node's TCP handle, as net._createServerHandle returns it. */
interface TcpHandle {
  readonly fd: number;
  getsockname(out: { address?: string; port?: number; family?: string }): number;
  close(): void;
}

type CreateServerHandle = (address: string, port: number, addressType: 4 | 6) => TcpHandle | number;

export interface ListenSocket {
  host: string;
  port: number;
  /** For a worker's stdio: it finds the socket at that position. */
  fd: number;
  /** Node's handle of the socket: sent over IPC to a worker that accepts again after it paused. */
  handle: object;
  close(): void;
}

/**
 * Binds host:port (port 0: any free one). It listens once the first worker calls listen() on its
 * copy, and it keeps listening while this process holds it, even with no worker alive: then the
 * kernel completes handshakes and queues the connections until the next worker accepts them.
 *
 * Node's public API cannot bind without also accepting (server.listen does both), so this uses
 * net._createServerHandle: the same call with which Node's cluster primary holds a shared socket
 * (undocumented, unchanged since Node 0.12). Node's cluster itself does not fit: its primary
 * closes the socket when the last worker exits, and with one worker that refuses connections.
 */
export async function bindListenSocket(host: string, port: number): Promise<ListenSocket> {
  const address = net.isIP(host) !== 0 ? host : (await dns.lookup(host)).address;
  const create = (net as unknown as { _createServerHandle?: CreateServerHandle })._createServerHandle;
  if (typeof create !== "function") throw new Error(`Node.js ${process.version} has no net._createServerHandle, which the proxy's supervisor needs`);
  const handle = create(address, port, net.isIPv6(address) ? 6 : 4);
  if (typeof handle === "number") throw listenError(handle, address, port);
  // libuv keeps a bind's EADDRINUSE for listen() and reports it from getsockname() meanwhile:
  // unchecked, a worker's listen() would bind the unbound socket to some random port.
  const name: { port?: number } = {};
  const err = handle.getsockname(name);
  if (err !== 0 || !name.port) {
    handle.close();
    throw listenError(err, address, port);
  }
  let closed = false;
  return {
    host: address,
    port: name.port,
    fd: handle.fd,
    handle,
    close: () => {
      if (closed) return;
      closed = true;
      handle.close();
    },
  };
}

/** The error Node's own listen() would throw: "listen EADDRINUSE: address already in use 127.0.0.1:8080". */
function listenError(errno: number, address: string, port: number): NodeJS.ErrnoException {
  const [code, description] = util.getSystemErrorMap().get(errno) ?? ["EINVAL", "invalid argument"];
  return Object.assign(new Error(`listen ${code}: ${description} ${address}:${port}`), { errno, code, syscall: "listen", address, port });
}
