// Runs an argv (never a shell string) in a process group of its own, with a timeout that ends the
// whole group, and keeps the tail of its output. Hooks, smoke checks and watch handlers use it.
import { spawn, type ChildProcess } from "node:child_process";
import { formatDuration } from "./duration.js";
import { setTimeout as sleep } from "node:timers/promises";
import { identify, readProcStat, signalIfOurs, type ProcessIdentity } from "./proc.js";

/** Between SIGTERM to a command's group and SIGKILL. */
export const COMMAND_KILL_GRACE_MS = 2_000;
/** Output kept per stream (stdout, stderr): the last bytes, where errors usually are. */
export const COMMAND_OUTPUT_MAX_BYTES = 64 * 1024;
/** Of that, what CommandResult.output shows: it goes into events, history and error messages. */
export const COMMAND_OUTPUT_SHOWN_CHARS = 2_000;
/**
 * Once the command has exited, how long its output may take to arrive. A pipe still open after
 * that is held by something the command left running, which must not hold the agent up.
 */
const OUTPUT_DRAIN_MS = 200;
/** SIGKILL cannot be ignored; a process still there after this is stuck in the kernel. */
const SIGKILL_WAIT_MS = 1_000;
const GROUP_POLL_MS = 25;

export interface CommandResult {
  ok: boolean;
  /** "exit 0", "exit 3", "killed by SIGSEGV", "timed out after 1000ms", or why it could not run. */
  status: string;
  /** The tail of each stream, up to COMMAND_OUTPUT_MAX_BYTES. */
  stdout: string;
  stderr: string;
  /** The status, then the tail of stdout and stderr: "exit 1: <output>". What operators are shown. */
  output: string;
}

export interface CommandOptions {
  cwd: string;
  /** Added to the agent's own environment, which commands inherit (see docs/spec.md). */
  env?: Record<string, string>;
  timeoutMs: number;
  stdin?: string;
}

/** Commands running now, so that a stopping agent can end them: see endRunningCommands(). */
const running = new Set<(why: string) => Promise<void>>();

/**
 * Runs argv and resolves when it has exited, its process group is empty and the pipes are closed.
 * At the timeout the whole group gets SIGTERM, then SIGKILL after COMMAND_KILL_GRACE_MS. What
 * the command leaves running in its group when it exits is ended the same way: nothing of a
 * command outlives it, and nothing it leaves holding its stdout keeps the caller waiting.
 */
