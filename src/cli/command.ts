// What every CLI command looks like: a name, its help (with examples), its options, and run().
import type { ParseArgsConfig } from "node:util";

export type Options = NonNullable<ParseArgsConfig["options"]>;

export interface Context {
  /** Path of turquoise.yml (from -f/--file, $TURQUOISE_FILE, or ./turquoise.yml). */
  specFile: string;
  json: boolean;
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
  out: (text: string) => void;
  err: (text: string) => void;
  isTTY: boolean;
  /** Aborted once stdout's reader is gone (`turquoise demo | head`): out() then writes nothing. */
  stdoutGone: AbortSignal;
}

export interface Command {
  name: string;
  summary: string;
  /** Full --help text after the summary: usage, options, examples. */
  help: string;
  options?: Options;
  /** false: the command reads no spec, so -f/--file is neither listed nor accepted. */
  usesSpec?: false;
  run(ctx: Context): Promise<void>;
}

export const GLOBAL_OPTIONS: Options = {
  file: { type: "string", short: "f" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
};

export const GLOBAL_HELP = `global options:
  -f, --file <path>   the spec (default: ./turquoise.yml, or $TURQUOISE_FILE)
      --json          machine-readable output on stdout
  -h, --help          this help`;

/** The global options a command takes: -f only when it reads a spec. */
export function globalOptions(cmd: Pick<Command, "usesSpec">): Options {
  if (cmd.usesSpec !== false) return GLOBAL_OPTIONS;
  const { file: _file, ...rest } = GLOBAL_OPTIONS;
  return rest;
}

/** The global options' help, as globalOptions(cmd) takes them. */
export function globalHelp(cmd: Pick<Command, "usesSpec">): string {
  return cmd.usesSpec !== false ? GLOBAL_HELP : GLOBAL_HELP.split("\n").filter((l) => !l.includes("--file")).join("\n");
}

export function printJson(ctx: Context, value: unknown): void {
  ctx.out(JSON.stringify(value, null, 2));
}
