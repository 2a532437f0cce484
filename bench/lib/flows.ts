// Deploys and rollbacks driven straight through the agent's API, as the benchmarks need them:
// no CLI process start in the measured path, the server-side history as the result.
import path from "node:path";
import { readToken } from "../../src/auth/token.js";
import { AgentClient } from "../../src/cli/client.js";
import type { Workspace } from "../../src/demo/workspace.js";
import type { HistoryEntry } from "../../src/state/contract.js";

export type RunFlow = (kind: "deploy" | "rollback", body?: Record<string, unknown>) => Promise<HistoryEntry>;

/** service: which service of the workspace's spec the flows deploy (books, the demo's one, by default). */
export function flowRunner(ws: Pick<Workspace, "dir" | "agentPort">, actor: string, service = "books"): RunFlow {
  const client = new AgentClient(`http://127.0.0.1:${ws.agentPort}`, readToken(path.join(ws.dir, ".turquoise")));
  return async (kind, body = {}) => {
    let result: { ok: boolean; history?: HistoryEntry; error?: { message: string } } | undefined;
    await client.stream(`/v1/services/${service}/${kind}`, { ...body, actor }, (ev) => {
      if (ev.type === "result") result = ev as typeof result;
    });
    if (!result?.ok) throw new Error(`${kind} failed: ${result?.error?.message ?? "no result"}`);
    return result.history!;
  };
}

/** Sums the duration of every step with this name (a turquoise path repeats start, flip, ...). */
export function stepMs(h: HistoryEntry, name: string): number {
  return h.steps.filter((s) => s.name === name).reduce((sum, s) => sum + s.durationMs, 0);
}
