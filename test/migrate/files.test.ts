import assert from "node:assert/strict";
import { readFile, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { AppliedMigration } from "../../src/migrate/contract.js";
import { computeStatus, downChecksumsToRecord, planDown, planUp, readMigrations } from "../../src/migrate/files.js";
import { splitSqlStatements, toSqliteParams } from "../../src/migrate/sql-text.js";
import { BASIC, migrationsDir, rejectsWith, sha256File } from "./contract.test-suite.js";

/** Reads a directory made of just these files and returns the error it must raise. */
async function invalid(files: Record<string, string>) {
  const dir = await migrationsDir(files, null);
  const e = await rejectsWith(readMigrations(dir), "SPEC_INVALID");
  return { e, dir };
}

describe("readMigrations", () => {
  it("reads the fixture directory into ordered steps with their options and checksums", async () => {
    const steps = await readMigrations(BASIC);
    assert.deepEqual(
      steps.map((s) => [s.version, s.name, s.phase, s.transactional, s.irreversible]),
      [
        [1, "create_people", "expand", true, false],
        [2, "add_email", "expand", true, false],
        [3, "seed_people", "expand", true, false],
        [4, "people_by_name", "contract", true, false],
      ],
    );
    assert.equal(steps[0]!.upFile, join(BASIC, "0001_create_people.up.sql"));
    assert.equal(steps[0]!.downFile, join(BASIC, "0001_create_people.down.sql"));
    assert.equal(steps[2]!.upFile, join(BASIC, "0003_seed_people.mjs"));
    assert.equal(steps[2]!.downFile, join(BASIC, "0003_seed_people.mjs"), "a module with down() is its own down file");
    for (const s of steps) assert.equal(s.checksum, sha256File(await readFile(s.upFile)));
  });

  it("reads the directives from the leading comment lines of an up file", async () => {
    const dir = await migrationsDir(
      {
        "0001_a.up.sql": "-- turquoise: contract\n-- turquoise: no-transaction\n\n-- TURQUOISE: irreversible\nSELECT 1;\n",
        "0002_b.up.sql": "-- turquoise: contract, no-transaction irreversible\nSELECT 1;\n",
        "0003_c.up.sql": "-- just a comment\nSELECT 1;\n-- turquoise: not a directive here, the SQL has begun\n",
        "0004_d.up.sql": "\uFEFF-- turquoise: expand\nSELECT 1;\n",
      },
      null,
    );
    const steps = await readMigrations(dir);
    assert.deepEqual(steps.map((s) => [s.phase, s.transactional, s.irreversible]), [
      ["contract", false, true],
      ["contract", false, true],
      ["expand", true, false],
      ["expand", true, false],
    ]);
    assert.equal(steps[0]!.downFile, undefined);
  });

  it("reads a module's options from its exports, and a CommonJS .js module too", async () => {
    const dir = await migrationsDir(
      {
        "0001_esm.mjs": 'export const phase = "contract"; export const transaction = false; export const irreversible = true;\nexport async function up(db) {}\n',
        "0002_cjs.js": "exports.up = async function (db) {};\nexports.down = async function (db) {};\n",
      },
      null,
    );
    const steps = await readMigrations(dir);
    assert.deepEqual(steps.map((s) => [s.version, s.phase, s.transactional, s.irreversible, s.downFile !== undefined]), [
      [1, "contract", false, true, false],
      [2, "expand", true, false, true],
    ]);
  });

  it("leaves helpers, dotfiles, notes and subdirectories alone", async () => {
    const dir = await migrationsDir({ "_shared.mjs": "export const x = 1;", ".gitkeep": "", "README.md": "# notes", "0001_a.up.sql": "SELECT 1;" }, null);
    await mkdir(join(dir, "archive"));
    assert.deepEqual((await readMigrations(dir)).map((s) => s.version), [1]);
  });

  it("fails on a missing directory, naming it", async () => {
    const dir = join(await migrationsDir({}, null), "nope");
    const e = await rejectsWith(readMigrations(dir), "NOT_FOUND");
    assert.equal(e.message, `the migrations directory ${dir} does not exist`);
  });

  it("fails on a duplicate version, naming both files", async () => {
    const { e } = await invalid({ "0001_a.up.sql": "SELECT 1;", "0001_b.up.sql": "SELECT 2;" });
    assert.match(e.message, /0001_b\.up\.sql: duplicate version 1: 0001_a\.up\.sql has it too/);
    const mixed = await invalid({ "0002_a.up.sql": "SELECT 1;", "2_a.mjs": "export function up() {}" });
    assert.match(mixed.e.message, /duplicate version 2/);
  });

  it("fails on a down file without its up file", async () => {
    const alone = await invalid({ "0001_a.up.sql": "SELECT 1;", "0002_b.down.sql": "SELECT 1;" });
    assert.match(alone.e.message, /0002_b\.down\.sql: a down file without its up file: there is no 0002_b\.up\.sql/);
    assert.equal(alone.e.details[0]!.file, join(alone.dir, "0002_b.down.sql"));
    const renamed = await invalid({ "0001_a.up.sql": "SELECT 1;", "0001_b.down.sql": "SELECT 1;" });
    assert.match(renamed.e.message, /0001_b\.down\.sql: a down file without its up file: version 1's up file is 0001_a\.up\.sql/);
    const module = await invalid({ "0001_a.mjs": "export function up() {}", "0001_a.down.sql": "SELECT 1;" });
    assert.match(module.e.message, /0001_a\.down\.sql: .*export down\(db\) from it instead/);
  });

  it("fails on a bad file name, saying what a good one looks like", async () => {
    for (const name of ["0001_a.sql", "add_people.up.sql", "0001-a.up.sql", "0001_a.cts", "0001_a.cjs", "0000_zero.up.sql"]) {
      const { e } = await invalid({ [name]: "SELECT 1;" });
      assert.ok(e.message.includes(`${name}: bad migration file name`), e.message);
      assert.match(e.message, /NNNN_name\.up\.sql/);
    }
  });

  it("fails on an unknown directive, naming the file and line, and on two phases", async () => {
    const { e, dir } = await invalid({ "0001_a.up.sql": "-- a note\n-- turquoise: contract, no-transactoin\nSELECT 1;" });
    assert.match(e.message, /0001_a\.up\.sql: unknown directive "no-transactoin" on line 2; known: expand, contract, no-transaction, irreversible/);
    assert.deepEqual(e.details[0], { file: join(dir, "0001_a.up.sql"), line: 2, message: e.details[0]!.message });
    const both = await invalid({ "0001_a.up.sql": "-- turquoise: expand contract\nSELECT 1;" });
    assert.match(both.e.message, /0001_a\.up\.sql: declares both expand and contract/);
    const empty = await invalid({ "0001_a.up.sql": "-- turquoise:\nSELECT 1;" });
    assert.match(empty.e.message, /0001_a\.up\.sql: empty turquoise directive/);
  });

  it("fails on a directive in a down file: options live in the up file", async () => {
    const { e } = await invalid({ "0001_a.up.sql": "SELECT 1;", "0001_a.down.sql": "-- turquoise: no-transaction\nSELECT 1;" });
    assert.match(e.message, /0001_a\.down\.sql: step options belong in 0001_a\.up\.sql/);
  });

  it("fails on a module without up, with bad option exports, or that does not load", async () => {
    const noUp = await invalid({ "0001_a.mjs": "export function down(db) {}" });
    assert.match(noUp.e.message, /0001_a\.mjs: does not export an up\(db\) function/);
    const badPhase = await invalid({ "0001_a.mjs": 'export function up() {}\nexport const phase = "later";' });
    assert.match(badPhase.e.message, /0001_a\.mjs: exports phase "later"; use "expand" or "contract"/);
    const badTx = await invalid({ "0001_a.mjs": 'export function up() {}\nexport const transaction = "no";' });
    assert.match(badTx.e.message, /0001_a\.mjs: exports transaction, but not as a boolean/);
    const broken = await invalid({ "0001_a.mjs": "export function up( {" });
    assert.match(broken.e.message, /0001_a\.mjs: cannot be loaded: /);
  });

  it("reports every problem in the directory at once", async () => {
    const { e } = await invalid({ "0001_a.sql": "", "0002_b.down.sql": "", "0003_c.mjs": "export const x = 1;" });
    assert.equal(e.details.length, 3);
    assert.match(e.message, /^3 problems in the migrations directory /);
  });

  it("gives a changed module file a fresh load, not the cached one", async () => {
    const dir = await migrationsDir({ "0001_a.mjs": 'export const phase = "expand";\nexport function up() {}' }, null);
    assert.equal((await readMigrations(dir))[0]!.phase, "expand");
    await writeFile(join(dir, "0001_a.mjs"), 'export const phase = "contract";\nexport function up() {}');
    assert.equal((await readMigrations(dir))[0]!.phase, "contract");
  });
});

describe("planning from the directory and the database", () => {
  const applied = (version: number, checksum: string, downChecksum: string | null = null): AppliedMigration => ({ version, name: "x", checksum, phase: "expand", appliedAt: 0, downChecksum });

  it("up rejects a negative or fractional target; down requires a whole one", async () => {
    const steps = await readMigrations(BASIC);
    const status = computeStatus(steps, []);
    assert.throws(() => planUp(status, steps, -1), /whole number/);
    assert.throws(() => planUp(status, steps, 1.5), /whole number/);
    assert.throws(() => planDown(status, steps, Number.NaN), /whole number/);
  });

  it("names a module step without down() when down is refused", async () => {
    const dir = await migrationsDir({ "0001_a.mjs": "export function up() {}" }, null);
    const steps = await readMigrations(dir);
    const status = computeStatus(steps, [applied(1, steps[0]!.checksum)]);
    assert.throws(() => planDown(status, steps, 0), /0001_a\.mjs exports no down\(db\)/);
  });

  it("a down file changed or removed after its step was applied is a problem; an unrecorded one is unknown, and recorded on the next run", async () => {
    const steps = await readMigrations(BASIC);
    const two = steps.find((s) => s.version === 2)!;
    assert.match(two.downChecksum ?? "", /^[0-9a-f]{64}$/);
    assert.equal(steps.find((s) => s.version === 3)!.downChecksum, undefined, "a module's down is covered by its up checksum");
    const at = (downChecksum: string | null) => steps.filter((s) => s.version <= 2).map((s) => applied(s.version, s.checksum, s.version === 2 ? downChecksum : s.downChecksum ?? null));
    assert.deepEqual(computeStatus(steps, at(two.downChecksum!)).problems, []);
    const changed = computeStatus(steps, at("f".repeat(64))).problems;
    assert.equal(changed.length, 1);
    assert.match(changed[0]!.message, /0002_add_email\.down\.sql was changed after its step was applied: checksum ffffffffffff when applied/);
    const removed = computeStatus(steps.map((s) => (s.version === 2 ? { ...s, downFile: undefined, downChecksum: undefined } : s)), at(two.downChecksum!)).problems;
    assert.match(removed[0]!.message, /0002_add_email\.down\.sql was removed after its step was applied/);
    assert.deepEqual(computeStatus(steps, at(null)).problems, [], "unknown is not a problem");
    assert.deepEqual(downChecksumsToRecord(steps, at(null)), [{ version: 2, downChecksum: two.downChecksum }]);
    assert.deepEqual(downChecksumsToRecord(steps, at(two.downChecksum!)), []);
  });
});

describe("splitSqlStatements", () => {
  it("splits at top-level semicolons only", () => {
    const sql = [
      "CREATE TABLE t (a TEXT DEFAULT 'x;y');",
      "-- a comment; still a comment",
      'COMMENT ON TABLE t IS E\'it\\\'s; fine\';',
      'SELECT "we;ird" FROM t; /* block; /* nested; */ still */',
      "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;",
      "DO $$ BEGIN PERFORM 1; END $$",
    ].join("\n");
    const parts = splitSqlStatements(sql);
    assert.deepEqual(
      parts.map((p) => p.sql),
      [
        "CREATE TABLE t (a TEXT DEFAULT 'x;y')",
        "-- a comment; still a comment\nCOMMENT ON TABLE t IS E'it\\'s; fine'",
        'SELECT "we;ird" FROM t',
        "/* block; /* nested; */ still */\nCREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql",
        "DO $$ BEGIN PERFORM 1; END $$",
      ],
    );
    for (const p of parts) assert.equal(sql.slice(p.offset, p.offset + p.sql.length), p.sql);
  });

  it("drops empty and comment-only pieces", () => {
    assert.deepEqual(splitSqlStatements("-- only a note\n;;\n/* and this */\n"), []);
  });
});

describe("toSqliteParams", () => {
  it("turns $n into ? and orders the values to match, outside strings only", () => {
    assert.deepEqual(toSqliteParams("SELECT $2, '$1', $1, $2", ["a", "b"]), { sql: "SELECT ?, '$1', ?, ?", params: ["b", "a", "b"] });
    assert.throws(() => toSqliteParams("SELECT $3", [1]), /\$3 has no value/);
  });
});
