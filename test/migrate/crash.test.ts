// Crash tests: the process running a migration is killed mid-way (SIGKILL: no cleanup of any kind),
// then a new runner finishes the job. A backfill resumes from its last committed batch and ends
// with every row migrated exactly once; an index build killed mid-way is cleaned up and built again.

import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, it as nodeIt } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { BackfillProgress, MigrationEvent } from "../../src/migrate/contract.js";
import { readMigrations } from "../../src/migrate/files.js";
import { DRIVERS, testDatabase, type TestDatabase } from "../support/migrate-db.js";
import { withClient } from "../support/postgres.js";
import { migrationsDir } from "./contract.test-suite.js";

const it = (name: string, fn: () => Promise<void> | void): void => {
  nodeIt(name, { timeout: 120_000 }, fn);
};

const RUNNER = fileURLToPath(new URL("../support/migrate-runner.js", import.meta.url));
const ROWS = 20_000;

/** Starts a runner; `until` resolves with the first event the predicate accepts. */
function runner(db: TestDatabase, dir: string): { child: ChildProcess; until: (p: (e: MigrationEvent | { type: "finished" }) => boolean) => Promise<MigrationEvent | { type: "finished" }>; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [RUNNER, db.driver, db.url, db.baseDir, dir], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  const lines = createInterface({ input: child.stdout! });
  const events: Array<MigrationEvent | { type: "finished" }> = [];
  const waiters: Array<{ p: (e: MigrationEvent | { type: "finished" }) => boolean; resolve: (e: MigrationEvent | { type: "finished" }) => void }> = [];
  lines.on("line", (l) => {
    const e = JSON.parse(l) as MigrationEvent | { type: "finished" };
    events.push(e);
    for (const w of [...waiters]) if (w.p(e)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(e); }
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const until = (p: (e: MigrationEvent | { type: "finished" }) => boolean) => {
    const seen = events.find(p);
    if (seen) return Promise.resolve(seen);
    return Promise.race([
      new Promise<MigrationEvent | { type: "finished" }>((resolve) => waiters.push({ p, resolve })),
      exited.then((code) => { throw new Error(`the runner exited (${code}) before the awaited event: ${stderr}`); }),
    ]);
  };
  return { child, until, exited };
}

for (const driver of DRIVERS) {
  describe(`a runner killed mid-backfill (${driver})`, () => {
    let db: TestDatabase;
    beforeEach(async () => {
      db = await testDatabase(driver);
    });
    afterEach(async () => {
      await db.cleanup();
    });

    it("resumes from the last committed batch and migrates every row exactly once", async () => {
      const dir = await migrationsDir({
        "0001_items.up.sql": "CREATE TABLE items (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, touched INTEGER NOT NULL DEFAULT 0);",
        // A fixed pause keeps the runner busy long enough to be killed between (or inside) batches.
        "0002_touch.up.sql": "-- turquoise: backfill table=items key=id batch=100 pause=5ms\nALTER TABLE items ADD COLUMN doubled INTEGER;\nUPDATE items SET doubled = n * 2, touched = touched + 1 WHERE {batch};\n",
      }, null);
      await db.migrator().up(await readMigrations(dir), { to: 1 });
      await db.raw(`INSERT INTO items (id, n) SELECT x, x FROM (${driver === "postgres" ? `SELECT generate_series(1, ${ROWS}) AS x` : `WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < ${ROWS}) SELECT x FROM s`}) g`);

      const first = runner(db, dir);
      await first.until((e) => e.type === "backfill-progress" && e.rowsDone >= 3_000);
      first.child.kill("SIGKILL");
      await first.exited;

      const left = await db.raw("SELECT rows_done FROM turquoise_backfills");
      const committed = Number(left[0]!.rows_done);
      assert.ok(committed >= 3_000 && committed < ROWS, `the kill came mid-backfill (${committed} rows committed)`);
      // What the progress row says is exactly what the table holds: no batch half in.
      const touched = await db.raw("SELECT touched, count(*) AS n FROM items GROUP BY touched ORDER BY touched");
      assert.deepEqual(touched.map((r) => [Number(r.touched), Number(r.n)]), [[0, ROWS - committed], [1, committed]]);
      assert.equal(Number((await db.raw("SELECT max(version) AS v FROM turquoise_migrations"))[0]!.v), 1);

      const second = runner(db, dir);
      const resumed = (await second.until((e) => e.type === "backfill-progress")) as BackfillProgress;
      assert.equal(resumed.resumedFrom, committed);
      await second.until((e) => e.type === "finished");
      assert.equal(await second.exited, 0);
      const after = await db.raw("SELECT touched, count(*) AS n FROM items GROUP BY touched");
      assert.deepEqual(after.map((r) => [Number(r.touched), Number(r.n)]), [[1, ROWS]], "every row exactly once");
      assert.equal(Number((await db.raw("SELECT count(*) AS n FROM items WHERE doubled = n * 2"))[0]!.n), ROWS);
      assert.equal(Number((await db.raw("SELECT max(version) AS v FROM turquoise_migrations"))[0]!.v), 2);
      assert.deepEqual(await db.raw("SELECT * FROM turquoise_backfills"), []);
    });
  });
}

describe("a runner killed mid-way through CREATE INDEX CONCURRENTLY (postgres)", () => {
  let db: TestDatabase;
  beforeEach(async () => {
    db = await testDatabase("postgres");
  });
  afterEach(async () => {
    await db.cleanup();
  });

  it("leaves an invalid index that the next run drops and builds again", async () => {
    const dir = await migrationsDir({
      "0001_items.up.sql": "CREATE TABLE items (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);\nINSERT INTO items SELECT x, x % 97 FROM generate_series(1, 5000) x;",
      "0002_index.up.sql": "-- turquoise: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS items_by_n ON items (n);\n",
    }, null);
    await db.migrator().up(await readMigrations(dir), { to: 1 });

    // An open transaction with a snapshot makes the build wait in its last phase, after the
    // index exists but before it is valid: the window a crash leaves an invalid index in.
    await withClient(db.url, async (blocker) => {
      await blocker.query("BEGIN ISOLATION LEVEL REPEATABLE READ");
      await blocker.query("SELECT count(*) FROM items");
      const first = runner(db, dir);
      for (let i = 0; ; i++) {
        const r = await db.raw("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('items_by_n')");
        if (r.length === 1) break;
        assert.ok(i < 600, "the index build never started");
        await sleep(50);
      }
      first.child.kill("SIGKILL");
      await first.exited;
      // The killed runner's server session would finish the build once the blocker lets go; a
      // crashed host's session is gone with it, as pg_terminate_backend makes it here.
      await db.raw("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'turquoise migrate' AND datname = current_database()");
      await blocker.query("ROLLBACK");
    });
    for (let i = 0; (await db.raw("SELECT 1 FROM pg_stat_activity WHERE application_name = 'turquoise migrate' AND datname = current_database()")).length > 0; i++) {
      assert.ok(i < 600, "the killed runner's session never went away");
      await sleep(50);
    }
    assert.deepEqual(await db.raw("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('items_by_n')"), [{ indisvalid: false }], "the crash left an invalid index");

    const events: MigrationEvent[] = [];
    await db.migrator().up(await readMigrations(dir), { onEvent: (e) => events.push(e) });
    assert.deepEqual(events.filter((e) => e.type === "index-cleanup"), [{ type: "index-cleanup", version: 2, index: "items_by_n" }]);
    assert.deepEqual(await db.raw("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('items_by_n')"), [{ indisvalid: true }], "IF NOT EXISTS alone would have kept the invalid one");
    assert.equal(Number((await db.raw("SELECT max(version) AS v FROM turquoise_migrations"))[0]!.v), 2);
  });
});
