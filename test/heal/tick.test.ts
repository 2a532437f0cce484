// The health monitor's check grid: checks due within one tick run in one turn of the event loop.
import assert from "node:assert/strict";
import { test } from "node:test";
import { CHECK_TICK_MS, onTick } from "../../src/heal/monitor.js";

test("a check is due at the first tick at or after its interval, never before it", () => {
  for (const [delay, now] of [[1_000, 1_234], [1_000, 1_200], [0, 1_200], [0, 1_201], [250, 99_999]] as const) {
    const d = onTick(delay, now);
    assert.equal((now + d) % CHECK_TICK_MS, 0, `due at ${now + d}`);
    assert.ok(d >= delay && d < delay + CHECK_TICK_MS, `delay ${delay} at ${now} became ${d}`);
  }
});
