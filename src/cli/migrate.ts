// turquoise migrate: the schema's status, or moving it (with a live bar while a backfill runs).
import { TurquoiseError, type ErrorCode } from "../errors.js";
import type { BackfillProgress } from "../migrate/contract.js";
import { formatTime } from "../util/time.js";
import { count } from "../util/words.js";
import { actor, connect, type AgentClient } from "./client.js";
import { printJson, type Command, type Context } from "./command.js";
import { ProgressLine } from "./progress-bar.js";

interface MigrateResult {
  current: number;
  latest: number;
  applied: Array<{ version: number; name: string; phase: string; appliedAt: number }>;
  pending: Array<{ version: number; name: string; phase: string; transactional: boolean; hasDown: boolean }>;
  live: { release: string; schema: { min: number; max: number } } | null;
  backfills?: Array<{ version: number; name: string | null; direction: string; rowsDone: number; batches: number; updatedAt: number }>;
  dryRun?: boolean;
  from?: number;
  to?: number;
  steps?: Array<{ version: number; name: string; direction: string }>;
  result?: string;
  log?: string[];
}

/** Runs a migration with its backfills' progress drawn live (on a terminal), and returns the result. */
async function streamed(ctx: Context, client: AgentClient, path: string, body: Record<string, unknown>): Promise<MigrateResult> {
  const bar = new ProgressLine(ctx.isTTY && !ctx.json);
  let result: { ok: boolean; error?: { code: ErrorCode; message: string } } & Partial<MigrateResult> = { ok: false };
  let got = false;
  try {
    await client.stream(path, { ...body, stream: true }, (ev) => {
      if (ev.type === "progress") bar.update(ev as unknown as BackfillProgress);
      else if (ev.type === "result") {
        got = true;
        result = ev as unknown as typeof result;
      }
    });
  } finally {
    bar.clear();
  }
  if (!got) throw new TurquoiseError("INTERNAL", "the agent closed the migration stream without a result; see `turquoise migrate <service> status`");
  if (!result.ok) throw new TurquoiseError(result.error?.code ?? "INTERNAL", result.error?.message ?? "the migration failed");
  // The same JSON as the unstreamed answer: the stream's own fields stay out of it.
  const { type: _type, ok: _ok, ...answer } = result as typeof result & { type?: string };
  return answer as MigrateResult;
}

export const migrateCommand: Command = {
  name: "migrate",
  summary: "the service's schema: status, or up/down/to a version (under the deploy lock)",
  help: `usage:
  turquoise migrate <service> status
  turquoise migrate <service> up [--to <version>] [--dry-run]
  turquoise migrate <service> down [--to <version>] [--dry-run]
  turquoise migrate <service> to <version> [--dry-run]

Deploys migrate by themselves, as their plan says. This command is for looking, and for moving
the schema within what the live release runs on; anything beyond that is refused and belongs in
a deploy (through a turquoise release if needed).

options:
      --to <version>   target version (up: default the last step; down: default one step)
      --dry-run        print the steps that would run; change nothing

examples:
  turquoise migrate books status
  turquoise migrate books up --dry-run
  turquoise migrate books to 2`,
  options: { to: { type: "string" }, "dry-run": { type: "boolean" } },
  async run(ctx) {
    const [service, action, version] = ctx.positionals;
    if (!service || !action || !["status", "up", "down", "to"].includes(action)) throw new TurquoiseError("USAGE", "usage: turquoise migrate <service> status|up|down|to <version> (see turquoise migrate --help)");
    const toText = action === "to" ? version : typeof ctx.values.to === "string" ? ctx.values.to : undefined;
    if (action === "to" && toText === undefined) throw new TurquoiseError("USAGE", "usage: turquoise migrate <service> to <version>");
    if (toText !== undefined && !/^\d+$/.test(toText)) throw new TurquoiseError("USAGE", `the target version must be an integer ≥ 0, got "${toText}"`);
    const { client } = connect(ctx.specFile);
    const path = `/v1/services/${encodeURIComponent(service)}/migrate`;
    const body = { action, dry_run: ctx.values["dry-run"] === true, actor: actor(), ...(toText !== undefined ? { to: Number(toText) } : {}) };
    const r = action === "status" || body.dry_run ? await client.request<MigrateResult>("POST", path, body) : await streamed(ctx, client, path, body);
    if (ctx.json) return printJson(ctx, r);
    if (action === "status") {
      ctx.out(`${service}: schema at ${r.current} (latest step ${r.latest})${r.live ? `; live ${r.live.release} runs on ${r.live.schema.min}..${r.live.schema.max}` : ""}`);
      for (const a of r.applied) ctx.out(`  applied  ${String(a.version).padStart(4, "0")}_${a.name}  ${a.phase}  ${formatTime(a.appliedAt)}`);
      for (const p of r.pending) ctx.out(`  pending  ${String(p.version).padStart(4, "0")}_${p.name}  ${p.phase}${p.transactional ? "" : ", no transaction"}${p.hasDown ? "" : ", no down"}`);
      for (const b of r.backfills ?? []) {
        ctx.out(`  unfinished backfill  ${String(b.version).padStart(4, "0")}_${b.name ?? "(file gone)"}  ${b.direction}: ${b.rowsDone.toLocaleString("en-US")} rows in ${count(b.batches, "batch", "batches")}, last ${formatTime(b.updatedAt)}; the next \`migrate ${b.direction}\` (or deploy) resumes it`);
      }
      return;
    }
    if (r.dryRun) {
      ctx.out(`dry run: schema ${r.from} → ${r.to}; would run:`);
      for (const s of r.steps ?? []) ctx.out(`  ${s.direction} ${String(s.version).padStart(4, "0")}_${s.name}`);
      if (!r.steps?.length) ctx.out("  nothing");
      return;
    }
    for (const l of r.log ?? []) ctx.out(`  ${l}`);
    ctx.out(r.result ?? "done");
  },
};
