// runCommand: a timeout ends the command's whole process group, and nothing it leaves behind
// keeps the caller waiting. Real processes throughout.
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { describe, it } from "node:test";
import { COMMAND_KILL_GRACE_MS, COMMAND_OUTPUT_MAX_BYTES, COMMAND_OUTPUT_SHOWN_CHARS, endRunningCommands, runCommand } from "../../src/util/command.js";
import { readProcStat } from "../../src/util/proc.js";

const cwd = tmpdir();

function isRunning(pid: number): boolean {
  const stat = readProcStat(pid);
  return stat !== undefined && stat.state !== "Z";
}

/** Live processes whose argv is exactly this: how a test finds a grandchild it has no pid for. */
function runningWithArgv(argv: string[]): number[] {
  const wanted = `${argv.join("\0")}\0`;
  return readdirSync("/proc").filter((e) => /^\d+$/.test(e)).map(Number).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8") === wanted && isRunning(pid);
    } catch {
      return false;
    }
  });
}

/** A sleep (150 s; the was 12 s) that no other process runs, so that it can be found in /proc. */
const uniqueSleep = () => `150.${String(Math.floor(Math.random() * 1e6)).padStart(6, "0")}`;
/** A bound 10x under the sleep: a run that waited for it cannot pass, however loaded the machine. */
const NOT_THE_SLEEP_MS = 15_000;

async function timed<T>(p: Promise<T>): Promise<[T, number]> {
  const started = Date.now();
  const value = await p;
  return [value, Date.now() - started];
}

describe("runCommand", () => {
  it("a timeout ends the grandchild that holds stdout open, not just the shell (issue 9)", async () => {
    const seconds = uniqueSleep();
    const [r, ms] = await timed(runCommand(["sh", "-c", `sleep ${seconds}; echo done`], { cwd, timeoutMs: 1_000 }));
    assert.ok(ms < NOT_THE_SLEEP_MS, `took ${ms}ms`);
    assert.deepEqual([r.ok, r.status], [false, "timed out after 1s"]);
    assert.deepEqual(runningWithArgv(["sleep", seconds]), [], "the sleep outlived the timeout");
  });

  it("SIGKILLs the group after the grace when it ignores SIGTERM", async () => {
    const [r, ms] = await timed(runCommand(["sh", "-c", `trap '' TERM; sleep ${uniqueSleep()} & echo $!; wait`], { cwd, timeoutMs: 300 }));
    assert.ok(ms >= 300 + COMMAND_KILL_GRACE_MS - 50, `SIGKILL came before the grace was over (${ms}ms)`);
    assert.ok(ms < NOT_THE_SLEEP_MS, `took ${ms}ms`);
    assert.equal(r.status, "timed out after 300ms");
    const grandchild = Number(r.stdout.trim());
    assert.ok(grandchild > 1, `no pid in ${JSON.stringify(r.stdout)}`);
    assert.ok(!isRunning(grandchild), "the grandchild outlived SIGKILL to the group");
  });

  it("ends when the command exits, though what it left running still holds stdout; that ends too", async () => {
    const [r, ms] = await timed(runCommand(["sh", "-c", `sleep ${uniqueSleep()} & echo $!; echo started`], { cwd, timeoutMs: 10_000 }));
    assert.ok(ms < NOT_THE_SLEEP_MS, `waited ${ms}ms for the pipe's end`);
    assert.equal(r.ok, true);
    assert.equal(r.status, "exit 0, and what it left running was ended");
    const [pid, said] = r.stdout.trim().split("\n");
    assert.equal(said, "started", "output written before the exit is kept");
    assert.ok(!isRunning(Number(pid)), "the background process outlived the command");
  });

  it("reports the exit status, feeds stdin and keeps both streams", async () => {
    const r = await runCommand(["sh", "-c", "cat; echo oops >&2; exit 3"], { cwd, timeoutMs: 5_000, stdin: "hello" });
    assert.deepEqual({ ...r }, { ok: false, status: "exit 3", stdout: "hello", stderr: "oops\n", output: "exit 3: hello\noops" });
    assert.equal((await runCommand(["true"], { cwd, timeoutMs: 5_000 })).output, "exit 0");
    const signalled = await runCommand(["sh", "-c", "kill -SEGV $$"], { cwd, timeoutMs: 5_000 });
    assert.deepEqual([signalled.ok, signalled.status], [false, "killed by SIGSEGV"]);
  });

  it("keeps the tail of a long output, capped per stream", async () => {
    const script = "process.stdout.write('x'.repeat(300 * 1024) + 'END'); process.stderr.write('e'.repeat(100 * 1024) + 'FIN');";
    const r = await runCommand([process.execPath, "-e", script], { cwd, timeoutMs: 10_000 });
    assert.equal(r.ok, true);
    assert.equal(r.stdout.length, COMMAND_OUTPUT_MAX_BYTES + 1);
    assert.ok(r.stdout.startsWith("…x") && r.stdout.endsWith("xEND"));
    assert.ok(r.stderr.endsWith("eFIN") && r.stderr.length === COMMAND_OUTPUT_MAX_BYTES + 1);
    assert.equal(r.output, `exit 0: …${"e".repeat(COMMAND_OUTPUT_SHOWN_CHARS - 3)}FIN`);
  });

  it("a command that cannot start is a result, not an exception", async () => {
    const r = await runCommand(["/nonexistent/turquoise-hook"], { cwd, timeoutMs: 1_000 });
    assert.equal(r.ok, false);
    assert.match(r.status, /^cannot run \/nonexistent\/turquoise-hook: .*ENOENT/);
  });

  it("inherits the agent's environment, plus what the caller adds", async () => {
    process.env.TURQUOISE_TEST_AGENT_VAR = "from the agent";
    try {
      const r = await runCommand(["sh", "-c", 'echo "$TURQUOISE_TEST_AGENT_VAR / $EXTRA"'], { cwd, timeoutMs: 5_000, env: { EXTRA: "added" } });
      assert.equal(r.stdout, "from the agent / added\n");
    } finally {
      delete process.env.TURQUOISE_TEST_AGENT_VAR;
    }
  });

  it("endRunningCommands ends every running command's group at once", async () => {
    const seconds = uniqueSleep();
    const running = timed(runCommand(["sh", "-c", `sleep ${seconds}; echo done`], { cwd, timeoutMs: 60_000 }));
    // The shell starts its sleep when the machine gets to it: wait for it, not for a guessed 200 ms.
    for (let i = 0; runningWithArgv(["sleep", seconds]).length === 0; i++) {
      assert.ok(i < 600, "the command's sleep never started");
      await new Promise((r) => setTimeout(r, 50));
    }
    await endRunningCommands();
    const [r, ms] = await running;
    assert.ok(ms < 6_000, `took ${ms}ms: 10x under the command's 60 s timeout`);
    assert.deepEqual([r.ok, r.status], [false, "ended: the agent is stopping"]);
    assert.deepEqual(runningWithArgv(["sleep", seconds]), []);
  });
});
