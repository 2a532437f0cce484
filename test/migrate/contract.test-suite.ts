// The Migrator contract as tests. Every driver calls runMigratorContract against a real database;
// a driver is done when it passes.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { appendFile, cp, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, afterEach, beforeEach, describe, it as nodeIt } from "node:test";
import { isTurquoiseError, type TurquoiseError } from "../../src/errors.js";
import type { MigrationEvent, MigrationStep, Migrator } from "../../src/migrate/contract.js";
import { readMigrations } from "../../src/migrate/files.js";

/** A lock bug shows as a hang; a timeout turns it into a failure. */
export const TEST_TIMEOUT_MS = 30_000;
const it = (name: string, fn: () => Promise<void> | void): void => {
  nodeIt(name, { timeout: TEST_TIMEOUT_MS }, fn);
};

export const FIXTURES = fileURLToPath(new URL("../../../test/fixtures/migrations/", import.meta.url));
export const BASIC = join(FIXTURES, "basic");

export type Rows = Record<string, unknown>[];

export interface MigratorFixture {
  migrator: Migrator;
  /** A second migrator on the same database, as a second runner (another deploy) would have. */
  another: () => Migrator;
  /** Runs SQL on the database behind the migrator's back. */
  raw: (sql: string) => Promise<Rows>;
  cleanup: () => Promise<void>;
}

export interface ContractOptions {
  /** SQL the database refuses to run inside a transaction. */
  outsideTransactionSql: string;
  /** How the database words an unknown column named nme. */
  missingColumn: RegExp;
}

const tempDirs: string[] = [];

/** A migrations directory of its own: the basic fixture's files (unless base is null) plus files. */
export async function migrationsDir(files: Record<string, string> = {}, base: string | null = BASIC): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "turquoise-migrations-"));
  tempDirs.push(dir);
  if (base) await cp(base, dir, { recursive: true });
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  return dir;
}

after(async () => {
  await Promise.all(tempDirs.map((d) => rm(d, { recursive: true, force: true })));
});

