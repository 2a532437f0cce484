// Runs against a real PostgreSQL (TURQUOISE_TEST_PG_URL, set up by scripts/ensure-postgres.sh),
// each test in a database of its own. Without that variable these tests fail; they never skip.

import assert from "node:assert/strict";
import { inspect } from "node:util";
import { after, afterEach, before, beforeEach, describe, it as nodeIt } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { freePort } from "../../src/util/net.js";
import type { MigrationEvent, MigrationStep } from "../../src/migrate/contract.js";
import { readMigrations } from "../../src/migrate/files.js";
import { openMigrator } from "../../src/migrate/index.js";
import { MIGRATION_LOCK_KEY, PostgresMigrator } from "../../src/migrate/postgres.js";
import { freshDatabase, testPgUrl, withClient, withDatabase } from "../support/postgres.js";
import { BASIC, migrationsDir, rejectsWith, runMigratorContract, TEST_TIMEOUT_MS } from "./contract.test-suite.js";

/** A lock bug shows as a hang; a timeout turns it into a failure. */
const it = (name: string, fn: () => Promise<void> | void): void => {
  nodeIt(name, { timeout: TEST_TIMEOUT_MS }, fn);
};

runMigratorContract(
  "postgres",
  async () => {
    const db = await freshDatabase();
    const make = () => openMigrator({ driver: "postgres", url: db.url, baseDir: "/nonexistent" });
    const migrator = make();
    return {
      migrator,
      another: make,
      raw: (sql) => withClient(db.url, async (c) => (await c.query(sql)).rows),
      cleanup: async () => {
        await migrator.close();
        await db.drop();
      },
    };
  },
  {
    outsideTransactionSql: "CREATE INDEX CONCURRENTLY people_by_email ON people (email);",
    missingColumn: /column "nme" does not exist/,
  },
);

/** Never a password: neither in the message, nor anywhere in what inspecting or serializing the error shows. */
function assertNoSecret(e: unknown, secret: string): void {
  for (const text of [String((e as Error).message), inspect(e, { depth: 10 }), JSON.stringify(e)]) {
    assert.ok(!text.includes(secret), `the password leaked: ${text}`);
  }
}

