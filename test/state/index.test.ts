import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { isTurquoiseError } from "../../src/errors.js";
import { openStore } from "../../src/state/index.js";
import { EtcdStore } from "../../src/state/etcd.js";
import { MemoryStore } from "../../src/state/memory.js";
import { SqliteStore } from "../../src/state/sqlite.js";

describe("openStore", () => {
  it("opens the memory driver", async () => {
    const store = await openStore({ driver: "memory" });
    assert.ok(store instanceof MemoryStore);
    await store.close();
  });

  it("opens the sqlite driver at the given path", async () => {
    const dir = await mkdtemp(join(tmpdir(), "turquoise-state-"));
    try {
      const store = await openStore({ driver: "sqlite", path: join(dir, "state.db") });
      assert.ok(store instanceof SqliteStore);
      await store.put("k", "v");
      await store.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("refuses sqlite without a path, with a usage error", async () => {
    await assert.rejects(
      openStore({ driver: "sqlite" }),
      (e) => isTurquoiseError(e) && e.code === "USAGE" && /path/.test(e.message),
    );
  });

  it("refuses an unknown driver", async () => {
    await assert.rejects(
      openStore({ driver: "consul" as "memory" }),
      (e) => isTurquoiseError(e) && e.code === "USAGE" && /consul/.test(e.message),
    );
  });

  const etcd = { endpoints: ["http://127.0.0.1:2379"], prefix: "/turquoise/", timeoutMs: 5_000, leaderTtlMs: 3_000 };

  it("opens the etcd driver without connecting: etcd is asked only when the store is used", async () => {
    const store = await openStore({ driver: "etcd", etcd });
    assert.ok(store instanceof EtcdStore);
    await store.close();
  });

  it("refuses etcd without its settings, with a usage error", async () => {
    await assert.rejects(openStore({ driver: "etcd" }), (e) => isTurquoiseError(e) && e.code === "USAGE" && /state\.etcd/.test(e.message));
  });

  it("reads the etcd password from the variable it names, and says which one is missing without guessing at its value", async () => {
    const spec = { ...etcd, username: "turquoise", passwordEnv: "TQ_TEST_ETCD_PASSWORD" };
    await assert.rejects(
      openStore({ driver: "etcd", etcd: spec, env: {} }),
      (e) => isTurquoiseError(e) && e.code === "USAGE" && /TQ_TEST_ETCD_PASSWORD/.test(e.message) && /"turquoise"/.test(e.message),
    );
    await assert.rejects(openStore({ driver: "etcd", etcd: spec, env: { TQ_TEST_ETCD_PASSWORD: "" } }), { code: "USAGE" });
    const store = await openStore({ driver: "etcd", etcd: spec, env: { TQ_TEST_ETCD_PASSWORD: "s3cret-value" } });
    assert.ok(store instanceof EtcdStore);
    await store.close();
  });

  it("names an unreadable TLS file and its field", async () => {
    await assert.rejects(
      openStore({ driver: "etcd", etcd: { ...etcd, endpoints: ["https://127.0.0.1:2379"], tls: { ca: "/nonexistent/ca.pem" } } }),
      (e) => isTurquoiseError(e) && e.code === "USAGE" && /state\.etcd\.tls\.ca \/nonexistent\/ca\.pem: ENOENT/.test(e.message),
    );
  });
});
