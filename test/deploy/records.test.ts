// The agent's records: validated on every read, set aside when bad, the live slot rebuilt from what remains.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { keys, Records, type InstanceIntent, type SlotRecord } from "../../src/deploy/records.js";
import { MemoryStore } from "../../src/state/memory.js";
import type { InstanceInfo } from "../../src/runtime/contract.js";

const LIVE: SlotRecord = { slot: "blue", release: "v1", poolId: "books/blue/v1/x", state: "live", startedAt: 1_000 };
const INSTANCE: InstanceInfo = { id: "books-blue-aa", service: "books", slot: "blue", release: "v1", host: "127.0.0.1", port: 4100, ref: "4242", startedAt: 1_100, runtime: "process" };

function setup() {
  const store = new MemoryStore();
  const events: Array<{ service: string | null; type: string; message: string }> = [];
  const records = new Records(store, (service, type, message) => events.push({ service, type, message }));
  return { store, records, events };
}

describe("records", () => {
  it("every key lives under the reserved prefix", () => {
    for (const k of [keys.color("books"), keys.slot("books", "blue"), keys.previous("books"), keys.degraded("books"), keys.instance("books", "x"), keys.journal("books"), keys.tableVersion(), keys.layout(), keys.quarantine("_turquoise/journal/x")]) {
      assert.match(k, /^_turquoise\//);
    }
  });

  it("a bad color is set aside and rebuilt from the live slot record; the service is held", async () => {
    const { store, records, events } = setup();
    await records.setSlot("books", LIVE);
    await store.put(keys.color("books"), "purple");
    assert.equal(await records.color("books"), "blue");
    assert.equal((await store.get(keys.color("books")))?.value, "blue", "repaired in the store");
    const [q] = await records.quarantined();
    assert.equal(q!.key, keys.color("books"));
    assert.equal(q!.value, "purple");
    assert.match(q!.reason, /"purple" is not a slot/);
    assert.deepEqual(events.map((e) => e.type), ["record.invalid", "record.repaired"]);
    assert.ok(records.held.has("books"));
  });

  it("while a flip was under way (both slots live), the earlier slot wins, as the stored color said", async () => {
    const { store, records } = setup();
    await records.setSlot("books", { ...LIVE, slot: "green", release: "v2", startedAt: 5_000 });
    await records.setSlot("books", LIVE);
    await store.put(keys.color("books"), "");
    assert.equal(await records.color("books"), "blue");
  });

  it("a bad color with no live slot record reads as nothing live", async () => {
    const { store, records } = setup();
    await store.put(keys.color("books"), "{}");
    assert.equal(await records.color("books"), undefined);
    assert.equal(await store.get(keys.color("books")), undefined);
  });

  it("a bad record of the live slot is rebuilt from the instance records running in it", async () => {
    const { store, records } = setup();
    await records.setColor("books", "blue");
    await records.addInstance(INSTANCE);
    await records.addInstance({ ...INSTANCE, id: "books-blue-bb", startedAt: 1_050 });
    await store.put(keys.slot("books", "blue"), JSON.stringify({ ...LIVE, state: "on fire" }));
    const rec = await records.slot("books", "blue");
    assert.equal(rec?.release, "v1");
    assert.equal(rec?.state, "live");
    assert.equal(rec?.startedAt, 1_050);
    assert.match(rec!.poolId, /^books\/blue\/v1\/repaired-/);
  });

  it("a bad record of an idle slot is only set aside", async () => {
    const { store, records } = setup();
    await records.setColor("books", "blue");
    await store.put(keys.slot("books", "green"), "not json");
    assert.equal(await records.slot("books", "green"), undefined);
    assert.equal(await store.get(keys.slot("books", "green")), undefined);
    assert.equal((await records.quarantined()).length, 1);
  });

  it("instance records that do not validate, or name another service or id than their key, are never returned", async () => {
    const { store, records } = setup();
    await records.addInstance(INSTANCE);
    await store.put(keys.instance("books", "evil"), JSON.stringify({ ...INSTANCE, id: "evil", ref: "1" }));
    await store.put(keys.instance("books", "other"), JSON.stringify({ ...INSTANCE, id: "books-blue-aa" }));
    await store.put(keys.instance("books", "group"), JSON.stringify({ ...INSTANCE, id: "group", ref: "-4242" }));
    await store.put(keys.instance("books", "junk"), "[]");
    await store.put(`${keys.instances("books")}a/b`, JSON.stringify(INSTANCE));
    assert.deepEqual((await records.instances()).map((i) => i.id), ["books-blue-aa"]);
    assert.equal((await records.quarantined()).length, 5);
    assert.deepEqual((await store.list(keys.instances())).map((k) => k.key), [keys.instance("books", "books-blue-aa")]);
  });

  it("an instance recorded as starting is an intent, not an instance, until its started record replaces it", async () => {
    const { store, records, events } = setup();
    const intent: InstanceIntent = { id: INSTANCE.id, service: "books", slot: "blue", release: "v1", runtime: "process", state: "starting", recordedAt: 1_050 };
    await records.addIntent(intent);
    assert.deepEqual(await records.instances(), [], "nothing to adopt or signal by an intent");
    assert.deepEqual(await records.intents(), [intent]);
    await records.addInstance(INSTANCE);
    assert.deepEqual(await records.instances(), [INSTANCE]);
    assert.deepEqual(await records.intents(), []);
    // An intent that does not validate is set aside like any record.
    await store.put(keys.instance("books", "books-blue-bb"), JSON.stringify({ ...intent, id: "books-blue-bb", runtime: "fork" }));
    assert.deepEqual(await records.intents(), []);
    assert.ok(events.some((e) => e.type === "record.invalid" && /field runtime is "fork"/.test(e.message)));
  });

  it("journals, previous, degraded and the table version are validated too", async () => {
    const { store, records } = setup();
    await store.put(keys.journal("books"), "not json");
    await store.put(keys.journal("shop"), JSON.stringify({ historyId: 1, service: "books", kind: "deploy", release: "v1", via: null, actor: "a", owner: "o", previousRelease: null, steps: [], startedAt: 1 }));
    await store.put(keys.previous("books"), JSON.stringify({ release: "../../etc", via: null }));
    await store.put(keys.degraded("books"), JSON.stringify({ since: "yesterday" }));
    await store.put(keys.tableVersion(), "NaN");
    assert.deepEqual(await records.journals(), []);
    assert.equal(await records.previous("books"), undefined);
    assert.equal(await records.degraded("books"), undefined);
    const version = await records.nextTableVersion();
    assert.ok(Number.isSafeInteger(version) && version >= Date.now() - 1_000);
    const q = await records.quarantined();
    assert.equal(q.length, 5);
    assert.ok(q.some((e) => e.key === keys.journal("shop") && /stored under shop/.test(e.reason)));
  });

  it("good records come back as written", async () => {
    const { records } = setup();
    await records.setSlot("books", { ...LIVE, warmUntil: 9, schema: { min: 1, max: 2 } });
    await records.setPrevious("books", { release: "v0", via: "v0-turquoise" });
    await records.setDegraded("books", { since: 1, slot: "blue", release: "v1", reason: "crash loop" });
    await records.addInstance(INSTANCE);
    await records.writeJournal({ historyId: 1, service: "books", kind: "deploy", release: "v2", via: null, actor: "me", owner: "me (deploy v2)", previousRelease: "v1", steps: ["lock:done", "migrate-expand:started"], startedAt: 1 });
    assert.deepEqual(await records.slot("books", "blue"), { ...LIVE, warmUntil: 9, schema: { min: 1, max: 2 } });
    assert.deepEqual(await records.previous("books"), { release: "v0", via: "v0-turquoise" });
    assert.equal((await records.degraded("books"))?.reason, "crash loop");
    assert.deepEqual(await records.instances("books"), [INSTANCE]);
    assert.equal((await records.journal("books"))?.release, "v2");
    assert.deepEqual(await records.quarantined(), []);
  });

  it("a successful deploy clears its service's quarantine entries and those of no service", async () => {
    const { store, records } = setup();
    await store.put(keys.previous("books"), "x");
    await store.put(keys.previous("shop"), "x");
    await store.put(keys.tableVersion(), "x");
    await records.previous("books");
    await records.previous("shop");
    await records.nextTableVersion();
    await records.clearQuarantine("books");
    assert.deepEqual((await records.quarantined()).map((q) => q.service), ["shop"]);
  });
});
