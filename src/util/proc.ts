// Process facts from /proc, where Linux has it. kill(pid, 0) alone is not enough: it reports a
// zombie as alive, and PID 1 in some containers never reaps the zombies it inherits.
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
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readProcStat(Number(entry));
    if (stat && stat.pgrp === pgid && stat.state !== "Z") return true;
  }
  return false;
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
