import fs from "node:fs";
import path from "node:path";
import { spawn } from "node:child_process";
import { TurquoiseError, codeForExit, errorMessage } from "../errors.js";
import { createLogger } from "../log/logger.js";
import { readableLine } from "../log/pretty.js";
import { logSettings } from "../log/settings.js";
import { Agent, readAgentInfo } from "../agent.js";
import { readTail } from "../util/fs.js";
import { pidAlive } from "../util/proc.js";
import { ensureToken } from "../auth/token.js";
import { loadSpecOrThrow } from "../spec/loader.js";
import type { Spec } from "../spec/types.js";
import { AgentClient } from "./client.js";
import { printJson, type Command, type Context } from "./command.js";

const DETACH_WAIT_MS = 30_000;
export const BIN_PATH = new URL("../../../bin/turquoise.js", import.meta.url).pathname;

export const upCommand: Command = {
  name: "up",
  summary: "start the agent and the proxy (foreground, or --detach)",
  help: `usage: turquoise up [--detach]

Starts the agent (control plane: API, deploys, health checks) and the proxy (data plane, a
separate process). A proxy or instances left running by an earlier agent are adopted, and an
interrupted deploy is finished or undone. In the foreground, Ctrl-C stops the agent only: the
proxy and the instances keep serving until \`turquoise down\`.

options:
  -d, --detach   run in the background; writes <state_dir>/agent.pid and <state_dir>/agent.log

examples:
  turquoise up
  turquoise up --detach && turquoise status`,
  options: { detach: { type: "boolean", short: "d" } },
  async run(ctx) {
    const { spec, warnings } = loadSpecOrThrow(ctx.specFile);
    // Checked before anything starts: a bad TURQUOISE_LOG_LEVEL is a usage error, detached or not.
    const settings = logSettings(spec.log);
    if (ctx.values.detach) {
      for (const w of warnings) ctx.err(`warning: ${w.file}:${w.line ?? "?"}: ${w.path}: ${w.message}`);
      return detach(ctx, spec);
    }
    // In the foreground everything goes to the agent's log: stderr, JSON lines unless it is a terminal.
    const log = createLogger({ component: "agent", settings });
    for (const w of warnings) log.warn("spec.warning", `${w.file}:${w.line ?? "?"}: ${w.path}: ${w.message}`);
    let agent: Agent;
    try {
      agent = await Agent.start(spec, log);
    } catch (e) {
      const te = e instanceof TurquoiseError ? e : new TurquoiseError("INTERNAL", errorMessage(e), { cause: e });
      log.error("agent.failed", te.message, { data: { code: te.code } });
      // Said once, in the log: the CLI's own "error:" line would repeat it (--json still gets its object).
      throw ctx.json ? te : new TurquoiseError(te.code, te.message, { details: te.details, data: { ...te.data, reported: true }, cause: e });
    }
    const stop = () => {
      log.info("agent.stopping", "stopping the agent; the proxy and instances keep serving (`turquoise down` stops them)");
      void agent.close();
    };
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
    if (ctx.json) printJson(ctx, { pid: process.pid, api: agent.apiUrl, proxy: `${spec.proxy.host}:${agent.proxy.listenPort}` });
    await agent.closed;
  },
};

async function detach(ctx: Context, spec: Spec): Promise<void> {
  const running = readAgentInfo(spec.stateDir);
  if (running && pidAlive(running.pid)) throw new TurquoiseError("CONFLICT", `an agent is already running (pid ${running.pid}, API http://${running.api.host}:${running.api.port})`);
  const token = ensureToken(spec.stateDir);
  const logFile = path.join(spec.stateDir, "agent.log");
  const fd = fs.openSync(logFile, "a");
  // The log is appended to across starts: what this start wrote begins here.
  const logStart = fs.fstatSync(fd).size;
  const child = spawn(process.execPath, [BIN_PATH, "up", "-f", spec.file], { detached: true, stdio: ["ignore", fd, fd], cwd: spec.dir });
  fs.closeSync(fd);
  child.unref();
  let exited: number | null = null;
  child.on("exit", (code) => (exited = code ?? 1));

  const deadline = Date.now() + DETACH_WAIT_MS;
  while (Date.now() < deadline) {
    if (exited !== null) {
      // The detached agent's own exit code says what went wrong (12: Docker unreachable, 9: port in use, ...): pass it on.
      throw new TurquoiseError(codeForExit(exited), `the agent exited with code ${exited} while starting:\n${await tail(logFile, logStart)}`);
    }
    const info = readAgentInfo(spec.stateDir);
    if (info && info.pid === child.pid) {
      const client = new AgentClient(`http://${info.api.host}:${info.api.port}`, token);
      const ok = await client.get("/v1/health").then(() => true, () => false);
      if (ok) {
        if (ctx.json) return printJson(ctx, { pid: child.pid, api: `http://${info.api.host}:${info.api.port}`, proxy: `${info.proxy.host}:${info.proxy.port}`, log: logFile });
        ctx.out(`agent running (pid ${child.pid}), API http://${info.api.host}:${info.api.port}`);
        ctx.out(`proxy serving on http://${info.proxy.host}:${info.proxy.port}`);
        ctx.out(`logs: ${logFile}`);
        return;
      }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new TurquoiseError("INTERNAL", `the agent did not answer within ${DETACH_WAIT_MS / 1000}s; see ${logFile}:\n${await tail(logFile, logStart)}`);
}

/** The last lines of file from byte `from` on: this start's lines, not an earlier one's, readable rather than JSON. */
async function tail(file: string, from: number, lines = 20): Promise<string> {
  const text = await readTail(file, from, 16_384);
  return text ? text.split("\n").slice(-lines).map(readableLine).join("\n") : "(nothing in the log)";
}
