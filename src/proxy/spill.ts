// How many of the proxy's workers accept new connections: as many as the cores can run. A worker
// beyond the first starts accepting only while the ones before it are saturated and a core sits
// idle for it; one stops accepting (it keeps serving the connections it has) when the accepting
// workers wait for the cores more than they run on them, or when fewer would do. Pure: the
// supervisor samples the kernel's figures (samplers below) and applies the verdict.

import { readFileSync } from "node:fs";

/** One accepting worker over a tick, as fractions of the tick's wall time. */
export interface WorkerLoad {
  /** On a core. */
  run: number;
  /** Runnable, waiting for a core. */
  wait: number;
}

export interface SpillSample {
  /** The accepting workers' loads. */
  workers: WorkerLoad[];
  /** Cores nobody used over the tick (the host's idle time, in cores). */
  idleCores: number;
}

export interface SpillState {
  /** Workers accepting now, ≥ 1. */
  accepting: number;
  /** At most this many accept: the serving workers. */
  max: number;
  /** Ticks in a row whose sample asked to add one / to drop one. */
  addStreak: number;
  dropStreak: number;
  /** Ticks to let pass after a change before judging again: the new split needs its connections. */
  settle: number;
  /** The settle after the next drop for contention: doubled by each, so that add and drop do not take turns for ever. */
  contendedSettle: number;
}

/** A worker wanting a core this share of the time has more work than it can do. */
export const SATURATED = 0.9;
/** Waiting for a core longer than this share of its time on one: the cores, not the worker, are the limit. */
export const CONTENDED = 0.5;
/** Below this share of waiting to running a saturated worker has its core to itself. */
export const UNCONTENDED = 0.25;
/** A core at least this idle is one a worker more could use. */
export const IDLE_CORE = 0.5;
/** The accepting workers could do with one fewer when the rest would be busy at most this share. */
export const FEWER_WOULD_DO = 0.6;
export const ADD_AFTER_TICKS = 2;
export const DROP_AFTER_TICKS = 3;
export const SETTLE_TICKS = 3;
/** After the cores proved too few, longer: a worker more would be back on them soon after. */
export const CONTENDED_SETTLE_TICKS = 10;
/** The longest settle after drops for contention one after the other (5 minutes of 1 s ticks). */
export const MAX_CONTENDED_SETTLE_TICKS = 300;

export type SpillReason = "saturated, with an idle core" | "waiting for the cores" | "fewer would do";

export interface SpillVerdict {
  state: SpillState;
  change?: { to: number; reason: SpillReason };
}

export function initialSpill(max: number): SpillState {
  return { accepting: 1, max, addStreak: 0, dropStreak: 0, settle: 0, contendedSettle: CONTENDED_SETTLE_TICKS };
}

/** The next state from one tick's sample. */
export function spillStep(state: SpillState, sample: SpillSample): SpillVerdict {
  const s = { ...state, accepting: Math.min(Math.max(state.accepting, 1), Math.max(state.max, 1)) };
  if (s.settle > 0 || sample.workers.length === 0) return { state: { ...s, settle: Math.max(0, s.settle - 1), addStreak: 0, dropStreak: 0 } };
  const run = sum(sample.workers.map((w) => w.run));
  const wait = sum(sample.workers.map((w) => w.wait));
  const n = sample.workers.length;
  const allSaturated = sample.workers.every((w) => w.run + w.wait >= SATURATED);
  const add = s.accepting < s.max && allSaturated && wait <= UNCONTENDED * run && sample.idleCores >= IDLE_CORE;
  const contended = n > 1 && wait > CONTENDED * run;
  const fewerWouldDo = n > 1 && run + wait <= (n - 1) * FEWER_WOULD_DO;
  const drop = s.accepting > 1 && (contended || fewerWouldDo);
  s.addStreak = add ? s.addStreak + 1 : 0;
  s.dropStreak = drop ? s.dropStreak + 1 : 0;
  if (s.addStreak >= ADD_AFTER_TICKS) {
    return { state: { ...s, accepting: s.accepting + 1, addStreak: 0, dropStreak: 0, settle: SETTLE_TICKS }, change: { to: s.accepting + 1, reason: "saturated, with an idle core" } };
  }
  if (s.dropStreak >= DROP_AFTER_TICKS) {
    const reason: SpillReason = contended ? "waiting for the cores" : "fewer would do";
    // Load that went away is no sign that the cores are too few: the next contention starts afresh.
    const settle = contended ? s.contendedSettle : SETTLE_TICKS;
    const contendedSettle = contended ? Math.min(s.contendedSettle * 2, MAX_CONTENDED_SETTLE_TICKS) : CONTENDED_SETTLE_TICKS;
    return { state: { ...s, accepting: s.accepting - 1, addStreak: 0, dropStreak: 0, settle, contendedSettle }, change: { to: s.accepting - 1, reason } };
  }
  return { state: s };
}

function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

/** A process's time on a core and waiting for one, ns (/proc/<pid>/schedstat); undefined when the kernel does not say. */
export function readSchedstat(pid: number): { runNs: number; waitNs: number } | undefined {
  try {
    const [run, wait] = readFileSync(`/proc/${pid}/schedstat`, "utf8").split(" ").map(Number);
    return run !== undefined && wait !== undefined && Number.isFinite(run) && Number.isFinite(wait) ? { runNs: run, waitNs: wait } : undefined;
  } catch {
    return undefined;
  }
}

/** The host's idle, stolen and total clock ticks over all its cores (/proc/stat), and how many cores. */
export function readHostTicks(): { idle: number; steal: number; total: number; cores: number } | undefined {
  try {
    const lines = readFileSync("/proc/stat", "utf8").split("\n");
    const fields = lines[0]!.trim().split(/\s+/).slice(1).map(Number);
    const cores = lines.filter((l) => /^cpu\d+ /.test(l)).length;
    // idle and iowait: a core waiting on the disk would run a worker.
    return { idle: fields[3]! + fields[4]!, steal: fields[7] ?? 0, total: sum(fields.slice(0, 8)), cores };
  } catch {
    return undefined;
  }
}