describe("PostgresMigrator", () => {
  let db: { url: string; name: string; drop: () => Promise<void> };
  let steps: MigrationStep[];
  const clients: pg.Client[] = [];

  /** A connection of the test's own, as live traffic would have. */
  async function session(): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: db.url });
    c.on("error", () => undefined);
    await c.connect();
    clients.push(c);
    return c;
  }

  beforeEach(async () => {
    db = await freshDatabase();
    steps = await readMigrations(BASIC);
  });

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.end().catch(() => undefined)));
    await db.drop();
  });

  it("retries a step that hits its lock_timeout, with back-off, until live traffic lets go", async () => {
    const m = new PostgresMigrator({ url: db.url, lockTimeoutMs: 100, retries: 4 });
    await m.up(steps, { to: 1 });
    const traffic = await session();
    await traffic.query("BEGIN");
    await traffic.query("LOCK TABLE people IN ACCESS EXCLUSIVE MODE");
    // Live traffic lets go after the step's first lock_timeout, whatever the machine's speed.
    let retried!: () => void;
    const released = new Promise<void>((resolve) => (retried = resolve)).then(() => traffic.query("COMMIT"));

    const events: MigrationEvent[] = [];
    const run = await m.up(steps, {
      to: 2,
      onEvent: (e) => {
        events.push(e);
        if (e.type === "step-retry") retried();
      },
    });
    await released;
    assert.deepEqual(run.steps.map((s) => s.version), [2]);
    const retries = events.filter((e) => e.type === "step-retry");
    // At least one: the step could only finish once the lock was gone.
    assert.ok(retries.length >= 1 && retries.length <= 3, `retried ${retries.length} times`);
    retries.forEach((e, i) => {
      assert.equal(e.type === "step-retry" && e.version, 2);
      assert.equal(e.type === "step-retry" && e.attempt, i + 1);
      assert.equal(e.type === "step-retry" && e.delayMs, 100 * 2 ** i);
      assert.match(e.type === "step-retry" ? e.reason : "", /lock timeout/);
    });
    const cols = await withClient(db.url, (c) => c.query("SELECT column_name FROM information_schema.columns WHERE table_name = 'people' ORDER BY column_name"));
    assert.deepEqual(cols.rows.map((r) => r.column_name), ["email", "id", "name"]);
    await m.close();
  });

  it("gives up after its retries when the lock is held longer, rolls back, says why, and frees the runner lock", async () => {
    const m = new PostgresMigrator({ url: db.url, lockTimeoutMs: 100, retries: 2 });
    await m.up(steps, { to: 1 });
    const traffic = await session();
    await traffic.query("BEGIN");
    await traffic.query("LOCK TABLE people IN ACCESS EXCLUSIVE MODE");
    const events: MigrationEvent[] = [];
    const e = await rejectsWith(m.up(steps, { to: 2, onEvent: (ev) => events.push(ev) }), "MIGRATION_FAILED");
    assert.equal(
      e.message,
      "0002_add_email.up.sql failed: canceling statement due to lock timeout (gave up after 3 attempts with a 100 ms lock_timeout: another session holds a lock this step needs)",
    );
    assert.equal(e.data.sqlState, "55P03");
    assert.deepEqual(events.filter((ev) => ev.type === "step-retry").map((ev) => (ev.type === "step-retry" ? ev.delayMs : 0)), [100, 200]);
    await traffic.query("COMMIT");

    const advisory = await withClient(db.url, (c) => c.query("SELECT pid FROM pg_locks WHERE locktype = 'advisory'"));
    assert.deepEqual(advisory.rows, [], "the runner lock was released");
    assert.equal((await m.status(steps)).current, 1);
    assert.deepEqual((await m.up(steps, { to: 2, noWait: true })).steps.map((s) => s.version), [2]);
    await m.close();
  });

  it("retries only the statement that hit the lock_timeout in a no-transaction step", async () => {
    const dir = await migrationsDir({
      "0005_concurrent_index.up.sql": "-- turquoise: no-transaction\nCREATE TABLE side (id INTEGER);\nCREATE INDEX CONCURRENTLY people_by_email ON people (email);\n",
    });
    const all = await readMigrations(dir);
    const m = new PostgresMigrator({ url: db.url, lockTimeoutMs: 100, retries: 4 });
    await m.up(all, { to: 4 });
    const traffic = await session();
    await traffic.query("BEGIN");
    await traffic.query("LOCK TABLE people IN ACCESS EXCLUSIVE MODE");
    // Let go once the index statement has hit its lock_timeout, not after a time a busy machine may outrun.
    let retried!: () => void;
    const released = new Promise<void>((resolve) => (retried = resolve)).then(() => traffic.query("COMMIT"));
    const events: MigrationEvent[] = [];
    const run = await m.up(all, {
      onEvent: (e) => {
        events.push(e);
        if (e.type === "step-retry") retried();
      },
    });
    await released;
    assert.deepEqual(run.steps.map((s) => s.version), [5]);
    assert.ok(events.some((e) => e.type === "step-retry"), "the index statement retried");
    const idx = await withClient(db.url, (c) => c.query("SELECT indexname FROM pg_indexes WHERE tablename = 'people' ORDER BY indexname"));
    assert.ok(idx.rows.some((r) => r.indexname === "people_by_email"));
    await m.close();
  });

  it("names the line of a failing statement", async () => {
    const dir = await migrationsDir({ "0005_split_name.up.sql": "-- a comment\nALTER TABLE people ADD COLUMN first_name TEXT;\n\nUPDATE people SET first_name = nme;\n" });
    const m = new PostgresMigrator({ url: db.url });
    const e = await rejectsWith(m.up(await readMigrations(dir)), "MIGRATION_FAILED");
    assert.equal(e.message, '0005_split_name.up.sql failed: column "nme" does not exist');
    assert.equal(e.details[0]?.line, 4);
    assert.equal(e.data.sqlState, "42703");
    await m.close();
  });

  it("names the process holding the runner lock when noWait refuses", async () => {
    const holder = await session();
    await holder.query("SET application_name = 'other deploy'");
    await holder.query("SELECT pg_advisory_lock($1::bigint)", [MIGRATION_LOCK_KEY]);
    const pid = (await holder.query("SELECT pg_backend_pid() AS pid")).rows[0].pid as number;
    const m = new PostgresMigrator({ url: db.url });
    const e = await rejectsWith(m.up(steps, { noWait: true }), "LOCKED");
    assert.ok(e.message.includes(`another migration is running on the postgres database 127.0.0.1:5432/${db.name}`), e.message);
    assert.ok(e.message.includes(`(pid ${pid}, other deploy) holds the migration lock`), e.message);
    assert.equal((await m.status(steps)).current, 0, "nothing ran");
    await m.close();
  });

  it("waits for the runner lock on the database it migrates, and only there", async () => {
    const holder = await session();
    await holder.query("SELECT pg_advisory_lock($1::bigint)", [MIGRATION_LOCK_KEY]);
    const m = new PostgresMigrator({ url: db.url });
    const events: MigrationEvent[] = [];
    const waiting = m.up(steps, { onEvent: (e) => events.push(e) });
    await sleep(200);
    assert.deepEqual(events, [{ type: "waiting-for-lock" }]);
    await holder.query("SELECT pg_advisory_unlock($1::bigint)", [MIGRATION_LOCK_KEY]);
    assert.equal((await waiting).steps.length, 4);

    // Another database on the same server has its own runner lock.
    const other = await freshDatabase();
    try {
      await holder.query("SELECT pg_advisory_lock($1::bigint)", [MIGRATION_LOCK_KEY]);
      const elsewhere = new PostgresMigrator({ url: other.url });
      assert.equal((await elsewhere.up(steps, { noWait: true })).steps.length, 4);
      await elsewhere.close();
    } finally {
      await other.drop();
    }
    await m.close();
  });

  it("fails clearly, before running anything and without the password, when nothing listens at the address", async () => {
    const port = await freePort();
    const url = `postgres://turquoise:s3cret-pw@127.0.0.1:${port}/turquoise_test`;
    const m = openMigrator({ driver: "postgres", url, baseDir: "/" });
    const events: MigrationEvent[] = [];
    for (const attempt of [() => m.status(steps), () => m.up(steps, { onEvent: (e) => events.push(e) }), () => m.down(steps, { to: 0 })]) {
      const e = await rejectsWith(attempt(), "MIGRATION_FAILED");
      assert.equal(e.message, `cannot connect to the postgres database at 127.0.0.1:${port}/turquoise_test: ECONNREFUSED`);
      assertNoSecret(e, "s3cret-pw");
    }
    assert.deepEqual(events, []);
    await m.close();
  });

  it("does not leak the password when the server refuses it", async () => {
    const admin = new URL(testPgUrl());
    const url = withDatabase(`postgres://turquoise:wr0ng-s3cret@${admin.host}/x`, db.name);
    const m = new PostgresMigrator({ url });
    const e = await rejectsWith(m.up(steps), "MIGRATION_FAILED");
    assert.equal(e.message, `cannot connect to the postgres database at ${admin.hostname}:${admin.port || 5432}/${db.name}: password authentication failed for user "turquoise"`);
    assertNoSecret(e, "wr0ng-s3cret");
    await m.close();
  });

  it("keeps the password out of step errors and retry events, even when the database echoes it", async () => {
    const secret = "turquoise";
    const url = db.url; // the test role's password is "turquoise"; any echo of it must be masked
    assert.ok(new URL(url).password === secret);
    const dir = await migrationsDir({
      "0005_echo.mjs": `export async function up(db) { throw new Error("connecting to " + ${JSON.stringify(url)} + " with password ${secret} failed"); }`,
    });
    const m = new PostgresMigrator({ url });
    const e = await rejectsWith(m.up(await readMigrations(dir)), "MIGRATION_FAILED");
    assert.match(e.message, /^0005_echo\.mjs up\(\) failed: connecting to postgres:\/\/\*\*\*:\*\*\*@127\.0\.0\.1:5432\/\S+ with password \*\*\* failed$/);
    assertNoSecret(e, `:${secret}@`);
    assertNoSecret(e, `password ${secret}`);
    await m.close();
  });

  it("refuses a URL that is not postgres://, without echoing it", () => {
    assert.throws(
      () => new PostgresMigrator({ url: "mysql://root:hunter2@db/app" }),
      (e: Error) => !e.message.includes("hunter2") && /postgres:\/\//.test(e.message),
    );
  });
});

describe("PostgresMigrator without a test database", () => {
  let saved: string | undefined;
  before(() => {
    saved = process.env.TURQUOISE_TEST_PG_URL;
  });
  after(() => {
    if (saved !== undefined) process.env.TURQUOISE_TEST_PG_URL = saved;
  });

  it("says to run scripts/ensure-postgres.sh instead of skipping", () => {
    delete process.env.TURQUOISE_TEST_PG_URL;
    assert.throws(() => testPgUrl(), /TURQUOISE_TEST_PG_URL is not set: run scripts\/ensure-postgres\.sh/);
  });
});
