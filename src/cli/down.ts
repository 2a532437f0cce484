// turquoise down: stops the agent, the proxy and every instance, then looks again for anything
// that carries this agent's marks, and says (with a non-zero exit) what it could not stop.
import fs from "node:fs";
import path from "node:path";
import { EXIT_CODES, TurquoiseError } from "../errors.js";
import { proxyOptions, readAgentInfo, runtimeDrivers } from "../agent.js";
import { pidAlive } from "../util/proc.js";
import { readToken } from "../auth/token.js";
import { Records } from "../deploy/records.js";
import { stopDataPlane } from "../proxy/index.js";
import type { InstanceInfo, Runtime } from "../runtime/contract.js";
import { openRuntimes } from "../runtime/index.js";
import { sweepMarked, type SweepResult } from "../runtime/sweep.js";
import type { Spec } from "../spec/types.js";
import { agentCopyWarning, loadSpecOrAgentCopy } from "../spec/agent-copy.js";
import { count } from "../util/words.js";
import { openStore } from "../state/index.js";
import { AgentClient } from "./client.js";
import { printJson, type Command, type Context } from "./command.js";

const DOWN_WAIT_MS = 120_000;
/** For an instance of a service the spec no longer has. */
const DEFAULT_STOP_TIMEOUT_MS = 10_000;

export const downCommand: Command = {
  name: "down",
  summary: "stop the agent, the proxy and every instance",
  help: `usage: turquoise down [--agent-only]

Stops every instance (SIGTERM, then SIGKILL after stop_timeout), the proxy and the agent. The
live slot and release stay recorded: the next \`turquoise up\` starts them again. When no agent
is running, down still stops the proxy and the instances an earlier agent left behind: those
whose record proves they are the processes it started (pid and start time), and those that carry
this agent's marks (TURQUOISE_AGENT in a process's environment, a container's labels) whether
recorded or not; any other record is reported and dropped, and nothing is signalled for it.

Then down looks again for instances with this agent's marks. If any is still running, it names
them and exits ${EXIT_CODES.STOP_INCOMPLETE} (STOP_INCOMPLETE).

When turquoise.yml is invalid or gone, down works from the spec the agent last started with
(<state_dir>/agent-spec.json), and says so.

options:
      --agent-only   stop only the agent; the proxy and instances keep serving

examples:
  turquoise down
  turquoise down --agent-only`,
  options: { "agent-only": { type: "boolean" } },
  async run(ctx) {
    // A half-edited turquoise.yml must not keep a running stack from stopping: the agent's copy stands in.
    const found = loadSpecOrAgentCopy(ctx.specFile);
    const warning = agentCopyWarning(found);
    if (warning) ctx.err(warning);
    const spec = found.spec;
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
      if (!everything) return ctx.json ? printJson(ctx, { stopped: "agent", agentPid: info.pid }) : ctx.out(`stopped the agent (agent pid ${info.pid})`);
      // The agent stopped what it knew of; anything it missed (a start under way) is found by its marks.
      const runtimes = await openRuntimes({ stateDir: spec.stateDir, drivers: runtimeDrivers(spec), state: spec.state, ...(spec.swarm ? { swarm: spec.swarm } : {}) });
      let swept: SweepResult;
      try {
        swept = await sweep(spec, runtimes);
      } finally {
        for (const runtime of Object.values(runtimes)) runtime.close?.();
      }
      verified(ctx, swept);
      if (ctx.json) return printJson(ctx, { stopped: "everything", agentPid: info.pid, leftovers: swept.stopped.map(brief) });
      ctx.out(`stopped the agent, the proxy and all instances (agent pid ${info.pid})`);
      if (swept.stopped.length) ctx.out(`  and ${swept.stopped.length} instance(s) the agent had left running: ${swept.stopped.map((i) => i.id).join(", ")}`);
      return;
    }
    if (!everything) return ctx.json ? printJson(ctx, { stopped: "nothing" }) : ctx.out("no agent is running");
    // No agent: clean up what a dead one left, from its records, then by its marks. Only what the
    // records or the marks prove to be ours is stopped; the rest is reported, and its record dropped.
    const store = await openStore(spec.state);
    let stoppedInstances = 0;
    const refused: Array<{ id: string; service: string; ref: string; reason: string }> = [];
    let swept: SweepResult;
    try {
      const records = new Records(store);
      const recorded = await records.instances();
      const runtimes = await openRuntimes({ stateDir: spec.stateDir, drivers: [...runtimeDrivers(spec), ...recorded.map((i) => i.runtime ?? "process")], state: spec.state, ...(spec.swarm ? { swarm: spec.swarm } : {}) });
      try {
        for (const [name, runtime] of Object.entries(runtimes)) {
          const adopted = await runtime.adopt(recorded.filter((i) => (i.runtime ?? "process") === name));
          for (const inst of adopted.alive) {
            await runtime.stop(inst, stopTimeoutOf(spec, inst));
            stoppedInstances++;
          }
          for (const { instance, reason } of adopted.refused) refused.push({ id: instance.id, service: instance.service, ref: instance.ref, reason });
          for (const inst of [...adopted.alive, ...adopted.dead, ...adopted.refused.map((r) => r.instance)]) await records.removeInstance(inst);
        }
        swept = await sweep(spec, runtimes);
        stoppedInstances += swept.stopped.length;
        // Instances recorded as starting: whatever of them ran carried their marks and was just stopped.
        for (const intent of await records.intents()) if (!swept.remaining.some((i) => i.id === intent.id)) await records.removeInstance(intent);
      } finally {
        for (const runtime of Object.values(runtimes)) runtime.close?.();
      }
    } finally {
      await store.close();
    }
    const proxyStopped = await stopDataPlane(proxyOptions(spec));
    for (const r of refused) ctx.err(`not stopped: instance record ${r.id} (ref ${r.ref}): ${r.reason}; the record was dropped`);
    verified(ctx, swept);
    const nothing = !proxyStopped && stoppedInstances === 0 && refused.length === 0;
    if (ctx.json) return printJson(ctx, nothing ? { stopped: "nothing" } : { stopped: "leftovers", proxy: proxyStopped, instances: stoppedInstances, refused });
    if (nothing) return ctx.out("nothing was running: no agent, no proxy and no instance of this project");
    const what = [...(proxyStopped ? ["the proxy"] : []), ...(stoppedInstances ? [count(stoppedInstances, "leftover instance")] : [])];
    ctx.out(`no agent was running; stopped ${what.join(" and ") || "nothing"}`);
  },
};

