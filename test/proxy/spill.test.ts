// How many proxy workers accept (spill.ts): one more only while those accepting are saturated
// with a core idle for another, one fewer when they wait for the cores or fewer would do.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { ADD_AFTER_TICKS, CONTENDED_SETTLE_TICKS, DROP_AFTER_TICKS, initialSpill, readHostTicks, readSchedstat, SETTLE_TICKS, type SpillSample, type SpillState, spillStep } from "../../src/proxy/spill.js";

/** Runs samples through spillStep from state, and returns the last state and every change. */
function run(state: SpillState, samples: SpillSample[]): { state: SpillState; changes: { to: number; reason: string }[] } {
  const changes: { to: number; reason: string }[] = [];
  for (const sample of samples) {
    const v = spillStep(state, sample);
    state = v.state;
    if (v.change) changes.push(v.change);
  }
  return { state, changes };
}

const times = (n: number, sample: SpillSample): SpillSample[] => Array.from({ length: n }, () => sample);
/** A worker on a core of its own with more work than it can do, and a core idle beside it: a dedicated proxy host. */
const saturatedIdleHost: SpillSample = { workers: [{ run: 0.96, wait: 0.02 }], idleCores: 0.95 };
/** As bench:proxy on two cores: one worker busy beside wrk and the upstream, little idle. */
const sharedHost: SpillSample = { workers: [{ run: 0.74, wait: 0.13 }], idleCores: 0.2 };

describe("spill: how many workers accept", () => {
  it("one accepts at first; a saturated worker with an idle core beside it brings in a second after two ticks", () => {
    const start = initialSpill(2);
    assert.equal(start.accepting, 1);
    const once = run(start, times(ADD_AFTER_TICKS - 1, saturatedIdleHost));
    assert.deepEqual(once.changes, []);
    const twice = run(start, times(ADD_AFTER_TICKS, saturatedIdleHost));
    assert.deepEqual(twice.changes, [{ to: 2, reason: "saturated, with an idle core" }]);
    assert.equal(twice.state.accepting, 2);
  });

  it("never more than max, and never a second one on a shared host with no idle core", () => {
    assert.deepEqual(run(initialSpill(1), times(20, saturatedIdleHost)).changes, []);
    assert.deepEqual(run(initialSpill(2), times(50, sharedHost)).changes, []);
    // Saturated, but its wait shows the cores are taken: the idle figure is a moment's, not a core.
    assert.deepEqual(run(initialSpill(2), times(20, { workers: [{ run: 0.6, wait: 0.35 }], idleCores: 0.6 })).changes, []);
  });

  it("a second one stops accepting when the accepting ones wait for the cores more than they run, or fewer would do", () => {
    const two: SpillState = { ...initialSpill(2), accepting: 2 };
    const contended: SpillSample = { workers: [{ run: 0.45, wait: 0.4 }, { run: 0.4, wait: 0.3 }], idleCores: 0.3 };
    assert.deepEqual(run(two, times(DROP_AFTER_TICKS - 1, contended)).changes, []);
    assert.deepEqual(run(two, times(DROP_AFTER_TICKS, contended)).changes, [{ to: 1, reason: "waiting for the cores" }]);
    const quiet: SpillSample = { workers: [{ run: 0.2, wait: 0.01 }, { run: 0.25, wait: 0.01 }], idleCores: 1.5 };
    assert.deepEqual(run(two, times(DROP_AFTER_TICKS, quiet)).changes, [{ to: 1, reason: "fewer would do" }]);
    // Two busy workers on two free cores stay.
    assert.deepEqual(run(two, times(30, { workers: [{ run: 0.95, wait: 0.03 }, { run: 0.93, wait: 0.04 }], idleCores: 0.05 })).changes, []);
  });

  it("after a change it lets the new split settle before it judges again, longer after the cores proved too few", () => {
    const r = run(initialSpill(3), times(ADD_AFTER_TICKS + SETTLE_TICKS, { workers: [{ run: 0.96, wait: 0.02 }], idleCores: 1.9 }));
    assert.deepEqual(r.changes.map((c) => c.to), [2]);
    assert.equal(r.state.settle, 0);
    const two: SpillState = { ...initialSpill(2), accepting: 2 };
    const dropped = run(two, times(DROP_AFTER_TICKS, { workers: [{ run: 0.45, wait: 0.4 }, { run: 0.4, wait: 0.3 }], idleCores: 0.3 }));
    const again = run(dropped.state, times(CONTENDED_SETTLE_TICKS + ADD_AFTER_TICKS - 1, saturatedIdleHost));
    assert.deepEqual(again.changes, [], "not back to two before the longer settle and two ticks");
    assert.deepEqual(run(again.state, [saturatedIdleHost]).changes.map((c) => c.to), [2]);
  });

  it("when add and drop for contention keep taking turns, each wait before the next add is twice the last, up to five minutes", () => {
    const contended: SpillSample = { workers: [{ run: 0.45, wait: 0.4 }, { run: 0.4, wait: 0.3 }], idleCores: 0.3 };
    let state = initialSpill(2);
    const waits: number[] = [];
    for (let cycle = 0; cycle < 8; cycle++) {
      let ticks = 0;
      while (state.accepting === 1) {
        state = spillStep(state, saturatedIdleHost).state;
        ticks++;
      }
      waits.push(ticks);
      state = run(state, times(SETTLE_TICKS + DROP_AFTER_TICKS, contended)).state;
      assert.equal(state.accepting, 1);
    }
    // The first add as ever; then each settle (10, 20, 40 … ticks, at most 300) and the ticks an add takes.
    assert.deepEqual(waits, [0, 10, 20, 40, 80, 160, 300, 300].map((settle) => settle + ADD_AFTER_TICKS));
    // A drop because the load went away starts the next contention afresh.
    const quiet: SpillSample = { workers: [{ run: 0.2, wait: 0.01 }, { run: 0.25, wait: 0.01 }], idleCores: 1.5 };
    state = run({ ...state, accepting: 2, settle: 0 }, times(DROP_AFTER_TICKS, quiet)).state;
    assert.equal(state.contendedSettle, CONTENDED_SETTLE_TICKS);
  });

  it("whatever it is fed, 1 ≤ accepting ≤ max, and each change is by one", () => {
    const load = fc.record({ run: fc.double({ min: 0, max: 1.2, noNaN: true }), wait: fc.double({ min: 0, max: 2, noNaN: true }) });
    const sample = fc.record({ workers: fc.array(load, { maxLength: 4 }), idleCores: fc.double({ min: 0, max: 4, noNaN: true }) });
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 }), fc.array(sample, { maxLength: 80 }), (max, samples) => {
        let state = initialSpill(max);
        for (const s of samples) {
          const v = spillStep(state, s);
          assert.ok(v.state.accepting >= 1 && v.state.accepting <= max, JSON.stringify(v.state));
          if (v.change) {
            assert.equal(Math.abs(v.change.to - state.accepting), 1);
            assert.equal(v.change.to, v.state.accepting);
            if (v.change.to > state.accepting) assert.ok(s.idleCores >= 0.5, "no worker more without an idle core");
          }
          state = v.state;
        }
      }),
    );
  });

  it("reads the kernel's figures on this host", () => {
    const mine = readSchedstat(process.pid);
    assert.ok(mine && mine.runNs > 0, "this process has run");
    const host = readHostTicks();
    assert.ok(host && host.cores >= 1 && host.total > host.idle);
    assert.equal(readSchedstat(2 ** 22 + 17), undefined, "no such process");
  });
});
