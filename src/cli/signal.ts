import { TurquoiseError } from "../errors.js";
import { connect } from "./client.js";
import { printJson, type Command } from "./command.js";

export const signalCommand: Command = {
  name: "signal",
  summary: "send a signal to a service's live instances through its runtime (e.g. HUP to nginx)",
  help: `usage: turquoise signal <service> <SIGNAL> [--all]

The signal goes through the service's runtime: to the process, or to the container through the
Docker API. The same action is available in a spec's hooks (after_flip: [{signal: {...}}]).

options:
      --all   every instance of the service (warm ones too), not only the live slot's

examples:
  turquoise signal nginx HUP
  turquoise signal books SIGHUP --all --json`,
  options: { all: { type: "boolean" } },
  async run(ctx) {
    const [service, signal] = ctx.positionals;
    if (!service || !signal) throw new TurquoiseError("USAGE", "usage: turquoise signal <service> <SIGNAL>");
    const { client } = connect(ctx.specFile);
    const r = await client.request<{ signal: string; sent: number }>("POST", `/v1/services/${encodeURIComponent(service)}/signal`, { signal, all: ctx.values.all === true });
    if (ctx.json) return printJson(ctx, r);
    ctx.out(`${r.signal} sent to ${r.sent} instance(s) of ${service}`);
  },
};
