// Several workers' stats as one proxy's: counters summed (pools by id, and every nested counter
// object key by key, whatever counters a later version adds). The table version and the upstreams
// out of rotation are the supervisor's, which already merged every worker's marks.

import type { PoolStats, ProxyStats, UpstreamDown } from "./contract.js";

/** `zero` gives the shape (a fresh data plane's stats), `parts` the workers' figures. */
export function sumStats(zero: ProxyStats, parts: readonly ProxyStats[], own: { tableVersion: number; down: readonly UpstreamDown[] }): ProxyStats {
  const out = structuredClone(zero) as unknown as Record<string, unknown>;
  const pools = new Map<string, PoolStats>();
  for (const part of parts) {
    for (const [key, value] of Object.entries(part)) {
      if (key === "tableVersion") continue;
      if (key === "pools") addPools(pools, value as PoolStats[]);
      else if (key !== "down") out[key] = add(out[key], value);
    }
  }
  const stats = out as unknown as ProxyStats;
  stats.tableVersion = own.tableVersion;
  stats.pools = [...pools.values()];
  stats.down = own.down.map((d) => ({ ...d }));
  return stats;
}

function addPools(into: Map<string, PoolStats>, pools: readonly PoolStats[]): void {
  for (const p of pools) {
    const seen = into.get(p.poolId);
    if (seen) into.set(p.poolId, add(seen, p) as PoolStats);
    else into.set(p.poolId, { ...p });
  }
}

/** Numbers add up; objects add key by key; anything else keeps the first value seen. */
function add(a: unknown, b: unknown): unknown {
  if (a === undefined) return structuredClone(b);
  if (typeof a === "number" && typeof b === "number") return a + b;
  if (isPlainObject(a) && isPlainObject(b)) {
    const out: Record<string, unknown> = { ...a };
    for (const [k, v] of Object.entries(b)) out[k] = add(out[k], v);
    return out;
  }
  return a;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
