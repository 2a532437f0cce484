// A request whose route has no instance in rotation waits briefly for a new table or an instance
// back instead of failing at once: a revert or a replacement that lands within upstream_queue
// costs the client latency, not an error.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type TestProxy, type TestUpstream, json, request, route, sleep, startTestProxy, startUpstream, tableWith } from "./helpers.js";

const QUEUE_MS = 600;

describe("proxy: no healthy instance", { timeout: 30_000 }, () => {
  let p: TestProxy;
  let a: TestUpstream;
  let b: TestUpstream;
  let version = 0;
  const apply = (...routes: Parameters<typeof route>[]) =>
    p.proxy.apply(tableWith(++version, { limits: { upstreamQueueMs: QUEUE_MS } }, ...routes.map((r) => route(...r))));

  before(async () => {
    p = await startTestProxy();
    a = await startUpstream("a");
    b = await startUpstream("b");
  });
  after(async () => {
    await p.close();
    await a.close();
    await b.close();
  });

  it("waits for the instance to come back, then serves it", async () => {
    await apply(["svc", "svc:a", [a.upstream]]);
    await p.proxy.setUpstreamHealth("a", false);
    const started = performance.now();
    const pending = request(`${p.base}/x`);
    await sleep(150);
    await p.proxy.setUpstreamHealth("a", true);
    const reply = await pending;
    assert.equal(reply.status, 200);
    assert.equal(json<{ id: string }>(reply).id, "a");
    assert.ok(performance.now() - started >= 140, "it waited for the mark");
  });

  it("is routed afresh by a new table that arrives while it waits", async () => {
    await apply(["svc", "svc:a", [a.upstream]]);
    await p.proxy.setUpstreamHealth("a", false);
    const pending = request(`${p.base}/x`);
    await sleep(100);
    await apply(["svc", "svc:b", [b.upstream]]);
    const reply = await pending;
    assert.equal(reply.status, 200);
    assert.equal(json<{ id: string }>(reply).id, "b");
    await p.proxy.setUpstreamHealth("a", true);
  });

  it("answers 503 once upstream_queue ran out with nothing back", async () => {
    await apply(["svc", "svc:a", [a.upstream]]);
    await p.proxy.setUpstreamHealth("a", false);
    const started = performance.now();
    const reply = await request(`${p.base}/x`);
    const waited = performance.now() - started;
    assert.equal(reply.status, 503);
    assert.equal(json<{ error: string }>(reply).error, "no healthy instance");
    assert.ok(waited >= QUEUE_MS - 20, `waited ${Math.round(waited)} ms`);
    await p.proxy.setUpstreamHealth("a", true);
  });

  it("a GET that every instance of its pool resets before answering waits for a new table, and is served by it", async () => {
    // A release whose instances crash together on this request (bench:revert's case).
    const crashing = await Promise.all(["c1", "c2"].map((id) => startUpstream(id, (req) => req.socket.destroy())));
    try {
      await apply(["svc", "svc:c", crashing.map((c) => c.upstream)]);
      const pending = request(`${p.base}/x`);
      while (crashing[0]!.hits + crashing[1]!.hits < 2) await sleep(10);
      await sleep(50);
      // The agent's revert.
      await apply(["svc", "svc:b", [b.upstream]]);
      const reply = await pending;
      assert.equal(reply.status, 200, reply.text);
      assert.equal(json<{ id: string }>(reply).id, "b");
      // A POST with a body is never sent twice: the instance may have acted on it.
      await apply(["svc", "svc:c", crashing.map((c) => c.upstream)]);
      for (const c of crashing) await p.proxy.setUpstreamHealth(c.upstream.id, true);
      const post = await request(`${p.base}/x`, { method: "POST", body: "order=1" });
      assert.equal(post.status, 502, post.text);
    } finally {
      for (const c of crashing) await c.close();
    }
  });

  it("a client that leaves while it waits leaves nothing behind", async () => {
    await apply(["svc", "svc:a", [a.upstream]]);
    await p.proxy.setUpstreamHealth("a", false);
    const hitsBefore = a.hits;
    const ac = new AbortController();
    const pending = fetch(`${p.base}/x`, { signal: ac.signal }).catch((e: unknown) => e);
    await sleep(100);
    ac.abort();
    await pending;
    await p.proxy.setUpstreamHealth("a", true);
    await sleep(50);
    assert.equal(a.hits, hitsBefore, "the abandoned request never reached the instance");
  });
});
