// The deploy lock: renewal notices a lost lock, a step boundary refuses to go on, and the fenced
// Store refuses every write once the lock is another's or ran out.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { DeployLock, isLockLost } from "../../src/deploy/lock.js";
import { keys } from "../../src/deploy/records.js";
import { MemoryStore } from "../../src/state/memory.js";

function setup() {
  const store = new MemoryStore();
  const events: Array<{ type: string; message: string }> = [];
  return { store, events, event: (_service: string | null, type: string, message: string) => void events.push({ type, message }) };
}

describe("deploy lock", () => {
  it("is refused to a second flow, naming the holder", async () => {
    const { store, event } = setup();
    const lock = await DeployLock.take(store, event, "books", "flow-a");
    await assert.rejects(DeployLock.take(store, event, "books", "flow-b"), { code: "LOCKED", message: /held by flow-a/ });
    assert.equal(await DeployLock.tryTake(store, event, "books", "flow-b"), undefined);
    await lock.release();
    const next = await DeployLock.tryTake(store, event, "books", "flow-b");
    assert.ok(next);
    await next.release();
  });

  it("is renewed while held, so it outlives its TTL", async () => {
    const { store, event } = setup();
    const lock = await DeployLock.take(store, event, "books", "flow-a", { ttlMs: 90 });
    await sleep(200);
    assert.equal(lock.lost, undefined);
    await lock.check();
    assert.equal((await store.getLock(keys.lock("books")))?.owner, "flow-a");
    await lock.release();
  });

  it("renewal notices that another took the lock: an event, and the next boundary refuses", async () => {
    const { store, events, event } = setup();
    const lock = await DeployLock.take(store, event, "books", "flow-a", { ttlMs: 60 });
    await store.releaseLock(keys.lock("books"), "flow-a");
    await store.acquireLock(keys.lock("books"), "thief", 10_000);
    await sleep(60);
    assert.match(lock.lost ?? "", /thief holds it/);
    assert.deepEqual(events.map((e) => e.type), ["lock.lost"]);
    await assert.rejects(lock.check(), (e) => isLockLost(e) && /thief holds it/.test((e as Error).message));
    await lock.release();
    assert.equal((await store.getLock(keys.lock("books")))?.owner, "thief", "releasing a lost lock leaves the successor's alone");
  });

  it("a blocked event loop past the TTL (a long synchronous migration) loses the lock; the fenced write after it is refused", async () => {
    const { store, event, events } = setup();
    const lock = await DeployLock.take(store, event, "books", "flow-a", { ttlMs: 40 });
    const fenced = lock.fencedStore();
    assert.ok((await fenced.put(keys.journal("books"), "before")).ok);
    const until = Date.now() + 80;
    while (Date.now() < until) { /* a synchronous migration step */ }
    await assert.rejects(fenced.put(keys.journal("books"), "after"), { code: "LOCK_LOST", message: /expired before it was renewed/ });
    assert.equal((await store.get(keys.journal("books")))?.value, "before");
    assert.equal(events.filter((e) => e.type === "lock.lost").length, 1);
    await lock.release();
  });

  it("fences history writes too", async () => {
    const { store, event } = setup();
    const lock = await DeployLock.take(store, event, "books", "flow-a");
    const fenced = lock.fencedStore();
    const entry = await fenced.addHistory({
      service: "books", kind: "deploy", release: "v2", previousRelease: null, via: null, actor: "t", startedAt: 1, finishedAt: null, outcome: "running", plan: [], steps: [], error: null,
    });
    await store.releaseLock(keys.lock("books"), "flow-a");
    await store.acquireLock(keys.lock("books"), "thief", 10_000);
    await assert.rejects(fenced.updateHistory(entry.id, { outcome: "failed" }), { code: "LOCK_LOST", message: /thief holds it/ });
    assert.equal((await store.listHistory("books"))[0]?.outcome, "running");
    await lock.release();
  });
});
