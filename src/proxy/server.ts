// The built-in proxy process's servers: the data plane (public HTTP + WebSocket) and the control
// API (loopback HTTP, bearer token), started and stopped together. The table reference is swapped
// synchronously, and each request resolves its route and pool once, on arrival, so no request
// ever mixes two tables.

import { mkdir, readFile } from "node:fs/promises";
import http from "node:http";
import type net from "node:net";
import path from "node:path";
import type { RouteTable } from "./contract.js";
import { ControlPlane, TABLE_FILE } from "./control.js";
import { CLIENT_CHECK_INTERVAL_MS, DataPlane } from "./data-plane.js";
import { validateTable } from "./table.js";

export { MAX_EVENTS_WAIT_MS, TABLE_FILE } from "./control.js";
export { PROBE_WATCH_MS } from "./data-plane.js";

export const PROXY_INFO_FILE = "proxy.json";
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;

/** What a running proxy process writes to `<stateDir>/proxy.json` once it listens. */
export interface ProxyInfo {
  pid: number;
  listen: { host: string; port: number };
  control: { host: string; port: number };
  startedAt: string;
}

export interface ProxyServerOptions {
  listenHost: string;
  listenPort: number;
  /** The control API never listens anywhere but loopback. */
  controlHost?: "127.0.0.1";
  controlPort?: number;
  stateDir: string;
  token: string;
}

export interface ProxyServer {
  listenHost: string;
  listenPort: number;
  controlHost: string;
  controlPort: number;
  /** The version of the table in use (restored from disk at start, 0 when none). */
  tableVersion(): number;
  /** Stops accepting, lets in-flight requests finish for up to graceMs, then cuts the rest. */
  close(graceMs?: number): Promise<void>;
}

export async function startProxyServer(opts: ProxyServerOptions): Promise<ProxyServer> {
  const controlHost = opts.controlHost ?? "127.0.0.1";
  if (controlHost !== "127.0.0.1") throw new Error(`the proxy control API listens on 127.0.0.1 only, not ${String(controlHost)}`);
  if (opts.token.length === 0) throw new Error("the proxy control token is empty");
  await mkdir(opts.stateDir, { recursive: true });

  const plane = new DataPlane();
  const restored = await loadTable(opts.stateDir);
  if (restored) plane.apply(restored);

  const data = createDataServer(plane);
  const control = http.createServer(new ControlPlane(plane, opts.stateDir, opts.token).onRequest);

  await listen(data, opts.listenHost, opts.listenPort);
  try {
    await listen(control, controlHost, opts.controlPort ?? 0);
  } catch (e) {
    data.close();
    throw e;
  }

  let closing: Promise<void> | undefined;
  return {
    listenHost: opts.listenHost,
    listenPort: (data.address() as net.AddressInfo).port,
    controlHost,
    controlPort: (control.address() as net.AddressInfo).port,
    tableVersion: () => plane.router.current.version,
    close: (graceMs = DEFAULT_SHUTDOWN_GRACE_MS) => (closing ??= shutdown(plane, data, control, graceMs)),
  };
}

/**
 * The public http.Server of a data plane, as every in-process host of it (this process, the memory
 * twin) must create it. The timeouts and limits come from the table (plane.attach, then each
 * apply). What Node reads only here: how often it checks clientHeaderMs, and no 400 of its own for
 * a missing Host (the data plane answers it, and counts it).
 */
export function createDataServer(plane: DataPlane): http.Server {
  const data = http.createServer({ noDelay: true, connectionsCheckingInterval: CLIENT_CHECK_INTERVAL_MS, requireHostHeader: false });
  plane.attach(data);
  return data;
}

export function listen(server: http.Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

async function shutdown(plane: DataPlane, data: http.Server, control: http.Server, graceMs: number): Promise<void> {
  control.close();
  control.closeAllConnections();
  await closeDataServer(plane, data, graceMs);
}

/** Stops accepting, lets in-flight requests finish for up to graceMs, then cuts the rest. */
export async function closeDataServer(plane: DataPlane, data: http.Server, graceMs: number): Promise<void> {
  const dataClosed = new Promise<void>((resolve) => data.close(() => resolve()));
  const deadline = Date.now() + graceMs;
  while (plane.inFlight() > 0 && Date.now() < deadline) {
    data.closeIdleConnections();
    await sleep(25);
  }
  plane.cutAll();
  data.closeAllConnections();
  await dataClosed;
  plane.upstreams.destroy();
  plane.stopProbes();
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}


// ---------------------------------------------------------------------------------------------
// Persistence

/** The last acknowledged table, or undefined when there is none (or it cannot be read). */
export async function loadTable(stateDir: string): Promise<RouteTable | undefined> {
  let text: string;
  try {
    text = await readFile(path.join(stateDir, TABLE_FILE), "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  const table: unknown = JSON.parse(text);
  const problem = validateTable(table);
  if (problem) throw new Error(`${path.join(stateDir, TABLE_FILE)}: invalid route table: ${problem}`);
  return table as RouteTable;
}
