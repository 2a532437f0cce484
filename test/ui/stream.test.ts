// The event stream as the dashboard reads it: each running flow's progress, "changed" when the
// registry's index moves, and the proxy's counters with ?stats=1; for the admin and read scopes
// only, never for the registry token that every instance holds.
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, it } from "node:test";
import { startHarness, type Harness } from "../api/harness.js";
import { MAX_STREAMS_PER_TOKEN } from "../../src/api/events.js";

/** Opens the stream with a token and collects its messages until told to stop. */
function openStream(h: Harness, token: string, query = ""): Promise<{ text: () => string; close: () => void }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port: h.port, path: `/v1/events/stream${query}`, agent: false, headers: { authorization: `Bearer ${token}` } }, (res) => {
      assert.equal(res.statusCode, 200);
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (text += c));
      res.once("data", () => resolve({ text: () => text, close: () => req.destroy() }));
    });
    req.on("error", (e) => { if ((e as NodeJS.ErrnoException).code !== "ECONNRESET") reject(e); });
  });
}

async function until(what: string, fn: () => boolean): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (fn()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`never saw ${what}`);
}

describe("the dashboard's live feed on the event stream", () => {
  let h: Harness;
  let readToken: string;
  before(async () => {
    h = await startHarness();
    readToken = (JSON.parse((await h.call("POST", "/v1/tokens", { body: JSON.stringify({ read: true }) })).body) as { token: string }).token;
  });
  after(async () => h.close());

  it("the admin and read scopes get flow progress, 'changed' and, when asked, the proxy's counters; the registry token gets none of them", async () => {
    const admin = await openStream(h, h.adminToken, "?stats=1");
    const read = await openStream(h, readToken, "?stats=1");
    const registry = await openStream(h, h.registryToken, "?stats=1");
    try {
      h.registry.publishProgress({ service: "books", kind: "deploy", at: Date.now(), progress: { type: "step", name: "healthy", status: "started" } });
      await h.store.put("config/banner", "hello");
      for (const s of [admin, read]) {
        await until("progress", () => s.text().includes('event: progress\ndata: {"service":"books","kind":"deploy"'));
        await until("changed", () => /event: changed\ndata: \{"index":\d+\}/.test(s.text()));
        await until("stats", () => s.text().includes("event: stats\n"));
      }
      // The registry stream had the same chances: a stored event after them all proves it was reading.
      await h.store.appendEvent({ service: "books", type: "check.changed", message: "x", data: {} }).then((e) => h.registry.publish(e));
      await until("the registry's own event", () => registry.text().includes("event: check.changed"));
      assert.doesNotMatch(registry.text(), /event: (progress|changed|stats)/);
    } finally {
      for (const s of [admin, read, registry]) s.close();
    }
  });

  it("a burst of changes is one 'changed' message, not one per change", async () => {
    const s = await openStream(h, h.adminToken);
    try {
      for (let i = 0; i < 200; i++) h.registry.bump();
      await until("changed", () => s.text().includes("event: changed"));
      await new Promise((r) => setTimeout(r, 600));
      assert.ok(s.text().split("event: changed").length - 1 <= 2, s.text());
    } finally {
      s.close();
    }
  });

  it("50 dashboards asking for counters cost the proxy one call per interval, not one each", async () => {
    // The dashboards of three read tokens: one token holds at most MAX_STREAMS_PER_TOKEN streams.
    const tokens = await Promise.all([0, 1, 2].map(async () => (JSON.parse((await h.call("POST", "/v1/tokens", { body: JSON.stringify({ read: true }) })).body) as { token: string }).token));
    assert.ok(Math.ceil(50 / tokens.length) <= MAX_STREAMS_PER_TOKEN);
    let calls = 0;
    const proxy = h.agent.proxy as { stats: () => Promise<unknown> };
    const original = proxy.stats;
    proxy.stats = async () => {
      calls++;
      return { tableVersion: 1, pools: [{ poolId: "books/blue/v1/x", inFlight: 0, served: calls, failed: 0 }], requests: calls, upstreamErrors: 0, retries: 0 };
    };
    const streams = await Promise.all(Array.from({ length: 50 }, (_, i) => openStream(h, tokens[i % tokens.length]!, "?stats=1")));
    try {
      // Every stream gets two samples; sampling per stream would have called the proxy 100 times for them.
      await until("two samples on every stream", () => streams.every((s) => s.text().split("event: stats").length - 1 >= 2));
      assert.ok(calls <= 4, `${calls} proxy calls for 50 streams`);
    } finally {
      for (const s of streams) s.close();
      proxy.stats = original;
    }
  });

  it("without ?stats=1 no counters are sent", async () => {
    const s = await openStream(h, h.adminToken);
    try {
      h.registry.publishProgress({ service: "books", kind: "rollback", at: Date.now(), progress: { type: "info", message: "waiting" } });
      await until("progress", () => s.text().includes('"kind":"rollback"'));
      await new Promise((r) => setTimeout(r, 2_500));
      assert.doesNotMatch(s.text(), /event: stats/);
    } finally {
      s.close();
    }
  });
});