/** Every instance with this agent's marks is stopped, then looked for again. */
async function sweep(spec: Spec, runtimes: Record<string, Runtime>): Promise<SweepResult> {
  return sweepMarked(runtimes, { stopTimeoutMs: (inst) => stopTimeoutOf(spec, inst) });
}

/** down claims nothing it has not seen: an instance still found after the sweep fails the command, named. */
function verified(ctx: Context, swept: SweepResult): void {
  if (swept.remaining.length === 0) return;
  const why = new Map(swept.failed.map((f) => [f.instance.id, f.reason]));
  const lines = swept.remaining.map((i) => `  ${i.id} (${i.service} ${i.release}, ${i.slot}; ${i.runtime ?? "process"} ${i.ref})${why.has(i.id) ? `: ${why.get(i.id)}` : ""}`);
  throw new TurquoiseError("STOP_INCOMPLETE", `${swept.remaining.length} instance(s) of this agent are still running after down:\n${lines.join("\n")}`, {
    data: { remaining: swept.remaining.map(brief) },
  });
}

function brief(i: InstanceInfo): Record<string, unknown> {
  return { id: i.id, service: i.service, slot: i.slot, release: i.release, runtime: i.runtime ?? "process", ref: i.ref };
}

function stopTimeoutOf(spec: Spec, inst: InstanceInfo): number {
  return spec.services[inst.service]?.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
}
