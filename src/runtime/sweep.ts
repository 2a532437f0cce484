// Stopping by marks: every instance the runtimes find as this agent's (discover()) that nothing
// keeps is stopped, then looked for again, so a caller can say what it could not stop. The agent
// runs it at start (orphans of a crash) and when it stops everything; `turquoise down` runs it too.
import { errorMessage } from "../errors.js";
import type { InstanceInfo, Runtime } from "./contract.js";

/** Stop, look again and stop what appeared (a child whose leader was just stopped), then a last look. */
export const SWEEP_ROUNDS = 3;

export interface SweepResult {
  /** Stopped, each once, with the runtime that runs it. */
  stopped: InstanceInfo[];
  /** Stops that failed or were refused, with why. */
  failed: Array<{ instance: InstanceInfo; reason: string }>;
  /** Still found, and running, after the last round: what the caller must not claim to have stopped. */
  remaining: InstanceInfo[];
}

export async function sweepMarked(
  runtimes: Record<string, Runtime>,
  opts: { keep?: (instance: InstanceInfo) => boolean; stopTimeoutMs: (instance: InstanceInfo) => number },
): Promise<SweepResult> {
  const stopped = new Map<string, InstanceInfo>();
  const failed = new Map<string, { instance: InstanceInfo; reason: string }>();
  let found: InstanceInfo[] = [];
  for (let round = 1; round <= SWEEP_ROUNDS; round++) {
    found = [];
    for (const [name, runtime] of Object.entries(runtimes)) {
      for (const inst of (await runtime.discover?.()) ?? []) if (!opts.keep?.(inst)) found.push({ ...inst, runtime: name });
    }
    if (found.length === 0 || round === SWEEP_ROUNDS) break;
    const settle = (inst: InstanceInfo, r: PromiseSettledResult<{ killed: boolean; refused?: string }>) => {
      if (r.status === "rejected") failed.set(inst.id, { instance: inst, reason: errorMessage(r.reason) });
      else if (r.value.refused) failed.set(inst.id, { instance: inst, reason: r.value.refused });
      else {
        stopped.set(inst.id, inst);
        failed.delete(inst.id);
      }
    };
    await Promise.all(found.map(async (inst) => {
      const runtime = runtimes[inst.runtime!]!;
      if (runtime.slots) return;
      settle(inst, await runtime.stop(inst, opts.stopTimeoutMs(inst)).then((value) => ({ status: "fulfilled", value }) as const, (reason: unknown) => ({ status: "rejected", reason }) as const));
    }));
    // A runtime with slots stops what it found of each slot in one go: swarm removes an emptied slot's service without a node socket.
    for (const [name, runtime] of Object.entries(runtimes)) {
      const mine = found.filter((i) => i.runtime === name);
      if (!runtime.slots || mine.length === 0) continue;
      const results = await runtime.slots.stop(mine, Math.max(...mine.map((i) => opts.stopTimeoutMs(i))));
      for (const [i, inst] of mine.entries()) settle(inst, results[i]!);
    }
  }
  // What is found but no longer runs (a container another runtime is still removing) is not left running.
  const stillRunning: InstanceInfo[] = [];
  for (const inst of found) {
    const state = await runtimes[inst.runtime!]!.inspect(inst).catch(() => ({ running: true }));
    if (state.running) stillRunning.push(inst);
  }
  const remaining = new Set(stillRunning.map((i) => i.id));
  return {
    stopped: [...stopped.values()].filter((i) => !remaining.has(i.id)),
    failed: [...failed.values()].filter((f) => remaining.has(f.instance.id)),
    remaining: stillRunning,
  };
}
