import { TurquoiseError } from "../errors.js";
import { connect } from "./client.js";
import { printJson, type Command } from "./command.js";

export const logsCommand: Command = {
  name: "logs",
  summary: "the last lines each running instance of a service printed",
  help: `usage: turquoise logs <service> [--tail N] [--instance <id>]

options:
  -n, --tail <N>        lines per instance (default 50)
      --instance <id>   one instance only

examples:
  turquoise logs books
  turquoise logs books --tail 200 --instance books-green-1a2b3c`,
  options: { tail: { type: "string", short: "n" }, instance: { type: "string" } },
  async run(ctx) {
    const service = ctx.positionals[0];
    if (!service) throw new TurquoiseError("USAGE", "usage: turquoise logs <service>");
    const tail = Number(ctx.values.tail ?? 50);
    if (!Number.isInteger(tail) || tail < 1) throw new TurquoiseError("USAGE", `--tail must be a positive integer, got "${ctx.values.tail}"`);
    const q = new URLSearchParams({ tail: String(tail), ...(typeof ctx.values.instance === "string" ? { instance: ctx.values.instance } : {}) });
    const { client } = connect(ctx.specFile, { agentCopy: true, warn: ctx.err });
    const { logs } = await client.get<{ logs: Array<{ instance: string; slot: string; release: string; text: string }> }>(`/v1/services/${encodeURIComponent(service)}/logs?${q}`);
    if (ctx.json) return printJson(ctx, logs);
    if (logs.length === 0) return ctx.out(`no running instances of ${service}`);
    for (const l of logs) {
      ctx.out(`==> ${l.instance} (${l.release}, ${l.slot}) <==`);
      ctx.out(l.text.trimEnd());
    }
  },
};
