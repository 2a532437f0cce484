// Process facts from /proc, where Linux has it, and the one check that stands before every signal
// the agent sends to a process it recorded: kill(pid, 0) alone is not enough, since it reports a
// zombie as alive, PID 1 in some containers never reaps the zombies it inherits, and pids are recycled.
import { readFileSync, readdirSync, statSync } from "node:fs";

export interface ProcStat {
  state: string;
  pgrp: number;
  startTicks: number;
}

/** undefined when the process does not exist or /proc is not there (not Linux). */
export function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // Field 2 is the command name in parentheses and may itself hold spaces and parentheses.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { state: fields[0]!, pgrp: Number(fields[2]), startTicks: Number(fields[19]) };
}

const hasProcFs = (() => {
  try {
    return statSync("/proc/self").isDirectory();
  } catch {
    return false;
  }
})();

/** What the agent recorded when it started a process, to know it again: a pid alone gets recycled. */
export interface ProcessIdentity {
  pid: number;
  /** Start time in clock ticks since boot (/proc/<pid>/stat, field 22), read when the agent started it. */
  startTicks: number | undefined;
}

/**
 * ours: the process (or, for a group, what is left of it) is the one recorded. gone: nothing of
 * it runs. refused: the record does not prove the process is ours; it is never signalled, and the
 * reason is for the caller to report.
 */
export type Identification = { verdict: "ours" } | { verdict: "gone" } | { verdict: "refused"; reason: string };

export type SignalOutcome = { verdict: "signalled" } | { verdict: "gone" } | { verdict: "refused"; reason: string };

/**
 * Whether a recorded process is still the one the agent started: pid > 1, the recorded start
 * time, and with group, the leader of its own process group (every process the agent starts
 * leads one). A group whose leader has exited stays ours while members remain, all started after
 * the leader: the kernel does not hand a group's number to a new process while the group exists.
 */
export function identify(target: ProcessIdentity, opts: { group?: boolean } = {}): Identification {
  const { pid, startTicks } = target;
  // kill(0 or -1) would signal the agent's own group or every process it may signal.
  if (!Number.isInteger(pid) || pid <= 1) return refused(`pid ${pid} cannot be a process the agent started`);
  if (startTicks === undefined || !Number.isInteger(startTicks)) {
    return refused(`no start time is recorded for pid ${pid}, so it cannot be told apart from another process`);
  }
  if (!hasProcFs) return refused(`there is no /proc to read the start time of pid ${pid} from`);
  const stat = readProcStat(pid);
  if (!stat) return opts.group && groupOutlivesLeader(pid, startTicks) ? { verdict: "ours" } : { verdict: "gone" };
  if (stat.startTicks !== startTicks) {
    return refused(`pid ${pid} started at tick ${stat.startTicks}, not at tick ${startTicks} as recorded: it is another process`);
  }
  if (opts.group && stat.pgrp !== pid) return refused(`pid ${pid} does not lead a process group of its own (its group is ${stat.pgrp})`);
  if (stat.state === "Z") return opts.group && groupHasLiveMembers(pid) ? { verdict: "ours" } : { verdict: "gone" };
  return { verdict: "ours" };
}

/**
 * The only way the agent signals a process it recorded: the process (group: its whole process
 * group) gets the signal only when identify() says it is ours. kill is there for tests.
 */
export function signalIfOurs(
  target: ProcessIdentity,
  signal: NodeJS.Signals,
  opts: { group?: boolean; kill?: (pid: number, signal: NodeJS.Signals) => void } = {},
): SignalOutcome {
  const who = identify(target, opts);
  if (who.verdict !== "ours") return who;
  try {
    (opts.kill ?? process.kill)(opts.group ? -target.pid : target.pid, signal);
    return { verdict: "signalled" };
  } catch (e) {
    // It went between the check and the signal.
    if ((e as NodeJS.ErrnoException).code === "ESRCH") return { verdict: "gone" };
    throw e;
  }
}

function refused(reason: string): Identification {
  return { verdict: "refused", reason };
}

function groupOutlivesLeader(pgid: number, leaderStartTicks: number): boolean {
  const members = liveGroupMembers(pgid);
  return members.length > 0 && members.every((m) => m.startTicks >= leaderStartTicks);
}

function liveGroupMembers(pgid: number): ProcStat[] {
  const members: ProcStat[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readProcStat(Number(entry));
    if (stat && stat.pgrp === pgid && stat.state !== "Z") members.push(stat);
  }
  return members;
}

export function isOurProcessAlive(pid: number, startTicks: number | undefined): boolean {
  if (pid <= 0) return false;
  if (!hasProcFs) return signalZero(pid);
  const stat = readProcStat(pid);
  // A zombie is dead; its parent just has not reaped it (PID 1 in some containers never does).
  if (!stat || stat.state === "Z") return false;
  return startTicks === undefined || stat.startTicks === startTicks;
}

export function groupHasLiveMembers(pgid: number): boolean {
  if (!hasProcFs) return signalZero(-pgid);
  return liveGroupMembers(pgid).length > 0;
}

export function signalZero(target: number): boolean {
  try {
    process.kill(target, 0);
    return true;
  } catch (e) {
    // EPERM: it exists, it just is not ours to signal.
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** True while pid is a live (non-zombie) process. */
export function pidAlive(pid: number): boolean {
  return isOurProcessAlive(pid, undefined);
}
