// Upstreams that misbehave on purpose, for the proxy's timeout and cap tests: one whose handshake never completes, one that never answers, and proxy settings for short waits.

import net from "node:net";
import { Worker } from "node:worker_threads";
import type { ProxyLimits, ProxySettings, ProxyTimeouts, Upstream } from "../../src/proxy/contract.js";
import { defaultProxySettings } from "../../src/proxy/settings.js";

/** Table settings: the defaults, with the given timeouts and limits over them. */
export function proxySettings(over: { timeouts?: Partial<ProxyTimeouts>; limits?: Partial<ProxyLimits> }): ProxySettings {
  const d = defaultProxySettings();
  return { ...d, timeouts: { ...d.timeouts, ...over.timeouts }, limits: { ...d.limits, ...over.limits } };
}

export interface UnconnectableUpstream {
  upstream: Upstream;
  close(): Promise<void>;
}

// Runs in a worker: listens with a backlog of 1, reports its port, then blocks its thread so that
// nothing ever accepts. Once the kernel's accept queue is full, a SYN is dropped and connect() hangs.
const LISTEN_AND_FREEZE = `
const { parentPort, workerData } = require("node:worker_threads");
const net = require("node:net");
const server = net.createServer();
server.listen({ port: 0, host: "127.0.0.1", backlog: 1 }, () => {
  parentPort.postMessage(server.address().port);
  Atomics.wait(new Int32Array(workerData), 0, 0);
  process.exit(0);
});
`;

/** How long a filler connection may take before the accept queue counts as full. */
const FULL_QUEUE_PROBE_MS = 150;

/**
 * A loopback address whose TCP handshake never completes: a listener that never accepts, its
 * accept queue filled by connections held here. Loopback only, unlike an unrouted address.
 */
export async function startUnconnectable(id: string): Promise<UnconnectableUpstream> {
  const flag = new SharedArrayBuffer(4);
  const worker = new Worker(LISTEN_AND_FREEZE, { eval: true, workerData: flag });
  const port = await new Promise<number>((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
  });
  const fillers: net.Socket[] = [];
  let full = false;
  for (let i = 0; i < 16 && !full; i++) {
    const socket = net.connect(port, "127.0.0.1");
    socket.on("error", () => {});
    fillers.push(socket);
    full = !(await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), FULL_QUEUE_PROBE_MS);
      socket.once("connect", () => {
        clearTimeout(timer);
        resolve(true);
      });
    }));
  }
  const close = async (): Promise<void> => {
    for (const s of fillers) s.destroy();
    Atomics.store(new Int32Array(flag), 0, 1);
    Atomics.notify(new Int32Array(flag), 0);
    await new Promise<void>((resolve) => worker.once("exit", () => resolve()));
  };
  if (!full) {
    await close();
    throw new Error("could not fill the accept queue of a never-accepting listener");
  }
  return { upstream: { id, host: "127.0.0.1", port }, close };
}

export interface SilentUpstream {
  upstream: Upstream;
  /** Connections accepted so far. */
  accepted: number;
  /** Connections open right now. */
  open: number;
  /** The most connections open at once. */
  maxOpen: number;
  /** Resolves once no connection is open. */
  whenNoneOpen(): Promise<void>;
  close(): Promise<void>;
}

/** Accepts connections and never answers; reads the requests unless `read` is false. */
export async function startSilent(id: string, opts: { read?: boolean } = {}): Promise<SilentUpstream> {
  const sockets = new Set<net.Socket>();
  let idleWaiters: (() => void)[] = [];
  const server = net.createServer((socket) => {
    sockets.add(socket);
    s.accepted++;
    s.open++;
    s.maxOpen = Math.max(s.maxOpen, s.open);
    socket.on("error", () => {});
    if (opts.read === false) socket.pause();
    else socket.resume();
    socket.on("close", () => {
      sockets.delete(socket);
      s.open--;
      if (s.open === 0) {
        const waiters = idleWaiters;
        idleWaiters = [];
        for (const w of waiters) w();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen({ port: 0, host: "127.0.0.1", backlog: 4096 }, resolve));
  const port = (server.address() as net.AddressInfo).port;
  const s: SilentUpstream = {
    upstream: { id, host: "127.0.0.1", port },
    accepted: 0,
    open: 0,
    maxOpen: 0,
    whenNoneOpen: () => (s.open === 0 ? Promise.resolve() : new Promise((resolve) => idleWaiters.push(resolve))),
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
  return s;
}
