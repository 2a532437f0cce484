// Batched backfill steps on both drivers, against real databases: every row once, in batches, the
// step recorded with the last batch, resumed after a failure from the last committed key.

import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it as nodeIt } from "node:test";
import type { BackfillProgress, MigrationEvent } from "../../src/migrate/contract.js";
import { readMigrations } from "../../src/migrate/files.js";
import { DRIVERS, testDatabase, type TestDatabase } from "../support/migrate-db.js";
import { migrationsDir, rejectsWith, TEST_TIMEOUT_MS } from "./contract.test-suite.js";

const it = (name: string, fn: () => Promise<void> | void): void => {
  nodeIt(name, { timeout: TEST_TIMEOUT_MS }, fn);
};

const CREATE = `CREATE TABLE items (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, touched INTEGER NOT NULL DEFAULT 0);`;
/** The backfill: `touched` counts how often each row was visited, so "exactly once" can be read back. */
const BACKFILL = `-- turquoise: backfill table=items key=id batch=400 pause=0ms
ALTER TABLE items ADD COLUMN tenth INTEGER CHECK (tenth < 100);
UPDATE items SET tenth = 100 / n, touched = touched + 1 WHERE {batch};
`;

async function seed(db: TestDatabase, rows: number): Promise<void> {
  await db.raw(`INSERT INTO items (id, n) SELECT x, 10 FROM (${db.driver === "postgres" ? `SELECT generate_series(1, ${rows}) AS x` : `WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < ${rows}) SELECT x FROM s`}) g`);
}

