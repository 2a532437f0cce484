// The leader election and the leader-fenced store, over the in-memory store (the same lock and
// fence contract etcd passes in the shared suite): one leader, followers that write nothing, a
// deposed leader whose every write is refused and logged, and hostile records that change nothing.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TurquoiseError } from "../../src/errors.js";
import { MemoryStore } from "../../src/state/memory.js";
import { Election, LEADER_LOCK, MEMBERS_PREFIX, SoleLeadership, type AgentAddress } from "../../src/state/leader.js";
import { LeaderStore } from "../../src/state/leader-store.js";

const TTL_MS = 2_000;

function address(n: number): AgentAddress {
  return { id: `host-${n}:${1000 + n}`, api: `http://127.0.0.1:${7000 + n}`, proxy: `127.0.0.1:${8000 + n}`, startedAt: Date.now() };
}

interface Candidate {
  election: Election;
  store: LeaderStore;
  refused: string[];
  lines: string[];
  elected: Promise<void>;
  deposed: Promise<string>;
}

function candidate(inner: MemoryStore, n: number): Candidate {
  const refused: string[] = [];
  const lines: string[] = [];
  const election = new Election(inner, address(n), { ttlMs: TTL_MS, log: (_level, type, message) => lines.push(`${type}: ${message}`) });
  let onElected!: () => void;
  let onDeposed!: (why: string) => void;
  const c: Candidate = {
    election, refused, lines,
    store: new LeaderStore(inner, election, (action, reason) => refused.push(`${action}: ${reason}`)),
    elected: new Promise((r) => (onElected = r)),
    deposed: new Promise((r) => (onDeposed = r)),
  };
  void election.start({ elected: async () => onElected(), deposed: (why) => onDeposed(why) });
  return c;
}

/** Agent host-9:9 holds the leader lock now, as after the holder's lease ran out and another took it. */
async function anotherLeads(inner: MemoryStore): Promise<void> {
  const lock = (await inner.getLock(LEADER_LOCK))!;
  assert.equal(await inner.releaseLock(LEADER_LOCK, lock.owner), true);
  assert.equal((await inner.acquireLock(LEADER_LOCK, "agent host-9:9 api http://127.0.0.1:7009 proxy 127.0.0.1:8009 term 9", 60_000)).ok, true);
}

async function rejectsWith(p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof TurquoiseError && e.code === code && message.test(e.message));
}

