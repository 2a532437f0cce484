// The shared database, as books-service sees it: SQLite (better-sqlite3) or PostgreSQL (pg),
// picked from DATABASE_URL. schemaVersion() reads the version Turquoise's migrations recorded,
// so a turquoise release can serve both the old and the new schema.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

export async function openDatabase(url) {
  return url.startsWith("sqlite:") ? openSqlite(url) : openPostgres(url);
}

function openSqlite(url) {
  const Database = require("better-sqlite3");
  const db = new Database(url.replace(/^sqlite:(\/\/)?/, ""));
  db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 10000");
  return {
    kind: "sqlite",
    async all(sql, params = []) { return db.prepare(pgToSqlite(sql)).all(...params); },
    async run(sql, params = []) { db.prepare(pgToSqlite(sql)).run(...params); },
    /** A write transaction that sees the schema as committed: BEGIN IMMEDIATE waits for a running migration. */
    async writeTx(fn) {
      db.exec("BEGIN IMMEDIATE");
      try {
        const out = await fn(this);
        db.exec("COMMIT");
        return out;
      } catch (e) {
        db.exec("ROLLBACK");
        throw e;
      }
    },
    /** A read transaction: the version and the rows come from one snapshot. */
    async readTx(fn) {
      db.exec("BEGIN");
      try {
        return await fn(this);
      } finally {
        db.exec("COMMIT");
      }
    },
    async schemaVersion() { return version(this); },
    async close() { db.close(); },
  };
}

async function openPostgres(url) {
  const { Pool } = require("pg");
  const pool = new Pool({ connectionString: url, max: 4 });
  const wrap = (client) => ({
    kind: "postgres",
    async all(sql, params = []) { return (await client.query(sql, params)).rows; },
    async run(sql, params = []) { await client.query(sql, params); },
  });
  const base = wrap(pool);
  // Taking a lock on books first waits for a migration's ALTER TABLE to commit, so the version
  // read after it is the one the following statements will see.
  const tx = async (lockMode, fn) => {
    const client = await pool.connect();
    try {
      await client.query("BEGIN");
      await client.query(`LOCK TABLE books IN ${lockMode} MODE`);
      const out = await fn({ ...wrap(client), schemaVersion: () => version(wrap(client)) });
      await client.query("COMMIT");
      return out;
    } catch (e) {
      await client.query("ROLLBACK").catch(() => {});
      throw e;
    } finally {
      client.release();
    }
  };
  return {
    ...base,
    writeTx: (fn) => tx("ROW EXCLUSIVE", fn),
    readTx: (fn) => tx("ACCESS SHARE", fn),
    async schemaVersion() { return version(base); },
    async close() { await pool.end(); },
  };
}

async function version(db) {
  const rows = await db.all("SELECT COALESCE(MAX(version), 0) AS v FROM turquoise_migrations");
  return Number(rows[0].v);
}

/** The example writes $1-style placeholders; SQLite takes ?. */
function pgToSqlite(sql) {
  return sql.replace(/\$\d+/g, "?");
}
