import { TurquoiseError } from "../errors.js";
import { checkReleaseName } from "../deploy/release.js";
import { connect } from "./client.js";
import { printJson, type Command } from "./command.js";
import { releaseFlags } from "./deploy.js";

export const planCommand: Command = {
  name: "plan",
  summary: "print what a deploy or rollback would do (schema checks, migrations, flips); changes nothing",
  help: `usage: turquoise plan <service> --release <release> [--via <turquoise release>] [--canary]
       turquoise plan <service> --rollback

options:
  -r, --release <name>    the release a deploy would bring
      --via <name>        a turquoise release to walk through
      --schema <a..b>     override the schema range the release declares
      --via-schema <a..b> the same for the --via release
      --rollback          plan the rollback instead
      --canary            also check that the deploy can go out in canary steps: both releases
                          on the current schema (refused, exit 10, saying why otherwise)

examples:
  turquoise plan books --release v3
  turquoise plan books --release v3 --via v2-turquoise
  turquoise plan books --rollback --json
  turquoise plan books --release v2 --canary`,
  options: { release: { type: "string", short: "r" }, via: { type: "string" }, schema: { type: "string" }, "via-schema": { type: "string" }, rollback: { type: "boolean" }, canary: { type: "boolean" } },
  async run(ctx) {
    const service = ctx.positionals[0];
    const rollback = ctx.values.rollback === true;
    if (!service || (!rollback && typeof ctx.values.release !== "string")) throw new TurquoiseError("USAGE", "usage: turquoise plan <service> --release <release> [--via <release>] | --rollback");
    if (typeof ctx.values.release === "string") checkReleaseName(ctx.values.release, "--release");
    const { client } = connect(ctx.specFile);
    const body = { kind: rollback ? "rollback" : "deploy", ...(typeof ctx.values.release === "string" ? { release: ctx.values.release } : {}), ...releaseFlags(ctx), ...(ctx.values.canary === true ? { canary: true } : {}) };
    const plan = await client.request<{ kind: string; via: string | null; live: string | null; lines: string[]; actions: unknown[] }>("POST", `/v1/services/${encodeURIComponent(service)}/plan`, body);
    if (ctx.json) return printJson(ctx, plan);
    ctx.out(`${plan.kind} plan for ${service} (live: ${plan.live ?? "nothing"})${plan.via ? ` via ${plan.via}` : ""}`);
    for (const l of plan.lines) ctx.out(`  ${l}`);
  },
};
