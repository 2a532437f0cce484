import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it as nodeIt } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import Database from "better-sqlite3";
import type { MigrationEvent } from "../../src/migrate/contract.js";
import { readMigrations } from "../../src/migrate/files.js";
import { openMigrator } from "../../src/migrate/index.js";
import { SqliteMigrator, sqlitePath } from "../../src/migrate/sqlite.js";
import { BASIC, rejectsWith, runMigratorContract, TEST_TIMEOUT_MS, type Rows } from "./contract.test-suite.js";

/** A lock bug shows as a hang; a timeout turns it into a failure. */
const it = (name: string, fn: () => Promise<void> | void): void => {
  nodeIt(name, { timeout: TEST_TIMEOUT_MS }, fn);
};

function rawSql(path: string, sql: string): Rows {
  const db = new Database(path);
  try {
    const stmt = db.prepare(sql);
    return stmt.reader ? (stmt.all() as Rows) : (stmt.run(), []);
  } finally {
    db.close();
  }
}

runMigratorContract(
  "sqlite",
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "turquoise-migrate-sqlite-"));
    const url = "sqlite:app.db";
    const make = () => openMigrator({ driver: "sqlite", url, baseDir: dir });
    const migrator = make();
    return {
      migrator,
      another: make,
      raw: async (sql) => rawSql(join(dir, "app.db"), sql),
      cleanup: async () => {
        await migrator.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  },
  { outsideTransactionSql: "VACUUM;", missingColumn: /no such column: nme/ },
);

