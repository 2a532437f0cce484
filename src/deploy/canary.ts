// Progressive delivery: one canary step judged from the proxy's own per-slot counters. For the
// step's window, the new slot's error rate and p99 are compared with the live slot's over the same
// window, so a load spike that slows both does not fail the new release (Argo Rollouts' analysis,
// without a Prometheus). Errors are judged as they come; p99 at the window's end.
import type { ProxyMetrics, RequestSeriesCounts } from "../proxy/contract.js";
import { DURATION_BUCKETS_S } from "../proxy/counters.js";
import type { CanarySpec } from "../spec/types.js";
import { formatMs } from "../util/duration.js";

/** How often a step looks at the counters: how late, at most, a failing step is seen. */
export const CANARY_POLL_MS = 200;
/**
 * Below this a p99 is not judged: the counters' buckets (5, 10, 25, 50 ms...) are too coarse to
 * tell a slower release from a busy machine.
 */
export const CANARY_P99_FLOOR_MS = 50;

/** What one slot did over a window. */
export interface SlotWindow {
  requests: number;
  /** 5xx answers (the proxy's own 502/503/504 for failed upstreams included), and requests cut with no answer. */
  errors: number;
  /** The 99th percentile, interpolated within its duration bucket; null without requests, Infinity beyond the last bucket. */
  p99Ms: number | null;
}

export interface CanaryFigures {
  percent: number;
  elapsedMs: number;
  live: SlotWindow;
  canary: SlotWindow;
  /** Instances of the new release that exited during the window. */
  exited: string[];
}

export type CanaryThresholds = Pick<CanarySpec, "maxErrorRate" | "maxP99Ratio" | "minRequests">;

/** The counts of one service's slot between two snapshots of the proxy's metrics. */
export function slotWindow(before: ProxyMetrics | undefined, now: ProxyMetrics, service: string, slot: string): SlotWindow {
  const pick = (m: ProxyMetrics | undefined): RequestSeriesCounts | undefined => m?.requests.find((r) => r.service === service && r.slot === slot);
  const a = pick(before);
  const b = pick(now);
  if (!b) return { requests: 0, errors: 0, p99Ms: null };
  const statuses = b.statuses.map((n, i) => n - (a?.statuses[i] ?? 0));
  const durations = b.durations.map((n, i) => n - (a?.durations[i] ?? 0));
  const requests = statuses.reduce((x, y) => x + y, 0);
  return { requests, errors: statuses[5]! + statuses[0]!, p99Ms: percentileMs(durations, 0.99) };
}

/**
 * The q-th quantile (ms), interpolated within its bucket as Prometheus' histogram_quantile does:
 * bucket bounds alone (5, 10, 25, 50 ms...) are 2 to 2.5 apart, so one request more in the next
 * bucket would look like a doubled latency. Infinity past the last bucket; null without requests.
 */
export function percentileMs(durations: readonly number[], q: number): number | null {
  const total = durations.reduce((x, y) => x + y, 0);
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < durations.length; i++) {
    const n = durations[i]!;
    if (n > 0 && seen + n >= rank) {
      if (i >= DURATION_BUCKETS_S.length) return Infinity;
      const lo = i === 0 ? 0 : DURATION_BUCKETS_S[i - 1]! * 1000;
      const hi = DURATION_BUCKETS_S[i]! * 1000;
      return lo + ((hi - lo) * (rank - seen)) / n;
    }
    seen += n;
  }
  return Infinity;
}

const rate = (w: SlotWindow): number => (w.requests === 0 ? 0 : w.errors / w.requests);
const pct = (r: number): string => `${(100 * r).toFixed(1)} %`;
const ms = (v: number | null): string => (v === null ? "n/a" : v === Infinity ? `> ${formatMs(DURATION_BUCKETS_S.at(-1)! * 1000)}` : formatMs(Math.round(v)));

/**
 * The rule, alone, so it can be tested by table. `final`: the window is over, so p99 and the
 * few-requests rule are judged too; before that only a clear error rate (or an exit) fails.
 */
export function judgeCanary(f: CanaryFigures, t: CanaryThresholds, final: boolean): { ok: true } | { ok: false; reason: string } {
  if (f.exited.length) return { ok: false, reason: `${f.exited.length} instance(s) of the new release exited (${f.exited.join(", ")})` };
  const { live, canary } = f;
  if (canary.requests >= t.minRequests) {
    if (rate(canary) - rate(live) > t.maxErrorRate) {
      return { ok: false, reason: `error rate ${pct(rate(canary))} (${canary.errors} of ${canary.requests}) against ${pct(rate(live))} on the live release (at most ${(100 * t.maxErrorRate).toFixed(1)} points more)` };
    }
  }
  if (!final) return { ok: true };
  if (canary.requests < t.minRequests) {
    if (canary.errors > 0) return { ok: false, reason: `${canary.errors} error(s) in only ${canary.requests} request(s), fewer than min_requests (${t.minRequests})` };
    return { ok: true };
  }
  if (live.requests >= t.minRequests && live.p99Ms !== null && canary.p99Ms !== null && canary.p99Ms > CANARY_P99_FLOOR_MS && canary.p99Ms > live.p99Ms * t.maxP99Ratio) {
    return { ok: false, reason: `p99 ${ms(canary.p99Ms)} against ${ms(live.p99Ms)} on the live release (at most ${t.maxP99Ratio}×)` };
  }
  return { ok: true };
}

export function describeCanary(f: CanaryFigures): string {
  const side = (w: SlotWindow) => `${w.requests} request(s), ${pct(rate(w))} errors, p99 ${ms(w.p99Ms)}`;
  return `${f.percent} % for ${formatMs(f.elapsedMs)}: new ${side(f.canary)}; live ${side(f.live)}`;
}

export interface CanaryStepOptions {
  metrics: () => Promise<ProxyMetrics>;
  service: string;
  liveSlot: string;
  canarySlot: string;
  percent: number;
  windowMs: number;
  thresholds: CanaryThresholds;
  instanceIds: string[];
  isAlive: (id: string) => boolean;
  pollMs?: number;
}

export type CanaryVerdict = { ok: true; figures: CanaryFigures } | { ok: false; reason: string; figures: CanaryFigures };

/** Watches one step's window from now; returns at the first failing look, or when the window ends. */
export async function watchCanaryStep(o: CanaryStepOptions): Promise<CanaryVerdict> {
  const started = Date.now();
  const base = await o.metrics();
  for (;;) {
    const now = await o.metrics();
    const elapsedMs = Date.now() - started;
    const figures: CanaryFigures = {
      percent: o.percent, elapsedMs,
      live: slotWindow(base, now, o.service, o.liveSlot),
      canary: slotWindow(base, now, o.service, o.canarySlot),
      exited: o.instanceIds.filter((id) => !o.isAlive(id)),
    };
    const final = elapsedMs >= o.windowMs;
    const verdict = judgeCanary(figures, o.thresholds, final);
    if (!verdict.ok) return { ok: false, reason: verdict.reason, figures };
    if (final) return { ok: true, figures };
    await new Promise((r) => setTimeout(r, Math.min(o.pollMs ?? CANARY_POLL_MS, Math.max(1, o.windowMs - elapsedMs))));
  }
}