for (const driver of DRIVERS) {
  describe(`backfill steps (${driver})`, () => {
    let db: TestDatabase;
    beforeEach(async () => {
      db = await testDatabase(driver);
    });
    afterEach(async () => {
      await db.cleanup();
    });

    async function prepared(rows: number, files: Record<string, string> = {}) {
      const dir = await migrationsDir({ "0001_items.up.sql": CREATE, "0002_tenth.up.sql": BACKFILL, ...files }, null);
      const steps = await readMigrations(dir);
      await db.migrator().up(steps, { to: 1 });
      await seed(db, rows);
      return { dir, steps };
    }

    it("updates every row exactly once in batches, and records the step with its last batch", async () => {
      const { steps } = await prepared(1_000);
      assert.deepEqual((await db.migrator().status(steps)).backfills, [], "no backfill ever ran: no progress table, nothing unfinished");
      const events: MigrationEvent[] = [];
      const run = await db.migrator().up(steps, { onEvent: (e) => events.push(e) });
      assert.equal(run.to, 2);
      const counts = await db.raw("SELECT touched, count(*) AS n FROM items GROUP BY touched");
      assert.deepEqual(counts.map((r) => [Number(r.touched), Number(r.n)]), [[1, 1000]]);
      assert.equal(Number((await db.raw("SELECT count(*) AS n FROM items WHERE tenth = 10"))[0]!.n), 1000);
      const progress = events.filter((e): e is BackfillProgress => e.type === "backfill-progress");
      // 400 + 400 + 200: three batches, reported at the start, after each batch, and when done.
      assert.deepEqual(progress.map((p) => [p.rowsDone, p.batches, p.done]), [[0, 0, false], [400, 1, false], [800, 2, false], [1000, 3, false], [1000, 3, true]]);
      assert.ok(progress.every((p) => p.rowsEstimated >= p.rowsDone && p.rowsEstimated > 0 && p.table === "items"));
      assert.equal(progress.at(-1)!.etaMs, 0);
      assert.deepEqual(await db.raw("SELECT * FROM turquoise_backfills"), [], "the progress row goes with the transaction that records the step");
    });

    it("resumes after a failed batch from the last committed key, repeating no row", async () => {
      const { steps } = await prepared(1_000);
      await db.raw("UPDATE items SET n = 1 WHERE id = 650");
      const e = await rejectsWith(db.migrator().up(steps), "MIGRATION_FAILED");
      assert.match(e.message, /0002_tenth\.up\.sql failed: .*check constraint/i);
      assert.equal(e.details[0]?.line, 3, "names the batched statement's line");
      const left = await db.raw("SELECT last_key, rows_done, batches FROM turquoise_backfills");
      assert.deepEqual(left.map((r) => [JSON.parse(String(r.last_key)), Number(r.rows_done), Number(r.batches)]), [[driver === "postgres" ? "400" : 400, 400, 1]]);
      assert.equal(Number((await db.raw("SELECT max(version) AS v FROM turquoise_migrations"))[0]!.v), 1, "the step is not recorded until its last batch");
      const status = await db.migrator().status(steps);
      assert.deepEqual(status.backfills?.map((b) => [b.version, b.direction, b.rowsDone, b.batches]), [[2, "up", 400, 1]], "status shows the unfinished backfill");
      assert.ok(Math.abs(status.backfills![0]!.updatedAt - Date.now()) < 3_600_000, `a time in ms: ${status.backfills![0]!.updatedAt}`);

      await db.raw("UPDATE items SET n = 10 WHERE id = 650");
      const events: MigrationEvent[] = [];
      await db.migrator().up(steps, { onEvent: (e) => events.push(e) });
      const first = events.find((e): e is BackfillProgress => e.type === "backfill-progress")!;
      assert.equal(first.resumedFrom, 400);
      const counts = await db.raw("SELECT touched, count(*) AS n FROM items GROUP BY touched");
      assert.deepEqual(counts.map((r) => [Number(r.touched), Number(r.n)]), [[1, 1000]], "every row exactly once across both runs");
      // The setup (ADD COLUMN) ran once: a second run of it would have failed.
      assert.equal(Number((await db.raw("SELECT max(version) AS v FROM turquoise_migrations"))[0]!.v), 2);
      assert.deepEqual((await db.migrator().status(steps)).backfills, [], "nothing left once it finished");
    });

    it("refuses to resume from a file edited since the interrupted run, naming both checksums", async () => {
      const { dir } = await prepared(500);
      await db.raw("UPDATE items SET n = 1 WHERE id = 450");
      await rejectsWith(db.migrator().up(await readMigrations(dir)), "MIGRATION_FAILED");
      const { writeFile } = await import("node:fs/promises");
      await writeFile(`${dir}/0002_tenth.up.sql`, BACKFILL.replace("100 / n", "1000 / n"));
      const e = await rejectsWith(db.migrator().up(await readMigrations(dir)), "CONFLICT");
      assert.match(e.message, /interrupted backfill of step 2 \(up\) was started from a different file \(checksum [0-9a-f]{12}, now [0-9a-f]{12}\)/);
    });

    it("visits rows written behind the cursor's end while it runs, and none twice", async () => {
      const { steps } = await prepared(1_000);
      let inserted = false;
      const m = db.migrator();
      // A row added while the backfill runs, above every key it has passed: a later batch takes it.
      const writes: Promise<unknown>[] = [];
      await m.up(steps, {
        onEvent: (e) => {
          if (e.type === "backfill-progress" && e.batches === 1 && !inserted) {
            inserted = true;
            writes.push(db.raw("INSERT INTO items (id, n) VALUES (5000, 10)"));
          }
        },
      });
      await Promise.all(writes);
      const rows = await db.raw("SELECT touched FROM items WHERE id = 5000");
      // sqlite writes synchronously before the next batch; postgres may land after the last one.
      if (driver === "sqlite") assert.equal(Number(rows[0]!.touched), 1);
      else assert.ok([0, 1].includes(Number(rows[0]!.touched)));
      assert.deepEqual((await db.raw("SELECT count(*) AS n FROM items WHERE touched > 1")).map((r) => Number(r.n)), [0]);
    });

    it("runs a down file's own backfill, and a table of text keys", async () => {
      const dir = await migrationsDir({
        "0001_codes.up.sql": "CREATE TABLE codes (code TEXT PRIMARY KEY, label TEXT NOT NULL, upper_label TEXT, touched INTEGER NOT NULL DEFAULT 0);",
        "0002_upper.up.sql": "-- turquoise: backfill table=codes key=code batch=7\nUPDATE codes SET upper_label = upper(label), touched = touched + 1 WHERE {batch};",
        "0002_upper.down.sql": "-- turquoise: backfill table=codes key=code batch=5\nUPDATE codes SET upper_label = NULL, touched = touched + 10 WHERE {batch};",
      }, null);
      const steps = await readMigrations(dir);
      assert.deepEqual(steps[1]!.backfill, { up: { table: "codes", key: "code", batchSize: 7, pauseMs: null }, down: { table: "codes", key: "code", batchSize: 5, pauseMs: null } });
      await db.migrator().up(steps, { to: 1 });
      for (let i = 0; i < 23; i++) await db.raw("INSERT INTO codes (code, label) VALUES ($1, $2)".replace(/\$\d/g, (m) => (driver === "sqlite" ? "?" : m)), [`c-${String(i).padStart(3, "0")}'"`, `label ${i}`]);
      await db.migrator().up(steps);
      assert.deepEqual((await db.raw("SELECT DISTINCT touched FROM codes")).map((r) => Number(r.touched)), [1]);
      await db.migrator().down(steps, { to: 1 });
      assert.deepEqual((await db.raw("SELECT DISTINCT touched FROM codes")).map((r) => Number(r.touched)), [11]);
      assert.deepEqual((await db.raw("SELECT count(*) AS n FROM codes WHERE upper_label IS NOT NULL")).map((r) => Number(r.n)), [0]);
      assert.equal(Number((await db.raw("SELECT count(*) AS n FROM turquoise_migrations"))[0]!.n), 1);
    });
  });
}
