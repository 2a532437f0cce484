// Process facts from /proc, where Linux has it, and the checks that stand before every signal the
// agent sends to a process: one for a process it recorded (pid and start time), one for a process it
// found by the marks in its environment. kill(pid, 0) alone is not enough, since it reports a zombie
// as alive, PID 1 in some containers never reaps the zombies it inherits, and pids are recycled.
import { endianness } from "node:os";
import { readFileSync, readdirSync, readlinkSync, statSync } from "node:fs";

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

/** A live process found by the variables of its environment (processesMarked). */
export interface MarkedProcess {
  pid: number;
  /** Read when it was found: with the marks, what every later signal checks again. */
  startTicks: number;
  pgrp: number;
  /** Its environment as it was started with it (/proc/<pid>/environ). */
  env: Record<string, string>;
}

/**
 * Every live process, but the caller itself and zombies, whose environment holds each of marks
 * (name → value). A process of another user is skipped unless we may read its environment (root).
 * One read of /proc/<pid>/environ per process: callers scan at recovery, at `down` and for a failed
 * deploy's diagnosis, not on every stop.
 */
export function processesMarked(marks: Record<string, string>): MarkedProcess[] {
  if (!hasProcFs) return [];
  const entries = Object.entries(marks);
  if (entries.length === 0) throw new Error("processesMarked needs at least one mark: it would match every process");
  // environ is NUL-separated with no leading NUL: one is prepended so that each mark matches a whole variable.
  const needles = entries.map(([name, value]) => Buffer.from(`\0${name}=${value}\0`));
  const found: MarkedProcess[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    let raw: Buffer;
    try {
      raw = readFileSync(`/proc/${pid}/environ`);
    } catch {
      continue; // gone, or not ours to read
    }
    const environ = Buffer.concat([Buffer.from([0]), raw, Buffer.from([0])]);
    if (!needles.every((n) => environ.includes(n))) continue;
    const stat = readProcStat(pid);
    if (!stat || stat.state === "Z") continue;
    found.push({ pid, startTicks: stat.startTicks, pgrp: stat.pgrp, env: parseEnviron(raw) });
  }
  return found;
}

