// The bake window's rule and its watch over the proxy's per-pool counters, without processes.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { bake, judgeBake, BAKE_MIN_REQUESTS } from "../../src/deploy/bake.js";
import type { PoolStats, ProxyStats } from "../../src/proxy/contract.js";

function fakeProxy(pool: () => PoolStats): { stats(): Promise<ProxyStats> } {
  return { stats: async () => ({ tableVersion: 1, pools: [pool()], requests: 0, upstreamErrors: 0, retries: 0 }) };
}

describe("bake rule", () => {
  const cases: Array<[string, Parameters<typeof judgeBake>[0], boolean]> = [
    ["quiet window passes", { requests: 0, failed: 0, exited: [], elapsedMs: 10 }, true],
    ["1 % exactly passes", { requests: 1000, failed: 10, exited: [], elapsedMs: 10 }, true],
    ["over 1 % fails", { requests: 1000, failed: 11, exited: [], elapsedMs: 10 }, false],
    ["few requests: a failure rate says nothing", { requests: BAKE_MIN_REQUESTS - 1, failed: 5, exited: [], elapsedMs: 10 }, true],
    ["any exit fails, even without traffic", { requests: 0, failed: 0, exited: ["x"], elapsedMs: 10 }, false],
  ];
  for (const [name, figures, ok] of cases) it(name, () => assert.equal(judgeBake(figures).ok, ok));
});

describe("bake watch", () => {
  it("counts from the window's start, passes a clean window once it ran out", async () => {
    let served = 500;
    const v = await bake({ proxy: fakeProxy(() => ({ poolId: "p", inFlight: 0, served: (served += 10), failed: 3, errors5xx: 2 })), poolId: "p", instanceIds: ["a"], isAlive: () => true, windowMs: 60, pollMs: 10 });
    assert.equal(v.ok, true);
    assert.equal(v.figures.failed, 0, "failures before the window are not its own");
    assert.ok(v.figures.requests > 0);
  });

  it("fails at the first look that sees upstream 5xx above the threshold", async () => {
    let n = 0;
    const v = await bake({ proxy: fakeProxy(() => ({ poolId: "p", inFlight: 0, served: (n += 50), failed: 0, errors5xx: n > 50 ? 10 : 0 })), poolId: "p", instanceIds: ["a"], isAlive: () => true, windowMs: 5_000, pollMs: 5 });
    assert.equal(v.ok, false);
    assert.ok(v.figures.elapsedMs < 5_000, "judged at once, not at the end of the window");
  });

  it("fails when an instance exits", async () => {
    let alive = true;
    setTimeout(() => (alive = false), 20);
    const v = await bake({ proxy: fakeProxy(() => ({ poolId: "p", inFlight: 0, served: 0, failed: 0 })), poolId: "p", instanceIds: ["a", "b"], isAlive: (id) => id === "b" || alive, windowMs: 5_000, pollMs: 5 });
    assert.equal(v.ok, false);
    assert.deepEqual(v.figures.exited, ["a"]);
    if (!v.ok) assert.match(v.reason, /exited/);
  });
});
