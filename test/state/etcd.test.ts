// The etcd store against a real three-member etcd cluster on loopback: the shared Store contract,
// then what only a replicated store has to prove: watches that see every change across broken
// connections and compaction, locks on leases, members going away, a cluster that does not answer.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Etcd3 } from "etcd3";
import { isTurquoiseError } from "../../src/errors.js";
import type { WatchEvent } from "../../src/state/contract.js";
import { EtcdStore, type EtcdStoreOptions } from "../../src/state/etcd.js";
import { killAfterAcks } from "../support/crash-writer.js";
import { gateTo, startEtcdCluster, type TestEtcd } from "../support/etcd.js";
import { runStoreContract } from "./contract.test-suite.js";

let clusterStarted: Promise<TestEtcd> | undefined;
/** One cluster for the whole file: starting one takes seconds, a fresh prefix per test isolates them. */
function cluster(): Promise<TestEtcd> {
  clusterStarted ??= startEtcdCluster();
  return clusterStarted;
}
after(async () => (await clusterStarted)?.destroy());

function freshPrefix(): string {
  return `/turquoise-test/${randomBytes(6).toString("hex")}/`;
}

const opened: EtcdStore[] = [];
after(async () => {
  for (const store of opened) await store.close();
});

/** A store on a fresh prefix (or the given one), over the given members (all by default). */
async function storeOn(opts: Partial<EtcdStoreOptions> = {}): Promise<EtcdStore> {
  const c = await cluster();
  const store = new EtcdStore({ endpoints: c.endpoints, prefix: freshPrefix(), timeoutMs: 5_000, ...opts });
  opened.push(store);
  return store;
}

/** A plain etcd client, for what the tests do behind the store's back (compaction, raw keys). */
async function rawClient(endpoints?: string[]): Promise<Etcd3> {
  const c = await cluster();
  return new Etcd3({ hosts: endpoints ?? c.endpoints });
}

async function waitUntil(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
    await sleep(20);
  }
}

/** The events a watch saw must be exactly revisions from..to, each once, in order. */
function assertConsecutive(seen: WatchEvent[], from: number, to: number): void {
  assert.equal(seen.length, to - from + 1, `saw ${seen.length} changes, expected ${to - from + 1}`);
  seen.forEach((e, i) => assert.equal(e.revision, from + i, `change ${i} has revision ${e.revision}`));
}

runStoreContract("etcd", async () => {
  const { endpoints } = await cluster();
  const store = new EtcdStore({ endpoints, prefix: freshPrefix(), timeoutMs: 5_000 });
  return { store, cleanup: () => store.close() };
});

