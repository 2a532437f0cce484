// The bake window: after a flip, the new release must prove itself in real traffic while the old
// slot still runs. It is judged from the proxy's own per-pool counters and the runtime's view of
// the new instances, so no metrics system is needed (Nomad's auto_revert, Argo's analysis).
import type { Proxy } from "../proxy/contract.js";
import { formatMs } from "../util/duration.js";

/** How often the window looks at the counters: a crash is seen within this, plus the exit's own delay. */
export const BAKE_POLL_MS = 50;
/** Below this many requests a failure rate says nothing; only exits count. */
export const BAKE_MIN_REQUESTS = 20;
/** Failed (502/503/504, cut) plus upstream 5xx, over requests: above this, the release fails. */
export const BAKE_MAX_FAILED_RATIO = 0.01;

export interface BakeFigures {
  /** Requests the new pool finished during the window. */
  requests: number;
  /** Of those, the ones that failed: a broken exchange or an upstream 5xx. */
  failed: number;
  /** Instances of the new release that exited during the window. */
  exited: string[];
  /** Time in the window when it was judged (the whole window when it passed). */
  elapsedMs: number;
}

export type BakeVerdict = { ok: true; figures: BakeFigures } | { ok: false; reason: string; figures: BakeFigures };

/** The rule, alone, so it can be tested by table: any exit fails; so does > 1% failed of ≥ 20 requests. */
export function judgeBake(f: BakeFigures): { ok: true } | { ok: false; reason: string } {
  if (f.exited.length) return { ok: false, reason: `${f.exited.length} instance(s) of the new release exited (${f.exited.join(", ")})` };
  if (f.requests >= BAKE_MIN_REQUESTS && f.failed / f.requests > BAKE_MAX_FAILED_RATIO) {
    return { ok: false, reason: `${f.failed} of ${f.requests} requests failed (${((100 * f.failed) / f.requests).toFixed(1)} % > ${BAKE_MAX_FAILED_RATIO * 100} %)` };
  }
  return { ok: true };
}

export function describeBake(f: BakeFigures): string {
  return `${f.requests} request(s), ${f.failed} failed, ${f.exited.length} exit(s) in ${formatMs(f.elapsedMs)}`;
}

export interface BakeOptions {
  proxy: Pick<Proxy, "stats">;
  poolId: string;
  /** The new release's instances, and whether each still runs. */
  instanceIds: string[];
  isAlive: (id: string) => boolean;
  windowMs: number;
  pollMs?: number;
  /** Subscribes to instance exits, so the window judges at once instead of at its next look. */
  onExit?: (listener: (id: string) => void) => () => void;
}

/** Watches the new pool for windowMs; returns at the first failing look, or when the window ends. */
export async function bake(o: BakeOptions): Promise<BakeVerdict> {
  const started = Date.now();
  const counters = async (): Promise<{ done: number; bad: number } | undefined> => {
    // A proxy without per-pool counters (nginx) leaves exits as the only judge.
    const p = (await o.proxy.stats().catch(() => undefined))?.pools.find((x) => x.poolId === o.poolId);
    return p ? { done: p.served + p.failed, bad: p.failed + (p.errors5xx ?? 0) } : undefined;
  };
  const base = (await counters()) ?? { done: 0, bad: 0 };
  let wake: (() => void) | undefined;
  const unsubscribe = o.onExit?.((id) => { if (o.instanceIds.includes(id)) wake?.(); });
  try {
    return await watch();
  } finally {
    unsubscribe?.();
  }

  async function watch(): Promise<BakeVerdict> {
    for (;;) {
      const now = await counters();
      const figures: BakeFigures = {
        requests: now ? now.done - base.done : 0,
        failed: now ? now.bad - base.bad : 0,
        exited: o.instanceIds.filter((id) => !o.isAlive(id)),
        elapsedMs: Date.now() - started,
      };
      const verdict = judgeBake(figures);
      if (!verdict.ok) return { ok: false, reason: verdict.reason, figures };
      if (figures.elapsedMs >= o.windowMs) return { ok: true, figures };
      await new Promise<void>((r) => {
        const timer = setTimeout(() => { wake = undefined; r(); }, Math.min(o.pollMs ?? BAKE_POLL_MS, Math.max(1, o.windowMs - figures.elapsedMs)));
        wake = () => { clearTimeout(timer); wake = undefined; r(); };
      });
    }
  }
}
