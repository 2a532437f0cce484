// turquoise proxy upgrade: the built-in proxy's workers replaced by ones running the code installed
// now, through the proxy's own control API (like `down`, it needs no agent), refusing no connection.
import { TurquoiseError, errorMessage } from "../errors.js";
import { resolveWorkers, upgradeProxy } from "../proxy/builtin.js";
import { loadSpecOrThrow } from "../spec/loader.js";
import { formatMs, parseDuration } from "../util/duration.js";
import { printJson, type Command } from "./command.js";

const USAGE = "usage: turquoise proxy upgrade [--drain-timeout DURATION]";

export const proxyCommand: Command = {
  name: "proxy",
  summary: "upgrade the built-in proxy in place: new workers, no connection refused or reset",
  help: `${USAGE}

Starts new proxy workers from the Turquoise code installed now (as many as proxy.workers says),
waits until they serve with the current route table, then retires the old workers: they stop
accepting, answer what their keep-alive connections still send with Connection: close, and
exit once their in-flight requests are done. The proxy's supervisor, its listening socket and
its control API stay as they are. Works with or without a running agent.

options:
      --drain-timeout <d>   how long the old workers may finish in-flight requests and
                            WebSockets before they are cut (default 10s)

examples:
  turquoise proxy upgrade
  turquoise proxy upgrade --drain-timeout 60s --json`,
  options: { "drain-timeout": { type: "string" } },
  async run(ctx) {
    if (ctx.positionals[0] !== "upgrade" || ctx.positionals.length !== 1) throw new TurquoiseError("USAGE", USAGE);
    const { spec } = loadSpecOrThrow(ctx.specFile);
    if (spec.proxy.driver !== "builtin") throw new TurquoiseError("USAGE", `proxy upgrade is for the built-in proxy; ${spec.file} uses proxy.driver: ${spec.proxy.driver}`);
    const drain = ctx.values["drain-timeout"];
    let drainTimeoutMs: number | undefined;
    try {
      drainTimeoutMs = typeof drain === "string" ? parseDuration(drain) : undefined;
    } catch (e) {
      throw new TurquoiseError("USAGE", `--drain-timeout: ${errorMessage(e)}`);
    }
    const r = await upgradeProxy(spec.stateDir, { workers: resolveWorkers(spec.proxy.workers), ...(drainTimeoutMs === undefined ? {} : { drainTimeoutMs }) });
    if (ctx.json) return printJson(ctx, r);
    ctx.out(`proxy upgraded: generation ${r.generation}, worker(s) ${r.started.join(", ")} serving after ${formatMs(r.readyMs)}`);
    ctx.out(`${r.retired.length} old worker(s) (${r.retired.join(", ") || "none"}) drained and gone after ${formatMs(r.durationMs)}`);
  },
};
