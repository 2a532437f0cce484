// The Store contract as tests. Every driver calls runStoreContract; a driver is done when it passes.

import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { LockResult, NewHistoryEntry, Store, WatchEvent } from "../../src/state/contract.js";

export type MakeStore = () => Promise<{ store: Store; cleanup: () => Promise<void> }>;

/**
 * Waits until check passes; watch delivery is asynchronous, so tests poll rather than guess a delay.
 * The bound only ends a wait for what never comes: under a loaded CI machine an etcd watch took over 1 s.
 */
async function eventually(check: () => void, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      check();
      return;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(5);
    }
  }
}

/**
 * Takes a lock for ttlMs and runs step at once; returns the step's result only if the lock cannot
 * have run out before the step ended (less than ttlMs since before the take), else tries again. A
 * loaded machine may stall past any TTL between two calls: what the step saw then proves nothing
 * of a held lock, while a step that ends in time must see it held.
 */
async function whileSurelyHeld<T>(take: (ttlMs: number) => Promise<{ ok: boolean }>, ttlMs: number, step: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const t0 = Date.now();
    assert.ok((await take(ttlMs)).ok, "the lock is free to take");
    const result = await step();
    if (Date.now() - t0 < ttlMs) return result;
    if (attempt === 5) throw new Error(`five tries each ran past the lock's ${ttlMs}ms TTL: the machine is too loaded to tell`);
    await sleep(ttlMs);
  }
}

function historyEntry(overrides: Partial<NewHistoryEntry> = {}): NewHistoryEntry {
  return {
    service: "web",
    kind: "deploy",
    release: "v2",
    previousRelease: "v1",
    via: null,
    actor: "alice",
    startedAt: 1_700_000_000_000,
    finishedAt: null,
    outcome: "running",
    plan: ["start green", "flip"],
    steps: [],
    error: null,
    ...overrides,
  };
}

