import { TurquoiseError } from "../errors.js";
import { formatTime } from "../util/time.js";
import type { HistoryEntry } from "../state/contract.js";
import { formatMs } from "../util/duration.js";
import { connect } from "./client.js";
import { printJson, type Command } from "./command.js";

export const historyCommand: Command = {
  name: "history",
  summary: "past deploys and rollbacks: who, which release, each step's timing, the outcome",
  help: `usage: turquoise history <service> [--limit N] [--steps]

options:
  -n, --limit <N>   how many entries (default 20)
      --steps       show each step's timing

examples:
  turquoise history books
  turquoise history books --limit 1 --steps`,
  options: { limit: { type: "string", short: "n" }, steps: { type: "boolean" } },
  async run(ctx) {
    const service = ctx.positionals[0];
    if (!service) throw new TurquoiseError("USAGE", "usage: turquoise history <service>");
    const limit = Number(ctx.values.limit ?? 20);
    if (!Number.isInteger(limit) || limit < 1) throw new TurquoiseError("USAGE", `--limit must be a positive integer, got "${ctx.values.limit}"`);
    const { client } = connect(ctx.specFile, { agentCopy: true, warn: ctx.err });
    const { history } = await client.get<{ history: HistoryEntry[] }>(`/v1/services/${encodeURIComponent(service)}/history?limit=${limit}`);
    if (ctx.json) return printJson(ctx, history);
    if (history.length === 0) return ctx.out(`no deploys of ${service} yet`);
    for (const h of history) {
      const took = h.finishedAt ? formatMs(h.finishedAt - h.startedAt) : "running";
      ctx.out(`#${h.id} ${formatTime(h.startedAt)} ${h.kind.padEnd(8)} ${h.previousRelease ?? "-"} → ${h.via ? `${h.via} → ` : ""}${h.release}  ${h.outcome}  ${took}  by ${h.actor}`);
      if (h.error) ctx.out(`    ${h.error.split("\n").join("\n    ")}`);
      if (ctx.values.steps) for (const s of h.steps) ctx.out(`    ${!s.ok ? "✗" : s.detail?.startsWith("skipped:") ? "–" : "✓"} ${s.name.padEnd(17)} ${formatMs(s.durationMs).padStart(7)}  ${s.detail?.split("\n")[0] ?? ""}`);
    }
  },
};
