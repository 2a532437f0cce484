// The proxy process: node dist/src/proxy/main.js --state-dir DIR --listen HOST:PORT
// It runs apart from the agent so that traffic keeps flowing when the agent stops or dies.

import { readFile, rm } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { EXIT_CODES, errorMessage } from "../errors.js";
import {
  DEFAULT_SHUTDOWN_GRACE_MS,
  PROXY_INFO_FILE,
  type ProxyInfo,
  type ProxyServer,
  startProxyServer,
} from "./server.js";
import { writeFileAtomic } from "../util/fs.js";
import { readToken } from "../auth/token.js";

// Nothing is exported: importing this file starts a proxy.

function log(message: string): void {
  process.stdout.write(`${new Date().toISOString()} turquoise-proxy[${process.pid}]: ${message}\n`);
}

class UsageError extends Error {}

/** "127.0.0.1:8080", "[::1]:8080" or ":8080" (all interfaces). */
function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text);
  if (!m) throw new UsageError(`--listen must be HOST:PORT, got "${text}"`);
  const port = Number(m[3]);
  if (port > 65535) throw new UsageError(`--listen port must be 0-65535, got ${port}`);
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { "state-dir": { type: "string" }, listen: { type: "string" } },
    strict: true,
  });
  const stateDir = values["state-dir"];
  if (!stateDir) throw new UsageError("--state-dir DIR is required");
  const listen = parseListen(values.listen ?? "127.0.0.1:8080");
  let token: string;
  try {
    token = readToken(stateDir);
  } catch (e) {
    // The agent writes the token (mode 0600) before it starts the proxy.
    throw new UsageError(errorMessage(e));
  }

  const server = await startProxyServer({ listenHost: listen.host, listenPort: listen.port, stateDir, token });
  const info: ProxyInfo = {
    pid: process.pid,
    listen: { host: server.listenHost, port: server.listenPort },
    control: { host: server.controlHost, port: server.controlPort },
    startedAt: new Date().toISOString(),
  };
  const infoFile = path.join(stateDir, PROXY_INFO_FILE);
  await writeFileAtomic(infoFile, JSON.stringify(info, null, 2) + "\n");
  log(`listening on ${info.listen.host}:${info.listen.port}, control on ${info.control.host}:${info.control.port}, table version ${server.tableVersion()}`);

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: finishing in-flight requests (up to ${DEFAULT_SHUTDOWN_GRACE_MS} ms)`);
    void shutdown(server, infoFile).then(
      () => {
        log("stopped");
        process.exit(EXIT_CODES.OK);
      },
      (e: unknown) => {
        log(`shutdown failed: ${errorMessage(e)}`);
        process.exit(EXIT_CODES.INTERNAL);
      },
    );
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

async function shutdown(server: ProxyServer, infoFile: string): Promise<void> {
  await server.close(DEFAULT_SHUTDOWN_GRACE_MS);
  // A newer proxy may already own the file; only remove our own.
  try {
    const current = JSON.parse(await readFile(infoFile, "utf8")) as ProxyInfo;
    if (current.pid === process.pid) await rm(infoFile, { force: true });
  } catch {
    // already gone
  }
}

main().catch((e: unknown) => {
  const usage = e instanceof UsageError;
  process.stderr.write(`turquoise-proxy: ${errorMessage(e)}\n`);
  if ((e as NodeJS.ErrnoException).code === "EADDRINUSE") process.stderr.write("turquoise-proxy: the listen address is already in use\n");
  process.exit(usage ? EXIT_CODES.USAGE : EXIT_CODES.INTERNAL);
});
