// turquoise webhook: the URL a CI posts to for a service, and curl lines to paste into a CI job.
import { TurquoiseError } from "../errors.js";
import { loadSpecOrThrow } from "../spec/loader.js";
import type { ServiceSpec } from "../spec/types.js";
import { printJson, type Command } from "./command.js";

export const webhookCommand: Command = {
  name: "webhook",
  summary: "the URL and curl lines that let a CI deploy a service",
  help: `usage: turquoise webhook <service>

Prints the address of POST /v1/hooks/<service> and two ways to call it from CI:
- GitHub: a webhook with that URL, content type application/json, and the secret that is in the
  agent's environment under the service's webhook.secret_env; push and release events deploy
  the release that webhook.release makes of the payload ({tag} by default).
- any CI: a JSON body {"release": "<name>"} with Authorization: Bearer <deploy token>
  (turquoise token create --deploy <service>), and an Idempotency-Key so that a retried job
  does not deploy twice.

The agent listens on loopback by default (agent.listen): a CI on another machine reaches it
through a tunnel or a reverse proxy you run, never by opening the agent's port.

examples:
  turquoise webhook books
  turquoise webhook books --json`,
  async run(ctx) {
    const [service] = ctx.positionals;
    if (!service) throw new TurquoiseError("USAGE", "usage: turquoise webhook <service>");
    const { spec } = loadSpecOrThrow(ctx.specFile);
    const svc = Object.hasOwn(spec.services, service) ? spec.services[service] : undefined;
    if (!svc) throw new TurquoiseError("NOT_FOUND", `no service named "${service}" in ${spec.file}; known: ${Object.keys(spec.services).join(", ") || "none"}`);
    const host = spec.agent.host.includes(":") ? `[${spec.agent.host}]` : spec.agent.host;
    const url = `http://${host}:${spec.agent.port}/v1/hooks/${encodeURIComponent(service)}`;
    const lines = curlLines(svc, url);
    if (ctx.json) return printJson(ctx, { service, url, secretEnv: svc.webhook?.secretEnv ?? null, release: svc.webhook?.release ?? null, branches: svc.webhook?.branches ?? null, curl: lines });
    ctx.out(`POST ${url}`);
    ctx.out("");
    if (svc.webhook?.secretEnv) {
      ctx.out(`GitHub: add a webhook with this URL, content type application/json, and the secret in $${svc.webhook.secretEnv}.`);
      ctx.out(`It deploys the release "${svc.webhook.release ?? "{tag}"}"${svc.webhook.branches ? ` for pushes to ${svc.webhook.branches.join(", ")}` : ""}. By hand, signed as GitHub signs:`);
      ctx.out(`  ${lines.signed}`);
    } else {
      ctx.out(`GitHub's signed deliveries need webhook.secret_env on ${service} in ${spec.file}.`);
    }
    ctx.out("");
    ctx.out(`Any CI, with a deploy token (turquoise token create --deploy ${service} --name ci):`);
    ctx.out(`  ${lines.token}`);
  },
};

function curlLines(svc: ServiceSpec, url: string): { signed: string | null; token: string } {
  const body = `{"release":"$RELEASE"}`;
  const token = `curl -fsS -X POST ${url} -H "Authorization: Bearer $TURQUOISE_DEPLOY_TOKEN" -H "Idempotency-Key: $CI_JOB_ID" -H 'Content-Type: application/json' --data "${body.replace(/"/g, '\\"')}"`;
  const env = svc.webhook?.secretEnv;
  if (!env) return { signed: null, token };
  const signed = `body='{"ref":"refs/tags/'"$RELEASE"'"}'; curl -fsS -X POST ${url} -H 'X-GitHub-Event: push' -H "X-GitHub-Delivery: $(cat /proc/sys/kernel/random/uuid)" -H "X-Hub-Signature-256: sha256=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$${env}" | sed 's/^.* //')" -H 'Content-Type: application/json' --data "$body"`;
  return { signed, token };
}
