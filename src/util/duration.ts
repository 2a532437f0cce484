// Durations are human strings at the edge ("500ms", "10s", "5m") and milliseconds inside.

const UNITS_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
export const DURATION_PATTERN = "^[0-9]+(\\.[0-9]+)?(ms|s|m|h)$";
const DURATION_RE = new RegExp(DURATION_PATTERN);

export function parseDuration(text: string): number {
  const m = DURATION_RE.exec(text.trim());
  if (!m) throw new Error(`invalid duration "${text}": write a number and a unit, like "500ms", "10s" or "5m"`);
  const unit = m[2]!;
  return Math.round(parseFloat(text) * UNITS_MS[unit]!);
}

export function formatMs(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1_000).toFixed(ms < 10_000 ? 2 : 1)}s`;
  return `${Math.floor(ms / 60_000)}m${Math.round((ms % 60_000) / 1_000)}s`;
}

/** Milliseconds as the spec writes them: 600000 → "10m", 1500 → "1500ms". The inverse of parseDuration. */
export function formatDuration(ms: number): string {
  for (const [unit, n] of [["h", 3_600_000], ["m", 60_000], ["s", 1_000]] as const) {
    if (ms >= n && ms % n === 0) return `${ms / n}${unit}`;
  }
  return `${ms}ms`;
}
