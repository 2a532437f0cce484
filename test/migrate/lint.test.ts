// The plan-time lint, by table: each statement that locks a big table for long is named with its
// line; the safe way to write it, and anything on a table the same file creates, is not.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { lintSql, lintSteps } from "../../src/migrate/lint.js";
import { readMigrations } from "../../src/migrate/files.js";
import { migrationsDir } from "./contract.test-suite.js";

const pg = (sql: string) => lintSql(sql, "0002_x.up.sql", "postgres").map((w) => [w.line, w.message]);

describe("lintSql (postgres)", () => {
  const warned: Array<[string, RegExp]> = [
    ["CREATE INDEX books_title ON books (title);", /CREATE INDEX on books without CONCURRENTLY blocks every write/],
    ["CREATE UNIQUE INDEX IF NOT EXISTS books_isbn ON public.books (isbn);", /without CONCURRENTLY/],
    ["CREATE INDEX CONCURRENTLY ON books (title);", /without a name: name the index/],
    ["ALTER TABLE books ADD COLUMN token uuid NOT NULL DEFAULT gen_random_uuid();", /volatile default \(gen_random_uuid\(\)\) rewrites the whole table/],
    ["ALTER TABLE books ADD COLUMN n bigserial;", /serial or stored generated column rewrites/],
    ["ALTER TABLE books ALTER COLUMN price TYPE numeric(12,2);", /ALTER COLUMN \.\.\. TYPE on books rewrites the table/],
    ["ALTER TABLE books ALTER COLUMN title SET DATA TYPE varchar(300);", /TYPE on books rewrites/],
    ["ALTER TABLE books ALTER COLUMN title SET NOT NULL;", /SET NOT NULL on books scans every row.*NOT VALID/],
    ["ALTER TABLE books ADD CONSTRAINT books_author FOREIGN KEY (author_id) REFERENCES authors (id);", /ADD FOREIGN KEY on books checks every row.*NOT VALID/],
    ["ALTER TABLE books ADD CONSTRAINT price_positive CHECK (price > 0);", /ADD CHECK on books/],
    ["ALTER TABLE books ADD PRIMARY KEY (id);", /CREATE UNIQUE INDEX CONCURRENTLY first/],
    ["UPDATE books SET author_first = split_part(author, ' ', 1);", /UPDATE without WHERE touches every row of books.*backfill step/],
    ["DELETE FROM books;", /DELETE without WHERE/],
    ["VACUUM FULL books;", /rewrites the table under an ACCESS EXCLUSIVE lock/],
    ["REINDEX TABLE books;", /REINDEX without CONCURRENTLY/],
  ];
  for (const [sql, message] of warned) {
    it(`warns: ${sql}`, () => {
      const found = pg(`-- a comment line\n\n${sql}\n`);
      assert.equal(found.length, 1, JSON.stringify(found));
      assert.equal(found[0]![0], 3, "names the statement's line, past leading comments");
      assert.match(String(found[0]![1]), message);
    });
  }

  const quiet = [
    "CREATE INDEX CONCURRENTLY books_title ON books (title);",
    "ALTER TABLE books ADD COLUMN author_first TEXT NOT NULL DEFAULT '';",
    "ALTER TABLE books ADD COLUMN created timestamptz DEFAULT now();",
    "ALTER TABLE books ADD CONSTRAINT books_author FOREIGN KEY (author_id) REFERENCES authors (id) NOT VALID;",
    "ALTER TABLE books VALIDATE CONSTRAINT books_author;",
    "ALTER TABLE books ADD CONSTRAINT books_pkey PRIMARY KEY USING INDEX books_id_idx;",
    "UPDATE books SET title = 'x' WHERE id = 1;",
    "CREATE TABLE fresh (id int);\nCREATE INDEX fresh_id ON fresh (id);\nALTER TABLE fresh ALTER COLUMN id TYPE bigint;\nUPDATE fresh SET id = 1;",
    "-- CREATE INDEX in a comment ON books (x);\nSELECT 1;",
  ];
  for (const sql of quiet) {
    it(`stays quiet: ${sql.split("\n")[0]}`, () => assert.deepEqual(pg(sql), []));
  }

  it("warns about VALIDATE in the same step as its NOT VALID add, on the VALIDATE's line", () => {
    const found = pg("ALTER TABLE books ADD CONSTRAINT c CHECK (price > 0) NOT VALID;\nALTER TABLE books VALIDATE CONSTRAINT c;");
    assert.deepEqual(found.map((f) => f[0]), [2]);
    assert.match(String(found[0]![1]), /ACCESS EXCLUSIVE lock is held through the whole validation/);
  });

  it("names each statement's own line in a file of several", () => {
    assert.deepEqual(pg("SELECT 1;\nCREATE INDEX a ON books (a);\n\n\nCREATE INDEX b\n  ON books (b);").map((f) => f[0]), [2, 5]);
  });
});

describe("lintSql (sqlite)", () => {
  it("warns about an UPDATE over a whole table, and leaves postgres-only rules alone", () => {
    const found = lintSql("CREATE INDEX a ON books (a);\nUPDATE books SET x = 1;", "f.sql", "sqlite");
    assert.deepEqual(found.map((f) => [f.line, /UPDATE without WHERE/.test(f.message)]), [[2, true]]);
  });
});

describe("lintSteps", () => {
  it("lints the files a plan runs, and not a backfill's batched statement", async () => {
    const dir = await migrationsDir({
      "0001_a.up.sql": "CREATE TABLE books (id int primary key, title text);",
      "0002_b.up.sql": "-- turquoise: backfill table=books key=id\nALTER TABLE books ADD COLUMN t2 text;\nUPDATE books SET t2 = title WHERE {batch};",
      "0002_b.down.sql": "UPDATE books SET t2 = NULL;\nALTER TABLE books DROP COLUMN t2;",
    }, null);
    const steps = await readMigrations(dir);
    assert.deepEqual(await lintSteps(steps.slice(1), "up", "postgres"), []);
    const down = await lintSteps(steps.slice(1), "down", "postgres");
    assert.deepEqual(down.map((w) => [w.file, w.line]), [["0002_b.down.sql", 1]]);
  });
});
