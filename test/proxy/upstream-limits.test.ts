// The proxy's upstream-facing limits, over real loopback sockets: connect, response and idle timeouts (504, closed connections), the per-upstream connection cap with its queue (503 + Retry-After), and settings that follow the table.

import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import type { ProxySettings, ProxyStats, ProxyRejectionCounts, Route, ProxyTimeoutCounts } from "../../src/proxy/contract.js";
import { type Reply, type TestProxy, json, request, route, sleep, startTestProxy, startUpstream } from "./helpers.js";
import { proxySettings, startSilent, startUnconnectable } from "./stuck-upstreams.js";

/** How late a timeout may fire: two sweeps of the proxy, plus room for a busy test machine. */
// Generous: the wrong behaviour it guards against is a default wait of seconds, and the machine may be busy.
const LATE_MS = 2_000;
const TEST_TIMEOUT_MS = 15_000;

interface Counts {
  timeouts: Pick<ProxyTimeoutCounts, "upstreamConnect" | "upstreamResponse" | "upstreamIdle">;
  rejected: Pick<ProxyRejectionCounts, "upstreamQueue">;
  upstreamErrors: number;
  retries: number;
}

function counts(s: ProxyStats): Counts {
  assert.ok(s.timeouts, "stats have timeouts");
  assert.ok(s.rejected, "stats have rejected");
  return { timeouts: s.timeouts, rejected: s.rejected, upstreamErrors: s.upstreamErrors, retries: s.retries };
}

/** What changed between two stats. */
function delta(a: Counts, b: Counts): Counts {
  return {
    timeouts: {
      upstreamConnect: b.timeouts.upstreamConnect - a.timeouts.upstreamConnect,
      upstreamResponse: b.timeouts.upstreamResponse - a.timeouts.upstreamResponse,
      upstreamIdle: b.timeouts.upstreamIdle - a.timeouts.upstreamIdle,
    },
    rejected: { upstreamQueue: b.rejected.upstreamQueue - a.rejected.upstreamQueue },
    upstreamErrors: b.upstreamErrors - a.upstreamErrors,
    retries: b.retries - a.retries,
  };
}

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; elapsedMs: number }> {
  const started = performance.now();
  const value = await fn();
  return { value, elapsedMs: performance.now() - started };
}

interface Ending {
  status: number;
  body: string;
  /** The response ended properly. */
  complete: boolean;
}

/** A GET that resolves however the response ends, cut short or not. */
function getToTheEnd(url: string): Promise<Ending> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("error", () => {});
      res.on("close", () => resolve({ status: res.statusCode!, body, complete: res.complete }));
    });
    req.on("error", reject);
  });
}

/** Sends a raw request and reads until the proxy closes the connection. */
function rawExchange(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.write(text));
    let received = "";
    socket.setEncoding("latin1");
    socket.on("data", (c: string) => (received += c));
    socket.on("error", reject);
    socket.on("close", () => resolve(received));
  });
}

/** POSTs a body as fast as the proxy takes it, until an answer comes (or maxBytes went out). */
function uploadUntilAnswered(url: string, maxBytes: number): Promise<{ reply: Reply; sentBytes: number }> {
  return new Promise((resolve, reject) => {
    const chunk = Buffer.alloc(64 * 1024, 120);
    let sentBytes = 0;
    let answered = false;
    const req = http.request(url, { method: "POST", agent: false, headers: { "content-type": "application/octet-stream" } }, (res) => {
      answered = true;
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (text += c));
      res.on("end", () => {
        resolve({ reply: { status: res.statusCode!, headers: res.headers, text }, sentBytes });
        req.destroy();
      });
    });
    req.on("error", (e) => {
      if (!answered) reject(e);
    });
    const pump = (): void => {
      while (!answered && sentBytes < maxBytes) {
        sentBytes += chunk.length;
        if (!req.write(chunk)) return void req.once("drain", pump);
      }
      if (!answered) req.end();
    };
    pump();
  });
}

