// The canary's judgment, by table: error rate and p99 against the live slot over one window, the
// few-requests rule, exits; the p99 of the proxy's buckets; the counts between two snapshots; and
// the planner's refusal of a canary whose releases do not share the current schema.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CANARY_P99_FLOOR_MS, judgeCanary, percentileMs, slotWindow, type CanaryFigures } from "../../src/deploy/canary.js";
import { canaryFor } from "../../src/deploy/flow.js";
import { stagingOptions } from "../../src/api/flows.js";
import { canaryRefusal, type PlanAction } from "../../src/plan/planner.js";
import type { ProxyMetrics } from "../../src/proxy/contract.js";
import { DURATION_BUCKETS_S } from "../../src/proxy/counters.js";
import type { ServiceSpec } from "../../src/spec/types.js";

const T = { maxErrorRate: 0.01, maxP99Ratio: 2, minRequests: 20 };
const fig = (canary: Partial<CanaryFigures["canary"]>, live: Partial<CanaryFigures["live"]> = {}, exited: string[] = []): CanaryFigures => ({
  percent: 5, elapsedMs: 1000, exited,
  canary: { requests: 100, errors: 0, p99Ms: 10, ...canary },
  live: { requests: 1000, errors: 0, p99Ms: 10, ...live },
});

describe("canary judgment", () => {
  const cases: Array<[string, CanaryFigures, boolean, boolean | RegExp]> = [
    ["a clean step passes", fig({}), true, true],
    ["errors at the live slot's rate pass", fig({ errors: 5 }, { errors: 50 }), true, true],
    ["5 % errors against 0 % fail at once", fig({ errors: 5 }), false, /error rate 5\.0 % \(5 of 100\) against 0\.0 %/],
    ["one error in 10 requests waits for the window", fig({ requests: 10, errors: 1 }), false, true],
    ["one error in 10 requests fails at the window's end", fig({ requests: 10, errors: 1 }), true, /1 error\(s\) in only 10 request\(s\)/],
    ["too few requests and no error pass", fig({ requests: 3 }), true, true],
    ["10× the p99 fails at the window's end", fig({ p99Ms: 250 }, { p99Ms: 25 }), true, /p99 250ms against 25ms on the live release \(at most 2×\)/],
    ["10× the p99 is not judged mid-window", fig({ p99Ms: 250 }, { p99Ms: 25 }), false, true],
    ["a p99 under the floor is noise", fig({ p99Ms: CANARY_P99_FLOOR_MS }, { p99Ms: 5 }), true, true],
    ["an exit fails at once", fig({}, {}, ["books-green-1"]), false, /1 instance\(s\) of the new release exited/],
  ];
  for (const [name, f, final, want] of cases) {
    it(name, () => {
      const v = judgeCanary(f, T, final);
      if (want === true) assert.deepEqual(v, { ok: true });
      else assert.ok(!v.ok && (want as RegExp).test(v.reason), JSON.stringify(v));
    });
  }

  it("interpolates the p99 within its bucket, Infinity past the last", () => {
    const d = new Array<number>(DURATION_BUCKETS_S.length + 1).fill(0);
    d[0] = 98;
    d[4] = 2; // 50 to 100 ms
    // Rank 99 of 100 is the first of the 2 in (50, 100]: halfway, as histogram_quantile says.
    assert.equal(percentileMs(d, 0.99), 75);
    assert.equal(percentileMs(d, 0.49), 2.5);
    d[d.length - 1] = 100;
    assert.equal(percentileMs(d, 0.99), Infinity);
    assert.equal(percentileMs(d.map(() => 0), 0.99), null);
  });

  it("counts a slot between two snapshots: 5xx and unanswered as errors", () => {
    const series = (statuses: number[], durations: number[]) => ({ service: "books", slot: "green", statuses, durations, durationSum: 0, upstreamErrors: 0, retries: 0 });
    const zeros = new Array<number>(DURATION_BUCKETS_S.length + 1).fill(0);
    const at = (s: ReturnType<typeof series>) => ({ requests: [s] }) as unknown as ProxyMetrics;
    const before = at(series([1, 0, 10, 0, 0, 1], [12, ...zeros.slice(1)]));
    const now = at(series([2, 0, 100, 0, 3, 6], [111, ...zeros.slice(1)]));
    assert.deepEqual(slotWindow(before, now, "books", "green"), { requests: 99, errors: 6, p99Ms: (5 * 0.99 * 99) / 99 });
    assert.deepEqual(slotWindow(before, now, "books", "blue"), { requests: 0, errors: 0, p99Ms: null });
  });

  it("takes the deploy's steps over the spec's, and none without a step below 100", () => {
    const svc = { canary: { steps: [10, 50], stepIntervalMs: 5000, maxErrorRate: 0.02, maxP99Ratio: 3, minRequests: 50 } } as unknown as ServiceSpec;
    assert.deepEqual(canaryFor(svc, {}), svc.canary);
    assert.deepEqual(canaryFor(svc, { canary: { steps: [5, 100], stepIntervalMs: 1000 } }), { ...svc.canary, steps: [5], stepIntervalMs: 1000 });
    assert.equal(canaryFor(svc, { canary: { steps: [] } }), undefined);
    assert.equal(canaryFor({} as ServiceSpec, {}), undefined);
    assert.deepEqual(canaryFor({} as ServiceSpec, { canary: { steps: [5] } }), { steps: [5], stepIntervalMs: 30_000, maxErrorRate: 0.01, maxP99Ratio: 3, minRequests: 20 });
  });

  it("reads hold, canary and step_interval from a request body, naming what is wrong", () => {
    assert.deepEqual(stagingOptions({ canary: "5, 25,50,100", step_interval: "2s" }), { canary: { steps: [5, 25, 50, 100], stepIntervalMs: 2000 } });
    assert.deepEqual(stagingOptions({ canary: [0] }), { canary: { steps: [] } });
    assert.deepEqual(stagingOptions({ hold: true }), { hold: true });
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ canary: "5,x" }, /"x" is not a percentage/],
      [{ canary: "50,25" }, /steps must increase, got 50 then 25/],
      [{ canary: [101] }, /101 is not a percentage/],
      [{ canary: "5,".repeat(30) + "6" }, /1 to 20 percentages/],
      [{ canary: {} }, /1 to 20 percentages/],
      [{ step_interval: "2s" }, /goes with body.canary/],
      [{ canary: "5", step_interval: "soon" }, /body.step_interval/],
      [{ hold: "yes" }, /body.hold must be true or false/],
      [{ hold: true, canary: "5" }, /do not go together/],
    ];
    for (const [body, want] of bad) assert.throws(() => stagingOptions(body), want, JSON.stringify(body));
  });
});

