// Consul's ?index= and ?wait= as the Consul API reads them: Go durations, the 10-minute cap, the
// jitter, the 400s for garbage, and the cap on blocking queries held at once.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { TurquoiseError } from "../../src/errors.js";
import { DEFAULT_BLOCKING_WAIT_MS, MAX_BLOCKING_WAIT_MS } from "../../src/api/registry.js";
import { BlockingSlots, blockingQuery, parseGoDuration } from "../../src/consul/blocking.js";

const usage = (pattern: RegExp) => (e: unknown) => e instanceof TurquoiseError && e.code === "USAGE" && pattern.test(e.message);
const q = (text: string) => new URLSearchParams(text);
/** No jitter: random() = 0 keeps the whole wait. */
const noJitter = () => 0;

describe("parseGoDuration", () => {
  it("reads what Go's time.ParseDuration reads, as clients send it", () => {
    for (const [text, ms] of [
      ["0", 0], ["30s", 30_000], ["5m", 300_000], ["120000ms", 120_000], ["2m0s", 120_000], ["1h30m", 5_400_000],
      ["1.5s", 1_500], [".5s", 500], ["1500us", 1.5], ["1500µs", 1.5], ["2000000ns", 2], ["-5s", -5_000], ["+1m", 60_000],
    ] as const) {
      assert.equal(parseGoDuration(text), ms, text);
    }
  });

  it("refuses what Go refuses, naming the text", () => {
    for (const text of ["", "30", "s", "5 m", "1e3s", "5d", "10sec", "1h-2m", "abc", "5m!"]) {
      assert.throws(() => parseGoDuration(text), usage(/^Invalid wait time/), text);
    }
  });

  it("refuses a text longer than any duration at once, without handing it to the regex", () => {
    assert.throws(() => parseGoDuration(`${"1".repeat(100_000)}s`), usage(/^Invalid wait time "1{64}"/));
  });
});

describe("blockingQuery", () => {
  it("does not block without ?index= or with index 0, as in Consul", () => {
    assert.equal(blockingQuery(q("")), undefined);
    assert.equal(blockingQuery(q("wait=10s")), undefined);
    assert.equal(blockingQuery(q("index=0&wait=10s")), undefined);
  });

  it("blocks at the index for ?wait=, 5 minutes by default or when it is 0 or less", () => {
    assert.deepEqual(blockingQuery(q("index=42&wait=10s"), noJitter), { index: 42, waitMs: 10_000 });
    assert.deepEqual(blockingQuery(q("index=42"), noJitter), { index: 42, waitMs: DEFAULT_BLOCKING_WAIT_MS });
    assert.deepEqual(blockingQuery(q("index=42&wait=0"), noJitter), { index: 42, waitMs: DEFAULT_BLOCKING_WAIT_MS });
    assert.deepEqual(blockingQuery(q("index=42&wait=-1m"), noJitter), { index: 42, waitMs: DEFAULT_BLOCKING_WAIT_MS });
  });

  it("caps a huge wait at 10 minutes, overflowing numbers included", () => {
    for (const wait of ["11m", "100000h", `${"9".repeat(60)}h`]) {
      assert.equal(blockingQuery(q(`index=7&wait=${wait}`), noJitter)!.waitMs, MAX_BLOCKING_WAIT_MS, wait);
    }
  });

  it("takes up to 1/16 of the wait off as jitter, so waits that end together spread and the cap holds", () => {
    assert.equal(blockingQuery(q("index=7&wait=16s"), () => 0.999_999)!.waitMs, 15_000);
    assert.equal(blockingQuery(q("index=7&wait=16s"), () => 0.5)!.waitMs, 15_500);
    assert.equal(blockingQuery(q("index=7&wait=1h"), () => 0.999_999)!.waitMs, MAX_BLOCKING_WAIT_MS - MAX_BLOCKING_WAIT_MS / 16);
  });

  it("refuses a garbage index, and a garbage wait even without an index", () => {
    for (const index of ["abc", "-1", "1.5", "1e3", "0x10", " 1", "9999999999999999", ""]) {
      assert.throws(() => blockingQuery(q(`index=${encodeURIComponent(index)}`)), usage(/^Invalid index/), index);
    }
    assert.throws(() => blockingQuery(q("wait=30")), usage(/^Invalid wait time "30"/));
  });
});

describe("BlockingSlots", () => {
  it("hands out at most max slots, and takes them back", () => {
    const slots = new BlockingSlots(2);
    assert.equal(slots.take(), true);
    assert.equal(slots.take(), true);
    assert.equal(slots.take(), false);
    assert.equal(slots.inUse, 2);
    slots.give();
    assert.equal(slots.take(), true);
    slots.give();
    slots.give();
    slots.give();
    assert.equal(slots.inUse, 0);
  });
});
