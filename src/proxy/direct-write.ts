// A whole small message written straight to a socket's handle, past net.Socket's Writable.
//
// Every socket.write() walks Writable's state machine (write, _write, writeOrBuffer, the socket's
// _writeGeneric, a write request, afterWriteDispatched, onwrite) and ends in a process.nextTick
// for its bookkeeping, even when the bytes went to the kernel at once and no callback waits. The
// proxy writes two such messages a request (the upstream request head, the whole small answer),
// on sockets whose Writable holds nothing: for those, this does what Node's own writeGeneric does
// (a WriteWrap, the handle's writeLatin1String or writeBuffer) and nothing else. Bytes cost less
// than a string here: a string is copied into bytes by Node on every write, bytes the proxy made
// once (a repeated head) go to the kernel as they are.
//
// The handle's write and its state live in Node's stream_wrap binding, which process.binding
// still exposes (documentation-only deprecated, DEP0111). Where it is missing, or the socket has
// anything queued, corked or in flight, the message goes through socket.write() as before, so
// the order of bytes on a socket never changes: libuv writes every request of a handle in order.

import type net from "node:net";
import util from "node:util";

interface WriteReq {
  handle: StreamHandle;
  oncomplete: (this: WriteReq, status: number) => void;
  async: boolean;
  bytes: number;
  /** The bytes libuv still writes from, kept alive while it does (as Node's writeGeneric keeps them). */
  buffer: Uint8Array | null;
  socket: net.Socket | undefined;
  done: ((arg: unknown) => void) | undefined;
  arg: unknown;
}

interface StreamHandle {
  writeLatin1String(req: WriteReq, text: string): number;
  writeBuffer(req: WriteReq, bytes: Uint8Array): number;
}

interface StreamWrapBinding {
  WriteWrap: new () => WriteReq;
  streamBaseState: Int32Array;
  kLastWriteWasAsync: number;
}

type DirectSocket = net.Socket & { _handle?: StreamHandle | null; [kInFlight]?: number };

const kInFlight = Symbol("directWritesInFlight");

const binding = loadBinding();

function loadBinding(): StreamWrapBinding | undefined {
  try {
    const b = (process as unknown as { binding(name: string): Partial<StreamWrapBinding> }).binding("stream_wrap");
    if (typeof b.WriteWrap === "function" && b.streamBaseState instanceof Int32Array && typeof b.kLastWriteWasAsync === "number") return b as StreamWrapBinding;
  } catch {
    // A Node.js without process.binding: socket.write() does it all.
  }
  return undefined;
}

/** True when this Node.js lets writeLatin1 skip the Writable (asserted by the tests on the Node.js they run on). */
export const directWrites = binding !== undefined;

/**
 * Writes `text` (latin1: one byte a character) to `socket`; `done(arg)` runs once the bytes are
 * with the kernel and the current callback has returned, as socket.write's callback would (never
 * on a failed write: the socket is destroyed with the error, as Node does). With `arg`, `done`
 * needs no closure.
 */
export function writeLatin1<T>(socket: net.Socket, text: string, done?: (arg: T) => void, arg?: T): void {
  write(socket, text, done, arg);
}

/**
 * writeLatin1 for bytes. Returns true when they went to the kernel whole during the call: the
 * caller may then change them at once. Otherwise (a write that waits, or one through the
 * Writable) they are the socket's until `done` runs, and must stay as they are.
 */
export function writeBytes<T>(socket: net.Socket, bytes: Uint8Array, done?: (arg: T) => void, arg?: T): boolean {
  return write(socket, bytes, done, arg);
}

function write<T>(socket: net.Socket, data: string | Uint8Array, done: ((arg: T) => void) | undefined, arg: T | undefined): boolean {
  const s = socket as DirectSocket;
  const handle = s._handle;
  if (binding === undefined || !handle || s.writableLength !== 0 || s.writableCorked !== 0 || s.connecting || s.destroyed || s.writableEnded || (s[kInFlight] ?? 0) !== 0 || typeof handle.writeLatin1String !== "function") {
    socket.write(data, "latin1", done === undefined ? undefined : (err) => void (err ? undefined : done(arg as T)));
    return false;
  }
  const req = spare ?? newWriteReq(binding);
  spare = undefined;
  req.handle = handle;
  req.socket = socket;
  req.done = done as ((arg: unknown) => void) | undefined;
  req.arg = arg;
  const err = typeof data === "string" ? handle.writeLatin1String(req, data) : handle.writeBuffer(req, data);
  if (err !== 0) {
    socket.destroy(writeError(err));
    return false;
  }
  if (binding.streamBaseState[binding.kLastWriteWasAsync] !== 0) {
    // Part of it waits in libuv for the socket to take it: later writes queue behind it (through
    // the Writable, which keeps the order) until it completes. The request is libuv's until then.
    req.async = true;
    if (typeof data !== "string") req.buffer = data;
    s[kInFlight] = (s[kInFlight] ?? 0) + 1;
    return false;
  }
  // Written whole at once: Node's C++ side never took hold of the request object, so the next write may use it.
  req.socket = req.done = req.arg = undefined;
  spare = req;
  if (done !== undefined) later(done, arg as T);
  return true;
}

/**
 * The callbacks of writes that went out whole at once, in the order of their writes, run together
 * once the callback that wrote them returns: one promise reaction for them all costs less than a
 * process.nextTick each (its tick object, its async hooks, its pass over promise rejections).
 * A callback that throws is an uncaught exception, as it would be from a tick, and the callbacks
 * after it still run.
 */
let callbacks: unknown[] = [];
const RESOLVED = Promise.resolve();

function later<T>(done: (arg: T) => void, arg: T): void {
  if (callbacks.length === 0) void RESOLVED.then(runCallbacks);
  callbacks.push(done, arg);
}

function runCallbacks(): void {
  const batch = callbacks;
  callbacks = [];
  for (let i = 0; i < batch.length; i += 2) {
    try {
      (batch[i] as (arg: unknown) => void)(batch[i + 1]);
    } catch (err) {
      // As from a tick: the error is uncaught, and the callbacks after this one still run, first.
      const rest = batch.slice(i + 2);
      if (callbacks.length === 0 && rest.length !== 0) void RESOLVED.then(runCallbacks);
      callbacks = rest.concat(callbacks);
      process.nextTick(rethrow, err);
      return;
    }
  }
}

function rethrow(err: unknown): never {
  throw err;
}

/**
 * A write request that no write holds. StreamBase attaches its C++ write to the request object
 * only when the write waits in libuv; one written whole at once leaves it untouched, so one object
 * serves every such write instead of a WriteWrap constructed (a call into C++) per write.
 */
let spare: WriteReq | undefined;

function newWriteReq(b: StreamWrapBinding): WriteReq {
  const req = new b.WriteWrap();
  req.oncomplete = onComplete;
  req.async = false;
  req.bytes = 0;
  req.buffer = null;
  return req;
}

/** libuv finished an asynchronous write: status < 0 is its error (ECANCELED when the socket closed first). */
function onComplete(this: WriteReq, status: number): void {
  const s = this.socket as DirectSocket;
  s[kInFlight] = (s[kInFlight] ?? 1) - 1;
  if (status < 0) {
    if (!s.destroyed) s.destroy(writeError(status));
    return;
  }
  this.done?.(this.arg);
}

/** The error Node's own write would give: "write EPIPE", with errno, code and syscall. */
function writeError(errno: number): NodeJS.ErrnoException {
  const [code] = util.getSystemErrorMap().get(errno) ?? [`E${-errno}`];
  return Object.assign(new Error(`write ${code}`), { errno, code, syscall: "write" });
}