describe("EtcdStore on a three-member cluster", () => {
  it("a watcher sees all of 1,000 rapid writes to one key, in order, from two writers racing", { timeout: 120_000 }, async () => {
    const prefix = freshPrefix();
    // Two agents: each has its own client, so their conditional writes really race in etcd.
    const [a, b, watcherStore] = [await storeOn({ prefix }), await storeOn({ prefix }), await storeOn({ prefix })];
    const seen: WatchEvent[] = [];
    // Another client's writes are not ordered after this watch() call: the watch starts from revision 0, before all of them.
    const stop = watcherStore.watch("services/web/color", (e) => seen.push(e), { fromRevision: 0 });
    const writes = (store: EtcdStore, who: string) => Promise.all(Array.from({ length: 500 }, (_, i) => store.put("services/web/color", `${who}-${i}`)));
    const t0 = Date.now();
    const [ra, rb] = await Promise.all([writes(a, "a"), writes(b, "b")]);
    const writeMs = Date.now() - t0;
    await waitUntil("1,000 watch events", () => seen.length >= 1_000, 30_000);
    stop();
    console.log(`# 1,000 racing writes from two clients took ${writeMs} ms`);
    assertConsecutive(seen, 1, 1_000);
    assert.ok([...ra, ...rb].every((r) => r.ok));
    // Each writer's own writes landed in the order it made them, and each revision it was told is the one the watcher saw.
    for (const [who, results] of [["a", ra], ["b", rb]] as const) {
      const mine = seen.filter((e) => e.type === "put" && e.value.startsWith(`${who}-`));
      assert.deepEqual(mine.map((e) => (e.type === "put" ? e.value : "")), results.map((_, i) => `${who}-${i}`));
      assert.deepEqual(mine.map((e) => e.revision), results.map((r) => r.revision));
    }
    assert.equal((await a.get("services/web/color"))?.modRevision, 1_000);
  });

  it("keeps stores on different prefixes apart: keys, revisions and watches", async () => {
    const [one, two] = [await storeOn(), await storeOn()];
    const seen: WatchEvent[] = [];
    const stop = two.watch("", (e) => seen.push(e));
    await one.put("k", "one");
    const marker = await two.put("marker", "two");
    await waitUntil("the marker", () => seen.length >= 1, 5_000);
    await sleep(50);
    stop();
    assert.deepEqual(seen, [{ type: "put", key: "marker", value: "two", revision: 1 }]);
    assert.equal(marker.revision, 1);
    assert.equal(await two.get("k"), undefined);
    assert.equal(await one.revision(), 1);
  });

  it("keeps only the configured number of changes, events and history entries, and says when a watch asks for more", async () => {
    const warnings: string[] = [];
    const store = await storeOn({ retention: { changes: 20, events: 5, historyPerService: 3 }, warn: (m) => warnings.push(m) });
    for (let i = 1; i <= 30; i++) await store.put(`k/${i % 7}`, String(i));
    const replayed: WatchEvent[] = [];
    const stop = store.watch("", (e) => replayed.push(e), { fromRevision: 0 });
    await waitUntil("the replay", () => replayed.length >= 20, 5_000);
    const live = await store.put("k/live", "31");
    await waitUntil("the live change", () => replayed.length >= 21, 5_000);
    stop();
    assertConsecutive(replayed, 11, live.revision);
    assert.match(warnings.join("\n"), /missed changes 1 to 10: the change log remembers only the last 20/);

    const ids: number[] = [];
    for (let i = 0; i < 8; i++) ids.push((await store.appendEvent({ service: "web", type: "tick", message: `${i}`, data: {} })).id);
    assert.deepEqual((await store.listEvents()).map((e) => e.id), ids.slice(-5));
    for (let i = 0; i < 5; i++) {
      await store.addHistory({ service: "web", kind: "deploy", release: `v${i}`, previousRelease: null, via: null, actor: "t", startedAt: i, finishedAt: null, outcome: "running", plan: [], steps: [] , error: null });
    }
    await store.addHistory({ service: "api", kind: "deploy", release: "x", previousRelease: null, via: null, actor: "t", startedAt: 0, finishedAt: null, outcome: "running", plan: [], steps: [], error: null });
    assert.deepEqual((await store.listHistory("web")).map((h) => h.release), ["v4", "v3", "v2"]);
    assert.equal((await store.listHistory("api")).length, 1);
    // The trimmed ones are gone for updates too, not only from listings.
    await assert.rejects(store.updateHistory(1, { outcome: "failed" }), { code: "NOT_FOUND" });
  });

  it("reports a value Turquoise did not write as such, naming the key", async () => {
    const prefix = freshPrefix();
    const store = await storeOn({ prefix });
    const raw = await rawClient();
    try {
      await raw.put(`${prefix}kv/services/web/color`).value("blue");
      await assert.rejects(store.get("services/web/color"), (e) => isTurquoiseError(e) && e.code === "INTERNAL" && e.message.includes(`"${prefix}kv/services/web/color"`) && /written by hand/.test(e.message));
      await assert.rejects(store.list("services/"), /does not hold a value written by Turquoise/);
    } finally {
      raw.close();
    }
  });

  it("refuses a value over etcd's request limit with a clear error, and changes nothing", async () => {
    const store = await storeOn();
    const before = await store.put("services/web/config", "small");
    const seen: WatchEvent[] = [];
    const stop = store.watch("", (e) => seen.push(e));
    const huge = "x".repeat(2 * 1024 * 1024);
    await assert.rejects(store.put("services/web/config", huge), (e) =>
      isTurquoiseError(e) && e.code === "USAGE" && /put of key "services\/web\/config" \(a value of 2097152 bytes\) as too large/.test(e.message) && /nothing was changed/.test(e.message),
    );
    // Just under etcd's limit, but the change log doubles it: refused too, with the same reason.
    await assert.rejects(store.put("services/web/config", "y".repeat(1_000_000)), { code: "USAGE" });
    await assert.rejects(store.appendEvent({ service: null, type: "big", message: huge, data: {} }), { code: "USAGE" });
    // A hostile key is refused the same way, and its error does not carry the megabytes along.
    await assert.rejects(store.put(`k/${huge}`, "v"), (e) => isTurquoiseError(e) && e.code === "USAGE" && e.message.length < 1_000);
    assert.equal((await store.get("services/web/config"))?.value, "small");
    assert.equal(await store.revision(), before.revision);
    const after = await store.put("services/web/config", "z".repeat(200_000));
    assert.equal(after.revision, before.revision + 1);
    await waitUntil("the watch event", () => seen.length >= 1, 5_000);
    stop();
    assert.equal(seen.length, 1, "the refused writes were never announced");
  });

  it("keeps every acknowledged write, and a consistent change log, when the writing process is killed", { timeout: 60_000 }, async () => {
    const { endpoints } = await cluster();
    const prefix = freshPrefix();
    const acked = await killAfterAcks({
      module: new URL("../../src/state/etcd.js", import.meta.url),
      open: "new M.EtcdStore({ endpoints: JSON.parse(process.env.TQ_ENDPOINTS), prefix: process.env.TQ_PREFIX, timeoutMs: 5000 })",
      env: { TQ_ENDPOINTS: JSON.stringify(endpoints), TQ_PREFIX: prefix },
      target: 200,
    });

    const store = await storeOn({ prefix });
    const keys = await store.list("k/");
    assert.ok(keys.length >= acked, `${keys.length} keys in etcd, ${acked} acknowledged`);
    for (let i = 1; i <= acked; i++) assert.deepEqual([keys[i - 1]?.key, keys[i - 1]?.value], [`k/${String(i).padStart(8, "0")}`, `value ${i}`]);
    const revision = await store.revision();
    // Each revision is one whole write: the key, the counter and its log entry, never a part.
    assert.equal(revision, keys.length);
    const replayed: WatchEvent[] = [];
    const stop = store.watch("k/", (e) => replayed.push(e), { fromRevision: 0 });
    await waitUntil("the replay", () => replayed.length >= revision, 10_000);
    stop();
    assertConsecutive(replayed, 1, revision);
    assert.deepEqual(replayed.map((e) => e.key), keys.map((kv) => kv.key));
  });

  it("frees a dead client's lock when its lease runs out: the key itself is gone", { timeout: 60_000 }, async () => {
    const { endpoints } = await cluster();
    const prefix = freshPrefix();
    const moduleUrl = new URL("../../src/state/etcd.js", import.meta.url).href;
    const script = `
      const { EtcdStore } = await import(process.env.TQ_MODULE);
      const store = new EtcdStore({ endpoints: JSON.parse(process.env.TQ_ENDPOINTS), prefix: process.env.TQ_PREFIX, timeoutMs: 5000 });
      const r = await store.acquireLock("deploy/web", "agent-that-dies", 2000);
      process.stdout.write(r.ok ? "held\\n" : "refused\\n");
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
      env: { ...process.env, TQ_MODULE: moduleUrl, TQ_ENDPOINTS: JSON.stringify(endpoints), TQ_PREFIX: prefix },
      stdio: ["ignore", "pipe", "inherit"],
    });
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => (d.toString().includes("held") ? resolve() : reject(new Error(d.toString()))));
      child.on("exit", (code) => reject(new Error(`child exited with ${code}`)));
    });
    child.kill("SIGKILL");
    const killedAt = Date.now();

    const store = await storeOn({ prefix });
    const raw = await rawClient();
    try {
      const taken = await store.acquireLock("deploy/web", "survivor", 10_000);
      assert.equal(taken.ok, false, "the dead client's lock still holds until its TTL");
      assert.equal(!taken.ok && taken.holder.owner, "agent-that-dies");
      // Not the wall clock: etcd deletes the key when the lease that carries it runs out.
      await waitUntil("etcd to delete the lock key", async () => (await raw.get(`${prefix}locks/deploy/web`).string()) === null, 20_000);
      const goneAfter = Date.now() - killedAt;
      console.log(`# a dead client's 2 s lock key was deleted by etcd ${goneAfter} ms after the kill`);
      assert.ok(goneAfter < 20_000);
      const mine = await store.acquireLock("deploy/web", "survivor", 10_000);
      assert.ok(mine.ok);
      const lease = await raw.get(`${prefix}locks/deploy/web`).exec();
      assert.notEqual(lease.kvs[0]?.lease, "0", "the new holder's lock rides on a lease too");
    } finally {
      raw.close();
    }
  });
});

