// Backfill progress fan-out: each listener at its own pace, the first and last report always
// delivered, a throwing metrics hook harmless; and the bar a terminal shows.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { BackfillProgress } from "../../src/migrate/contract.js";
import { describeProgress, progressRelay } from "../../src/deploy/migration-progress.js";
import { ProgressLine, renderBar } from "../../src/cli/progress-bar.js";

const p = (rowsDone: number, extra: Partial<BackfillProgress> = {}): BackfillProgress => ({
  type: "backfill-progress", version: 2, name: "split_author", direction: "up", table: "books",
  rowsDone, rowsEstimated: 1_000_000, batches: rowsDone / 1000, rowsPerSec: 12_000, etaMs: 57_000, resumedFrom: 0, done: false, ...extra,
});

describe("progressRelay", () => {
  it("sends the first and last report to every listener, the rest at each one's pace, and every batch to metrics", () => {
    const live: number[] = [];
    const events: Array<[string | null, string, string]> = [];
    const metrics: number[] = [];
    const relay = progressRelay("books", {
      live: (x) => live.push(x.rowsDone),
      event: (service, type, message) => events.push([service, type, message]),
      metrics: (_s, x) => metrics.push(x.rowsDone),
    });
    for (let i = 0; i <= 500; i++) relay(p(i * 1000));
    relay(p(500_000, { done: true, etaMs: 0 }));
    assert.equal(metrics.length, 502);
    // 502 reports in far less than 250 ms: the first, then the last (done).
    assert.deepEqual(live, [0, 500_000]);
    assert.deepEqual(events.map((e) => e[1]), ["migrate.progress", "migrate.progress"]);
    assert.match(events[1]![2], /^0002_split_author up: backfill of books 500,000 \/ ~1,000,000 rows \(50 %\), 12,000 rows\/s, done$/);
  });

  it("reports again once its interval has passed", async () => {
    const live: number[] = [];
    const relay = progressRelay("books", { live: (x) => live.push(x.rowsDone) });
    relay(p(0));
    relay(p(1000));
    await sleep(300);
    relay(p(2000));
    assert.deepEqual(live, [0, 2000]);
  });

  it("keeps going when the metrics hook throws", () => {
    const live: number[] = [];
    const relay = progressRelay("books", { live: (x) => live.push(x.rowsDone), metrics: () => { throw new Error("broken gauge"); } });
    relay(p(0));
    relay(p(1000, { done: true }));
    assert.deepEqual(live, [0, 1000]);
  });
});

describe("progress text", () => {
  it("says rows, share, rate and time left, and where a resumed run started", () => {
    assert.equal(describeProgress(p(312_000, { resumedFrom: 100_000 })), "0002_split_author up: backfill of books 312,000 / ~1,000,000 rows (31 %), 12,000 rows/s, 57s left, resumed at 100,000");
    assert.match(describeProgress(p(0, { etaMs: null })), /estimating$/);
    assert.match(describeProgress(p(1000, { etaMs: 3_725_000 })), /1h02m left$/);
  });

  it("draws a bar in place on a terminal, and nothing off one", () => {
    assert.equal(renderBar(p(312_000)), "0002_split_author up  [######..............]   31 %  312,000 / ~1,000,000 rows  12,000 rows/s  57s left");
    const out: string[] = [];
    const tty = new ProgressLine(true, (s) => out.push(s));
    tty.update(p(1000));
    tty.clear();
    tty.clear();
    assert.equal(out.length, 2);
    assert.ok(out[0]!.startsWith("\r\x1b[K  0002_split_author"));
    assert.equal(out[1], "\r\x1b[K");
    const pipe: string[] = [];
    new ProgressLine(false, (s) => pipe.push(s)).update(p(1000));
    assert.deepEqual(pipe, []);
  });
});
