// Deploy locks of a dead agent: released at once by the next agent on the same host, and only those.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { keys } from "../../src/deploy/records.js";
import { ownerAgent, releaseDeadAgentLocks } from "../../src/deploy/stale-locks.js";
import { MemoryStore } from "../../src/state/memory.js";

/** A pid that has just exited: no process has it (until the kernel hands it out again, long after this test). */
function deadPid(): number {
  return Number(spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" }).stdout);
}

describe("stale locks", () => {
  it("reads the agent from every owner format, the last one counting", () => {
    assert.deepEqual(ownerAgent("alice (deploy v2, agent h1:4242, #ab12cd)"), { host: "h1", pid: 4242 });
    assert.deepEqual(ownerAgent("agent h1:77 (warm expiry)"), { host: "h1", pid: 77 });
    assert.deepEqual(ownerAgent("agent h1:78 (healing books blue)"), { host: "h1", pid: 78 });
    assert.deepEqual(ownerAgent("agent evil:1 says hi (deploy v2, agent h1:4242, #ab12cd)"), { host: "h1", pid: 4242 });
    assert.equal(ownerAgent("ci"), undefined);
  });

  it("releases a lock whose agent on this host is gone; keeps a live agent's, another host's and one naming none", async () => {
    const store = new MemoryStore();
    const self = { host: "h1", pid: 1_000_000_000 };
    const dead = deadPid();
    await store.acquireLock(keys.lock("books"), `alice (deploy v2, agent h1:${dead}, #aa)`, 30_000);
    await store.acquireLock(keys.lock("shop"), `bob (deploy v3, agent h1:${process.pid}, #bb)`, 30_000);
    await store.acquireLock(keys.lock("cart"), `carol (deploy v1, agent h2:${dead}, #cc)`, 30_000);
    await store.acquireLock(keys.lock("auth"), "someone by hand", 30_000);
    const released = await releaseDeadAgentLocks(store, ["books", "shop", "cart", "auth", "none"], self);
    assert.deepEqual(released.map((r) => r.service), ["books"]);
    assert.equal(await store.getLock(keys.lock("books")), undefined);
    for (const svc of ["shop", "cart", "auth"]) assert.ok(await store.getLock(keys.lock(svc)), svc);
  });
});
