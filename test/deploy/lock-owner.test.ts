// Deploy locks of dead agents on this host are released at start; entries left "running" are closed.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { closeOrphanHistory, ownerAgent, ownerIsDeadHere, releaseDeadOwners } from "../../src/deploy/lock-owner.js";
import { keys } from "../../src/deploy/records.js";
import { MemoryStore } from "../../src/state/memory.js";

const HERE = { host: "box", pid: 100 };

describe("lock owners", () => {
  it("reads the agent from every owner string the agent writes", () => {
    assert.deepEqual(ownerAgent("ci (deploy v2, agent box:4242, #abc123)"), { host: "box", pid: 4242 });
    assert.deepEqual(ownerAgent("agent box:4242 (healing books blue)"), { host: "box", pid: 4242 });
    assert.deepEqual(ownerAgent("agent box:4242 (warm expiry)"), { host: "box", pid: 4242 });
    assert.equal(ownerAgent("someone by hand"), undefined);
  });

  it("dead only when on this host, not us, and gone", () => {
    const gone = () => false;
    assert.equal(ownerIsDeadHere("agent box:4242 (x)", HERE, gone), true);
    assert.equal(ownerIsDeadHere("agent other:4242 (x)", HERE, gone), false, "another host's agent may be alive");
    assert.equal(ownerIsDeadHere("agent box:100 (x)", HERE, gone), false, "our own lock");
    assert.equal(ownerIsDeadHere("agent box:4242 (x)", HERE, () => true), false, "a living owner keeps its lock");
  });

  it("releases a dead owner's lock at once, and leaves others", async () => {
    const store = new MemoryStore();
    // A pid that cannot exist (above pid_max) stands for the dead agent.
    await store.acquireLock(keys.lock("books"), "ci (deploy v2, agent box:99999999, #a)", 30_000);
    await store.acquireLock(keys.lock("shop"), "ci (deploy v2, agent elsewhere:99999999, #b)", 30_000);
    const notes: string[] = [];
    const released = await releaseDeadOwners(store, ["books", "shop"], (_s, type) => notes.push(type), HERE);
    assert.deepEqual(released, ["books"]);
    assert.equal(await store.getLock(keys.lock("books")), undefined);
    assert.ok(await store.getLock(keys.lock("shop")));
    assert.deepEqual(notes, ["lock.released"]);
  });

  it("closes history entries left running without a journal, unless a lock is held", async () => {
    const store = new MemoryStore();
    const entry = { kind: "deploy" as const, release: "v2", previousRelease: "v1", via: null, actor: "ci", startedAt: 1, finishedAt: null, outcome: "running" as const, plan: [], steps: [], error: null };
    const orphan = await store.addHistory({ ...entry, service: "books" });
    const busy = await store.addHistory({ ...entry, service: "shop" });
    await store.acquireLock(keys.lock("shop"), "agent box:100 (x)", 30_000);
    assert.equal(await closeOrphanHistory(store, ["books", "shop"], [], () => undefined), 1);
    const [h] = await store.listHistory("books");
    assert.equal(h!.id, orphan.id);
    assert.equal(h!.outcome, "aborted");
    assert.match(h!.error!, /interrupted/);
    assert.equal((await store.listHistory("shop"))[0]!.id, busy.id);
    assert.equal((await store.listHistory("shop"))[0]!.outcome, "running", "a flow that holds its lock may still finish it");
  });
});
