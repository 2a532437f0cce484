// Sizes are human strings at the edge ("16KiB", "10MB", "512") and bytes inside.

const UNITS: Record<string, number> = { "": 1, b: 1, kb: 1_000, kib: 1_024, mb: 1_000_000, mib: 1_048_576, gb: 1_000_000_000, gib: 1_073_741_824 };
export const SIZE_PATTERN = "^[0-9]+ ?([KMG]i?B|[kmg]i?b|B|b)?$";
const SIZE_RE = /^([0-9]+) ?([KMGkmg]i?[Bb]|[Bb])?$/;

export function parseSize(text: string | number): number {
  if (typeof text === "number") return text;
  const m = SIZE_RE.exec(text.trim());
  if (!m) throw new Error(`invalid size "${text}": write a number of bytes and a unit, like "16KiB", "10MB" or "512"`);
  return Number(m[1]) * UNITS[(m[2] ?? "").toLowerCase()]!;
}

export function formatSize(bytes: number): string {
  for (const [unit, n] of [["GiB", 1_073_741_824], ["MiB", 1_048_576], ["KiB", 1_024]] as const) {
    if (bytes >= n && bytes % n === 0) return `${bytes / n}${unit}`;
  }
  return `${bytes}B`;
}
