import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import Database from "better-sqlite3";
import { isTurquoiseError } from "../../src/errors.js";
import type { WatchEvent } from "../../src/state/contract.js";
import { CHANGE_LOG_SIZE } from "../../src/state/memory.js";
import { SqliteStore } from "../../src/state/sqlite.js";
import { killAfterAcks } from "../support/crash-writer.js";
import { runStoreContract } from "./contract.test-suite.js";

async function tempDir(): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "turquoise-sqlite-"));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

// A nested path, so every contract test also proves the store creates its parent directory.
runStoreContract("sqlite", async () => {
  const { dir, remove } = await tempDir();
  const store = new SqliteStore(join(dir, "nested", "state", "turquoise.db"));
  return {
    store,
    cleanup: async () => {
      await store.close();
      await remove();
    },
  };
});

describe("SqliteStore on disk", () => {
  let dir: string;
  let remove: () => Promise<void>;

  before(async () => {
    ({ dir, remove } = await tempDir());
  });

  after(async () => {
    await remove();
  });

  it("keeps everything across close and reopen", async () => {
    const path = join(dir, "reopen.db");
    const first = new SqliteStore(path);
    await first.put("services/web/color", "blue");
    const last = await first.put("services/web/release", "v2");
    const lock = await first.acquireLock("deploy/web", "agent-a", 60_000);
    const entry = await first.addHistory({
      service: "web",
      kind: "deploy",
      release: "v2",
      previousRelease: "v1",
      via: "v1-turquoise",
      actor: "alice",
      startedAt: 1_700_000_000_000,
      finishedAt: 1_700_000_005_000,
      outcome: "succeeded",
      plan: ["start green", "flip", "stop blue"],
      steps: [{ name: "flip", startedAt: 1_700_000_004_000, durationMs: 3, ok: true }],
      error: null,
    });
    const event = await first.appendEvent({ service: "web", type: "deploy.succeeded", message: "v2 is live", data: { release: "v2" } });
    await first.close();

    const second = new SqliteStore(path);
    try {
      assert.equal(await second.revision(), last.revision);
      assert.deepEqual((await second.list("services/web/")).map((kv) => kv.value), ["blue", "v2"]);
      assert.ok(lock.ok);
      assert.deepEqual(await second.getLock("deploy/web"), lock.lock);
      assert.equal((await second.acquireLock("deploy/web", "agent-b", 1_000)).ok, false);
      assert.deepEqual(await second.listHistory("web"), [entry]);
      assert.deepEqual(await second.listEvents(), [event]);

      // The revision counter and the change log carry on from where the first process left them.
      const next = await second.put("services/web/color", "green");
      assert.equal(next.revision, last.revision + 1);
      const replayed: WatchEvent[] = [];
      const stop = second.watch("services/web/color", (e) => replayed.push(e), { fromRevision: 0 });
      await new Promise((resolve) => setTimeout(resolve, 20));
      stop();
      assert.deepEqual(
        replayed.map((e) => (e.type === "put" ? e.value : e.type)),
        ["blue", "green"],
      );
    } finally {
      await second.close();
    }
  });

  it("uses WAL journal mode", async () => {
    const path = join(dir, "wal.db");
    const store = new SqliteStore(path);
    try {
      await store.put("k", "v");
      assert.ok(existsSync(`${path}-wal`), "a WAL file sits beside the database while it is open");
      const raw = new Database(path, { readonly: true });
      try {
        assert.equal(raw.pragma("journal_mode", { simple: true }), "wal");
      } finally {
        raw.close();
      }
    } finally {
      await store.close();
    }
  });

  it("refuses a state file written by a newer turquoise", async () => {
    const path = join(dir, "future.db");
    const raw = new Database(path);
    raw.pragma("user_version = 99");
    raw.close();
    assert.throws(() => new SqliteStore(path), (e) => isTurquoiseError(e) && /schema 99/.test(e.message));
  });

  it("opens a schema-1 state file (history without via): old entries read as direct flips, new ones keep their via", async () => {
    const path = join(dir, "schema1.db");
    const raw = new Database(path);
    raw.exec(`CREATE TABLE history (id INTEGER PRIMARY KEY AUTOINCREMENT, service TEXT NOT NULL, kind TEXT NOT NULL, release TEXT NOT NULL,
      previous_release TEXT, actor TEXT NOT NULL, started_at INTEGER NOT NULL, finished_at INTEGER, outcome TEXT NOT NULL, plan TEXT NOT NULL,
      steps TEXT NOT NULL, error TEXT)`);
    raw.prepare("INSERT INTO history (service, kind, release, previous_release, actor, started_at, finished_at, outcome, plan, steps, error) VALUES ('web', 'deploy', 'v2', 'v1', 'alice', 1, 2, 'succeeded', '[]', '[]', NULL)").run();
    raw.pragma("user_version = 1");
    raw.close();
    const store = new SqliteStore(path);
    try {
      const [old] = await store.listHistory("web");
      assert.equal(old!.release, "v2");
      assert.equal(old!.via, null);
      const { id: _id, ...entry } = old!;
      const added = await store.addHistory({ ...entry, release: "v3", via: "v2-turquoise" });
      assert.equal((await store.listHistory("web", 1))[0]!.via, "v2-turquoise");
      assert.equal(added.via, "v2-turquoise");
    } finally {
      await store.close();
    }
    const reopened = new Database(path, { readonly: true });
    try {
      assert.equal(reopened.pragma("user_version", { simple: true }), 2);
    } finally {
      reopened.close();
    }
  });

  it("remembers only the last CHANGE_LOG_SIZE changes for replay", async () => {
    const path = join(dir, "trim.db");
    const store = new SqliteStore(path);
    const extra = 25;
    try {
      for (let i = 1; i <= CHANGE_LOG_SIZE + extra; i++) await store.put(`k/${i % 100}`, String(i));
      const replayed: WatchEvent[] = [];
      const stop = store.watch("", (e) => replayed.push(e), { fromRevision: 0 });
      await new Promise((resolve) => setTimeout(resolve, 50));
      stop();
      assert.equal(replayed.length, CHANGE_LOG_SIZE);
      assert.equal(replayed[0]?.revision, extra + 1);
      assert.equal(replayed.at(-1)?.revision, CHANGE_LOG_SIZE + extra);
    } finally {
      await store.close();
    }
  });

  it("keeps every acknowledged write when the writing process is killed with SIGKILL", { timeout: 30_000 }, async () => {
    const path = join(dir, "crash.db");
    const ackTarget = 500;
    const acked = await killAfterAcks({
      module: new URL("../../src/state/sqlite.js", import.meta.url),
      open: "new M.SqliteStore(process.env.TQ_DB)",
      env: { TQ_DB: path },
      target: ackTarget,
    });
    assert.ok(acked >= ackTarget, `child acknowledged only ${acked} writes`);

    const raw = new Database(path);
    try {
      assert.equal(raw.pragma("integrity_check", { simple: true }), "ok");
    } finally {
      raw.close();
    }
    const store = new SqliteStore(path);
    try {
      const keys = await store.list("k/");
      assert.ok(keys.length >= acked, `${keys.length} keys on disk, ${acked} acknowledged`);
      for (let i = 1; i <= acked; i++) {
        assert.equal(keys[i - 1]?.key, "k/" + String(i).padStart(8, "0"));
        assert.equal(keys[i - 1]?.value, `value ${i}`);
      }
      assert.ok((await store.revision()) >= acked);
    } finally {
      await store.close();
    }
  });
});