export function runStoreContract(name: string, makeStore: MakeStore): void {
  describe(`Store contract: ${name}`, () => {
    let store: Store;
    let cleanup: () => Promise<void>;

    beforeEach(async () => {
      ({ store, cleanup } = await makeStore());
    });

    afterEach(async () => {
      await cleanup();
    });

    describe("key/value", () => {
      it("gets what was put, with its revisions", async () => {
        assert.equal(await store.get("services/web/color"), undefined);
        const w = await store.put("services/web/color", "blue");
        assert.deepEqual(await store.get("services/web/color"), {
          key: "services/web/color",
          value: "blue",
          createRevision: w.revision,
          modRevision: w.revision,
        });
      });

      it("keeps createRevision and moves modRevision on overwrite", async () => {
        const first = await store.put("k", "1");
        const second = await store.put("k", "2");
        assert.deepEqual(await store.get("k"), {
          key: "k",
          value: "2",
          createRevision: first.revision,
          modRevision: second.revision,
        });
      });

      it("lists keys under a prefix, sorted by key", async () => {
        await store.put("services/web/color", "blue");
        await store.put("services/api/color", "green");
        await store.put("services/api/release", "v3");
        await store.put("servicesX", "not under the prefix");
        await store.put("locks/web", "x");
        const listed = await store.list("services/");
        assert.deepEqual(
          listed.map((kv) => [kv.key, kv.value]),
          [
            ["services/api/color", "green"],
            ["services/api/release", "v3"],
            ["services/web/color", "blue"],
          ],
        );
      });

      it("lists everything for an empty prefix and nothing for an unknown one", async () => {
        await store.put("b", "2");
        await store.put("a", "1");
        assert.deepEqual((await store.list("")).map((kv) => kv.key), ["a", "b"]);
        assert.deepEqual(await store.list("nope/"), []);
      });

      it("treats the prefix literally, never as a pattern", async () => {
        await store.put("a*b/1", "star");
        await store.put("axb/1", "x");
        await store.put("a?b/1", "question");
        await store.put("a[b]/1", "bracket");
        await store.put("a%b/1", "percent");
        await store.put("A*B/1", "upper");
        assert.deepEqual((await store.list("a*b/")).map((kv) => kv.value), ["star"]);
        assert.deepEqual((await store.list("a?b/")).map((kv) => kv.value), ["question"]);
        assert.deepEqual((await store.list("a[b]/")).map((kv) => kv.value), ["bracket"]);
        assert.deepEqual((await store.list("a%")).map((kv) => kv.value), ["percent"]);
      });

      it("sorts keys by their UTF-8 bytes", async () => {
        // U+FF5E sorts before U+1F600 in UTF-8 but after it in UTF-16: the drivers must agree on one.
        await store.put("k/\u{1F600}", "emoji");
        await store.put("k/\uFF5E", "fullwidth tilde");
        await store.put("k/Z", "ascii");
        assert.deepEqual((await store.list("k/")).map((kv) => kv.value), ["ascii", "fullwidth tilde", "emoji"]);
      });

      it("deletes a key", async () => {
        await store.put("k", "v");
        const d = await store.delete("k");
        assert.equal(d.ok, true);
        assert.equal(await store.get("k"), undefined);
        assert.deepEqual(await store.list("k"), []);
      });

      it("gives a re-created key a new createRevision", async () => {
        await store.put("k", "1");
        await store.delete("k");
        const again = await store.put("k", "2");
        assert.equal((await store.get("k"))?.createRevision, again.revision);
      });

      it("returns copies, so callers cannot change stored data by mutating results", async () => {
        await store.put("k", "v");
        const kv = (await store.get("k"))!;
        kv.value = "mutated";
        assert.equal((await store.get("k"))?.value, "v");
      });
    });

    describe("revisions", () => {
      it("start at zero", async () => {
        assert.equal(await store.revision(), 0);
      });

      it("grow by exactly one per write and are reported by revision()", async () => {
        const start = await store.revision();
        const a = await store.put("a", "1");
        assert.equal(a.revision, start + 1);
        const b = await store.put("b", "1");
        assert.equal(b.revision, start + 2);
        const c = await store.put("a", "2");
        assert.equal(c.revision, start + 3);
        const d = await store.delete("b");
        assert.equal(d.revision, start + 4);
        assert.equal(await store.revision(), start + 4);
      });

      it("do not move for a delete of a missing key or a failed compare-and-set", async () => {
        await store.put("a", "1");
        const before = await store.revision();
        const d = await store.delete("missing");
        assert.deepEqual(d, { ok: true, revision: before });
        const lost = await store.put("a", "2", { prevRevision: before + 100 });
        assert.equal(lost.ok, false);
        assert.equal(lost.revision, before);
        assert.equal(await store.revision(), before);
      });
    });

    describe("compare-and-set", () => {
      it("writes when prevRevision matches the key's modRevision", async () => {
        const w = await store.put("services/web/color", "blue");
        const r = await store.put("services/web/color", "green", { prevRevision: w.revision });
        assert.equal(r.ok, true);
        assert.equal((await store.get("services/web/color"))?.value, "green");
      });

      it("refuses a stale prevRevision and reports the current value", async () => {
        const first = await store.put("services/web/color", "blue");
        const second = await store.put("services/web/color", "green");
        const r = await store.put("services/web/color", "red", { prevRevision: first.revision });
        assert.deepEqual(r, {
          ok: false,
          revision: second.revision,
          current: { key: "services/web/color", value: "green", createRevision: first.revision, modRevision: second.revision },
        });
        assert.equal((await store.get("services/web/color"))?.value, "green");
      });

      it("refuses a prevRevision for a key that does not exist", async () => {
        const r = await store.put("missing", "v", { prevRevision: 1 });
        assert.equal(r.ok, false);
        assert.equal(r.ok === false && r.current, undefined);
        assert.equal(await store.get("missing"), undefined);
      });

      it("treats prevRevision 0 as create-only", async () => {
        const created = await store.put("k", "first", { prevRevision: 0 });
        assert.equal(created.ok, true);
        const again = await store.put("k", "second", { prevRevision: 0 });
        assert.equal(again.ok, false);
        assert.equal(again.ok === false && again.current?.value, "first");
        assert.equal((await store.get("k"))?.value, "first");
      });

      it("deletes only when prevRevision matches", async () => {
        const first = await store.put("k", "1");
        const second = await store.put("k", "2");
        const stale = await store.delete("k", { prevRevision: first.revision });
        assert.equal(stale.ok, false);
        assert.equal(stale.ok === false && stale.current?.value, "2");
        assert.equal((await store.get("k"))?.value, "2");
        const fresh = await store.delete("k", { prevRevision: second.revision });
        assert.deepEqual(fresh, { ok: true, revision: second.revision + 1 });
        assert.equal(await store.get("k"), undefined);
      });

      it("lets exactly one of two racing create-only writers win", async () => {
        const results = await Promise.all([
          store.put("leader", "a", { prevRevision: 0 }),
          store.put("leader", "b", { prevRevision: 0 }),
        ]);
        assert.equal(results.filter((r) => r.ok).length, 1);
      });
    });

    describe("watch", () => {
      it("sees puts and deletes under its prefix only, in order", async () => {
        const seen: WatchEvent[] = [];
        const stop = store.watch("services/web/", (e) => seen.push(e));
        const p1 = await store.put("services/web/color", "blue");
        await store.put("services/api/color", "green");
        await store.put("services/webshop/color", "green");
        const p2 = await store.put("services/web/release", "v2");
        const d1 = await store.delete("services/web/color");
        await eventually(() => assert.equal(seen.length, 3));
        await sleep(20);
        assert.deepEqual(seen, [
          { type: "put", key: "services/web/color", value: "blue", revision: p1.revision },
          { type: "put", key: "services/web/release", value: "v2", revision: p2.revision },
          { type: "delete", key: "services/web/color", revision: d1.revision },
        ]);
        stop();
      });

      it("reports nothing for failed compare-and-set writes or deletes of missing keys", async () => {
        const seen: WatchEvent[] = [];
        const stop = store.watch("", (e) => seen.push(e));
        await store.put("k", "v", { prevRevision: 5 });
        await store.delete("missing");
        const marker = await store.put("marker", "m");
        await eventually(() => assert.equal(seen.length, 1));
        assert.deepEqual(seen, [{ type: "put", key: "marker", value: "m", revision: marker.revision }]);
        stop();
      });

      it("stops after unsubscribe", async () => {
        const seen: WatchEvent[] = [];
        const stop = store.watch("k", (e) => seen.push(e));
        await store.put("k", "1");
        await eventually(() => assert.equal(seen.length, 1));
        stop();
        await store.put("k", "2");
        await store.delete("k");
        await sleep(30);
        assert.equal(seen.length, 1);
      });

      it("lets several watchers see the same change", async () => {
        const a: WatchEvent[] = [];
        const b: WatchEvent[] = [];
        const stopA = store.watch("k", (e) => a.push(e));
        const stopB = store.watch("", (e) => b.push(e));
        await store.put("k", "v");
        await eventually(() => {
          assert.equal(a.length, 1);
          assert.equal(b.length, 1);
        });
        stopA();
        stopB();
      });

      it("replays changes after fromRevision, then continues live", async () => {
        await store.put("services/web/color", "blue");
        const from = await store.revision();
        const missed1 = await store.put("services/web/color", "green");
        await store.put("services/api/color", "blue");
        const missed2 = await store.delete("services/web/color");

        const seen: WatchEvent[] = [];
        const stop = store.watch("services/web/", (e) => seen.push(e), { fromRevision: from });
        const live = await store.put("services/web/release", "v3");
        await eventually(() => assert.equal(seen.length, 3));
        await sleep(20);
        assert.deepEqual(seen, [
          { type: "put", key: "services/web/color", value: "green", revision: missed1.revision },
          { type: "delete", key: "services/web/color", revision: missed2.revision },
          { type: "put", key: "services/web/release", value: "v3", revision: live.revision },
        ]);
        stop();
      });

      it("replays nothing when fromRevision is the current revision", async () => {
        await store.put("k", "old");
        const seen: WatchEvent[] = [];
        const stop = store.watch("k", (e) => seen.push(e), { fromRevision: await store.revision() });
        const live = await store.put("k", "new");
        await eventually(() => assert.equal(seen.length, 1));
        assert.deepEqual(seen, [{ type: "put", key: "k", value: "new", revision: live.revision }]);
        stop();
      });

      it("does not deliver replayed events once stopped", async () => {
        await store.put("k", "1");
        const seen: WatchEvent[] = [];
        const stop = store.watch("k", (e) => seen.push(e), { fromRevision: 0 });
        stop();
        await sleep(20);
        assert.deepEqual(seen, []);
      });
    });

    describe("locks", () => {
      it("are taken by one owner and refused to another, who is told the holder", async () => {
        const before = Date.now();
        const mine = await store.acquireLock("deploy/web", "agent-a", 10_000);
        assert.equal(mine.ok, true);
        assert.ok(mine.ok && mine.lock.since >= before && mine.lock.expiresAt >= mine.lock.since + 10_000);

        const theirs = await store.acquireLock("deploy/web", "agent-b", 10_000);
        assert.equal(theirs.ok, false);
        assert.ok(!theirs.ok && mine.ok);
        assert.equal(theirs.holder.owner, "agent-a");
        assert.equal(theirs.holder.name, "deploy/web");
        assert.equal(theirs.holder.since, mine.lock.since);
      });

      it("keep separate names apart", async () => {
        assert.equal((await store.acquireLock("deploy/web", "a", 10_000)).ok, true);
        assert.equal((await store.acquireLock("deploy/api", "b", 10_000)).ok, true);
      });

      it("can be re-taken by their owner, keeping since and extending expiry", async () => {
        // TTLs no stall of a loaded machine outlasts: the lock must still be held when it is taken again.
        const first = await store.acquireLock("deploy/web", "agent-a", 60_000);
        await sleep(5);
        const again = await store.acquireLock("deploy/web", "agent-a", 120_000);
        assert.ok(first.ok && again.ok);
        assert.equal(again.lock.since, first.lock.since);
        assert.ok(again.lock.expiresAt > first.lock.expiresAt);
      });

      it("are reported by getLock while held", async () => {
        assert.equal(await store.getLock("deploy/web"), undefined);
        const taken = await store.acquireLock("deploy/web", "agent-a", 10_000);
        assert.ok(taken.ok);
        assert.deepEqual(await store.getLock("deploy/web"), taken.lock);
      });

      it("can be renewed by their owner only", async () => {
        const taken = await store.acquireLock("deploy/web", "agent-a", 60_000);
        assert.ok(taken.ok);
        assert.equal(await store.renewLock("deploy/web", "agent-b", 120_000), false);
        assert.equal(await store.renewLock("deploy/web", "agent-a", 120_000), true);
        const held = await store.getLock("deploy/web");
        assert.equal(held?.owner, "agent-a");
        assert.ok(held && held.expiresAt >= taken.lock.since + 120_000);
        assert.equal(await store.renewLock("missing", "agent-a", 1_000), false);
      });

      it("are released by their owner only", async () => {
        await store.acquireLock("deploy/web", "agent-a", 10_000);
        assert.equal(await store.releaseLock("deploy/web", "agent-b"), false);
        assert.equal((await store.getLock("deploy/web"))?.owner, "agent-a");
        assert.equal(await store.releaseLock("deploy/web", "agent-a"), true);
        assert.equal(await store.getLock("deploy/web"), undefined);
        assert.equal(await store.releaseLock("deploy/web", "agent-a"), false);
        assert.equal((await store.acquireLock("deploy/web", "agent-b", 10_000)).ok, true);
      });

      it("expire: then getLock is empty, renew fails and another owner may take them", async () => {
        let taken!: LockResult;
        const refused = await whileSurelyHeld(async (ttl) => (taken = await store.acquireLock("deploy/web", "agent-a", ttl)), 300, () => store.acquireLock("deploy/web", "agent-b", 300));
        assert.equal(refused.ok, false, "another owner took a lock still held");
        assert.ok(taken.ok);
        await sleep(450);
        assert.equal(await store.getLock("deploy/web"), undefined);
        assert.equal(await store.renewLock("deploy/web", "agent-a", 10_000), false);
        const theirs = await store.acquireLock("deploy/web", "agent-b", 10_000);
        assert.ok(theirs.ok);
        assert.equal(theirs.lock.owner, "agent-b");
        assert.ok(theirs.lock.since > taken.lock.since);
        assert.equal((await store.getLock("deploy/web"))?.owner, "agent-b");
      });

      it("taken again by the same owner after expiry start a new since", async () => {
        const first = await store.acquireLock("deploy/web", "agent-a", 30);
        await sleep(60);
        const again = await store.acquireLock("deploy/web", "agent-a", 10_000);
        assert.ok(first.ok && again.ok);
        assert.ok(again.lock.since > first.lock.since);
      });
    });

    describe("fences", () => {
      const fence = { lock: "deploy/web", owner: "flow-a" };

      it("let a write through while the lock is held by the fence's owner", async () => {
        assert.ok((await store.acquireLock("deploy/web", "flow-a", 10_000)).ok);
        const put = await store.put("slot", "green", { fence });
        assert.ok(put.ok);
        assert.ok((await store.delete("slot", { fence })).ok);
        const added = await store.addHistory(historyEntry(), { fence });
        assert.equal((await store.updateHistory(added.id, { outcome: "succeeded" }, { fence })).outcome, "succeeded");
      });

      it("refuse a write, as a value, once another owner holds the lock; nothing changes", async () => {
        await store.put("slot", "blue");
        const before = await store.revision();
        assert.ok((await store.acquireLock("deploy/web", "flow-b", 10_000)).ok);
        assert.deepEqual(await store.put("slot", "green", { fence }), { ok: false, revision: before, fenced: true });
        assert.deepEqual(await store.delete("slot", { fence }), { ok: false, revision: before, fenced: true });
        assert.equal((await store.get("slot"))?.value, "blue");
        assert.equal(await store.revision(), before);
      });

      it("refuse a write when the lock is free or ran out", async () => {
        assert.equal((await store.put("slot", "green", { fence })).ok, false);
        // A loaded machine can outrun any short TTL between two calls (40 ms once did, and 1 s may):
        // the write must pass only when it surely came in time; then a wait well past the TTL.
        const put = await whileSurelyHeld((ttl) => store.acquireLock("deploy/web", "flow-a", ttl), 500, () => store.put("slot", "green", { fence }));
        assert.ok(put.ok, "a write within its lock's TTL was refused");
        await sleep(750);
        const late = await store.put("slot", "blue", { fence });
        assert.equal(late.ok, false);
        assert.equal(!late.ok && late.fenced, true);
        assert.equal((await store.get("slot"))?.value, "green");
      });

      it("are checked before compare-and-set", async () => {
        const r = await store.put("slot", "green", { prevRevision: 0, fence });
        assert.equal(!r.ok && r.fenced, true);
        assert.equal(await store.get("slot"), undefined);
      });

      it("refuse history writes with a LOCK_LOST error, changing nothing", async () => {
        const added = await store.addHistory(historyEntry());
        assert.ok((await store.acquireLock("deploy/web", "flow-b", 10_000)).ok);
        await assert.rejects(store.addHistory(historyEntry({ release: "v9" }), { fence }), { code: "LOCK_LOST" });
        await assert.rejects(store.updateHistory(added.id, { outcome: "failed" }, { fence }), { code: "LOCK_LOST" });
        assert.deepEqual(await store.listHistory("web"), [added]);
      });

      it("produce no watch event when they refuse", async () => {
        const seen: WatchEvent[] = [];
        const stop = store.watch("", (e) => seen.push(e));
        await store.put("slot", "green", { fence });
        await store.put("other", "x");
        await eventually(() => assert.deepEqual(seen.map((e) => e.key), ["other"]));
        stop();
      });
    });

    describe("history", () => {
      it("adds an entry with an id and returns it whole", async () => {
        const entry = historyEntry();
        const added = await store.addHistory(entry);
        assert.equal(typeof added.id, "number");
        assert.deepEqual(added, { ...entry, id: added.id });
      });

      it("updates an entry, keeping the fields the patch leaves out", async () => {
        const added = await store.addHistory(historyEntry());
        const steps = [{ name: "flip", startedAt: 1_700_000_000_500, durationMs: 12, ok: true, detail: "blue → green" }];
        const updated = await store.updateHistory(added.id, { outcome: "succeeded", finishedAt: 1_700_000_001_000, steps });
        const expected = { ...added, outcome: "succeeded", finishedAt: 1_700_000_001_000, steps };
        assert.deepEqual(updated, expected);
        assert.deepEqual(await store.listHistory("web"), [expected]);
      });

      it("refuses to update an entry that does not exist", async () => {
        await assert.rejects(store.updateHistory(12345, { outcome: "failed" }), /12345/);
      });

      it("lists one service's entries newest first, with a limit", async () => {
        const a = await store.addHistory(historyEntry({ release: "v1" }));
        const other = await store.addHistory(historyEntry({ service: "api", release: "x1" }));
        const b = await store.addHistory(historyEntry({ release: "v2" }));
        const c = await store.addHistory(historyEntry({ release: "v3", kind: "rollback" }));
        assert.deepEqual((await store.listHistory("web")).map((h) => h.id), [c.id, b.id, a.id]);
        assert.deepEqual((await store.listHistory("web", 2)).map((h) => h.release), ["v3", "v2"]);
        assert.deepEqual(await store.listHistory("api"), [other]);
        assert.deepEqual(await store.listHistory("nobody"), []);
      });
    });

    describe("events", () => {
      it("appends events with growing ids and a timestamp", async () => {
        const before = Date.now();
        const e1 = await store.appendEvent({ service: "web", type: "deploy.started", message: "deploying v2", data: { release: "v2" } });
        const e2 = await store.appendEvent({ service: null, type: "agent.started", message: "agent up", data: {}, at: 42 });
        assert.ok(e2.id > e1.id);
        assert.ok(e1.at >= before && e1.at <= Date.now());
        assert.equal(e2.at, 42);
        assert.deepEqual(e1, { id: e1.id, at: e1.at, service: "web", type: "deploy.started", message: "deploying v2", data: { release: "v2" } });
        assert.deepEqual(await store.listEvents(), [e1, e2]);
      });

      it("lists events oldest first after an id, by service, with a limit", async () => {
        const ids: number[] = [];
        for (let i = 0; i < 6; i++) {
          const service = i % 2 === 0 ? "web" : "api";
          ids.push((await store.appendEvent({ service, type: "tick", message: `event ${i}`, data: { i } })).id);
        }
        assert.deepEqual((await store.listEvents({ afterId: ids[2] })).map((e) => e.id), ids.slice(3));
        assert.deepEqual((await store.listEvents({ service: "web" })).map((e) => e.data.i), [0, 2, 4]);
        assert.deepEqual((await store.listEvents({ limit: 2 })).map((e) => e.id), ids.slice(0, 2));
        assert.deepEqual(
          (await store.listEvents({ afterId: ids[0], service: "web", limit: 1 })).map((e) => e.message),
          ["event 2"],
        );
        assert.deepEqual(await store.listEvents({ afterId: ids[5] }), []);
      });

      it("keeps nested event data", async () => {
        const data = { instances: [{ id: "web-1", port: 4001 }], healthy: true, note: null };
        await store.appendEvent({ service: "web", type: "x", message: "m", data });
        assert.deepEqual((await store.listEvents())[0]?.data, data);
      });
    });

    describe("close", () => {
      it("rejects calls made after it", async () => {
        const stop = store.watch("", () => {});
        await store.close();
        await assert.rejects(store.get("k"));
        await assert.rejects(store.put("k", "v"));
        await assert.rejects(store.acquireLock("deploy/web", "agent-a", 1_000));
        stop();
      });
    });
  });
}
