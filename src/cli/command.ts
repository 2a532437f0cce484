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
}

export interface Command {
  name: string;
  summary: string;
  /** Full --help text after the summary: usage, options, examples. */
  help: string;
  options?: Options;
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

export function printJson(ctx: Context, value: unknown): void {
  ctx.out(JSON.stringify(value, null, 2));
}
