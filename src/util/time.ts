// A point in time as people read it in Turquoise's output: one format everywhere, ISO 8601 in UTC
// to the second, as agent.log writes its times (so the two compare at a glance).

/** 1795309046871 → "2026-11-22T01:37:26Z". */
export function formatTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}
