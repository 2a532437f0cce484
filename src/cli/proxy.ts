// turquoise proxy upgrade: the built-in proxy's workers replaced by ones running the code installed
// now, through the proxy's own control API (like `down`, it needs no agent), refusing no connection.
// turquoise proxy tls / renew: the certificates the proxy serves, and an ACME renewal on demand.
import { TurquoiseError, errorMessage } from "../errors.js";
import { connectProxy, type RunningProxy, resolveWorkers, upgradeProxy } from "../proxy/builtin.js";
import type { Spec } from "../spec/types.js";
import { loadSpecOrThrow } from "../spec/loader.js";
import { FILE_CONTENT_RULES, SPEC_RULES } from "../spec/rules.js";
import { formatMs, parseDuration } from "../util/duration.js";
import { printJson, type Command } from "./command.js";

const USAGE = "usage: turquoise proxy upgrade [--drain-timeout DURATION] | proxy tls | proxy renew HOST";

export const proxyCommand: Command = {
  name: "proxy",
  summary: "upgrade the built-in proxy in place (no connection refused or reset); its TLS certificates",
  help: `${USAGE}

upgrade: starts new proxy workers from the Turquoise code installed now (as many as
proxy.workers says, accepting as proxy.accept says), waits until they serve with the current
route table, then retires the old
workers: they stop accepting, answer what their keep-alive connections still send with
Connection: close, and exit once their in-flight requests are done. The proxy's supervisor, its
listening sockets and its control API stay as they are. Works with or without a running agent.

tls: lists the certificates the proxy serves (hosts, validity, the last load error of a file
that failed to load) and its ACME hosts (state, renewal date, failures, next attempt).

renew HOST: orders a new certificate for an ACME host now, whatever the current one's age, and
returns once every worker serves it. The current certificate serves meanwhile.

options:
      --drain-timeout <d>   how long the old workers may finish in-flight requests and
                            WebSockets before they are cut (default 10s)

examples:
  turquoise proxy upgrade
  turquoise proxy upgrade --drain-timeout 60s --json
  turquoise proxy tls
  turquoise proxy renew books.example.com`,
  options: { "drain-timeout": { type: "string" } },
  async run(ctx) {
    const [sub, ...rest] = ctx.positionals;
    const arity = { upgrade: 0, tls: 0, renew: 1 }[sub ?? ""];
    if (arity === undefined || rest.length !== arity) throw new TurquoiseError("USAGE", USAGE);
    // tls and renew read what the running proxy serves: a broken certificate file is what they are for.
    const { spec } = loadSpecOrThrow(ctx.specFile, sub === "upgrade" ? {} : { rules: SPEC_RULES.filter((r) => !FILE_CONTENT_RULES.includes(r)) });
    if (spec.proxy.driver !== "builtin") throw new TurquoiseError("USAGE", `proxy ${sub} is for the built-in proxy; ${spec.file} uses proxy.driver: ${spec.proxy.driver}`);
    if (sub === "tls") {
      const status = await (await running(spec)).proxy.tls();
      if (ctx.json) return printJson(ctx, status);
      ctx.out(status.listen ? `TLS on ${status.listen.host}:${status.listen.port}` : "no TLS listener (proxy.tls is not set)");
      for (const c of status.certificates) {
        const validity = c.notAfter ? `valid until ${c.notAfter}` : "not loaded";
        ctx.out(`  ${c.hosts.join(", ")}  ${c.source}  ${validity}${c.error ? `  LOAD FAILED: ${c.error}` : ""}`);
      }
      for (const h of status.acme) {
        const next = h.lastError ? `  ${h.failures} failure(s), last: ${h.lastError}; next attempt ${h.nextAttemptAt}` : "";
        ctx.out(`  acme ${h.host}  ${h.state}${h.renewAt ? `  renewal at ${h.renewAt}` : ""}${next}`);
      }
      return;
    }
    if (sub === "renew") {
      const r = await (await running(spec)).proxy.renewCertificate(rest[0]!.toLowerCase());
      if (ctx.json) return printJson(ctx, r);
      ctx.out(`${r.host}: new certificate served by every worker, valid until ${r.notAfter}, renewal at ${r.renewAt}`);
      return;
    }
    const drain = ctx.values["drain-timeout"];
    let drainTimeoutMs: number | undefined;
    try {
      drainTimeoutMs = typeof drain === "string" ? parseDuration(drain) : undefined;
    } catch (e) {
      throw new TurquoiseError("USAGE", `--drain-timeout: ${errorMessage(e)}`);
    }
    const r = await upgradeProxy(spec.stateDir, { workers: resolveWorkers(spec.proxy.workers), accept: spec.proxy.accept, ...(drainTimeoutMs === undefined ? {} : { drainTimeoutMs }) });
    if (ctx.json) return printJson(ctx, r);
    ctx.out(`proxy upgraded: generation ${r.generation}, worker(s) ${r.started.join(", ")} serving after ${formatMs(r.readyMs)}`);
    ctx.out(`${r.retired.length} old worker(s) (${r.retired.join(", ") || "none"}) drained and gone after ${formatMs(r.durationMs)}`);
  },
};

async function running(spec: Spec): Promise<RunningProxy> {
  const p = await connectProxy(spec.stateDir);
  if (!p) throw new TurquoiseError("NOT_FOUND", `no proxy is running for ${spec.stateDir}`);
  return p;
}
