// Renders a deploy's or rollback's streamed progress: the plan, then each step live with its timing.
import { TurquoiseError, type ErrorCode } from "../errors.js";
import type { HistoryEntry } from "../state/contract.js";
import { formatMs } from "../util/duration.js";
import { connect, actor } from "./client.js";
import { printJson, type Context } from "./command.js";
import { ProgressLine } from "./progress-bar.js";
import type { BackfillProgress } from "../migrate/contract.js";

const MARK: Record<string, string> = { done: "✓", failed: "✗", skipped: "–" };

export async function runFlow(ctx: Context, kind: "deploy" | "rollback" | "promote", service: string, body: Record<string, unknown>): Promise<void> {
  const { client } = connect(ctx.specFile);
  const started = Date.now();
  const events: Record<string, unknown>[] = [];
  let result: { ok: boolean; history?: HistoryEntry; error?: { code: ErrorCode; message: string } & Record<string, unknown> } | undefined;
  let pending = "";
  const bar = new ProgressLine(ctx.isTTY && !ctx.json);

  await client.stream(`/v1/services/${encodeURIComponent(service)}/${kind}`, { ...body, actor: actor() }, (ev) => {
    events.push(ev);
    if (ev.type === "result") result = ev as typeof result;
    if (ctx.json) return;
    if (ev.type === "progress") return bar.update(ev as unknown as BackfillProgress);
    bar.clear();
    if (ev.type === "plan") {
      ctx.out(`${kind} ${ev.service} ${ev.release} (live: ${ev.from ?? "nothing"})`);
      for (const s of ev.steps as string[]) ctx.out(`  ${s}`);
      ctx.out("");
    } else if (ev.type === "info") {
      ctx.out(`  … ${ev.message}`);
    } else if (ev.type === "step") {
      const name = String(ev.name);
      if (ev.status === "started") {
        if (ctx.isTTY) process.stdout.write(`  … ${name}`);
        pending = name;
        return;
      }
      if (ctx.isTTY && pending === name) process.stdout.write("\r\x1b[K");
      pending = "";
      const detail = typeof ev.detail === "string" ? ev.detail.split("\n") : [];
      ctx.out(`  ${MARK[String(ev.status)] ?? "?"} ${name.padEnd(17)} ${formatMs(Number(ev.durationMs ?? 0)).padStart(7)}  ${detail[0] ?? ""}`);
      for (const l of detail.slice(1)) ctx.out(`      ${l}`);
    }
  });

  if (ctx.json) printJson(ctx, { ok: result?.ok ?? false, events, history: result?.history ?? null, error: result?.error ?? null });
  if (!result) throw new TurquoiseError("INTERNAL", `the agent closed the ${kind} stream without a result; see \`turquoise history ${service}\``);
  if (!result.ok) {
    const e = result.error!;
    throw new TurquoiseError(e.code, e.message, { data: { reported: ctx.json } });
  }
  if (!ctx.json) {
    const h = result.history!;
    ctx.out(`\n${kind} of ${service} ${h.release} ${h.outcome === "held" ? "held" : "succeeded"} in ${formatMs(Date.now() - started)}`);
  }
}
