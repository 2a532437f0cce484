// What a process costs, read from Linux's /proc: CPU time (utime + stime, every thread), resident
// and proportional memory. bench:scale samples the agent, the proxy and the instances with it.
import { spawnSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { readHostTicks } from "../../src/proxy/spill.js";

/** Clock ticks per second of /proc/<pid>/stat's times (USER_HZ; 100 on every usual kernel). */
export function clockTicksPerSecond(): number {
  const r = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
  const hz = Number(r.stdout?.trim());
  return Number.isInteger(hz) && hz > 0 ? hz : 100;
}

/** utime + stime of the whole process (all its threads), in clock ticks; undefined once it is gone. */
export function cpuTicks(pid: number): number | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // Field 2 (the command) may hold spaces and parentheses: count from the last ")". Fields 14, 15.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/** VmRSS in KiB (shared file pages, such as the node binary, included); undefined once it is gone. */
export function rssKiB(pid: number): number | undefined {
  return statusField(pid, "VmRSS");
}

/**
 * Proportional set size in KiB: private pages plus this process's share of the pages it shares
 * with others. Summed over many processes of the same binary it is what they cost together,
 * where summed RSS would count the binary's pages once per process.
 */
export function pssKiB(pid: number): number | undefined {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function statusField(pid: number, name: string): number | undefined {
  try {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Pids of the processes whose command line contains `needle` (a temp path only this run uses). */
export function pidsWithArg(needle: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0").some((a) => a.includes(needle))) out.push(Number(name));
    } catch {
      // Gone between readdir and read.
    }
  }
  return out;
}

/**
 * CPU use of a set of processes between two moments, in % of one core, from their tick counts.
 * A process that was not there at `before` or is gone at `after` is left out.
 */
export function cpuPercent(before: Map<number, number>, after: Map<number, number>, elapsedMs: number, hz: number): number {
  let ticks = 0;
  for (const [pid, t] of after) {
    const t0 = before.get(pid);
    if (t0 !== undefined) ticks += t - t0;
  }
  return elapsedMs > 0 ? (ticks / hz / (elapsedMs / 1000)) * 100 : NaN;
}

/** The tick counts of these pids now (the ones still there). */
export function ticksOf(pids: readonly number[]): Map<number, number> {
  const m = new Map<number, number>();
  for (const pid of pids) {
    const t = cpuTicks(pid);
    if (t !== undefined) m.set(pid, t);
  }
  return m;
}

/** The pids whose parent is `pid` (an nginx master's workers, a proxy supervisor's). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      // Field 4, after the command in parentheses.
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === pid) out.push(Number(name));
    } catch {
      // Gone between readdir and read.
    }
  }
  return out;
}

/** The host's clock ticks over all its cores (/proc/stat): stolen by the hypervisor, and all of them. */
export function hostStealTicks(): { steal: number; total: number; cores: number } {
  const host = readHostTicks();
  if (!host) throw new Error("cannot read /proc/stat");
  return host;
}

/** Cores' worth of time the hypervisor gave to others between two readings: on a shared VM, what a round lost. */
export function stolenCores(before: ReturnType<typeof hostStealTicks>, after: ReturnType<typeof hostStealTicks>): number {
  return after.total > before.total ? ((after.steal - before.steal) / (after.total - before.total)) * after.cores : 0;
}
