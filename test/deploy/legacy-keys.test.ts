// Moving the old layout's records under the reserved prefix: once, idempotent, user keys left alone.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { moveLegacyKeys } from "../../src/deploy/legacy-keys.js";
import { keys } from "../../src/deploy/records.js";
import { MemoryStore } from "../../src/state/memory.js";

const OLD: Record<string, string> = {
  "services/books/color": "blue",
  "services/books/slots/blue": "{\"slot\":\"blue\"}",
  "services/books/previous": "{}",
  "services/books/degraded": "{}",
  "instances/books/books-blue-1": "{}",
  "journal/books": "{}",
  "proxy/table-version": "12",
};
const USER: Record<string, string> = { "config/banner": "hi", "services/books/banner": "user's", "services/books/slots/blue/extra": "user's", "proxy/other": "user's", "instances/books": "user's" };

async function oldStore(): Promise<MemoryStore> {
  const store = new MemoryStore();
  for (const [k, v] of Object.entries({ ...OLD, ...USER })) await store.put(k, v);
  return store;
}

describe("legacy keys", () => {
  it("moves every old-layout record under the prefix and leaves user keys where they are", async () => {
    const store = await oldStore();
    const moved = await moveLegacyKeys(store);
    assert.deepEqual(moved.sort(), Object.keys(OLD).sort());
    for (const [k, v] of Object.entries(OLD)) {
      assert.equal(await store.get(k), undefined, k);
      assert.equal((await store.get(`_turquoise/${k}`))?.value, v, k);
    }
    for (const [k, v] of Object.entries(USER)) assert.equal((await store.get(k))?.value, v, k);
    assert.equal((await store.get(keys.color("books")))?.value, "blue");
  });

  it("runs once: later writes to the old names stay user keys", async () => {
    const store = await oldStore();
    await moveLegacyKeys(store);
    await store.put("services/books/color", "purple");
    assert.deepEqual(await moveLegacyKeys(store), []);
    assert.equal((await store.get("services/books/color"))?.value, "purple");
    assert.equal((await store.get(keys.color("books")))?.value, "blue");
  });

  it("finishes a move a crash cut short; the copy already moved wins", async () => {
    const store = await oldStore();
    await store.put(keys.color("books"), "green");
    const moved = await moveLegacyKeys(store);
    assert.ok(moved.includes("services/books/color"));
    assert.equal(await store.get("services/books/color"), undefined);
    assert.equal((await store.get(keys.color("books")))?.value, "green");
  });

  it("a fresh store only gets the marker", async () => {
    const store = new MemoryStore();
    assert.deepEqual(await moveLegacyKeys(store), []);
    assert.deepEqual((await store.list("")).map((k) => k.key), [keys.layout()]);
  });
});
