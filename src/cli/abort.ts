// turquoise abort: stops the release `deploy --hold` left on the preview address.
import { TurquoiseError } from "../errors.js";
import { formatTime } from "../util/time.js";
import { actor, connect } from "./client.js";
import { printJson, type Command } from "./command.js";

export const abortCommand: Command = {
  name: "abort",
  summary: "stop the release held by deploy --hold; the live release never saw it",
  help: `usage: turquoise abort <service> [--json]

Takes the deploy lock (fails at once while another deploy holds it), stops the held release's
instances and removes its preview route. Its deploy is recorded as aborted.

examples:
  turquoise abort books
  turquoise abort books --json`,
  options: {},
  async run(ctx) {
    const service = ctx.positionals[0];
    if (!service) throw new TurquoiseError("USAGE", "usage: turquoise abort <service>");
    const { client } = connect(ctx.specFile);
    const out = await client.request<{ service: string; release: string; slot: string; history: { id: number; startedAt: number } | null }>("POST", `/v1/services/${encodeURIComponent(service)}/abort`, { actor: actor() });
    if (ctx.json) return printJson(ctx, out);
    ctx.out(`aborted ${out.release} (${out.slot}) of ${out.service}: stopped${out.history ? `; deploy #${out.history.id} of ${formatTime(out.history.startedAt)} recorded as aborted` : ""}`);
  },
};
