// turquoise rollback: back to the release live before the last deploy.
import { TurquoiseError } from "../errors.js";
import type { Command } from "./command.js";
import { runFlow } from "./progress.js";
import { waitFlags } from "./deploy.js";

export const rollbackCommand: Command = {
  name: "rollback",
  summary: "flip back to the previous release (instantly while it is still warm)",
  help: `usage: turquoise rollback <service> [--wait [--wait-timeout <duration>]]

The previous release's slot is flipped back in if it is still warm (keep_previous); otherwise
the previous release is started again, checked, and flipped in like any deploy.

options:
      --wait              queue behind a deploy already running instead of failing at once
      --wait-timeout <d>  give up queueing after this long (default 10m, at most 1h); implies --wait

examples:
  turquoise rollback books
  turquoise rollback books --json
  turquoise rollback books --wait-timeout 2m`,
  options: { wait: { type: "boolean" }, "wait-timeout": { type: "string" } },
  async run(ctx) {
    const service = ctx.positionals[0];
    if (!service) throw new TurquoiseError("USAGE", "usage: turquoise rollback <service>");
    await runFlow(ctx, "rollback", service, waitFlags(ctx));
  },
};
