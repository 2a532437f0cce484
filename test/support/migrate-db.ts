// A throwaway database of either driver for migration tests: its URL, a way to run SQL behind the
// migrator's back, and cleanup. PostgreSQL needs TURQUOISE_TEST_PG_URL (scripts/ensure-postgres.sh).

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { openMigrator, type Migrator } from "../../src/migrate/index.js";
import { freshDatabase, withClient } from "./postgres.js";

export type Driver = "sqlite" | "postgres";
export const DRIVERS: Driver[] = ["sqlite", "postgres"];

export interface TestDatabase {
  driver: Driver;
  /** What openMigrator takes (relative to baseDir for sqlite). */
  url: string;
  baseDir: string;
  /** Runs SQL (several statements when there are no params); the rows of the last one. */
  raw: (sql: string, params?: unknown[]) => Promise<Record<string, unknown>[]>;
  migrator: (opts?: { lockTimeoutMs?: number; retries?: number }) => Migrator;
  cleanup: () => Promise<void>;
}

export async function testDatabase(driver: Driver): Promise<TestDatabase> {
  const migrators: Migrator[] = [];
  if (driver === "sqlite") {
    const dir = await mkdtemp(join(tmpdir(), "turquoise-migrate-db-"));
    const file = join(dir, "app.db");
    const migrator = (opts = {}) => {
      const m = openMigrator({ driver, url: "sqlite:app.db", baseDir: dir, ...opts });
      migrators.push(m);
      return m;
    };
    return {
      driver, url: "sqlite:app.db", baseDir: dir, migrator,
      raw: async (sql, params = []) => {
        const db = new Database(file);
        try {
          db.pragma("busy_timeout = 5000");
          if (params.length === 0 && !/^\s*SELECT/i.test(sql)) {
            db.exec(sql);
            return [];
          }
          const stmt = db.prepare(sql);
          return stmt.reader ? (stmt.all(...params) as Record<string, unknown>[]) : (stmt.run(...params), []);
        } finally {
          db.close();
        }
      },
      cleanup: async () => {
        await Promise.all(migrators.map((m) => m.close()));
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
  const db = await freshDatabase();
  const migrator = (opts = {}) => {
    const m = openMigrator({ driver, url: db.url, baseDir: "/nonexistent", ...opts });
    migrators.push(m);
    return m;
  };
  return {
    driver, url: db.url, baseDir: "/nonexistent", migrator,
    raw: (sql, params) => withClient(db.url, async (c) => {
      const r = await c.query(sql, params);
      const last = Array.isArray(r) ? r[r.length - 1] : r;
      return (last?.rows ?? []) as Record<string, unknown>[];
    }),
    cleanup: async () => {
      await Promise.all(migrators.map((m) => m.close()));
      await db.drop();
    },
  };
}