function parseEnviron(raw: Buffer): Record<string, string> {
  const env: Record<string, string> = {};
  for (const item of raw.toString("utf8").split("\0")) {
    const eq = item.indexOf("=");
    if (eq > 0) env[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return env;
}

/** What was found of a marked process, to know it again before each signal. */
export interface MarkedIdentity {
  pid: number;
  startTicks: number;
  marks: Record<string, string>;
}

/**
 * Whether a process found by its marks is still that process: alive, not a zombie, the start
 * time read when it was found (a recycled pid has another), and the marks still in its environment.
 *
 * Why a process found this way is the agent's to stop, with no record of it: only an agent writes
 * its id into an environment (runtime/identity.ts), and it is inherited only downwards, so a process
 * that carries it was started by an agent of this state dir or descends from one. Nothing else can
 * be mistaken for it: the marks are read from the process itself, and the fresh start time pins the
 * pid to that very process between the read and the signal. A process that forged the marks must
 * have been started by a user who may signal it anyway (the kernel checks the real uid): stopping
 * it gives no one a power they did not have.
 */
export function identifyMarked(target: MarkedIdentity): Identification {
  const { pid, startTicks } = target;
  if (!Number.isInteger(pid) || pid <= 1) return refused(`pid ${pid} cannot be a process the agent started`);
  if (!hasProcFs) return refused(`there is no /proc to read the environment of pid ${pid} from`);
  const stat = readProcStat(pid);
  if (!stat || stat.state === "Z") return { verdict: "gone" };
  if (stat.startTicks !== startTicks) return { verdict: "gone" }; // the process found has exited; its pid went to another
  let raw: Buffer;
  try {
    raw = readFileSync(`/proc/${pid}/environ`);
  } catch {
    return { verdict: "gone" };
  }
  const env = parseEnviron(raw);
  for (const [name, value] of Object.entries(target.marks)) {
    if (env[name] !== value) return refused(`pid ${pid} no longer carries ${name}=${value}`);
  }
  return { verdict: "ours" };
}

/**
 * Signals a process found by its marks, only when identifyMarked() says it is still ours. A process
 * that leads its own group (an instance as the agent started it) gets the signal for its whole
 * group, as stop() does for recorded ones; any other (a child left behind by a dead leader, or one
 * that moved to a group of its own) gets it alone. kill is there for tests.
 */
export function signalIfMarked(
  target: MarkedIdentity,
  signal: NodeJS.Signals,
  opts: { kill?: (pid: number, signal: NodeJS.Signals) => void } = {},
): SignalOutcome {
  const who = identifyMarked(target);
  if (who.verdict !== "ours") return who;
  const leads = readProcStat(target.pid)?.pgrp === target.pid;
  try {
    (opts.kill ?? process.kill)(leads ? -target.pid : target.pid, signal);
    return { verdict: "signalled" };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ESRCH") return { verdict: "gone" };
    throw e;
  }
}

/** Clock ticks per second in /proc: USER_HZ, 100 on every Linux the kernel ABI promises it to. */
const USER_HZ = 100;

/** Epoch ms at which a process started, from its start time in ticks since boot; undefined without /proc. */
export function startedAtMs(startTicks: number): number | undefined {
  let text: string;
  try {
    text = readFileSync("/proc/stat", "utf8");
  } catch {
    return undefined;
  }
  const btime = /^btime (\d+)$/m.exec(text);
  return btime ? Number(btime[1]) * 1000 + Math.round((startTicks * 1000) / USER_HZ) : undefined;
}

/**
 * The TCP addresses a process listens on: the listening sockets of its network namespace
 * (/proc/<pid>/net/tcp and tcp6) that are among its own open files (/proc/<pid>/fd). Empty when
 * it listens on nothing, or when it cannot be read (gone, another user's).
 */
export function listeningSockets(pid: number): Array<{ host: string; port: number }> {
  const inodes = new Set<string>();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      let link: string;
      try {
        link = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue; // closed in between
      }
      const m = /^socket:\[(\d+)\]$/.exec(link);
      if (m) inodes.add(m[1]!);
    }
  } catch {
    return [];
  }
  const out: Array<{ host: string; port: number }> = [];
  for (const table of ["tcp", "tcp6"]) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      // sl, local_address, rem_address, st (0A: LISTEN), tx:rx, tr:when, retrnsmt, uid, timeout, inode
      if (f.length < 10 || f[3] !== "0A" || !inodes.has(f[9]!)) continue;
      const [addr, port] = f[1]!.split(":");
      out.push({ host: procAddress(addr!), port: parseInt(port!, 16) });
    }
  }
  return out;
}

/** An address as /proc/net/tcp{,6} writes it: hex of 32-bit words, each in the host's byte order. */
function procAddress(hex: string): string {
  const bytes: number[] = [];
  for (let w = 0; w < hex.length; w += 8) {
    const word = hex.slice(w, w + 8).match(/../g)!.map((b) => parseInt(b, 16));
    bytes.push(...(endianness() === "LE" ? word.reverse() : word));
  }
  if (bytes.length === 4) return bytes.join(".");
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  // A v4-mapped address reads as the IPv4 address it maps.
  if (groups.slice(0, 5).every((g) => g === "0") && groups[5] === "ffff") return bytes.slice(12).join(".");
  return compressIpv6(groups);
}

function compressIpv6(groups: string[]): string {
  // The longest run of zero groups (two or more) becomes "::", as inet_ntop writes it.
  let best = { at: -1, len: 0 };
  for (let i = 0; i < 8; ) {
    if (groups[i] !== "0") { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > best.len) best = { at: i, len: j - i };
    i = j;
  }
  if (best.len < 2) return groups.join(":");
  return `${groups.slice(0, best.at).join(":")}::${groups.slice(best.at + best.len).join(":")}`;
}
