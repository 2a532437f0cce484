import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { isTurquoiseError } from "../../src/errors.js";
import { openStore } from "../../src/state/index.js";
import { MemoryStore } from "../../src/state/memory.js";
import { SqliteStore } from "../../src/state/sqlite.js";

describe("openStore", () => {
  it("opens the memory driver", async () => {
    const store = openStore({ driver: "memory" });
    assert.ok(store instanceof MemoryStore);
    await store.close();
  });

  it("opens the sqlite driver at the given path", async () => {
    const dir = await mkdtemp(join(tmpdir(), "turquoise-state-"));
    try {
      const store = openStore({ driver: "sqlite", path: join(dir, "state.db") });
      assert.ok(store instanceof SqliteStore);
      await store.put("k", "v");
      await store.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("refuses sqlite without a path, with a usage error", () => {
    assert.throws(
      () => openStore({ driver: "sqlite" }),
      (e) => isTurquoiseError(e) && e.code === "USAGE" && /path/.test(e.message),
    );
  });

  it("refuses an unknown driver", () => {
    assert.throws(
      () => openStore({ driver: "etcd" as "memory" }),
      (e) => isTurquoiseError(e) && e.code === "USAGE" && /etcd/.test(e.message),
    );
  });
});
