// turquoise deploy: one release through the deploy flow, its progress streamed step by step.
import { TurquoiseError, errorMessage } from "../errors.js";
import { checkReleaseName } from "../deploy/release.js";
import { parseDuration } from "../util/duration.js";
import type { Command, Context } from "./command.js";
import { runFlow } from "./progress.js";

export const deployCommand: Command = {
  name: "deploy",
  summary: "deploy a release: start it beside the live one, prove it healthy, flip, drain",
  help: `usage: turquoise deploy <service> --release <release> [--via <turquoise release>] [--hold | --canary <steps> [--step-interval <d>]] [--wait [--wait-timeout <duration>]]

Shows the plan, then runs it with each step's timing. When the service has a database, the plan
comes from the schema versions each release runs on: expand, flip, contract; or, for a breaking
change, the turquoise path through --via.

options:
  -r, --release <name>    the release to deploy (for runtime: process, the {release} in cwd)
      --via <name>        a turquoise release that runs on both the current and the target schema
      --schema <a..b>     override the schema range the release declares in its turquoise.json
      --via-schema <a..b> the same for the --via release
      --hold              stop after the smoke checks: the new release stays on route.preview_host
                          until \`turquoise promote\` flips to it or \`turquoise abort\` stops it
      --canary <steps>    send these percentages of users to the new release in turn, each step
                          judged against the live release (the spec's canary thresholds): 5,25,50,100.
                          A failing step sends everyone back at once and stops the new release.
                          0 flips in one step whatever the spec's canary says.
      --step-interval <d> how long each canary step lasts (default: the spec's canary.step_interval, or 30s)
      --wait              queue behind a deploy already running instead of failing at once
      --wait-timeout <d>  give up queueing after this long (default 10m, at most 1h); implies --wait.
                          A queued deploy whose client goes away (Ctrl-C) is dropped.

examples:
  turquoise deploy books --release v2
  turquoise deploy books --release v3 --via v2-turquoise
  turquoise deploy books -r v3 --wait --json
  turquoise deploy books -r v3 --wait-timeout 30s
  turquoise deploy books -r v3 --hold
  turquoise deploy books -r v3 --canary 5,25,50,100 --step-interval 30s`,
  options: {
    release: { type: "string", short: "r" }, via: { type: "string" }, schema: { type: "string" }, "via-schema": { type: "string" }, wait: { type: "boolean" }, "wait-timeout": { type: "string" },
    hold: { type: "boolean" }, canary: { type: "string" }, "step-interval": { type: "string" },
  },
  async run(ctx) {
    const service = ctx.positionals[0];
    const release = ctx.values.release;
    if (!service || typeof release !== "string") throw new TurquoiseError("USAGE", "usage: turquoise deploy <service> --release <release>");
    checkReleaseName(release, "--release");
    await runFlow(ctx, "deploy", service, { release, ...waitFlags(ctx), ...releaseFlags(ctx), ...stagingFlags(ctx) });
  },
};

/** --hold, --canary and --step-interval, as the API spells them (the agent checks the values). */
export function stagingFlags(ctx: Context): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (ctx.values.hold === true) out.hold = true;
  if (typeof ctx.values.canary === "string") out.canary = ctx.values.canary;
  if (typeof ctx.values["step-interval"] === "string") {
    if (out.canary === undefined) throw new TurquoiseError("USAGE", "--step-interval goes with --canary");
    try {
      parseDuration(ctx.values["step-interval"]);
    } catch (e) {
      throw new TurquoiseError("USAGE", `--step-interval: ${errorMessage(e)}`);
    }
    out.step_interval = ctx.values["step-interval"];
  }
  if (out.hold && out.canary !== undefined) throw new TurquoiseError("USAGE", "--hold and --canary do not go together: hold, then `turquoise promote <service> --canary <steps>`");
  return out;
}

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
