// Small statistics for benchmark rounds.

/** The middle value (mean of the two middle ones for an even count); NaN for no values. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** a / b rounded to two decimals, or NaN when b is 0. */
export function ratio(a: number, b: number): number {
  return b === 0 ? NaN : Math.round((a / b) * 100) / 100;
}

/**
 * Two targets measured round by round in the same run: each round's a / b, and their median (the
 * headline ratio). Drift on a shared machine moves a whole round, so a round's pair shares it and
 * the ratio of each target's median over the rounds does not; both are kept for the record.
 */
export function pairedRatio(a: readonly number[], b: readonly number[]): { median: number; rounds: number[]; ofMedians: number } {
  if (a.length !== b.length) throw new Error(`paired rounds differ in number: ${a.length} and ${b.length}`);
  const rounds = a.map((x, i) => ratio(x, b[i]!));
  return { median: Math.round(median(a.map((x, i) => x / b[i]!)) * 100) / 100, rounds, ofMedians: ratio(median(a), median(b)) };
}

/** The nearest-rank percentile (p in 0..100) of the values; NaN for no values. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}
