// Runs an argv (never a shell string) with a timeout, collecting the start of its output. Smoke
// checks and hooks use it.
import { spawn } from "node:child_process";

const MAX_OUTPUT_CHARS = 2_000;

export interface CommandResult {
  ok: boolean;
  /** "exit 0: <output>", "killed by SIGKILL: ...", or why it could not start. */
  output: string;
}

export function runCommand(argv: string[], opts: { cwd: string; env?: Record<string, string>; timeoutMs: number; stdin?: string }): Promise<CommandResult> {
  return new Promise((resolve) => {
    let output = "";
    const child = spawn(argv[0]!, argv.slice(1), { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ["pipe", "pipe", "pipe"] });
    const collect = (c: Buffer) => { if (output.length < MAX_OUTPUT_CHARS) output += c.toString("utf8"); };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    child.stdin.on("error", () => undefined);
    child.stdin.end(opts.stdin ?? "");
    const timer = setTimeout(() => { output += `\n(timed out after ${opts.timeoutMs}ms)`; child.kill("SIGKILL"); }, opts.timeoutMs);
    child.on("error", (e) => { clearTimeout(timer); resolve({ ok: false, output: `cannot run ${argv[0]}: ${e.message}` }); });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const status = signal ? `killed by ${signal}` : `exit ${code}`;
      resolve({ ok: code === 0, output: `${status}${output.trim() ? `: ${output.trim()}` : ""}` });
    });
  });
}