// Members stop and start from here on: these run after everything above, in order.
describe("EtcdStore when members go away", () => {
  it("goes on through the other members while one is stopped, and a watcher on it misses nothing", { timeout: 60_000 }, async () => {
    const c = await cluster();
    const prefix = freshPrefix();
    // The watcher talks to member 0 only; the writer to the others.
    const watcherStore = await storeOn({ prefix, endpoints: [c.endpoints[0]!] });
    const writer = await storeOn({ prefix, endpoints: c.endpoints });
    const seen: WatchEvent[] = [];
    const stop = watcherStore.watch("", (e) => seen.push(e), { fromRevision: 0 });
    for (let i = 0; i < 20; i++) await writer.put(`k/${i}`, "before");
    await waitUntil("the first 20", () => seen.length >= 20, 10_000);

    await c.stop(0);
    const t0 = Date.now();
    for (let i = 0; i < 50; i++) await writer.put(`k/${i % 10}`, `while member 0 is down ${i}`);
    assert.ok((await writer.acquireLock("deploy/web", "a", 10_000)).ok);
    await writer.appendEvent({ service: "web", type: "x", message: "m", data: {} });
    assert.equal((await writer.list("k/")).length, 20);
    console.log(`# with one member stopped: 53 writes and a listing took ${Date.now() - t0} ms`);
    assert.equal(seen.length, 20, "the watcher's member is down: it hears nothing yet");

    await c.start(0);
    for (let i = 0; i < 10; i++) await writer.put(`k/${i}`, "after");
    await waitUntil("all 80 changes", () => seen.length >= 80, 20_000);
    await sleep(100);
    stop();
    assertConsecutive(seen, 1, 80);
  });

  it("re-reads the change log when etcd compacted the history a reconnecting watcher needed", { timeout: 60_000 }, async () => {
    const c = await cluster();
    const prefix = freshPrefix();
    // The watcher reaches member 0 through a gate: its connection breaks while the member keeps up.
    const gate = await gateTo(c.endpoints[0]!);
    const watcherStore = await storeOn({ prefix, endpoints: [gate.url] });
    const writer = await storeOn({ prefix });
    const raw = await rawClient();
    const onMember0 = await rawClient([c.endpoints[0]!]);
    try {
      const seen: WatchEvent[] = [];
      const stop = watcherStore.watch("services/", (e) => seen.push(e), { fromRevision: 0 });
      await writer.put("services/web/color", "blue");
      await waitUntil("the first change", () => seen.length >= 1, 10_000);

      gate.cut();
      for (let i = 0; i < 30; i++) await writer.put("services/web/color", i % 2 ? "blue" : "green");
      await writer.put("unwatched/key", "x");
      // Compact everything the watcher has not seen, on every member: resuming from its etcd revision cannot work.
      const { header } = await raw.kv.range({ key: Buffer.from(`${prefix}meta/revision`) });
      await raw.kv.compact({ revision: header.revision, physical: true });
      await waitUntil("member 0 to compact", () => onMember0.kv.range({ key: Buffer.from(`${prefix}meta/revision`), revision: 2, serializable: true }).then(() => false, (e: Error) => /compacted/.test(e.message)), 10_000);
      gate.open();

      await writer.put("services/api/color", "green");
      await waitUntil("all 32 watched changes", () => seen.length >= 32, 20_000);
      await sleep(100);
      stop();
      assert.deepEqual(seen.map((e) => e.revision), [1, ...Array.from({ length: 30 }, (_, i) => i + 2), 33]);
      assert.deepEqual(seen.at(-1), { type: "put", key: "services/api/color", value: "green", revision: 33 });
    } finally {
      raw.close();
      onMember0.close();
      await gate.close();
    }
  });

  it("goes on within its timeout while a member hangs (SIGSTOP)", { timeout: 60_000 }, async () => {
    const c = await cluster();
    const store = await storeOn({ timeoutMs: 5_000 });
    c.pause(1);
    try {
      const t0 = Date.now();
      for (let i = 0; i < 10; i++) {
        await store.put(`k/${i}`, "v");
        assert.equal((await store.get(`k/${i}`))?.value, "v");
      }
      console.log(`# with one member hung: 10 writes and 10 reads took ${Date.now() - t0} ms`);
    } finally {
      c.resume(1);
    }
    await c.waitHealthy();
  });

  it("fails with STATE_UNAVAILABLE within its timeout when no member answers, then recovers by itself", { timeout: 120_000 }, async () => {
    const c = await cluster();
    const timeoutMs = 1_000;
    const store = await storeOn({ timeoutMs });
    await store.put("k", "before");
    const seen: WatchEvent[] = [];
    const stop = store.watch("", (e) => seen.push(e));
    await sleep(200);

    // Hung members first (connections open, nothing answers), then stopped ones (connections refused).
    for (const outage of ["hung", "stopped"] as const) {
      if (outage === "hung") c.members.forEach((_, i) => c.pause(i));
      else await Promise.all(c.members.map((_, i) => c.kill(i)));
      for (const call of [() => store.get("k"), () => store.put("k", "during"), () => store.acquireLock("deploy/web", "a", 5_000), () => store.appendEvent({ service: null, type: "x", message: "m", data: {} })]) {
        const t0 = Date.now();
        await assert.rejects(call(), (e) => isTurquoiseError(e) && e.code === "STATE_UNAVAILABLE" && /did not answer the .* within 1s/.test(e.message));
        const took = Date.now() - t0;
        // A hang would never end; 10x the timeout is the bound.
        assert.ok(took < 10 * timeoutMs, `a call took ${took} ms to fail with ${outage} members`);
      }
      if (outage === "hung") c.members.forEach((_, i) => c.resume(i));
      else await Promise.all(c.members.map((_, i) => c.start(i)));
      const t0 = Date.now();
      let recovered = false;
      while (!recovered) {
        recovered = await store.put("k", `after ${outage}`).then(() => true, () => false);
        assert.ok(Date.now() - t0 < 60_000, "the store did not recover within 60 s");
      }
      console.log(`# after ${outage} members came back, the store answered again within ${Date.now() - t0} ms`);
    }
    await waitUntil("the writes after both outages", () => seen.filter((e) => e.type === "put" && e.value.startsWith("after")).length >= 2, 20_000);
    stop();
    // A write that timed out against hung members may still land when they resume (its error says
    // so); at most once, since every try of it is conditional on the revision it read.
    const values = seen.map((e) => (e.type === "put" ? e.value : ""));
    assert.deepEqual(values.filter((v) => v !== "during"), ["after hung", "after stopped"]);
    assert.ok(values.filter((v) => v === "during").length <= 1);
    assertConsecutive(seen, 2, 1 + seen.length);
  });
});