export function sha256File(bytes: Buffer): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Asserts a TurquoiseError with this code, and hands it back for further checks. */
export async function rejectsWith(p: Promise<unknown>, code: string): Promise<TurquoiseError> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught !== undefined, `expected a ${code} error, but it resolved`);
  assert.ok(isTurquoiseError(caught), `expected a TurquoiseError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  return caught;
}

const SLOW_STEP = `
export async function up(db) {
  await new Promise((resolve) => setTimeout(resolve, 1000));
  await db.query("CREATE TABLE slow (id INTEGER)");
}
export async function down(db) {
  await db.query("DROP TABLE slow");
}
`;

export function runMigratorContract(name: string, makeMigrator: () => Promise<MigratorFixture>, options: ContractOptions): void {
  describe(`Migrator contract: ${name}`, () => {
    let fx: MigratorFixture;
    let m: Migrator;
    let basic: MigrationStep[];

    beforeEach(async () => {
      fx = await makeMigrator();
      m = fx.migrator;
      basic = await readMigrations(BASIC);
    });

    afterEach(async () => {
      await fx?.cleanup();
    });

    const versions = (steps: Array<{ version: number }>): number[] => steps.map((s) => s.version);
    const recorded = async (): Promise<number[]> => (await fx.raw("SELECT version FROM turquoise_migrations ORDER BY version")).map((r) => Number(r.version));

    it("reports a fresh database: current 0, every step pending, nothing wrong", async () => {
      const status = await m.status(basic);
      assert.equal(status.current, 0);
      assert.deepEqual(status.applied, []);
      assert.deepEqual(versions(status.pending), [1, 2, 3, 4]);
      assert.deepEqual(status.problems, []);
    });

    it("up applies every step in order and records each one's checksum and phase", async () => {
      const events: MigrationEvent[] = [];
      const before = Date.now();
      const run = await m.up(basic, { onEvent: (e) => events.push(e) });
      assert.equal(run.from, 0);
      assert.equal(run.to, 4);
      assert.equal(run.dryRun, false);
      assert.deepEqual(run.steps.map((s) => [s.version, s.name, s.direction]), [
        [1, "create_people", "up"],
        [2, "add_email", "up"],
        [3, "seed_people", "up"],
        [4, "people_by_name", "up"],
      ]);
      assert.ok(run.steps.every((s) => s.durationMs >= 0));
      assert.deepEqual(
        events.filter((e) => e.type === "step-started" || e.type === "step-done").map((e) => `${e.type}:${"version" in e ? e.version : ""}`),
        ["step-started:1", "step-done:1", "step-started:2", "step-done:2", "step-started:3", "step-done:3", "step-started:4", "step-done:4"],
      );

      const status = await m.status(basic);
      assert.equal(status.current, 4);
      assert.deepEqual(status.pending, []);
      assert.deepEqual(status.problems, []);
      for (const step of basic) {
        const applied = status.applied.find((a) => a.version === step.version);
        assert.ok(applied, `version ${step.version} recorded`);
        assert.equal(applied.name, step.name);
        assert.equal(applied.checksum, sha256File(await readFile(step.upFile)));
        assert.equal(applied.phase, step.version === 4 ? "contract" : "expand");
        assert.ok(applied.appliedAt >= before - 1_000 && applied.appliedAt <= Date.now() + 1_000, `appliedAt ${applied.appliedAt} is now`);
      }
      assert.deepEqual(await recorded(), [1, 2, 3, 4]);
      // The module step ran, with its $n values.
      assert.deepEqual(
        (await fx.raw("SELECT id, name, email FROM people ORDER BY id")).map((r) => [Number(r.id), r.name, r.email]),
        [
          [1, "Ada", "ada@example.com"],
          [2, "Grace", null],
        ],
      );
    });

    it("up --to stops at that version; status shows the rest pending; up again finishes and then has nothing to do", async () => {
      const first = await m.up(basic, { to: 2 });
      assert.deepEqual(versions(first.steps), [1, 2]);
      assert.equal(first.to, 2);
      const mid = await m.status(basic);
      assert.equal(mid.current, 2);
      assert.deepEqual(versions(mid.applied), [1, 2]);
      assert.deepEqual(versions(mid.pending), [3, 4]);
      assert.deepEqual(await recorded(), [1, 2]);
      assert.deepEqual(await fx.raw("SELECT id FROM people"), [], "the seed step (3) did not run");

      const second = await m.up(basic);
      assert.equal(second.from, 2);
      assert.deepEqual(versions(second.steps), [3, 4]);
      const third = await m.up(basic);
      assert.deepEqual(third.steps, []);
      assert.equal(third.from, 4);
      assert.equal(third.to, 4);
    });

    it("refuses an up target below the current version or matching no step", async () => {
      await m.up(basic, { to: 3 });
      const below = await rejectsWith(m.up(basic, { to: 1 }), "USAGE");
      assert.match(below.message, /below the current version 3/);
      const unknown = await rejectsWith(m.up(basic, { to: 9 }), "USAGE");
      assert.match(unknown.message, /version 9/);
      assert.equal((await m.status(basic)).current, 3);
    });

    it("down --to reverts the steps above it, newest first, with their down files", async () => {
      await m.up(basic);
      const events: MigrationEvent[] = [];
      const run = await m.down(basic, { to: 1, onEvent: (e) => events.push(e) });
      assert.equal(run.from, 4);
      assert.equal(run.to, 1);
      assert.deepEqual(run.steps.map((s) => [s.version, s.direction]), [
        [4, "down"],
        [3, "down"],
        [2, "down"],
      ]);
      assert.deepEqual(
        events.filter((e) => e.type === "step-done").map((e) => ("direction" in e ? `${e.version}${e.direction}` : "")),
        ["4down", "3down", "2down"],
      );
      const status = await m.status(basic);
      assert.equal(status.current, 1);
      assert.deepEqual(versions(status.pending), [2, 3, 4]);
      assert.deepEqual(await recorded(), [1]);
      assert.deepEqual(await fx.raw("SELECT id FROM people"), []);
      await assert.rejects(fx.raw("SELECT email FROM people"));

      await m.down(basic, { to: 0 });
      await assert.rejects(fx.raw("SELECT id FROM people"));
      assert.deepEqual(await recorded(), []);
      // The whole path walks back up again.
      assert.deepEqual(versions((await m.up(basic)).steps), [1, 2, 3, 4]);
    });

    it("refuses a down target above the current version", async () => {
      await m.up(basic, { to: 2 });
      const e = await rejectsWith(m.down(basic, { to: 3 }), "USAGE");
      assert.match(e.message, /above the current version 2/);
    });

    it("a dry run reports the steps and changes nothing, not even the bookkeeping table", async () => {
      const up = await m.up(basic, { dryRun: true });
      assert.equal(up.dryRun, true);
      assert.equal(up.from, 0);
      assert.equal(up.to, 4);
      assert.deepEqual(up.steps.map((s) => [s.version, s.direction]), [
        [1, "up"],
        [2, "up"],
        [3, "up"],
        [4, "up"],
      ]);
      await assert.rejects(fx.raw("SELECT version FROM turquoise_migrations"));
      await assert.rejects(fx.raw("SELECT id FROM people"));

      await m.up(basic, { to: 2 });
      const down = await m.down(basic, { to: 0, dryRun: true });
      assert.deepEqual(down.steps.map((s) => [s.version, s.direction]), [
        [2, "down"],
        [1, "down"],
      ]);
      assert.equal(down.to, 0);
      const upTo3 = await m.up(basic, { to: 3, dryRun: true });
      assert.deepEqual(versions(upTo3.steps), [3]);
      assert.equal((await m.status(basic)).current, 2);
      assert.deepEqual(await recorded(), [1, 2]);
      assert.deepEqual(await fx.raw("SELECT email FROM people"), []);
    });

    it("a failing step rolls back entirely, names its file, quotes the database, and leaves the lock free", async () => {
      const dir = await migrationsDir({
        "0005_split_name.up.sql": "CREATE TABLE partial (id INTEGER);\nALTER TABLE people ADD COLUMN first_name TEXT;\nUPDATE people SET first_name = nme;\n",
      });
      const steps = await readMigrations(dir);
      await m.up(steps, { to: 4 });
      const e = await rejectsWith(m.up(steps), "MIGRATION_FAILED");
      assert.match(e.message, /^0005_split_name\.up\.sql failed: /);
      assert.match(e.message, options.missingColumn);
      assert.equal(e.details[0]?.file, join(dir, "0005_split_name.up.sql"));
      assert.deepEqual(e.data.completed, []);
      await assert.rejects(fx.raw("SELECT id FROM partial"), "the step's first statement was rolled back too");
      await assert.rejects(fx.raw("SELECT first_name FROM people"));
      assert.deepEqual(await recorded(), [1, 2, 3, 4]);
      assert.equal((await m.status(steps)).current, 4);

      // Fixed, the step runs: nothing (lock, transaction) was left behind.
      await writeFile(join(dir, "0005_split_name.up.sql"), "ALTER TABLE people ADD COLUMN first_name TEXT;\nUPDATE people SET first_name = name;\n");
      const fixed = await m.up(await readMigrations(dir));
      assert.deepEqual(versions(fixed.steps), [5]);
      assert.deepEqual((await fx.raw("SELECT first_name FROM people ORDER BY id")).map((r) => r.first_name), ["Ada", "Grace"]);
    });

    it("commits a step together with its bookkeeping row: when recording fails, the step is undone", async () => {
      // The step itself takes version 5's row, so recording it afterwards must fail.
      const dir = await migrationsDir({
        "0005_together.up.sql":
          "CREATE TABLE together (id INTEGER);\nINSERT INTO turquoise_migrations (version, name, checksum, phase, applied_at) SELECT 5, 'squatter', 'x', 'expand', applied_at FROM turquoise_migrations WHERE version = 1;\n",
      });
      const e = await rejectsWith(m.up(await readMigrations(dir)), "MIGRATION_FAILED");
      assert.match(e.message, /^0005_together\.up\.sql failed: /);
      await assert.rejects(fx.raw("SELECT id FROM together"), "the step's table went with the failed bookkeeping");
      assert.deepEqual(await recorded(), [1, 2, 3, 4]);
    });

    it("a failure part-way through up keeps the steps before it and says how far it got", async () => {
      const dir = await migrationsDir({ "0005_broken.up.sql": "SELECT nme FROM people;\n" });
      const steps = await readMigrations(dir);
      const e = await rejectsWith(m.up(steps), "MIGRATION_FAILED");
      assert.match(e.message, /^0005_broken\.up\.sql failed: /);
      assert.deepEqual(e.data.completed, [1, 2, 3, 4]);
      assert.equal(e.data.reached, 4);
      assert.deepEqual(await recorded(), [1, 2, 3, 4]);
    });

    it("refuses to run when an applied step's file changed, naming the file and both checksums", async () => {
      const dir = await migrationsDir();
      await m.up(await readMigrations(dir));
      const before = await readMigrations(dir);
      await appendFile(join(dir, "0002_add_email.up.sql"), "-- edited after it ran\n");
      const edited = await readMigrations(dir);
      const oldSum = before[1]!.checksum.slice(0, 12);
      const newSum = edited[1]!.checksum.slice(0, 12);
      assert.notEqual(oldSum, newSum);

      const status = await m.status(edited);
      assert.equal(status.problems.length, 1);
      assert.equal(status.problems[0]!.version, 2);
      for (const text of [status.problems[0]!.message]) {
        assert.match(text, /0002_add_email\.up\.sql/);
        assert.ok(text.includes(oldSum) && text.includes(newSum), text);
      }
      for (const attempt of [() => m.up(edited), () => m.down(edited, { to: 0 }), () => m.up(edited, { dryRun: true })]) {
        const e = await rejectsWith(attempt(), "CONFLICT");
        assert.match(e.message, /0002_add_email\.up\.sql/);
        assert.ok(e.message.includes(oldSum) && e.message.includes(newSum), e.message);
      }
      assert.deepEqual(await recorded(), [1, 2, 3, 4]);
    });

    it("refuses to run when an applied step's down file changed or went, naming the file and both checksums", async () => {
      const dir = await migrationsDir();
      const steps = await readMigrations(dir);
      await m.up(steps);
      const applied = (await m.status(steps)).applied.find((a) => a.version === 2)!;
      assert.equal(applied.downChecksum, steps[1]!.downChecksum, "recorded when applied");
      await appendFile(join(dir, "0002_add_email.down.sql"), "DROP TABLE people;\n");
      const edited = await readMigrations(dir);
      const [oldSum, newSum] = [steps[1]!.downChecksum!.slice(0, 12), edited[1]!.downChecksum!.slice(0, 12)];
      const status = await m.status(edited);
      assert.deepEqual(status.problems.map((p) => p.version), [2]);
      assert.match(status.problems[0]!.message, /0002_add_email\.down\.sql was changed after its step was applied/);
      assert.ok(status.problems[0]!.message.includes(oldSum) && status.problems[0]!.message.includes(newSum));
      for (const attempt of [() => m.down(edited, { to: 1 }), () => m.up(edited), () => m.down(edited, { to: 1, dryRun: true })]) {
        const e = await rejectsWith(attempt(), "CONFLICT");
        assert.match(e.message, /0002_add_email\.down\.sql was changed/);
      }
      await rm(join(dir, "0002_add_email.down.sql"));
      const gone = await m.status(await readMigrations(dir));
      assert.match(gone.problems[0]!.message, /0002_add_email\.down\.sql was removed after its step was applied/);
      assert.deepEqual(await recorded(), [1, 2, 3, 4]);
    });

    it("rows from before down checksums read as unknown; the next run records them, and catches a change from then on", async () => {
      const dir = await migrationsDir();
      const steps = await readMigrations(dir);
      await m.up(steps, { to: 2 });
      // The table as an older Turquoise made it.
      await fx.raw("ALTER TABLE turquoise_migrations DROP COLUMN down_checksum");
      const old = await m.status(steps);
      assert.deepEqual(old.applied.map((a) => a.downChecksum), [null, null]);
      assert.deepEqual(old.problems, []);
      await m.up(steps, { to: 2 }); // nothing to run, but the run records what it can
      const now = await m.status(steps);
      assert.deepEqual(now.applied.map((a) => a.downChecksum), [steps[0]!.downChecksum, steps[1]!.downChecksum]);
      await appendFile(join(dir, "0001_create_people.down.sql"), "-- edited\n");
      assert.deepEqual((await m.status(await readMigrations(dir))).problems.map((p) => p.version), [1]);
    });

    it("reports an applied step whose file is gone, and refuses to run until it is back", async () => {
      await m.up(basic, { to: 3 });
      const without2 = basic.filter((s) => s.version !== 2);
      const status = await m.status(without2);
      assert.deepEqual(status.problems.map((p) => p.version), [2]);
      assert.match(status.problems[0]!.message, /version 2 \(add_email\) was applied, but its file is missing/);
      await rejectsWith(m.up(without2), "CONFLICT");
      await rejectsWith(m.down(without2, { to: 1 }), "CONFLICT");
      assert.deepEqual(await recorded(), [1, 2, 3]);
    });

    it("reports a step that appeared below the current version, which up would otherwise never run", async () => {
      await m.up(basic.filter((s) => s.version === 1 || s.version === 4));
      const status = await m.status(basic);
      assert.equal(status.current, 4);
      assert.deepEqual(status.problems.map((p) => p.version), [2, 3]);
      assert.match(status.problems[0]!.message, /0002_add_email\.up\.sql was never applied, but the later version 4 was/);
      const e = await rejectsWith(m.up(basic), "CONFLICT");
      assert.match(e.message, /0003_seed_people\.mjs was never applied/);
    });

    it("refuses down, before reverting anything, when a step on the way has no down file", async () => {
      const dir = await migrationsDir({
        "0005_no_way_back.up.sql": "CREATE TABLE one_way (id INTEGER);\n",
        "0006_after.up.sql": "CREATE TABLE after_it (id INTEGER);\n",
        "0006_after.down.sql": "DROP TABLE after_it;\n",
      });
      const steps = await readMigrations(dir);
      await m.up(steps);
      const e = await rejectsWith(m.down(steps, { to: 1 }), "CONFLICT");
      assert.match(e.message, /0005_no_way_back\.up\.sql has no down file \(0005_no_way_back\.down\.sql\)/);
      assert.doesNotMatch(e.message, /0006/);
      assert.deepEqual(await recorded(), [1, 2, 3, 4, 5, 6]);
      assert.deepEqual(await fx.raw("SELECT id FROM after_it"), [], "0006 was not reverted either");
      // Above the one-way step, down still works.
      assert.deepEqual(versions((await m.down(steps, { to: 5 })).steps), [6]);
      assert.deepEqual(await fx.raw("SELECT id FROM one_way"), []);
    });

    it("refuses down through an irreversible step, even one with a down file", async () => {
      const dir = await migrationsDir({
        "0005_drop_email.up.sql": "-- turquoise: contract, irreversible\nALTER TABLE people DROP COLUMN email;\n",
        "0005_drop_email.down.sql": "ALTER TABLE people ADD COLUMN email TEXT;\n",
      });
      const steps = await readMigrations(dir);
      await m.up(steps);
      const e = await rejectsWith(m.down(steps, { to: 0 }), "CONFLICT");
      assert.match(e.message, /0005_drop_email\.up\.sql is irreversible/);
      await rejectsWith(m.down(steps, { to: 4, dryRun: true }), "CONFLICT");
      assert.deepEqual(await recorded(), [1, 2, 3, 4, 5]);
      assert.equal((await m.status(steps)).applied.find((a) => a.version === 5)?.phase, "contract");
    });

    it("runs module steps: rows come back from db.query, options come from exports, failures roll back", async () => {
      const dir = await migrationsDir({
        "0005_count_people.mjs": `
export const phase = "contract";
export async function up(db) {
  const { rows } = await db.query("SELECT id FROM people WHERE id >= $1 ORDER BY id", [1]);
  await db.query("CREATE TABLE tally (n INTEGER, ids TEXT)");
  await db.query("INSERT INTO tally (n, ids) VALUES ($1, $2)", [rows.length, rows.map((r) => r.id).join(",")]);
}
export async function down(db) {
  await db.query("DROP TABLE tally");
}
`,
        "0006_module_fails.mjs": `
export async function up(db) {
  await db.query("CREATE TABLE half_done (id INTEGER)");
  throw new Error("boom: the module gave up");
}
`,
      });
      const steps = await readMigrations(dir);
      assert.equal(steps[4]!.phase, "contract");
      const e = await rejectsWith(m.up(steps), "MIGRATION_FAILED");
      assert.equal(e.message, "0006_module_fails.mjs up() failed: boom: the module gave up");
      assert.deepEqual((await fx.raw("SELECT n, ids FROM tally")).map((r) => [Number(r.n), r.ids]), [[2, "1,2"]]);
      await assert.rejects(fx.raw("SELECT id FROM half_done"));
      assert.deepEqual(await recorded(), [1, 2, 3, 4, 5]);
      const applied = (await m.status(steps)).applied.find((a) => a.version === 5);
      assert.equal(applied?.phase, "contract");

      await m.down(steps, { to: 4 });
      await assert.rejects(fx.raw("SELECT n FROM tally"));
    });

    it("runs a TypeScript module step, types and all, and leaves no transpiled file behind", async () => {
      const dir = await migrationsDir({
        "0005_typed.ts": `
interface Db { query(sql: string, params?: unknown[]): Promise<{ rows: Array<Record<string, unknown>> }> }
export const phase: "expand" | "contract" = "expand";
export async function up(db: Db): Promise<void> {
  const label: string = "typed";
  await db.query("CREATE TABLE typed_step (label TEXT)");
  await db.query("INSERT INTO typed_step (label) VALUES ($1)", [label]);
}
export async function down(db: Db): Promise<void> {
  await db.query("DROP TABLE typed_step");
}
`,
      });
      const steps = await readMigrations(dir);
      assert.equal(steps[4]!.name, "typed");
      assert.ok(steps[4]!.downFile, "down() is exported");
      await m.up(steps);
      assert.deepEqual((await fx.raw("SELECT label FROM typed_step")).map((r) => r.label), ["typed"]);
      await m.down(steps, { to: 4 });
      await assert.rejects(fx.raw("SELECT label FROM typed_step"));
      assert.deepEqual((await readdir(dir)).filter((f) => f.endsWith(".turquoise.mjs")), []);
    });

    it("runs a no-transaction step outside any transaction, and records it after", async () => {
      const inside = await migrationsDir({ "0005_outside.up.sql": `${options.outsideTransactionSql}\n` });
      const refused = await rejectsWith(m.up(await readMigrations(inside)), "MIGRATION_FAILED");
      assert.match(refused.message, /^0005_outside\.up\.sql failed: /, "without the directive the SQL runs in a transaction and fails");
      assert.deepEqual(await recorded(), [1, 2, 3, 4]);

      const outside = await migrationsDir({ "0005_outside.up.sql": `-- turquoise: no-transaction\n${options.outsideTransactionSql}\n` });
      const steps = await readMigrations(outside);
      assert.equal(steps[4]!.transactional, false);
      const run = await m.up(steps);
      assert.deepEqual(versions(run.steps), [5]);
      assert.deepEqual(await recorded(), [1, 2, 3, 4, 5]);
    });

    it("runs a no-transaction module step", async () => {
      const dir = await migrationsDir(
        {
          "0001_plain.mjs": `
export const transaction = false;
export async function up(db) {
  await db.query("CREATE TABLE plain (id INTEGER)");
  await db.query("INSERT INTO plain (id) VALUES ($1)", [7]);
}
`,
        },
        null,
      );
      const steps = await readMigrations(dir);
      assert.equal(steps[0]!.transactional, false);
      await m.up(steps);
      assert.deepEqual((await fx.raw("SELECT id FROM plain")).map((r) => Number(r.id)), [7]);
      assert.deepEqual(await recorded(), [1]);
    });

    it("lets one runner at a time migrate: the second waits, then finds nothing to do", async () => {
      const steps = await readMigrations(await migrationsDir({ "0001_slow.mjs": SLOW_STEP }, null));
      const second = fx.another();
      try {
        const eventsA: MigrationEvent[] = [];
        const eventsB: MigrationEvent[] = [];
        const [a, b] = await Promise.all([
          m.up(steps, { onEvent: (e) => eventsA.push(e) }),
          second.up(steps, { onEvent: (e) => eventsB.push(e) }),
        ]);
        const runs = [
          { run: a, events: eventsA },
          { run: b, events: eventsB },
        ].sort((x, y) => y.run.steps.length - x.run.steps.length);
        assert.deepEqual(versions(runs[0]!.run.steps), [1], "one runner applied the step");
        assert.deepEqual(runs[1]!.run.steps, [], "the other found nothing left to do");
        assert.equal(runs[1]!.run.from, 1);
        assert.ok(runs[1]!.events.some((e) => e.type === "waiting-for-lock"), "the second runner waited for the lock");
        assert.ok(!runs[0]!.events.some((e) => e.type === "waiting-for-lock"));
        assert.deepEqual(await recorded(), [1]);
      } finally {
        await second.close();
      }
    });

    it("with noWait, a second runner fails at once while the first holds the lock", async () => {
      const steps = await readMigrations(await migrationsDir({ "0001_slow.mjs": SLOW_STEP }, null));
      const second = fx.another();
      try {
        let started!: () => void;
        const running = new Promise<void>((resolve) => (started = resolve));
        const first = m.up(steps, { onEvent: (e) => e.type === "step-started" && started() });
        let firstDone = false;
        void first.then(() => (firstDone = true), () => (firstDone = true));
        await running;
        const e = await rejectsWith(second.up(steps, { noWait: true }), "LOCKED");
        assert.match(e.message, /another migration is running/);
        // No clock: had it waited for the lock, the first runner would have finished by now.
        assert.equal(firstDone, false, "it did not wait for the first runner");
        assert.deepEqual(versions((await first).steps), [1]);
        // Once the first runner is done, the lock is free for the second.
        assert.deepEqual((await second.up(steps, { noWait: true })).steps, []);
      } finally {
        await second.close();
      }
    });
  });
}
