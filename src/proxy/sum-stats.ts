// Several workers' stats as one proxy's: counters summed (pools by id, and every nested counter
// object key by key, whatever counters a later version adds). The table version and the upstreams
// out of rotation are the supervisor's, which already merged every worker's marks. Their metrics
// likewise: counters summed series by series, gauges apart (only workers alive now have any).

import type { PoolStats, ProxyMetrics, ProxyStats, RequestSeriesCounts, UpstreamDown } from "./contract.js";
import { DURATION_BUCKETS_S } from "./counters.js";
import { zeroRejections, zeroTimeouts } from "./data-plane.js";

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

/** A proxy's metrics with nothing counted: what parts are summed into. */
export function zeroMetrics(startedAt: number): ProxyMetrics {
  return {
    startedAt,
    durationBuckets: [...DURATION_BUCKETS_S],
    requests: [],
    inFlight: [],
    open: { clientConnections: 0, upstreamConnections: 0, tunnels: 0 },
    ejections: { refused: 0, reset: 0 },
    timeouts: zeroTimeouts(),
    rejected: zeroRejections(),
    tunnelsOpened: 0,
  };
}

/** `base` plus the counters of `parts` (request series, ejections, timeouts, rejections, tunnels opened); base's gauges as they are. */
export function addMetricCounters(base: ProxyMetrics, parts: readonly ProxyMetrics[]): ProxyMetrics {
  const series = new Map<string, RequestSeriesCounts>();
  const out: ProxyMetrics = { ...base, requests: [] };
  for (const part of [base, ...parts]) {
    for (const r of part.requests) {
      const key = `${r.service}\n${r.slot}`;
      const seen = series.get(key);
      series.set(key, seen ? (add(seen, r) as RequestSeriesCounts) : structuredClone(r));
    }
    if (part === base) continue;
    out.ejections = add(out.ejections, part.ejections) as ProxyMetrics["ejections"];
    out.timeouts = add(out.timeouts, part.timeouts) as ProxyMetrics["timeouts"];
    out.rejected = add(out.rejected, part.rejected) as ProxyMetrics["rejected"];
    out.tunnelsOpened += part.tunnelsOpened;
  }
  out.requests = [...series.values()];
  return out;
}

/** `base` with its gauges replaced by the sum of those of `parts` (in-flight requests by service and slot, open connections). */
export function withMetricGauges(base: ProxyMetrics, parts: readonly ProxyMetrics[]): ProxyMetrics {
  const inFlight = new Map<string, ProxyMetrics["inFlight"][number]>();
  let open = zeroMetrics(0).open;
  for (const part of parts) {
    for (const f of part.inFlight) {
      const key = `${f.service}\n${f.slot}`;
      const seen = inFlight.get(key);
      if (seen) seen.requests += f.requests;
      else inFlight.set(key, { ...f });
    }
    open = add(open, part.open) as ProxyMetrics["open"];
  }
  return { ...base, inFlight: [...inFlight.values()], open };
}

/** Numbers add up; objects add key by key (arrays index by index); anything else keeps the first value seen. */
function add(a: unknown, b: unknown): unknown {
  if (a === undefined) return structuredClone(b);
  if (typeof a === "number" && typeof b === "number") return a + b;
  if (Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x) => typeof x === "number")) return a.map((x: number, i) => x + (b[i] as number));
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