describe("planner: canaryRefusal", () => {
  const start = (release: string): PlanAction => ({ do: "start", release });
  const flip = (from: string | null, to: string): PlanAction => ({ do: "flip", from, to });
  const migrate = (phase: "expand" | "contract" | "both"): PlanAction => ({ do: "migrate", from: 1, to: 2, direction: "up", steps: ["002"], phase });
  const v1 = { name: "v1", schema: { min: 1, max: 2 } };
  const v2 = { name: "v2", schema: { min: 1, max: 2 } };

  it("offers a canary when both releases run on the current schema, a later contract included", () => {
    assert.equal(canaryRefusal([start("v2"), flip("v1", "v2")], v1, v2, 1), undefined);
    assert.equal(canaryRefusal([start("v2"), flip("v1", "v2"), migrate("contract")], v1, v2, 1), undefined);
    assert.equal(canaryRefusal([start("v2"), flip("v1", "v2")], null, v2, null), undefined);
  });

  it("says why otherwise: a migration before the flip, a turquoise path, a release off the current schema", () => {
    assert.match(canaryRefusal([migrate("expand"), start("v2"), flip("v1", "v2")], v1, v2, 1)!, /migrates up from version 1 to 2 before its flip/);
    assert.match(canaryRefusal([start("r"), flip("v1", "r"), migrate("both"), start("v2"), flip("r", "v2")], v1, v2, 1)!, /walks through a turquoise release \(r → v2\)/);
    assert.match(canaryRefusal([start("v2"), flip("v1", "v2")], v1, { name: "v2", schema: { min: 2, max: 3 } }, 1)!, /current schema 1, and v2 runs on 2\.\.3/);
  });
});
