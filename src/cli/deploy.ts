import { TurquoiseError } from "../errors.js";
import type { Command } from "./command.js";
import { runFlow } from "./progress.js";

export const deployCommand: Command = {
  name: "deploy",
  summary: "deploy a release: start it beside the live one, prove it healthy, flip, drain",
  help: `usage: turquoise deploy <service> --release <release> [--wait]

options:
  -r, --release <name>  the release to deploy (for runtime: process, the {release} in cwd)
      --wait            queue behind a deploy already running instead of failing at once

examples:
  turquoise deploy books --release v2
  turquoise deploy books -r v3 --wait --json`,
  options: { release: { type: "string", short: "r" }, wait: { type: "boolean" } },
  async run(ctx) {
    const service = ctx.positionals[0];
    const release = ctx.values.release;
    if (!service || typeof release !== "string") throw new TurquoiseError("USAGE", "usage: turquoise deploy <service> --release <release>");
    await runFlow(ctx, "deploy", service, { release, wait: ctx.values.wait === true });
  },
};
