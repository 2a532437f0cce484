import fs from "node:fs";
import path from "node:path";
import { TurquoiseError } from "../errors.js";
import { ensureToken } from "../auth/token.js";
import { loadSpecOrThrow } from "../spec/loader.js";
import { starterSpec } from "../spec/template.js";
import { printJson, type Command } from "./command.js";

export const initCommand: Command = {
  name: "init",
  summary: "write a commented starter turquoise.yml and the API token",
  help: `usage: turquoise init [--service <name>] [--force]

Writes a starter spec (every key with its default and a comment) and creates the state
directory with the API token (mode 0600).

options:
      --service <name>   the first service's name (default: web)
      --force            overwrite an existing spec

examples:
  turquoise init
  turquoise init --service books -f deploy/turquoise.yml`,
  options: { service: { type: "string" }, force: { type: "boolean" } },
  async run(ctx) {
    const file = path.resolve(ctx.specFile);
    if (fs.existsSync(file) && !ctx.values.force) throw new TurquoiseError("CONFLICT", `${file} already exists; use --force to overwrite it`);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, starterSpec(typeof ctx.values.service === "string" ? { service: ctx.values.service } : {}));
    const { spec } = loadSpecOrThrow(file);
    ensureToken(spec.stateDir);
    if (ctx.json) return printJson(ctx, { spec: file, stateDir: spec.stateDir, token: path.join(spec.stateDir, "token") });
    ctx.out(`wrote ${file}`);
    ctx.out(`API token in ${path.join(spec.stateDir, "token")} (mode 0600)`);
    ctx.out("next: edit the spec, then `turquoise up --detach` and `turquoise deploy <service> --release <release>`");
  },
};
