// The shared benchmark helpers: wrk's report parser, the statistics, the Node pipe over TLS and the
// negotiated-TLS check that bench:tls runs before it measures.

import assert from "node:assert/strict";
import https from "node:https";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { createTestCa, type TestCa } from "../../bench/lib/certs.js";
import { type RunningPipe, startPipeProcess } from "../../bench/lib/pipe.js";
import { formatTable } from "../../bench/lib/report.js";
import { median, pairedRatio, ratio } from "../../bench/lib/stats.js";
import { assertSameTls, negotiatedTls } from "../../bench/lib/tls-probe.js";
import { HELLO_BODY, type RunningUpstream, startUpstreamProcess } from "../../bench/lib/upstream.js";
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

  it("pairs rounds: the median of each round's ratio, which drift across rounds does not move as it moves the ratio of medians", () => {
    // Round 3 ran with the machine busy: both targets slower, their ratio alike.
    const ours = [22_000, 21_000, 11_000];
    const theirs = [22_000, 20_000, 12_000];
    const p = pairedRatio(ours, theirs);
    assert.deepEqual(p.rounds, [1, 1.05, 0.92]);
    assert.equal(p.median, 1);
    assert.equal(p.ofMedians, 1.05);
    assert.throws(() => pairedRatio([1, 2], [1]), /differ in number/);
  });

  it("formats aligned tables", () => {
    assert.equal(formatTable(["name", "n"], [["a", "1"], ["bb", "22"]]), "name   n\n----  --\na      1\nbb    22");
  });
});

describe("the Node pipe over TLS, and the negotiated-TLS check", () => {
  let ca: TestCa;
  let upstream: RunningUpstream;
  let pipe: RunningPipe;

  before(async () => {
    ca = await createTestCa();
    const cert = await ca.issue("pipe", ["localhost"]);
    upstream = await startUpstreamProcess();
    pipe = await startPipeProcess(upstream.port, { tls: cert });
  });
  after(async () => {
    pipe?.stop();
    await upstream?.stop();
    await ca?.close();
  });

  const get = (agent: https.Agent): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      https.get({ host: "127.0.0.1", port: pipe.port, servername: "localhost", path: "/", ca: ca.pem, agent, headers: { host: "localhost" } }, (res) => {
        let body = "";
        res.setEncoding("latin1").on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode!, body }));
      }).on("error", reject);
    });

  it("terminates TLS with the certificate it was given and carries kept-alive requests to the upstream", async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      for (let i = 0; i < 3; i++) assert.deepEqual(await get(agent), { status: 200, body: HELLO_BODY.toString("latin1") });
    } finally {
      agent.destroy();
    }
  });

  it("survives a client that sends garbage instead of a ClientHello", async () => {
    await new Promise<void>((resolve) => {
      const s = net.connect({ host: "127.0.0.1", port: pipe.port }, () => s.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + "\x00".repeat(70_000)));
      s.on("error", () => resolve());
      s.on("close", () => resolve());
      s.resume();
    });
    const agent = new https.Agent({ keepAlive: false });
    assert.equal((await get(agent)).status, 200);
  });

  it("reports what a server negotiated, and refuses a comparison where two servers differ", async () => {
    const n = await negotiatedTls(pipe.port, "localhost", ca.pem);
    assert.equal(n.protocol, "TLSv1.3");
    assert.match(n.cipher, /^TLS_(AES_(128|256)_GCM|CHACHA20_POLY1305)_SHA(256|384)$/);
    assert.notEqual(n.group, "none");
    assert.equal(n.alpn, "http/1.1");
    assert.doesNotThrow(() => assertSameTls({ a: n, b: { ...n } }));
    assert.throws(() => assertSameTls({ turquoise: n, nginx: { ...n, cipher: "TLS_AES_128_GCM_SHA256" } }), /nginx negotiated cipher TLS_AES_128_GCM_SHA256 where turquoise negotiated/);
    assert.throws(() => assertSameTls({ turquoise: n, nginx: { ...n, group: "ECDH P-256" } }), /nginx negotiated group/);
  });

  it("fails a handshake with a server that does not speak TLS", async () => {
    const plain = net.createServer((s) => s.end("HTTP/1.1 400 Bad Request\r\n\r\n"));
    await new Promise<void>((r) => plain.listen(0, "127.0.0.1", () => r()));
    try {
      await assert.rejects(negotiatedTls((plain.address() as net.AddressInfo).port, "localhost", ca.pem), /wrong version number|packet length|ECONNRESET|socket disconnected/i);
    } finally {
      plain.close();
    }
  });

  it("gives up on a server that accepts and never answers, after its timeout", async () => {
    const hung = net.createServer(() => {});
    await new Promise<void>((r) => hung.listen(0, "127.0.0.1", () => r()));
    try {
      await assert.rejects(negotiatedTls((hung.address() as net.AddressInfo).port, "localhost", ca.pem, 200), /no TLS handshake with 127\.0\.0\.1:\d+ within 200 ms/);
    } finally {
      hung.close();
    }
  });
});
