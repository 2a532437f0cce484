import { TurquoiseError } from "../errors.js";
import { formatTime } from "../util/time.js";
import { actor, connect } from "./client.js";
import { printJson, type Command } from "./command.js";

interface MigrateResult {
  current: number;
  latest: number;
  applied: Array<{ version: number; name: string; phase: string; appliedAt: number }>;
  pending: Array<{ version: number; name: string; phase: string; transactional: boolean; hasDown: boolean }>;
  live: { release: string; schema: { min: number; max: number } } | null;
  dryRun?: boolean;
  from?: number;
  to?: number;
  steps?: Array<{ version: number; name: string; direction: string }>;
  result?: string;
  log?: string[];
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
    const r = await client.request<MigrateResult>("POST", `/v1/services/${encodeURIComponent(service)}/migrate`, {
      action, dry_run: ctx.values["dry-run"] === true, actor: actor(), ...(toText !== undefined ? { to: Number(toText) } : {}),
    });
    if (ctx.json) return printJson(ctx, r);
    if (action === "status") {
      ctx.out(`${service}: schema at ${r.current} (latest step ${r.latest})${r.live ? `; live ${r.live.release} runs on ${r.live.schema.min}..${r.live.schema.max}` : ""}`);
      for (const a of r.applied) ctx.out(`  applied  ${String(a.version).padStart(4, "0")}_${a.name}  ${a.phase}  ${formatTime(a.appliedAt)}`);
      for (const p of r.pending) ctx.out(`  pending  ${String(p.version).padStart(4, "0")}_${p.name}  ${p.phase}${p.transactional ? "" : ", no transaction"}${p.hasDown ? "" : ", no down"}`);
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
