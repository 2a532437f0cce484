import { TurquoiseError } from "../errors.js";
import { formatProblem, loadSpec } from "../spec/loader.js";
import { SPEC_JSON_SCHEMA } from "../spec/schema.js";
import { printJson, type Command } from "./command.js";

export const validateCommand: Command = {
  name: "validate",
  summary: "check turquoise.yml: schema, then rules; prints every error and warning with its line",
  help: `usage: turquoise validate

examples:
  turquoise validate
  turquoise validate -f deploy/turquoise.yml --json`,
  async run(ctx) {
    const r = loadSpec(ctx.specFile);
    if (ctx.json) printJson(ctx, { ok: r.errors.length === 0, errors: r.errors, warnings: r.warnings });
    else {
      for (const w of r.warnings) ctx.err(`warning: ${formatProblem(w)}`);
      for (const e of r.errors) ctx.err(`error: ${formatProblem(e)}`);
    }
    if (r.errors.length) throw new TurquoiseError("SPEC_INVALID", `${r.errors.length} error(s) in ${ctx.specFile}`, { data: { reported: true } });
    if (!ctx.json) ctx.out(`${ctx.specFile} is valid: ${Object.keys(r.spec!.services).length} service(s)${r.warnings.length ? `, ${r.warnings.length} warning(s)` : ""}`);
  },
};

export const schemaCommand: Command = {
  name: "schema",
  summary: "print the JSON Schema of turquoise.yml, for editors",
  help: `usage: turquoise schema

The same schema is committed as schema/turquoise.schema.json.

examples:
  turquoise schema > turquoise.schema.json
  # then, first line of turquoise.yml, for the YAML language server:
  # yaml-language-server: $schema=./turquoise.schema.json`,
  async run(ctx) {
    ctx.out(JSON.stringify(SPEC_JSON_SCHEMA, null, 2));
  },
};
