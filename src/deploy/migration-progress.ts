// A running backfill's progress, fanned out: to a live client (a progress bar, a few times a second),
// to the event log the dashboard reads (every few seconds: a 100-million-row backfill must not
// write a hundred thousand events), and to metrics (every batch; a gauge set is cheap).
import type { BackfillProgress } from "../migrate/contract.js";
import type { RecordEvent as EventLog } from "./records.js";

/** How often a live client hears about a backfill. */
export const LIVE_PROGRESS_INTERVAL_MS = 250;
/** How often a backfill's progress is written to the event log. */
export const EVENT_PROGRESS_INTERVAL_MS = 5_000;

/**
 * The hook for metrics: called with every progress report of every backfill. Whatever is set here
 * (the agent's metrics registry, e.g. gauges turquoise_backfill_rows_done / _rows_estimated /
 * _rows_per_second labelled by service and step) must not throw or block: it runs between batches.
 */
export type MigrationMetricsHook = (service: string, p: BackfillProgress) => void;

/** "0002_split_author up: 312,000 / 1,000,000 rows (31 %), 12,000 rows/s, 57s left" */
export function describeProgress(p: BackfillProgress): string {
  const pct = p.rowsEstimated > 0 ? Math.floor((p.rowsDone / p.rowsEstimated) * 100) : 100;
  const left = p.done ? "done" : p.etaMs === null ? "estimating" : `${formatSeconds(p.etaMs)} left`;
  const resumed = p.resumedFrom > 0 ? `, resumed at ${p.resumedFrom.toLocaleString("en-US")}` : "";
  return `${stepLabel(p)} ${p.direction}: backfill of ${p.table} ${p.rowsDone.toLocaleString("en-US")} / ~${p.rowsEstimated.toLocaleString("en-US")} rows (${pct} %), ${p.rowsPerSec.toLocaleString("en-US")} rows/s, ${left}${resumed}`;
}

export function stepLabel(p: { version: number; name: string }): string {
  return `${String(p.version).padStart(4, "0")}_${p.name}`;
}

function formatSeconds(ms: number): string {
  const s = Math.ceil(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** Calls fn at most once an interval, but always for the first report of a step and its last. */
function throttled(intervalMs: number, fn: (p: BackfillProgress) => void): (p: BackfillProgress) => void {
  let last = 0;
  let step = "";
  return (p) => {
    const key = `${p.version}:${p.direction}`;
    const now = performance.now();
    if (key !== step || p.done || now - last >= intervalMs) {
      step = key;
      last = now;
      fn(p);
    }
  };
}

/** One listener for a migration run that reports to each place at its own pace. */
export function progressRelay(service: string, to: { live?: (p: BackfillProgress) => void; event?: EventLog; metrics?: MigrationMetricsHook }): (p: BackfillProgress) => void {
  const live = to.live ? throttled(LIVE_PROGRESS_INTERVAL_MS, to.live) : undefined;
  const event = to.event ? throttled(EVENT_PROGRESS_INTERVAL_MS, (p) => to.event!(service, "migrate.progress", describeProgress(p), { ...p })) : undefined;
  return (p) => {
    live?.(p);
    event?.(p);
    try {
      to.metrics?.(service, p);
    } catch {
      // A metrics bug must not stop a migration half-way.
    }
  };
}
