// The CLI entry: parses argv, runs one command, maps errors to exit codes in one place.
import path from "node:path";
import { parseArgs } from "node:util";
import { EXIT_CODES, TurquoiseError, errorMessage } from "../errors.js";
import { GLOBAL_HELP, globalHelp, globalOptions, type Command, type Context } from "./command.js";
import { demoCommand } from "./demo.js";
import { abortCommand } from "./abort.js";
import { deployCommand } from "./deploy.js";
import { promoteCommand } from "./promote.js";
import { downCommand } from "./down.js";
import { historyCommand } from "./history.js";
import { initCommand } from "./init.js";
import { kvCommand } from "./kv.js";
import { logsCommand } from "./logs.js";
import { migrateCommand } from "./migrate.js";
import { planCommand } from "./plan.js";
import { proxyCommand } from "./proxy.js";
import { signalCommand } from "./signal.js";
import { rollbackCommand } from "./rollback.js";
import { statusCommand } from "./status.js";
import { tokenCommand } from "./token.js";
import { webhookCommand } from "./webhook.js";
import { upCommand } from "./up.js";
import { VERSION } from "../version.js";
import { schemaCommand, validateCommand } from "./validate.js";

export const COMMANDS: Command[] = [initCommand, validateCommand, upCommand, downCommand, deployCommand, promoteCommand, abortCommand, rollbackCommand, planCommand, migrateCommand, statusCommand, historyCommand, logsCommand, kvCommand, tokenCommand, webhookCommand, signalCommand, proxyCommand, demoCommand, schemaCommand];

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return `turquoise: zero-downtime blue/green deploys onto a shared database

usage: turquoise <command> [options]

commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join("\n")}

${GLOBAL_HELP}

exit codes: ${Object.entries(EXIT_CODES).map(([k, v]) => `${v} ${k.toLowerCase()}`).join(", ")}

examples:
  turquoise demo
  turquoise init && turquoise up --detach
  turquoise deploy books --release v2
  turquoise rollback books
  turquoise <command> --help`;
}

export async function main(argv: string[]): Promise<void> {
  // `turquoise demo | head` closes the pipe early: the reader's choice, not an error. The command
  // is told (it may stop early) and runs its cleanup; exiting here would skip every finally.
  const stdoutGone = new AbortController();
  process.stdout.on("error", (e: NodeJS.ErrnoException) => {
    if (e.code !== "EPIPE") throw e;
    stdoutGone.abort();
  });
  const out = (s: string) => {
    if (!stdoutGone.signal.aborted) process.stdout.write(s + "\n");
  };
  const err = (s: string) => process.stderr.write(s + "\n");
  const name = argv[0];
  let json = argv.includes("--json");
  try {
    if (!name || name === "--help" || name === "-h" || name === "help") {
      out(usage());
      return;
    }
    if (name === "--version" || name === "version") {
      out(`turquoise ${VERSION}`);
      return;
    }
    const cmd = COMMANDS.find((c) => c.name === name);
    if (!cmd) throw new TurquoiseError("USAGE", `unknown command "${name}"; run \`turquoise --help\` for the list`);
    let parsed;
    try {
      parsed = parseArgs({ args: argv.slice(1), options: { ...globalOptions(cmd), ...cmd.options }, allowPositionals: true, strict: true });
    } catch (e) {
      throw new TurquoiseError("USAGE", `${errorMessage(e)}\nrun \`turquoise ${cmd.name} --help\``);
    }
    const values = parsed.values as Record<string, string | boolean | undefined>;
    if (values.help) {
      out(`turquoise ${cmd.name}: ${cmd.summary}\n\n${cmd.help}\n\n${globalHelp(cmd)}`);
      return;
    }
    json = values.json === true;
    const ctx: Context = {
      specFile: path.resolve(typeof values.file === "string" ? values.file : process.env.TURQUOISE_FILE ?? "turquoise.yml"),
      json, values, positionals: parsed.positionals, out, err, isTTY: process.stdout.isTTY === true && !json, stdoutGone: stdoutGone.signal,
    };
    await cmd.run(ctx);
    process.exitCode = 0;
  } catch (e) {
    const te = e instanceof TurquoiseError ? e : new TurquoiseError("INTERNAL", errorMessage(e), { cause: e });
    if (!te.data.reported) {
      if (json) out(JSON.stringify({ ok: false, error: te.toJSON() }, null, 2));
      else err(`error: ${te.message}`);
    }
    if (te.code === "INTERNAL" && process.env.TURQUOISE_DEBUG && e instanceof Error) err(e.stack ?? "");
    process.exitCode = te.exitCode;
  }
}
