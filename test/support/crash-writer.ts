// A child process that writes to a store in a loop, printing a count after each put() has
// returned, and is killed with SIGKILL once it has acknowledged enough: each driver's crash test
// then checks the store against those acknowledgements.

import { spawn } from "node:child_process";

/**
 * Runs the writer and kills it after `target` acknowledged writes. The child imports `module` as
 * M and opens its store with the expression `open` (process.env holds `env`); write i puts key
 * "k/" + i padded to 8 digits with the value "value " + i. Resolves with the highest count printed.
 */
export async function killAfterAcks(opts: { module: URL; open: string; env: Record<string, string>; target: number }): Promise<number> {
  // The count goes out only after put() has returned, so each number is a promise kept.
  const script = `
    const M = await import(process.env.TQ_MODULE);
    const store = ${opts.open};
    for (let i = 1; ; i++) {
      await store.put("k/" + String(i).padStart(8, "0"), "value " + i);
      process.stdout.write(i + "\\n");
    }
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    env: { ...process.env, ...opts.env, TQ_MODULE: opts.module.href },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let acked = 0;
  let pending = "";
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdout.on("data", (chunk: Buffer) => {
    pending += chunk.toString();
    const lines = pending.split("\n");
    pending = lines.pop() ?? "";
    for (const line of lines) acked = Math.max(acked, Number(line));
    if (acked >= opts.target) child.kill("SIGKILL");
  });
  const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("close", (code, signal) => resolve({ code, signal })));
  if (exit.signal !== "SIGKILL") throw new Error(`the writer ended without being killed (code ${exit.code}): ${stderr}`);
  return acked;
}
