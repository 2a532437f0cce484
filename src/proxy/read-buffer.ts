// The worker's one read buffer, and net's `onread` mode for the sockets that read into it: no
// Buffer allocated, no Readable push and no "data" event per read (see docs/benchmarks.md,
// bench:proxy). A read is handled to its end before the next one lands, so bytes kept past a read
// callback (a partial head, pipelined requests, a body chunk on its way to another socket whose
// write may complete later) are copied out of it first: `owned`.

import net from "node:net";

/** Shared by every socket of this process that reads in onread mode: client and upstream sockets alike. */
export const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/** buf as bytes of its own: a copy when it is a view of READ_BUFFER, else buf itself. */
export function owned(buf: Buffer): Buffer {
  return buf.buffer === READ_BUFFER.buffer ? Buffer.from(buf) : buf;
}

/** Called with the bytes of one read, a view of READ_BUFFER valid until the callback returns. */
export type ReadCallback = (bytes: Buffer) => void;

/**
 * The socket fields net sets from its `onread` option, found by their values on a socket created
 * with that option: net.Server gives the sockets it accepts no such option, so they are set on the
 * accepted socket as the constructor would have set them. Undefined when this Node keeps them
 * elsewhere; acceptedReadInto then returns false and the caller reads "data" events.
 */
const onreadFields = ((): { buffer: symbol; callback: symbol } | undefined => {
  const buffer = Buffer.alloc(1);
  const callback = (): boolean => true;
  // The option is net.Socket's own (net.connect passes it through), though the types list it for net.connect only.
  const probe = new net.Socket({ onread: { buffer, callback } } as net.SocketConstructorOpts);
  const record = probe as unknown as Record<symbol, unknown>;
  const symbols = Object.getOwnPropertySymbols(probe);
  const bufferField = symbols.find((s) => record[s] === buffer);
  const callbackField = symbols.find((s) => record[s] === callback);
  return bufferField && callbackField ? { buffer: bufferField, callback: callbackField } : undefined;
})();

type UserBufferHandle = { useUserBuffer?: (buf: Uint8Array) => void; reading?: boolean };

/**
 * Switches a socket a net.Server just accepted (in its "connection" event, before any read event
 * could run) to onread mode into READ_BUFFER. Returns false, changing nothing, where that cannot
 * be done: a Node whose socket internals differ. A TLS socket switches too, at its handshake: its
 * TLS layer then decrypts into the same buffer.
 * Pause and resume keep working (net stops and starts reading); "end" and "close" still come.
 */
export function acceptedReadInto(socket: net.Socket, onBytes: ReadCallback): boolean {
  const handle = (socket as unknown as { _handle?: UserBufferHandle | null })._handle;
  if (onreadFields === undefined || typeof handle?.useUserBuffer !== "function") return false;
  const record = socket as unknown as Record<symbol, unknown>;
  record[onreadFields.buffer] = READ_BUFFER;
  record[onreadFields.callback] = (n: number): boolean => {
    onBytes(READ_BUFFER.subarray(0, n));
    return true;
  };
  handle.useUserBuffer(READ_BUFFER);
  return true;
}

/** Whether accepted sockets can be read in onread mode on this Node (a test holds it true). */
export function acceptedReadIntoSupported(): boolean {
  return onreadFields !== undefined;
}
