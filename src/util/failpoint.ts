// Real crashes at chosen points, for the crash-recovery tests: with TURQUOISE_CRASH_AFTER=<name>
// the agent SIGKILLs itself the first time it passes the failpoint of that name.

/** The variable that arms a failpoint; unset in every real run. */
export const CRASH_AFTER_ENV = "TURQUOISE_CRASH_AFTER";

/**
 * SIGKILL, not an exception or exit(): no finally block, no exit handler and no flushed buffer may
 * tidy up, just as when the machine or the OOM killer ends the agent.
 */
export function crashPoint(name: string): void {
  if (process.env[CRASH_AFTER_ENV] === name) process.kill(process.pid, "SIGKILL");
}
