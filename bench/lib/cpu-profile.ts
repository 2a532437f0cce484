// A CPU profile of a running Node process over its inspector (the Chrome DevTools protocol), for a
// chosen window only, and where its time went by function. bench:scale profiles the agent's
// steady state this way: --cpu-prof would cover its whole life, start-up and bring-up included.
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { WebSocket } from "ws";

export interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }>;
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** The inspector's WebSocket URL a process printed at start ("Debugger listening on ws://..."), from its log. */
export function inspectorUrlFromLog(logFile: string): string | undefined {
  try {
    const all = [...readFileSync(logFile, "utf8").matchAll(/Debugger listening on (ws:\/\/\S+)/g)];
    return all[all.length - 1]?.[1];
  } catch {
    return undefined;
  }
}

/** Samples the process behind `url` every samplingUs for durationMs and returns the profile. */
export async function profileFor(url: string, durationMs: number, samplingUs = 1_000): Promise<CpuProfile> {
  const ws = new WebSocket(url);
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
  });
  let nextId = 1;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  ws.on("message", (data) => {
    const msg = JSON.parse(String(data)) as { id?: number; result?: unknown; error?: { message: string } };
    const p = msg.id === undefined ? undefined : pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id!);
    if (msg.error) p.reject(new Error(msg.error.message));
    else p.resolve(msg.result);
  });
  const call = (method: string, params: Record<string, unknown> = {}): Promise<unknown> => {
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ id, method, params }));
    });
  };
  try {
    await call("Profiler.enable");
    await call("Profiler.setSamplingInterval", { interval: samplingUs });
    await call("Profiler.start");
    await sleep(durationMs);
    const { profile } = (await call("Profiler.stop")) as { profile: CpuProfile };
    await call("Profiler.disable");
    return profile;
  } finally {
    ws.close();
  }
}

export interface ProfileLine {
  /** "name url:line", or V8's own "(garbage collector)", "(program)", "(idle)". */
  where: string;
  selfMs: number;
  /** Time with this function on the stack (counted once per sample, recursion or not). */
  totalMs: number;
}

/**
 * Self and total time by function, busiest first by self time, with the profile's busy time
 * (everything but "(idle)") to read them against.
 */
export function summarizeProfile(profile: CpuProfile): { busyMs: number; idleMs: number; lines: ProfileLine[] } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const keyOf = (id: number): string => {
    const f = byId.get(id)!.callFrame;
    const file = f.url.replace(/^file:\/\/.*?\/(dist|node_modules)\//, "$1/").replace(/^node:/, "node:");
    return f.url ? `${f.functionName || "(anonymous)"} ${file}:${f.lineNumber + 1}` : f.functionName;
  };
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let idleMs = 0;
  let busyMs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    // timeDeltas[i] is the time before sample i: attribute the gap to the following sample, as DevTools does.
    const ms = (profile.timeDeltas[i + 1] ?? 0) / 1000;
    const id = profile.samples[i]!;
    const key = keyOf(id);
    if (key === "(idle)") {
      idleMs += ms;
      continue;
    }
    busyMs += ms;
    self.set(key, (self.get(key) ?? 0) + ms);
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const k = keyOf(at);
      if (seen.has(k)) continue;
      seen.add(k);
      total.set(k, (total.get(k) ?? 0) + ms);
    }
  }
  const lines = [...total.keys()].map((where) => ({ where, selfMs: self.get(where) ?? 0, totalMs: total.get(where)! }));
  lines.sort((a, b) => b.selfMs - a.selfMs);
  return { busyMs, idleMs, lines };
}