describe("SqliteMigrator", () => {
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "turquoise-migrate-sqlite-"));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reads every URL form: sqlite:///absolute, sqlite:relative against the base dir, a plain path", () => {
    assert.equal(sqlitePath("sqlite:///var/lib/app/app.db", "/base"), "/var/lib/app/app.db");
    assert.equal(sqlitePath("sqlite:/var/lib/app/app.db", "/base"), "/var/lib/app/app.db");
    assert.equal(sqlitePath("sqlite:data/app.db", "/base"), "/base/data/app.db");
    assert.equal(sqlitePath("sqlite://data/app.db", "/base"), "/base/data/app.db");
    assert.equal(sqlitePath("data/app.db", "/base"), "/base/data/app.db");
    assert.equal(sqlitePath("/srv/app.db", "/base"), "/srv/app.db");
    assert.equal(sqlitePath("sqlite:///srv/my%20app.db?mode=rwc", "/base"), "/srv/my app.db");
    assert.equal(new SqliteMigrator({ url: "sqlite:x.db", baseDir: dir }).path, join(dir, "x.db"));
  });

  it("refuses an in-memory database, which releases could not share", () => {
    assert.throws(() => sqlitePath("sqlite::memory:", "/base"), /names no file/);
    assert.throws(() => sqlitePath(":memory:", "/base"), /names no file/);
  });

  it("looks at a database that does not exist yet without creating it, and a dry run creates nothing", async () => {
    const path = join(dir, "never.db");
    const m = new SqliteMigrator({ url: path, baseDir: dir });
    const steps = await readMigrations(BASIC);
    assert.equal((await m.status(steps)).current, 0);
    assert.equal((await m.up(steps, { dryRun: true })).steps.length, 4);
    assert.equal(existsSync(path), false);
    assert.equal(existsSync(`${path}-migrate.lock`), false);
    await m.close();
  });

  it("fails clearly, before running anything, when the database's directory is missing", async () => {
    const m = new SqliteMigrator({ url: "sqlite:missing/dir/app.db", baseDir: dir });
    const steps = await readMigrations(BASIC);
    for (const attempt of [() => m.status(steps), () => m.up(steps)]) {
      const e = await rejectsWith(attempt(), "MIGRATION_FAILED");
      assert.equal(e.message, `cannot open the sqlite database at ${join(dir, "missing/dir/app.db")}: the directory ${join(dir, "missing/dir")} does not exist`);
    }
    assert.equal(existsSync(join(dir, "missing")), false);
  });

  it("fails clearly when the file is not a database", async () => {
    const path = join(dir, "not-a-db.db");
    const { writeFile } = await import("node:fs/promises");
    await writeFile(path, "this is not sqlite, just text that is long enough to have a header.".repeat(10));
    const e = await rejectsWith(new SqliteMigrator({ url: path, baseDir: dir }).status(await readMigrations(BASIC)), "MIGRATION_FAILED");
    assert.match(e.message, /cannot open the sqlite database at .*not-a-db\.db: file is not a database/);
  });

  it("waits for the app's write lock, retrying with back-off, then runs the step", async () => {
    const path = join(dir, "busy.db");
    const m = new SqliteMigrator({ url: path, baseDir: dir, lockTimeoutMs: 50, retries: 4 });
    const steps = await readMigrations(BASIC);
    await m.up(steps, { to: 1 });
    const app = new Database(path);
    app.exec("BEGIN IMMEDIATE");
    const release = sleep(300).then(() => app.exec("COMMIT"));
    const events: MigrationEvent[] = [];
    const run = await m.up(steps, { to: 2, onEvent: (e) => events.push(e) });
    await release;
    app.close();
    assert.deepEqual(run.steps.map((s) => s.version), [2]);
    const retries = events.filter((e) => e.type === "step-retry");
    assert.ok(retries.length >= 1, "it retried");
    assert.deepEqual(
      retries.map((e) => (e.type === "step-retry" ? [e.version, e.attempt, e.delayMs] : [])),
      [
        [2, 1, 100],
        [2, 2, 200],
      ].slice(0, retries.length),
    );
    await m.close();
  });

  it("waits, without blocking the process, while the app holds the whole database", async () => {
    const path = join(dir, "exclusive.db");
    const m = new SqliteMigrator({ url: path, baseDir: dir, lockTimeoutMs: 100, retries: 2 });
    const steps = await readMigrations(BASIC);
    await m.up(steps, { to: 1 });
    const app = new Database(path);
    app.exec("BEGIN EXCLUSIVE");
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 10);
    const release = sleep(200).then(() => app.exec("COMMIT"));
    try {
      assert.equal((await m.status(steps)).current, 1);
      assert.ok(ticks >= 5, `the event loop kept running while it waited (${ticks} ticks)`);
      assert.deepEqual((await m.up(steps)).steps.map((s) => s.version), [2, 3, 4]);
    } finally {
      clearInterval(ticker);
      await release;
      app.close();
    }
    await m.close();
  });

  it("gives up with a clear message when the app holds its lock past every retry, and changes nothing", async () => {
    const path = join(dir, "stuck.db");
    const m = new SqliteMigrator({ url: path, baseDir: dir, lockTimeoutMs: 30, retries: 1 });
    const steps = await readMigrations(BASIC);
    await m.up(steps, { to: 1 });
    const app = new Database(path);
    app.exec("BEGIN IMMEDIATE");
    try {
      const e = await rejectsWith(m.up(steps, { to: 2 }), "MIGRATION_FAILED");
      assert.equal(e.message, "0002_add_email.up.sql failed: the database stayed locked by another connection (gave up after 2 attempts, waiting 30 ms each)");
    } finally {
      app.exec("COMMIT");
      app.close();
    }
    assert.equal((await m.status(steps)).current, 1);
    assert.deepEqual((await m.up(steps, { to: 2 })).steps.map((s) => s.version), [2]);
    await m.close();
  });

  it("takes the runner lock across processes, and gets it back when its holder dies", async () => {
    const path = join(dir, "shared.db");
    const holder = spawn(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `import Database from "better-sqlite3";
         const db = new Database(${JSON.stringify(`${path}-migrate.lock`)});
         db.exec("BEGIN EXCLUSIVE");
         console.log("locked");
         setInterval(() => {}, 1000);`,
      ],
      { cwd: process.cwd(), stdio: ["ignore", "pipe", "inherit"] },
    );
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.on("data", (b: Buffer) => b.toString().includes("locked") && resolve());
        holder.once("exit", (code) => reject(new Error(`lock holder exited with ${code}`)));
      });
      const m = new SqliteMigrator({ url: path, baseDir: dir });
      const steps = await readMigrations(BASIC);
      const e = await rejectsWith(m.up(steps, { noWait: true }), "LOCKED");
      assert.match(e.message, /another migration is running on the sqlite database .*shared\.db/);

      const events: MigrationEvent[] = [];
      const waiting = m.up(steps, { onEvent: (ev) => events.push(ev) });
      await sleep(150);
      assert.deepEqual(events, [{ type: "waiting-for-lock" }], "it waits while the other process holds the lock");
      holder.kill("SIGKILL");
      assert.equal((await waiting).steps.length, 4);
      await m.close();
    } finally {
      holder.kill("SIGKILL");
    }
  });
});
