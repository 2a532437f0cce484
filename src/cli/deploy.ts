// turquoise deploy: one release through the deploy flow, its progress streamed step by step.
import { TurquoiseError, errorMessage } from "../errors.js";
import { checkReleaseName } from "../deploy/release.js";
import { parseDuration } from "../util/duration.js";
import type { Command, Context } from "./command.js";
import { runFlow } from "./progress.js";

export const deployCommand: Command = {
  name: "deploy",
  summary: "deploy a release: start it beside the live one, prove it healthy, flip, drain",
  help: `usage: turquoise deploy <service> --release <release> [--via <turquoise release>] [--wait [--wait-timeout <duration>]]

Shows the plan, then runs it with each step's timing. When the service has a database, the plan
comes from the schema versions each release runs on: expand, flip, contract; or, for a breaking
change, the turquoise path through --via.

options:
  -r, --release <name>    the release to deploy (for runtime: process, the {release} in cwd)
      --via <name>        a turquoise release that runs on both the current and the target schema
      --schema <a..b>     override the schema range the release declares in its turquoise.json
      --via-schema <a..b> the same for the --via release
      --wait              queue behind a deploy already running instead of failing at once
      --wait-timeout <d>  give up queueing after this long (default 10m, at most 1h); implies --wait.
                          A queued deploy whose client goes away (Ctrl-C) is dropped.

examples:
  turquoise deploy books --release v2
  turquoise deploy books --release v3 --via v2-turquoise
  turquoise deploy books -r v3 --wait --json
  turquoise deploy books -r v3 --wait-timeout 30s`,
  options: { release: { type: "string", short: "r" }, via: { type: "string" }, schema: { type: "string" }, "via-schema": { type: "string" }, wait: { type: "boolean" }, "wait-timeout": { type: "string" } },
  async run(ctx) {
    const service = ctx.positionals[0];
    const release = ctx.values.release;
    if (!service || typeof release !== "string") throw new TurquoiseError("USAGE", "usage: turquoise deploy <service> --release <release>");
    checkReleaseName(release, "--release");
    await runFlow(ctx, "deploy", service, { release, ...waitFlags(ctx), ...releaseFlags(ctx) });
  },
};

/** --wait and --wait-timeout (which implies --wait), as the API spells them. */
export function waitFlags(ctx: Context): { wait: boolean; wait_timeout?: string } {
  const timeout = ctx.values["wait-timeout"];
  if (typeof timeout !== "string") return { wait: ctx.values.wait === true };
  try {
    parseDuration(timeout);
  } catch (e) {
    throw new TurquoiseError("USAGE", `--wait-timeout: ${errorMessage(e)}`);
  }
  return { wait: true, wait_timeout: timeout };
}

/** --via, --schema and --via-schema, as the API spells them. */
export function releaseFlags(ctx: Context): Record<string, string> {
  const out: Record<string, string> = {};
  if (typeof ctx.values.via === "string") out.via = checkReleaseName(ctx.values.via, "--via");
  if (typeof ctx.values.schema === "string") out.schema = ctx.values.schema;
  if (typeof ctx.values["via-schema"] === "string") out.via_schema = ctx.values["via-schema"];
  return out;
}