export function runCommand(argv: string[], opts: CommandOptions): Promise<CommandResult> {
  return new Promise((resolve) => {
    const stdout = new OutputTail(COMMAND_OUTPUT_MAX_BYTES);
    const stderr = new OutputTail(COMMAND_OUTPUT_MAX_BYTES);
    const finish = (ok: boolean, status: string) => {
      const out = stdout.text();
      const err = stderr.text();
      resolve({ ok, status, stdout: out, stderr: err, output: describe(status, out, err) });
    };

    let child: ChildProcess;
    try {
      // detached: a process group (and session) of its own, so that the group can be ended as one.
      child = spawn(argv[0]!, argv.slice(1), { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ["pipe", "pipe", "pipe"], detached: true });
    } catch (e) {
      finish(false, `cannot run ${argv[0]}: ${(e as Error).message}`);
      return;
    }
    if (child.pid === undefined) {
      child.on("error", (e) => finish(false, `cannot run ${argv[0]}: ${e.message}`));
      return;
    }
    // Read at once: the child cannot have been reaped yet, so this is its start time.
    const identity: ProcessIdentity = { pid: child.pid, startTicks: readProcStat(child.pid)?.startTicks };
    child.stdout!.on("data", (c: Buffer) => stdout.push(c));
    child.stderr!.on("data", (c: Buffer) => stderr.push(c));
    child.stdin!.on("error", () => undefined);
    child.stdin!.end(opts.stdin ?? "");
    child.on("error", () => undefined);
    const pipesClosed = new Promise<void>((r) => child.once("close", () => r()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once("exit", (code, signal) => r({ code, signal })));

    /** Why the group was ended before the command exited: a timeout, or the agent stopping. */
    let endedBecause: string | undefined;
    let hasExited = false;
    let leftovers = false;
    let ending: Promise<void> | undefined;
    let stuck!: () => void;
    const stuckAfterKill = new Promise<"stuck">((r) => (stuck = () => r("stuck")));
    const endGroup = (why: string): Promise<void> => {
      if (!hasExited) endedBecause ??= why;
      return (ending ??= (async () => {
        if (!signalGroup(identity, "SIGTERM")) return;
        leftovers = hasExited;
        if (await groupGone(identity, COMMAND_KILL_GRACE_MS)) return;
        signalGroup(identity, "SIGKILL");
        // Only a process stuck in the kernel outlives SIGKILL; the caller is not kept waiting for it.
        if (!(await groupGone(identity, SIGKILL_WAIT_MS))) stuck();
      })());
    };
    running.add(endGroup);
    const timer = setTimeout(() => void endGroup(`timed out after ${formatDuration(opts.timeoutMs)}`), opts.timeoutMs);

    void (async () => {
      const exit = await Promise.race([exited, stuckAfterKill]);
      hasExited = true;
      clearTimeout(timer);
      if (exit !== "stuck") {
        await Promise.race([pipesClosed, sleep(OUTPUT_DRAIN_MS, undefined, { ref: false })]);
        // What it left in its group goes with it (and so do the pipes those processes hold).
        await endGroup("exited");
      }
      child.stdout!.destroy();
      child.stderr!.destroy();
      running.delete(endGroup);
      if (exit === "stuck") return finish(false, `${endedBecause}; pid ${identity.pid} is still there after SIGKILL`);
      if (endedBecause !== undefined) return finish(false, endedBecause);
      const status = exit.signal ? `killed by ${exit.signal}` : `exit ${exit.code}`;
      finish(exit.code === 0, leftovers ? `${status}, and what it left running was ended` : status);
    })();
  });
}

/** Ends every running command's process group, as a timeout would: for an agent that is stopping. */
export async function endRunningCommands(why = "ended: the agent is stopping"): Promise<void> {
  await Promise.all([...running].map((end) => end(why)));
}

/** False when nothing of the group is left to signal. */
function signalGroup(identity: ProcessIdentity, signal: NodeJS.Signals): boolean {
  return signalIfOurs(identity, signal, { group: true }).verdict === "signalled";
}

async function groupGone(identity: ProcessIdentity, withinMs: number): Promise<boolean> {
  for (const deadline = Date.now() + withinMs; ; ) {
    if (identify(identity, { group: true }).verdict !== "ours") return true;
    if (Date.now() >= deadline) return false;
    await sleep(GROUP_POLL_MS);
  }
}

function describe(status: string, stdout: string, stderr: string): string {
  const text = [stdout.trim(), stderr.trim()].filter(Boolean).join("\n");
  if (!text) return status;
  return `${status}: ${text.length > COMMAND_OUTPUT_SHOWN_CHARS ? `…${text.slice(-COMMAND_OUTPUT_SHOWN_CHARS)}` : text}`;
}

/** The last maxBytes of a stream. */
class OutputTail {
  private chunks: Buffer[] = [];
  private size = 0;
  private dropped = false;

  constructor(private readonly maxBytes: number) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size > this.maxBytes) {
      const first = this.chunks[0]!;
      const excess = this.size - this.maxBytes;
      this.dropped = true;
      if (first.length <= excess) {
        this.chunks.shift();
        this.size -= first.length;
      } else {
        this.chunks[0] = first.subarray(excess);
        this.size -= excess;
      }
    }
  }

  text(): string {
    const text = Buffer.concat(this.chunks).toString("utf8");
    return this.dropped ? `…${text}` : text;
  }
}
