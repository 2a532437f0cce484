import fs from "node:fs";
import path from "node:path";
import { TurquoiseError } from "../errors.js";
import { proxyOptions, readAgentInfo } from "../agent.js";
import { pidAlive } from "../util/proc.js";
import { readToken } from "../auth/token.js";
import { Records } from "../deploy/records.js";
import { stopDataPlane } from "../proxy/index.js";
import { openRuntimes } from "../runtime/index.js";
import { loadSpecOrThrow } from "../spec/loader.js";
import { openStore } from "../state/index.js";
import { AgentClient } from "./client.js";
import { printJson, type Command } from "./command.js";

const DOWN_WAIT_MS = 120_000;

export const downCommand: Command = {
  name: "down",
  summary: "stop the agent, the proxy and every instance",
  help: `usage: turquoise down [--agent-only]

Stops every instance (SIGTERM, then SIGKILL after stop_timeout), the proxy and the agent. The
live slot and release stay recorded: the next \`turquoise up\` starts them again. When no agent
is running, down still stops the proxy and the instances an earlier agent left behind: only
those whose record proves they are the processes it started (pid and start time); any other
record is reported and dropped, and nothing is signalled for it.

options:
      --agent-only   stop only the agent; the proxy and instances keep serving

examples:
  turquoise down
  turquoise down --agent-only`,
  options: { "agent-only": { type: "boolean" } },
  async run(ctx) {
    const { spec } = loadSpecOrThrow(ctx.specFile);
    const everything = ctx.values["agent-only"] !== true;
    const info = readAgentInfo(spec.stateDir);
    if (info && pidAlive(info.pid)) {
      const client = new AgentClient(`http://${info.api.host}:${info.api.port}`, readToken(spec.stateDir));
      await client.request("POST", "/v1/shutdown", { everything });
      const deadline = Date.now() + DOWN_WAIT_MS;
      while (pidAlive(info.pid)) {
        if (Date.now() > deadline) throw new TurquoiseError("INTERNAL", `the agent (pid ${info.pid}) did not stop within ${DOWN_WAIT_MS / 1000}s`);
        await new Promise((r) => setTimeout(r, 50));
      }
      fs.rmSync(path.join(spec.stateDir, "agent.pid"), { force: true });
      return ctx.json ? printJson(ctx, { stopped: everything ? "everything" : "agent", agentPid: info.pid }) : ctx.out(`stopped ${everything ? "the agent, the proxy and all instances" : "the agent"} (agent pid ${info.pid})`);
    }
    if (!everything) return ctx.json ? printJson(ctx, { stopped: "nothing" }) : ctx.out("no agent is running");
    // No agent: clean up what a dead one left, from its records. Only what the records prove to be
    // ours is stopped; the rest is reported, and its record dropped.
    const store = openStore({ driver: spec.state.driver, path: spec.state.path });
    let stoppedInstances = 0;
    const refused: Array<{ id: string; service: string; ref: string; reason: string }> = [];
    try {
      const records = new Records(store);
      const recorded = await records.instances();
      const runtimes = await openRuntimes({ stateDir: spec.stateDir, drivers: recorded.some((i) => i.runtime === "docker") ? ["docker"] : [] });
      for (const [name, runtime] of Object.entries(runtimes)) {
        const adopted = await runtime.adopt(recorded.filter((i) => (i.runtime ?? "process") === name));
        for (const inst of adopted.alive) {
          await runtime.stop(inst, spec.services[inst.service]?.stopTimeoutMs ?? 10_000);
          stoppedInstances++;
        }
        for (const { instance, reason } of adopted.refused) refused.push({ id: instance.id, service: instance.service, ref: instance.ref, reason });
        for (const inst of [...adopted.alive, ...adopted.dead, ...adopted.refused.map((r) => r.instance)]) await records.removeInstance(inst);
      }
      for (const runtime of Object.values(runtimes)) runtime.close?.();
    } finally {
      await store.close();
    }
    await stopDataPlane(proxyOptions(spec));
    if (ctx.json) return printJson(ctx, { stopped: "leftovers", instances: stoppedInstances, refused });
    ctx.out(`no agent was running; stopped the proxy and ${stoppedInstances} leftover instance(s)`);
    for (const r of refused) ctx.err(`not stopped: instance record ${r.id} (ref ${r.ref}): ${r.reason}; the record was dropped`);
  },
};
