// turquoise promote: the release `deploy --hold` left on the preview address takes the traffic.
import { TurquoiseError } from "../errors.js";
import type { Command } from "./command.js";
import { stagingFlags, waitFlags } from "./deploy.js";
import { runFlow } from "./progress.js";

export const promoteCommand: Command = {
  name: "promote",
  summary: "flip to the release held by deploy --hold (in canary steps with --canary)",
  help: `usage: turquoise promote <service> [--canary <steps> [--step-interval <d>]] [--wait [--wait-timeout <duration>]]

The held release goes through the rest of a deploy: its health is checked again, then the canary
steps (the spec's, or --canary's), the flip, verification, bake, drain and retire, as deploy does.

options:
      --canary <steps>    percentages of users to send to it in turn, each step judged: 5,25,50,100
      --step-interval <d> how long each canary step lasts
      --wait              queue behind a deploy already running instead of failing at once
      --wait-timeout <d>  give up queueing after this long (default 10m, at most 1h); implies --wait

examples:
  turquoise promote books
  turquoise promote books --canary 10,50 --step-interval 1m
  turquoise promote books --json`,
  options: { canary: { type: "string" }, "step-interval": { type: "string" }, wait: { type: "boolean" }, "wait-timeout": { type: "string" } },
  async run(ctx) {
    const service = ctx.positionals[0];
    if (!service) throw new TurquoiseError("USAGE", "usage: turquoise promote <service>");
    await runFlow(ctx, "promote", service, { ...waitFlags(ctx), ...stagingFlags(ctx) });
  },
};
