// The live progress bar of a running backfill, redrawn in place on a terminal:
//   0002_split_author up  [######..............]  31 %  312,000 / ~1,000,000 rows  12,000 rows/s  57s left
import type { BackfillProgress } from "../migrate/contract.js";
import { stepLabel } from "../deploy/migration-progress.js";

const BAR_WIDTH = 20;

export function renderBar(p: Omit<BackfillProgress, "type">): string {
  const ratio = p.rowsEstimated > 0 ? Math.min(1, p.rowsDone / p.rowsEstimated) : p.done ? 1 : 0;
  const filled = Math.round(ratio * BAR_WIDTH);
  const n = (x: number) => x.toLocaleString("en-US");
  const left = p.done ? "done" : p.etaMs === null ? "estimating…" : `${Math.ceil(p.etaMs / 1000)}s left`;
  return `${stepLabel(p)} ${p.direction}  [${"#".repeat(filled)}${".".repeat(BAR_WIDTH - filled)}]  ${String(Math.floor(ratio * 100)).padStart(3)} %  ${n(p.rowsDone)} / ~${n(p.rowsEstimated)} rows  ${n(p.rowsPerSec)} rows/s  ${left}`;
}

/** Draws progress lines in place on a terminal; off a terminal it prints nothing (the run's own log says when a backfill is done). */
export class ProgressLine {
  private drawn = false;
  constructor(private readonly isTTY: boolean, private readonly write: (s: string) => void = (s) => process.stdout.write(s)) {}

  update(p: Omit<BackfillProgress, "type">): void {
    if (!this.isTTY) return;
    this.write(`\r\x1b[K  ${renderBar(p)}`);
    this.drawn = true;
  }

  /** Clears the bar before a normal line is printed. */
  clear(): void {
    if (!this.drawn) return;
    this.write("\r\x1b[K");
    this.drawn = false;
  }
}
