// The user KV's rules, without a server: the reserved prefix is refused, shorter prefixes list without it, and watches on it never run.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { checkUserKey, checkUserPrefix, userDelete, userGet, userList, userPut } from "../../src/api/kv.js";
import { watchRefusal } from "../../src/api/catalog.js";
import { isTurquoiseError } from "../../src/errors.js";
import { MemoryStore } from "../../src/state/memory.js";
import type { WatchSpec } from "../../src/spec/types.js";

function forbidden(fn: () => unknown): void {
  assert.throws(fn, (e: unknown) => isTurquoiseError(e) && e.code === "FORBIDDEN" && /reserved namespace "_turquoise\/"/.test(e.message));
}

const watch = (w: Partial<WatchSpec>): WatchSpec => ({ name: "w", type: "key", handler: { args: ["true"] }, timeoutMs: 1_000, ...w });

describe("user KV", () => {
  it("refuses every key and prefix under _turquoise/, for reads and writes alike", async () => {
    const store = new MemoryStore();
    for (const k of ["_turquoise/", "_turquoise/services/books/color", "_turquoise/x/../y"]) {
      forbidden(() => checkUserKey(k));
      forbidden(() => checkUserPrefix(k));
      await assert.rejects(userGet(store, k), /reserved namespace/);
      await assert.rejects(userPut(store, k, "blue", {}), /reserved namespace/);
      await assert.rejects(userDelete(store, k, {}), /reserved namespace/);
      await assert.rejects(userList(store, k), /reserved namespace/);
    }
    assert.deepEqual(await store.list(""), [], "nothing was written");
    // Only the exact prefix is reserved: look-alikes are user keys.
    for (const k of ["_turquoise", "_TURQUOISE/x", "x/_turquoise/y", " _turquoise/"]) checkUserKey(k);
  });

  it("a listing whose prefix covers the namespace leaves it out", async () => {
    const store = new MemoryStore();
    await store.put("_turquoise/services/books/color", "blue");
    await store.put("_turquoise", "user's");
    await store.put("config/a", "1");
    assert.deepEqual((await userList(store, "")).map((k) => k.key), ["_turquoise", "config/a"]);
    assert.deepEqual((await userList(store, "_tur")).map((k) => k.key), ["_turquoise"]);
  });

  it("key and keyprefix watches on the namespace are refused; others run", () => {
    assert.match(watchRefusal(watch({ type: "key", key: "_turquoise/journal/books" }))!, /reserved namespace/);
    assert.match(watchRefusal(watch({ type: "keyprefix", prefix: "_turquoise/" }))!, /reserved namespace/);
    assert.equal(watchRefusal(watch({ type: "keyprefix", prefix: "" })), undefined, "runs, and sees user keys only");
    assert.equal(watchRefusal(watch({ type: "key", key: "config/banner" })), undefined);
    assert.equal(watchRefusal(watch({ type: "service", service: "books" })), undefined);
  });
});
