// The built-in proxy's servers in one process: the data plane (public HTTP + WebSocket) and the
// control API (loopback HTTP, bearer token), started and stopped together. The proxy process runs
// the same pieces apart: workers serve the data plane (worker.ts), a supervisor the control API
// (supervisor.ts). The table reference is swapped synchronously, and each request resolves its
// route and pool once, on arrival, so no request ever mixes two tables.

import { mkdir, readFile } from "node:fs/promises";
import type http from "node:http";
import path from "node:path";
import type { RouteTable } from "./contract.js";
import { controlPort, PlaneBackend, startControlServer, TABLE_FILE } from "./control.js";
import { DataPlane } from "./data-plane.js";
import { DataServer } from "./data-server.js";
import { validateTable } from "./table.js";

export { MAX_EVENTS_WAIT_MS, TABLE_FILE } from "./control.js";
export { PROBE_WATCH_MS } from "./data-plane.js";

export const PROXY_INFO_FILE = "proxy.json";
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;

/** What a running proxy process writes to `<stateDir>/proxy.json` once it listens. */
export interface ProxyInfo {
  /** The supervisor's: the process to watch and to signal. */
  pid: number;
  listen: { host: string; port: number };
  /** The TLS listener, when the proxy has one. */
  tls?: { host: string; port: number };
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

  const data = new DataServer(plane);
  const address = await data.listen({ host: opts.listenHost, port: opts.listenPort });
  let control: http.Server;
  try {
    control = await startControlServer(new PlaneBackend(plane), opts.stateDir, opts.token, opts.controlPort ?? 0);
  } catch (e) {
    data.server.close();
    throw e;
  }

  let closing: Promise<void> | undefined;
  return {
    listenHost: opts.listenHost,
    listenPort: address.port,
    controlHost,
    controlPort: controlPort(control),
    tableVersion: () => plane.router.current.version,
    close: (graceMs = DEFAULT_SHUTDOWN_GRACE_MS) => (closing ??= shutdown(data, control, graceMs)),
  };
}

async function shutdown(data: DataServer, control: http.Server, graceMs: number): Promise<void> {
  control.close();
  control.closeAllConnections();
  // Nobody takes this socket over: idle keep-alive connections are closed at once.
  await data.close({ graceMs, idleGraceMs: 0 });
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
