// turquoise kv: the user key/value store, through the agent's API.
import { EXIT_CODES, TurquoiseError } from "../errors.js";
import { INTERNAL_PREFIX } from "../state/namespace.js";
import type { KeyValue } from "../state/contract.js";
import { connect } from "./client.js";
import { printJson, type Command } from "./command.js";

export const kvCommand: Command = {
  name: "kv",
  summary: "read and write the user key/value store (the agent's own records are not in it)",
  help: `usage:
  turquoise kv get <key>
  turquoise kv list [prefix]
  turquoise kv put <key> <value> [--cas <revision>]
  turquoise kv delete <key> [--cas <revision>]

options:
  --cas <revision>   write only if the key's revision is this one (0: only if absent)

Keys under ${INTERNAL_PREFIX} are the agent's own records (live slots, instances, journals):
every kv call on them is refused (exit ${EXIT_CODES.FORBIDDEN}). The live slot is in \`turquoise status\`.

examples:
  turquoise kv put config/books/banner "hello" --cas 0
  turquoise kv get config/books/banner
  turquoise kv list config/ --json`,
  options: { cas: { type: "string" } },
  async run(ctx) {
    const [op, key, value] = ctx.positionals;
    const usable = (op === "get" && key) || op === "list" || (op === "put" && key && value !== undefined) || (op === "delete" && key);
    if (!usable) throw new TurquoiseError("USAGE", "usage: turquoise kv get|list|put|delete <key> [value] (see turquoise kv --help)");
    const { client } = connect(ctx.specFile);
    const path = (k: string) => `/v1/kv/${k.split("/").map(encodeURIComponent).join("/")}`;
    const cas = typeof ctx.values.cas === "string" ? `?cas=${encodeURIComponent(ctx.values.cas)}` : "";
    if (op === "get" && key) {
      const kv = await client.get<KeyValue>(path(key));
      return ctx.json ? printJson(ctx, kv) : ctx.out(kv.value);
    }
    if (op === "list") {
      const { items } = await client.get<{ items: KeyValue[] }>(`/v1/kv?prefix=${encodeURIComponent(key ?? "")}`);
      if (ctx.json) return printJson(ctx, items);
      for (const kv of items) ctx.out(`${kv.key} = ${kv.value}  (rev ${kv.modRevision})`);
      return;
    }
    if (op === "put" && key && value !== undefined) {
      const r = await client.request<{ revision: number }>("PUT", path(key) + cas, value);
      return ctx.json ? printJson(ctx, r) : ctx.out(`ok, revision ${r.revision}`);
    }
    if (op === "delete" && key) {
      const r = await client.request<{ revision: number }>("DELETE", path(key) + cas);
      return ctx.json ? printJson(ctx, r) : ctx.out(`deleted, revision ${r.revision}`);
    }
    throw new TurquoiseError("USAGE", "usage: turquoise kv get|list|put|delete <key> [value] (see turquoise kv --help)");
  },
};
