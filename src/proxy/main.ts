// The proxy process: node dist/src/proxy/main.js --state-dir DIR --listen HOST:PORT [--tls-listen HOST:PORT] [--workers N|auto] [--accept adaptive|all] [--spares N]
// It runs apart from the agent so that traffic keeps flowing when the agent stops or dies. This
// process is the supervisor (supervisor.ts): it holds the listening socket and the control API,
// and the data plane runs in its workers (worker.ts).

import http from "node:http";
import { readFile, rm } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { EXIT_CODES, TurquoiseError, errorMessage } from "../errors.js";
import { createLogger, type Logger } from "../log/logger.js";
import { logSettings } from "../log/settings.js";
import { controlPort, MAX_WORKERS, startControlServer } from "./control.js";
import { DEFAULT_SHUTDOWN_GRACE_MS, PROXY_INFO_FILE, type ProxyInfo } from "./server.js";
import { type AcceptMode, DEFAULT_ACCEPT_MODE, DEFAULT_SPARES, DEFAULT_WORKERS, resolveWorkers, Supervisor } from "./supervisor.js";
import { writeFileAtomic } from "../util/fs.js";
import { readToken } from "../auth/token.js";

// Nothing is exported: importing this file starts a proxy.

// The log goes to stderr, which is proxy.log (spawnProxy); the agent passes its log settings on through the environment.
let log: Logger | undefined;
function logger(): Logger {
  log ??= createLogger({ component: "proxy", settings: logSettings() });
  return log;
}

class UsageError extends Error {}

/** "127.0.0.1:8080", "[::1]:8080" or ":8080" (all interfaces). */
function parseListen(text: string, flag = "--listen"): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text);
  if (!m) throw new UsageError(`${flag} must be HOST:PORT, got "${text}"`);
  const port = Number(m[3]);
  if (port > 65535) throw new UsageError(`${flag} port must be 0-65535, got ${port}`);
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
}

/** "auto": one worker per core. */
function parseWorkers(text: string | undefined): number {
  if (text === undefined) return DEFAULT_WORKERS;
  if (text === "auto") return resolveWorkers("auto");
  const n = Number(text);
  if (!(Number.isInteger(n) && n >= 1 && n <= MAX_WORKERS)) throw new UsageError(`--workers must be auto or an integer from 1 to ${MAX_WORKERS}, got "${text}"`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { "state-dir": { type: "string" }, listen: { type: "string" }, "tls-listen": { type: "string" }, workers: { type: "string" }, accept: { type: "string" }, spares: { type: "string" } },
    strict: true,
  });
  const stateDir = values["state-dir"];
  if (!stateDir) throw new UsageError("--state-dir DIR is required");
  const listen = parseListen(values.listen ?? "127.0.0.1:8080");
  const tlsListen = values["tls-listen"] === undefined ? undefined : parseListen(values["tls-listen"], "--tls-listen");
  const workers = parseWorkers(values.workers);
  const accept = (values.accept ?? DEFAULT_ACCEPT_MODE) as AcceptMode;
  if (accept !== "adaptive" && accept !== "all") throw new UsageError(`--accept must be adaptive or all, got "${values.accept}"`);
  const spares = values.spares === undefined ? DEFAULT_SPARES : Number(values.spares);
  if (!(Number.isInteger(spares) && spares >= 0 && spares <= MAX_WORKERS)) throw new UsageError(`--spares must be an integer from 0 to ${MAX_WORKERS}, got "${values.spares}"`);
  let token: string;
  try {
    token = readToken(stateDir);
  } catch (e) {
    // The agent writes the token (mode 0600) before it starts the proxy.
    throw new UsageError(errorMessage(e));
  }

  const log = logger();
  log.scrubber.add([token]);
  const supervisor = await Supervisor.start({ stateDir, listenHost: listen.host, listenPort: listen.port, ...(tlsListen ? { tlsListen } : {}), workers, accept, spares, log });
  let control: http.Server;
  try {
    control = await startControlServer(supervisor, stateDir, token);
  } catch (e) {
    await supervisor.stop(0);
    throw e;
  }
  const info: ProxyInfo = {
    pid: process.pid,
    listen: { host: listen.host, port: supervisor.listenPort },
    ...(supervisor.tlsListen ? { tls: { host: tlsListen!.host, port: supervisor.tlsListen.port } } : {}),
    control: { host: "127.0.0.1", port: controlPort(control) },
    startedAt: new Date().toISOString(),
  };
  const infoFile = path.join(stateDir, PROXY_INFO_FILE);
  await writeFileAtomic(infoFile, JSON.stringify(info, null, 2) + "\n");
  const withTls = info.tls ? ` and TLS on ${info.tls.host}:${info.tls.port}` : "";
  log.info("proxy.listening", `listening on ${info.listen.host}:${info.listen.port}${withTls} with ${workers} worker(s) (accepting: ${accept}) and ${spares} spare(s), control on ${info.control.host}:${info.control.port}, table version ${supervisor.table().version}`, {
    data: { listen: `${info.listen.host}:${info.listen.port}`, workers, accept, spares, tableVersion: supervisor.table().version },
  });

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log.info("proxy.stopping", `${signal}: finishing in-flight requests (up to ${DEFAULT_SHUTDOWN_GRACE_MS} ms)`, { data: { signal } });
    void shutdown(supervisor, control, infoFile).then(
      () => {
        log.info("proxy.stopped", "stopped");
        process.exit(EXIT_CODES.OK);
      },
      (e: unknown) => {
        log.error("proxy.stop-failed", `shutdown failed: ${errorMessage(e)}`);
        process.exit(EXIT_CODES.INTERNAL);
      },
    );
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

async function shutdown(supervisor: Supervisor, control: http.Server, infoFile: string): Promise<void> {
  control.close();
  control.closeAllConnections();
  await supervisor.stop(DEFAULT_SHUTDOWN_GRACE_MS);
  // A newer proxy may already own the file; only remove our own.
  try {
    const current = JSON.parse(await readFile(infoFile, "utf8")) as ProxyInfo;
    if (current.pid === process.pid) await rm(infoFile, { force: true });
  } catch {
    // already gone
  }
}

main().catch((e: unknown) => {
  const usage = e instanceof UsageError || (e instanceof TurquoiseError && e.code === "USAGE");
  const inUse = (e as NodeJS.ErrnoException).code === "EADDRINUSE";
  let out: Logger;
  try {
    out = logger();
  } catch {
    // The log settings themselves are bad: said with the defaults.
    out = createLogger({ component: "proxy" });
  }
  out.error("proxy.failed", `${errorMessage(e)}${inUse ? ": the listen address is already in use" : ""}`);
  // Its own exit code, so that whoever started it can say which setting to change.
  if (inUse) process.exit(EXIT_CODES.CONFLICT);
  process.exit(usage ? EXIT_CODES.USAGE : EXIT_CODES.INTERNAL);
});