describe("leader election on the store's leader lock", () => {
  it("one leads; a follower's writes are refused with NOT_LEADER naming the leader's API, logged, and change nothing", async () => {
    const inner = new MemoryStore();
    const a = candidate(inner, 1);
    await a.elected;
    const b = candidate(inner, 2);
    await new Promise((r) => setTimeout(r, 100));
    try {
      assert.equal(a.election.isLeader, true);
      assert.equal(b.election.isLeader, false);
      assert.equal((await a.store.put("books/mode", "on")).ok, true);
      await rejectsWith(b.store.put("books/mode", "off"), "NOT_LEADER", /agent host-1:1001 at http:\/\/127\.0\.0\.1:7001/);
      await rejectsWith(b.store.delete("books/mode"), "NOT_LEADER", /leader/);
      await rejectsWith(b.store.addHistory({ service: "books", kind: "deploy", release: "v1", previousRelease: null, via: null, actor: "t", startedAt: 1, finishedAt: null, outcome: "running", plan: [], steps: [], error: null }), "NOT_LEADER", /leader/);
      await rejectsWith(b.store.acquireLock("deploy/books", "b", 10_000), "NOT_LEADER", /leader/);
      assert.equal((await inner.get("books/mode"))?.value, "on");
      assert.deepEqual(await inner.listHistory("books"), []);
      assert.equal(await inner.getLock("deploy/books"), undefined);
      assert.equal(b.refused.length, 4, b.refused.join("\n"));
      const view = await b.election.view();
      assert.equal(view.leader?.api, "http://127.0.0.1:7001");
      assert.deepEqual(view.agents.map((x) => `${x.id} ${x.role}`).sort(), ["host-1:1001 leader", "host-2:1002 follower"]);
    } finally {
      await b.election.stop();
      await a.election.stop();
    }
  });

  it("a leader that stops lets go: a follower leads at once, well before the TTL runs out", async () => {
    const inner = new MemoryStore();
    const a = candidate(inner, 1);
    await a.elected;
    const b = candidate(inner, 2);
    const stoppedAt = Date.now();
    await a.election.stop();
    await b.elected;
    try {
      // Without the release it would take the whole TTL (the lock's expiry).
      assert.ok(Date.now() - stoppedAt < TTL_MS, `took ${Date.now() - stoppedAt} ms`);
      assert.equal((await b.store.put("k", "v")).ok, true);
    } finally {
      await b.election.stop();
    }
  });

  it("a deposed leader (its lock taken while it could not renew) steps down, and its writes, fenced or not, are refused", async () => {
    const inner = new MemoryStore();
    const a = candidate(inner, 1);
    await a.elected;
    // A deploy lock taken while it led: its flow's writes carry that fence.
    assert.equal((await a.store.acquireLock("deploy/books", "flow-a", 30_000)).ok, true);
    // What a pause past the lease looks like to the store: the lock is someone else's.
    await anotherLeads(inner);
    // ...and the new leader breaks the deploy locks of the term before.
    assert.equal(await inner.releaseLock("deploy/books", "flow-a"), true);
    try {
      // Until its renewal notices, it still believes it leads: the store's fence is what refuses.
      await rejectsWith(a.store.put("books/mode", "stale"), "NOT_LEADER", /agent host-9:9 at http:\/\/127\.0\.0\.1:7009/);
      const fenced = await a.store.put("_turquoise/services/books/color", "green", { fence: { lock: "deploy/books", owner: "flow-a" } });
      assert.deepEqual([fenced.ok, !fenced.ok && fenced.fenced], [false, true]);
      assert.match(await a.deposed, /another agent holds the leader lock/);
      assert.equal(a.election.isLeader, false);
      assert.equal(await a.store.renewLock("deploy/books", "flow-a", 30_000), false);
      assert.equal(await inner.get("books/mode"), undefined);
      assert.equal(await inner.get("_turquoise/services/books/color"), undefined);
      assert.ok(a.refused.length >= 3, a.refused.join("\n"));
      assert.ok(a.lines.some((l) => l.startsWith("leader.lost")));
    } finally {
      await a.election.stop();
    }
  });

  it("a lock taken just as leadership went is let go again: the leader is read after the lock is taken", async () => {
    const inner = new MemoryStore();
    const a = candidate(inner, 1);
    await a.elected;
    try {
      // The store names another leader, but this agent has not noticed yet.
      await anotherLeads(inner);
      await rejectsWith(a.store.acquireLock("deploy/books", "flow-a", 30_000), "NOT_LEADER", /host-9:9/);
      assert.equal(await inner.getLock("deploy/books"), undefined);
    } finally {
      await a.election.stop();
    }
  });

  it("hostile member records (garbage, wrong types, megabytes) are skipped, never shown or acted on", async () => {
    const inner = new MemoryStore();
    await inner.put(`${MEMBERS_PREFIX}junk`, "not json {");
    await inner.put(`${MEMBERS_PREFIX}typed`, JSON.stringify({ id: 5, api: ["x"], seenAt: "now" }));
    await inner.put(`${MEMBERS_PREFIX}huge`, "x".repeat(2_000_000));
    const a = candidate(inner, 1);
    await a.elected;
    try {
      const view = await a.election.view();
      assert.deepEqual(view.agents.map((x) => x.id), ["host-1:1001"]);
      assert.equal(view.isLeader, true);
    } finally {
      await a.election.stop();
    }
  });

  it("a leader whose every renewal takes 35% of its TTL keeps leading: the next renewal is due a third of the TTL after the last one began", async () => {
    // Counted from a renewal's end, as before, the second renewal ends 2 × 35% + 33% = 103% of the
    // TTL after the first began: past the hold, so it is deposed whatever the load (which only adds
    // delay). Counted from its start, each renewal ends 70% in: a margin of 3 s on a 10 s TTL.
    const ttlMs = 10_000;
    const renewalMs = Math.floor(ttlMs * 0.35);
    class SlowRenewals extends MemoryStore {
      renewed = 0;
      override async renewLock(name: string, owner: string, ttl: number): Promise<boolean> {
        await new Promise((r) => setTimeout(r, renewalMs));
        const ok = await super.renewLock(name, owner, ttl);
        if (name === LEADER_LOCK) this.renewed++;
        return ok;
      }
    }
    const inner = new SlowRenewals();
    const lines: string[] = [];
    const deposed: string[] = [];
    const election = new Election(inner, address(1), { ttlMs, log: (_level, type, message) => lines.push(`${type}: ${message}`) });
    await election.start({ elected: async () => {}, deposed: (why) => void deposed.push(why) });
    try {
      assert.equal(election.isLeader, true);
      // Waits on the renewals themselves, not on a guess of how long they take.
      while (inner.renewed < 3 && deposed.length === 0) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(deposed, [], lines.join("\n"));
      assert.equal(election.isLeader, true);
    } finally {
      await election.stop();
    }
  });

  it("an agent alone on an embedded store always leads and is never fenced", async () => {
    const sole = new SoleLeadership(address(1));
    assert.equal(sole.isLeader, true);
    assert.equal(sole.shared, false);
    assert.equal(sole.fence, undefined);
    assert.equal((await sole.view()).leader?.api, "http://127.0.0.1:7001");
  });
});