describe("proxy upstream limits", { timeout: 120_000 }, () => {
  let p: TestProxy;
  let version = 0;
  const cleanups: (() => Promise<void>)[] = [];
  const later = <T extends { close(): Promise<void> }>(thing: T): T => {
    cleanups.push(() => thing.close());
    return thing;
  };
  const apply = (settings: ProxySettings, ...routes: Route[]) => p.proxy.apply({ version: ++version, routes, settings });
  const snapshot = async (): Promise<Counts> => counts(await p.proxy.stats());

  before(async () => {
    p = await startTestProxy();
  });
  after(async () => {
    await p.close();
    for (const c of cleanups) await c();
  });

  it("answers 504 when an upstream's handshake does not complete in upstreamConnectMs, without taking it out of rotation", { timeout: TEST_TIMEOUT_MS }, async () => {
    const hole = later(await startUnconnectable("hole-1"));
    await apply(proxySettings({ timeouts: { upstreamConnectMs: 250 } }), route("holes", "holes:1", [hole.upstream]));
    const before = await snapshot();
    const { value: reply, elapsedMs } = await timed(() => request(`${p.base}/x`));
    assert.equal(reply.status, 504);
    assert.deepEqual(json(reply), { error: "upstream timeout", phase: "connect", service: "holes" });
    assert.ok(elapsedMs >= 250 && elapsedMs < 250 + LATE_MS, `answered after ${Math.round(elapsedMs)} ms`);
    const stats = await p.proxy.stats();
    const d = delta(before, counts(stats));
    assert.equal(d.timeouts.upstreamConnect, 1);
    assert.equal(d.upstreamErrors, 1);
    assert.equal(d.retries, 0);
    assert.equal(stats.down?.some((down) => down.id === "hole-1"), false, "a connect timeout is not a refusal");
  });

  it("retries a connect timeout once on the next instance", { timeout: TEST_TIMEOUT_MS }, async () => {
    const hole = later(await startUnconnectable("hole-2"));
    const good = later(await startUpstream("good-2"));
    await apply(proxySettings({ timeouts: { upstreamConnectMs: 200 } }), route("mixed", "mixed:1", [hole.upstream, good.upstream]));
    const before = await snapshot();
    for (let i = 0; i < 2; i++) {
      const reply = await request(`${p.base}/r${i}`);
      assert.equal(reply.status, 200, reply.text);
      assert.equal(json(reply).id, "good-2");
    }
    const stats = await p.proxy.stats();
    const d = delta(before, counts(stats));
    assert.ok(d.timeouts.upstreamConnect >= 1, "round-robin sent some request to the unconnectable one first");
    assert.equal(d.retries, d.timeouts.upstreamConnect);
    assert.equal(stats.down?.some((down) => down.id === "hole-2"), false);
  });

  it("answers 504 when the response head does not come in upstreamResponseMs, and closes that upstream socket", { timeout: TEST_TIMEOUT_MS }, async () => {
    const silent = later(await startSilent("silent-3"));
    await apply(proxySettings({ timeouts: { upstreamResponseMs: 300 } }), route("mute", "mute:1", [silent.upstream]));
    const before = await snapshot();
    const { value: reply, elapsedMs } = await timed(() => request(`${p.base}/x`));
    assert.equal(reply.status, 504);
    assert.deepEqual(json(reply), { error: "upstream timeout", phase: "response", service: "mute" });
    assert.ok(elapsedMs >= 300 && elapsedMs < 300 + LATE_MS, `answered after ${Math.round(elapsedMs)} ms`);
    // Not kept for reuse: a late answer on it would be taken for the next request's.
    await silent.whenNoneOpen();
    assert.equal(silent.accepted, 1);
    const d = delta(before, await snapshot());
    assert.equal(d.timeouts.upstreamResponse, 1);
    assert.equal(d.upstreamErrors, 1);
  });

  it("closes the client connection when a response body stalls for upstreamIdleMs", { timeout: TEST_TIMEOUT_MS }, async () => {
    const stalls = later(
      await startUpstream("stalls-4", (_req, res) => {
        res.writeHead(200, { "content-type": "text/plain" });
        res.write("first part;");
      }),
    );
    await apply(proxySettings({ timeouts: { upstreamIdleMs: 300 } }), route("stalls", "stalls:1", [stalls.upstream]));
    const before = await snapshot();
    const { value: got, elapsedMs } = await timed(() => getToTheEnd(`${p.base}/x`));
    assert.equal(got.status, 200);
    assert.equal(got.body, "first part;");
    assert.equal(got.complete, false, "cut, not ended as if whole");
    assert.ok(elapsedMs >= 300 && elapsedMs < 300 + LATE_MS, `closed after ${Math.round(elapsedMs)} ms`);
    const d = delta(before, await snapshot());
    assert.equal(d.timeouts.upstreamIdle, 1);
  });

  it("never cuts a slow but steady response body, nor a slow but steady request body", { timeout: TEST_TIMEOUT_MS }, async () => {
    const STEP_MS = 80;
    const STEPS = 10;
    const trickle = later(
      await startUpstream("trickle-5", (req, res, body) => {
        if (req.method === "POST") return void res.writeHead(200).end(`got ${body.length}`);
        res.writeHead(200, { "content-type": "text/plain" });
        let i = 0;
        const timer = setInterval(() => {
          res.write(`${i};`);
          if (++i === STEPS) {
            clearInterval(timer);
            res.end();
          }
        }, STEP_MS);
      }),
    );
    // The whole body takes 3 times the idle limit; no gap comes near it.
    await apply(proxySettings({ timeouts: { upstreamIdleMs: 300, upstreamResponseMs: 300 } }), route("trickle", "trickle:1", [trickle.upstream]));
    const before = await snapshot();
    const got = await getToTheEnd(`${p.base}/down`);
    assert.equal(got.complete, true);
    assert.equal(got.body, Array.from({ length: STEPS }, (_, i) => `${i};`).join(""));

    const pieces: Buffer[] = [];
    const upload = await new Promise<Reply>((resolve, reject) => {
      const req = http.request(`${p.base}/up`, { method: "POST", agent: false }, (res) => {
        let text = "";
        res.on("data", (c: Buffer) => (text += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, text }));
      });
      req.on("error", reject);
      let i = 0;
      const timer = setInterval(() => {
        const piece = Buffer.from(`piece ${i};`);
        pieces.push(piece);
        req.write(piece);
        if (++i === STEPS) {
          clearInterval(timer);
          req.end();
        }
      }, STEP_MS);
    });
    assert.equal(upload.status, 200);
    assert.equal(upload.text, `got ${Buffer.concat(pieces).length}`);
    const d = delta(before, await snapshot());
    assert.deepEqual(d.timeouts, { upstreamConnect: 0, upstreamResponse: 0, upstreamIdle: 0 });
  });

  it("answers 408 and closes when the client stops sending its body, 504 when the upstream stops reading it", { timeout: TEST_TIMEOUT_MS }, async () => {
    const reader = later(await startUpstream("reader-6"));
    const deaf = later(await startSilent("deaf-6", { read: false }));
    await apply(
      proxySettings({ timeouts: { upstreamIdleMs: 300 } }),
      route("reader", "reader:1", [reader.upstream], { pathPrefix: "/reader" }),
      route("deaf", "deaf:1", [deaf.upstream], { pathPrefix: "/deaf" }),
    );
    const before = await snapshot();
    const { value: raw, elapsedMs } = await timed(() =>
      rawExchange(p.server.listenPort, "POST /reader HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"),
    );
    assert.match(raw, /^HTTP\/1\.1 408 /);
    assert.match(raw, /\r\nConnection: close\r\n/i);
    assert.ok(raw.endsWith(JSON.stringify({ error: "request body timeout", service: "reader" })), raw);
    assert.ok(elapsedMs >= 300 && elapsedMs < 300 + LATE_MS, `answered after ${Math.round(elapsedMs)} ms`);

    // More than every socket buffer between here and the deaf upstream holds.
    const { reply } = await uploadUntilAnswered(`${p.base}/deaf`, 256 * 1024 * 1024);
    assert.equal(reply.status, 504);
    assert.deepEqual(json(reply), { error: "upstream timeout", phase: "idle", service: "deaf" });
    assert.equal(reply.headers.connection, "close", "cut mid-body, the client connection is not reused");
    const d = delta(before, await snapshot());
    assert.equal(d.timeouts.upstreamIdle, 2);
  });

  it("queues requests beyond maxUpstreamConnections, then answers 503 with Retry-After", { timeout: TEST_TIMEOUT_MS }, async () => {
    const HOLD_MS = 900;
    let inside = 0;
    let maxInside = 0;
    const slow = later(
      await startUpstream("slow-7", (_req, res) => {
        maxInside = Math.max(maxInside, ++inside);
        setTimeout(() => {
          inside--;
          res.writeHead(200).end("done");
        }, HOLD_MS);
      }),
    );
    let connections = 0;
    slow.server.on("connection", () => connections++);
    await apply(proxySettings({ limits: { maxUpstreamConnections: 2, upstreamQueueMs: 300 } }), route("slow", "slow:1", [slow.upstream]));
    const before = await snapshot();
    const started = performance.now();
    const replies = await Promise.all(
      Array.from({ length: 6 }, (_, i) => request(`${p.base}/q${i}`).then((r) => ({ ...r, afterMs: performance.now() - started }))),
    );
    const ok = replies.filter((r) => r.status === 200);
    const busy = replies.filter((r) => r.status === 503);
    assert.equal(ok.length, 2);
    assert.equal(busy.length, 4);
    for (const r of busy) {
      assert.equal(r.headers["retry-after"], "1");
      assert.deepEqual(json(r), { error: "upstream busy", service: "slow" });
      assert.ok(r.afterMs >= 300 && r.afterMs < 300 + LATE_MS, `503 after ${Math.round(r.afterMs)} ms`);
    }
    assert.equal(maxInside, 2);
    assert.equal(connections, 2);
    const d = delta(before, await snapshot());
    assert.equal(d.rejected.upstreamQueue, 4);
    assert.equal(d.upstreamErrors, 0, "a full queue is not an upstream failure");
  });

  it("serves a queued request as soon as a connection to the upstream frees up, in order", { timeout: TEST_TIMEOUT_MS }, async () => {
    const order: string[] = [];
    let inside = 0;
    let maxInside = 0;
    const one = later(
      await startUpstream("one-8", (req, res) => {
        maxInside = Math.max(maxInside, ++inside);
        order.push(req.url!);
        setTimeout(() => {
          inside--;
          res.writeHead(200).end(req.url);
        }, 100);
      }),
    );
    await apply(proxySettings({ limits: { maxUpstreamConnections: 1, upstreamQueueMs: 3_000 } }), route("one", "one:1", [one.upstream]));
    const before = await snapshot();
    const pending: Promise<Reply>[] = [];
    for (let i = 0; i < 5; i++) {
      pending.push(request(`${p.base}/n${i}`));
      // Each request reaches the proxy before the next, so the queue's order is known.
      await sleep(15);
    }
    const replies = await Promise.all(pending);
    assert.deepEqual(replies.map((r) => r.status), [200, 200, 200, 200, 200]);
    assert.deepEqual(order, ["/n0", "/n1", "/n2", "/n3", "/n4"]);
    assert.equal(maxInside, 1);
    const d = delta(before, await snapshot());
    assert.equal(d.rejected.upstreamQueue, 0);
  });

  it("takes a queued request whose client went away out of the queue", { timeout: TEST_TIMEOUT_MS }, async () => {
    const seen: string[] = [];
    let releaseFirst: () => void = () => {};
    const gate = later(
      await startUpstream("gate-9", (req, res) => {
        seen.push(req.url!);
        if (req.url === "/first") releaseFirst = () => res.writeHead(200).end("first");
        else res.writeHead(200).end(req.url);
      }),
    );
    await apply(proxySettings({ limits: { maxUpstreamConnections: 1, upstreamQueueMs: 5_000 } }), route("gate", "gate:1", [gate.upstream]));
    const first = request(`${p.base}/first`);
    while (seen.length === 0) await sleep(5);
    // Queued behind /first, then given up by its client.
    const gone = http.get(`${p.base}/gone`, { agent: false });
    gone.on("error", () => {});
    await sleep(100);
    gone.destroy();
    await sleep(100);
    const third = request(`${p.base}/third`);
    await sleep(50);
    releaseFirst();
    assert.equal((await first).status, 200);
    const reply = await third;
    assert.equal(reply.status, 200);
    assert.equal(reply.text, "/third");
    assert.deepEqual(seen, ["/first", "/third"]);
    const pool = (await p.proxy.stats()).pools.find((pl) => pl.poolId === "gate:1");
    assert.equal(pool?.inFlight, 0);
  });

  it("keeps a never-answering upstream under 2,000 concurrent requests to its cap while another service answers", { timeout: 30_000 }, async (t) => {
    const CAP = 50;
    const REQUESTS = 2_000;
    const hostile = later(await startSilent("hostile-10"));
    const fine = later(await startUpstream("fine-10"));
    await apply(
      proxySettings({ timeouts: { upstreamResponseMs: 600 }, limits: { maxUpstreamConnections: CAP, upstreamQueueMs: 300 } }),
      route("hostile", "hostile:1", [hostile.upstream], { host: "hostile.test" }),
      route("fine", "fine:1", [fine.upstream], { host: "fine.test" }),
    );
    const before = await snapshot();
    const started = performance.now();
    let stormOver = false;
    const storm = (async () => {
      const replies: Promise<Reply>[] = [];
      for (let i = 0; i < REQUESTS; i++) {
        replies.push(request(`${p.base}/h${i}`, { headers: { host: "hostile.test" } }));
        // Batches, so that the proxy's accept queue (same process) keeps up.
        if (i % 200 === 199) await sleep(5);
      }
      const all = await Promise.all(replies);
      stormOver = true;
      return all;
    })();
    const fineLatenciesMs: number[] = [];
    while (!stormOver) {
      const { value: r, elapsedMs } = await timed(() => request(`${p.base}/ok`, { headers: { host: "fine.test" } }));
      assert.equal(r.status, 200, r.text);
      fineLatenciesMs.push(elapsedMs);
    }
    const replies = await storm;
    const tookMs = performance.now() - started;
    const byStatus = new Map<number, number>();
    for (const r of replies) byStatus.set(r.status, (byStatus.get(r.status) ?? 0) + 1);
    assert.deepEqual([...byStatus.keys()].sort(), [503, 504], `statuses: ${JSON.stringify([...byStatus])}`);
    assert.ok(hostile.maxOpen <= CAP, `${hostile.maxOpen} sockets to the hostile upstream at once`);
    // Loose bounds: what they guard against is a proxy out of descriptors, where the storm and the
    // other service's requests fail or hang for good, not a slow machine (4-5 s and 2 s when busy).
    assert.ok(tookMs < 25_000, `the storm took ${Math.round(tookMs)} ms`);
    assert.ok(fineLatenciesMs.length >= 2, `only ${fineLatenciesMs.length} requests to the other service`);
    assert.ok(Math.max(...fineLatenciesMs) < 10_000, `the other service answered within ${Math.round(Math.max(...fineLatenciesMs))} ms`);
    t.diagnostic(
      `${JSON.stringify(Object.fromEntries(byStatus))} in ${Math.round(tookMs)} ms; at most ${hostile.maxOpen} sockets to the hostile upstream; ` +
        `${fineLatenciesMs.length} answers from the other service, slowest ${Math.round(Math.max(...fineLatenciesMs))} ms`,
    );
    await hostile.whenNoneOpen();
    const d = delta(before, await snapshot());
    assert.equal(d.rejected.upstreamQueue, byStatus.get(503));
    assert.equal(d.timeouts.upstreamResponse, byStatus.get(504));
  });

  it("lets a route's own timeouts override the table's", { timeout: TEST_TIMEOUT_MS }, async () => {
    const lazy = later(await startUpstream("lazy-11", (_req, res) => setTimeout(() => res.writeHead(200).end("late"), 500)));
    await apply(
      proxySettings({ timeouts: { upstreamResponseMs: 3_000 } }),
      route("lazy", "lazy:strict", [lazy.upstream], { pathPrefix: "/strict", timeouts: { upstreamResponseMs: 200 } }),
      route("lazy", "lazy:patient", [lazy.upstream], { pathPrefix: "/patient" }),
    );
    const { value: strict, elapsedMs } = await timed(() => request(`${p.base}/strict`));
    assert.equal(strict.status, 504);
    assert.ok(elapsedMs < 200 + LATE_MS, `answered after ${Math.round(elapsedMs)} ms`);
    const patient = await request(`${p.base}/patient`);
    assert.equal(patient.status, 200);
    assert.equal(patient.text, "late");
  });

  it("takes new settings with each table", { timeout: TEST_TIMEOUT_MS }, async () => {
    const lazy = later(await startUpstream("lazy-12", (_req, res) => setTimeout(() => res.writeHead(200).end("late"), 400)));
    const r = route("lazy12", "lazy12:1", [lazy.upstream]);
    await apply(proxySettings({ timeouts: { upstreamResponseMs: 2_000 } }), r);
    assert.equal((await request(`${p.base}/a`)).status, 200);
    await apply(proxySettings({ timeouts: { upstreamResponseMs: 150 } }), r);
    assert.equal((await request(`${p.base}/b`)).status, 504);
    await apply(proxySettings({ limits: { maxUpstreamConnections: 1, upstreamQueueMs: 100 } }), r);
    const both = await Promise.all([request(`${p.base}/c`), request(`${p.base}/d`)]);
    assert.deepEqual(both.map((x) => x.status).sort(), [200, 503]);
    // Back to a table without settings: the defaults, under which both fit at once.
    await p.proxy.apply({ version: ++version, routes: [r] });
    const again = await Promise.all([request(`${p.base}/e`), request(`${p.base}/f`)]);
    assert.deepEqual(again.map((x) => x.status), [200, 200]);
  });
});
