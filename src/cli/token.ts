// turquoise token: deploy tokens for CI and webhooks, and read tokens for the dashboard's read-only
// view, made, listed and revoked through the agent.
import { TurquoiseError } from "../errors.js";
import { formatTime } from "../util/time.js";
import type { DeployTokenInfo } from "../auth/deploy-tokens.js";
import { connect } from "./client.js";
import { printJson, type Command } from "./command.js";

const USAGE = "usage: turquoise token create --deploy <service>[,<service>...] | --read [--name <name>] | list | revoke <id> (see turquoise token --help)";

export const tokenCommand: Command = {
  name: "token",
  summary: "deploy tokens for CI and webhooks, read tokens for the dashboard: create, list, revoke",
  help: `usage:
  turquoise token create --deploy <service>[,<service>...] [--name <name>]
  turquoise token create --read [--name <name>]
  turquoise token list
  turquoise token revoke <id>

A deploy token may deploy, roll back and read the status of the services it names, and nothing
else. A read token reads the status, history and events of every service and changes nothing:
sign in to the dashboard (/ui) with it for a read-only view. create prints the token once: the
agent keeps only its sha256. Send it as Authorization: Bearer <token>. A revoked token is refused
(401) at once, and the dashboard sessions and event streams opened with it end.

options:
      --deploy <services>   the services the token may deploy, comma-separated
      --read                a read-only token instead
      --name <name>         a label shown by list and in history (e.g. "ci")

examples:
  turquoise token create --deploy books,api --name ci
  turquoise token create --read --name on-call
  turquoise token list --json
  turquoise token revoke 3f9c2a7be01d4c55`,
  options: { deploy: { type: "string" }, read: { type: "boolean" }, name: { type: "string" } },
  async run(ctx) {
    const [op, id] = ctx.positionals;
    if (op === "create") {
      const services = typeof ctx.values.deploy === "string" ? ctx.values.deploy.split(",").map((s) => s.trim()).filter((s) => s !== "") : [];
      const read = ctx.values.read === true;
      if (read && ctx.values.deploy !== undefined) throw new TurquoiseError("USAGE", "token create takes --deploy <services> or --read, not both");
      if (!read && services.length === 0) throw new TurquoiseError("USAGE", "token create needs --deploy <service>[,<service>...] or --read");
      const { client } = connect(ctx.specFile);
      const body = { ...(read ? { read: true } : { deploy: services }), ...(typeof ctx.values.name === "string" ? { name: ctx.values.name } : {}) };
      const t = await client.request<DeployTokenInfo & { token: string }>("POST", "/v1/tokens", body);
      if (ctx.json) return printJson(ctx, t);
      ctx.out(t.token);
      const what = read ? "read token" : "deploy token";
      ctx.err(`${what} ${t.id}${t.name ? ` (${t.name})` : ""}${read ? "" : ` for ${t.services.join(", ")}`}: shown once, keep it now; revoke it with \`turquoise token revoke ${t.id}\``);
      return;
    }
    if (op === "list") {
      const { client } = connect(ctx.specFile);
      const { tokens } = await client.get<{ tokens: DeployTokenInfo[] }>("/v1/tokens");
      if (ctx.json) return printJson(ctx, tokens);
      if (tokens.length === 0) return ctx.out("no deploy or read tokens");
      for (const t of tokens) ctx.out(`${t.id}  ${t.scope === "read" ? "read   (every service)".padEnd(27) : `deploy ${t.services.join(",").padEnd(20)}`} ${formatTime(t.createdAt)}  ${t.name ?? ""}`);
      return;
    }
    if (op === "revoke" && id) {
      const { client } = connect(ctx.specFile);
      const { revoked } = await client.request<{ revoked: DeployTokenInfo }>("DELETE", `/v1/tokens/${encodeURIComponent(id)}`);
      return ctx.json ? printJson(ctx, revoked) : ctx.out(`revoked ${revoked.scope === "read" ? "read" : "deploy"} token ${revoked.id}${revoked.name ? ` (${revoked.name})` : ""}`);
    }
    throw new TurquoiseError("USAGE", USAGE);
  },
};
