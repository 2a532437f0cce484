// Summing workers' stats into one proxy's: pools by id, every counter key by key, the supervisor's marks.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ProxyStats } from "../../src/proxy/contract.js";
import { DataPlane } from "../../src/proxy/data-plane.js";
import { sumStats } from "../../src/proxy/sum-stats.js";

function zero(): ProxyStats {
  const plane = new DataPlane();
  const stats = plane.stats();
  plane.upstreams.destroy();
  return stats;
}

function worker(over: Partial<ProxyStats>): ProxyStats {
  return { ...zero(), ...over };
}

describe("sumStats", () => {
  it("adds pools by id and every counter, and takes the table version and marks it is given", () => {
    const z = zero();
    const a = worker({
      tableVersion: 6,
      requests: 10,
      retries: 1,
      pools: [{ poolId: "p:1", inFlight: 2, served: 5, failed: 1 }],
      timeouts: { ...z.timeouts!, clientIdle: 3 },
      rejected: { ...z.rejected!, connections: 1 },
      tunnels: { open: 1, total: 4 },
      down: [{ id: "u1", since: 5, reason: "refused" }],
    });
    const b = worker({
      tableVersion: 6,
      requests: 7,
      upstreamErrors: 2,
      pools: [{ poolId: "p:2", inFlight: 0, served: 1, failed: 0 }, { poolId: "p:1", inFlight: 1, served: 2, failed: 0 }],
      timeouts: { ...z.timeouts!, clientIdle: 1, upstreamConnect: 2 },
      tunnels: { open: 0, total: 1 },
    });
    const sum = sumStats(z, [a, b], { tableVersion: 7, down: [{ id: "u1", since: 4, reason: "refused" }] });
    assert.equal(sum.tableVersion, 7);
    assert.equal(sum.requests, 17);
    assert.equal(sum.retries, 1);
    assert.equal(sum.upstreamErrors, 2);
    assert.deepEqual(sum.pools, [{ poolId: "p:1", inFlight: 3, served: 7, failed: 1 }, { poolId: "p:2", inFlight: 0, served: 1, failed: 0 }]);
    assert.deepEqual(sum.timeouts, { ...z.timeouts!, clientIdle: 4, upstreamConnect: 2 });
    assert.deepEqual(sum.rejected, { ...z.rejected!, connections: 1 });
    assert.deepEqual(sum.tunnels, { open: 1, total: 5 });
    assert.deepEqual(sum.down, [{ id: "u1", since: 4, reason: "refused" }]);
  });

  it("with no worker at all, answers zeros in the same shape", () => {
    const z = zero();
    const sum = sumStats(z, [], { tableVersion: 3, down: [] });
    assert.deepEqual(sum, { ...z, tableVersion: 3 });
  });

  it("sums a counter object it does not know, so later counters need no change here", () => {
    const z = zero();
    const extra = (n: number) => ({ ...worker({}), newCounters: { x: n, y: { z: n } } }) as ProxyStats;
    const sum = sumStats(z, [extra(1), extra(2)], { tableVersion: 0, down: [] }) as ProxyStats & { newCounters: unknown };
    assert.deepEqual(sum.newCounters, { x: 3, y: { z: 3 } });
  });
});
