// The shared benchmark helpers: wrk's report parser and the statistics.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatTable } from "../../bench/lib/report.js";
import { median, ratio } from "../../bench/lib/stats.js";
import { parseWrkOutput } from "../../bench/lib/wrk.js";

const WRK_REPORT = `Running 10s test @ http://127.0.0.1:8080/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.54ms    1.10ms  42.10ms   93.12%
    Req/Sec    20.91k     1.57k   24.15k    71.50%
  Latency Distribution
     50%    1.32ms
     75%    1.71ms
     90%    2.31ms
     99%  850.00us
  416093 requests in 10.00s, 68.25MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:  41604.83
Transfer/sec:      6.82MB
`;

describe("bench helpers", () => {
  it("parses wrk --latency output, latencies in ms and errors summed", () => {
    assert.deepEqual(parseWrkOutput(WRK_REPORT), {
      rps: 41604.83, p50: 1.32, p99: 0.85, requests: 416093, errors: 9, socketErrors: { connect: 0, read: 3, write: 0, timeout: 2 }, maxMs: 42.1,
    });
    assert.equal(parseWrkOutput(WRK_REPORT.replace("1.32ms", "1.20s")).p50, 1_200);
    assert.throws(() => parseWrkOutput("garbage"), /unreadable wrk output/);
  });

  it("computes medians and ratios", () => {
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.ok(Number.isNaN(median([])));
    assert.equal(ratio(1, 3), 0.33);
    assert.ok(Number.isNaN(ratio(1, 0)));
  });

  it("formats aligned tables", () => {
    assert.equal(formatTable(["name", "n"], [["a", "1"], ["bb", "22"]]), "name   n\n----  --\na      1\nbb    22");
  });
});
