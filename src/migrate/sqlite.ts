// The sqlite Migrator. better-sqlite3 is synchronous, so sqlite's busy handler would sleep with the
// whole process frozen (the agent, or a second migrator in the same process that holds the very
// lock being waited for). Locks are polled asynchronously instead; only a no-transaction step,
// which has no single point to wait at, falls back to the busy handler.
//
// One runner at a time: the runner lock is BEGIN EXCLUSIVE on a small sibling file
// (<db>-migrate.lock). The database's own lock cannot serve, since steps commit one by one and a
// no-transaction step runs outside any transaction; the OS drops the sibling's lock when its holder
// dies, so a crashed runner never leaves it held.

import { existsSync, statSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import Database from "better-sqlite3";
import { TurquoiseError, errorMessage } from "../errors.js";
import { StepMigrator } from "./base.js";
import type { AppliedMigration, BackfillSpec, MigrateOptions, MigrationPhase, MigrationRun, MigrationStatus, MigrationStep } from "./contract.js";
import {
  DEFAULT_LOCK_RETRIES,
  DEFAULT_LOCK_TIMEOUT_MS,
  backoffMs,
  computeStatus,
  emitter,
  isModuleStep,
  loadModule,
  orderSteps,
  readBackfillSql,
  readStepSql,
  stepFailed,
  type MigrationDb,
} from "./files.js";
import { toSqliteParams } from "./sql-text.js";
import { PROGRESS_TABLE, readUnfinishedBackfills, runBackfill, type BackfillDriver, type Query } from "./backfill.js";

export interface SqliteMigratorOptions {
  /** sqlite:///abs/path.db, sqlite:relative/path.db, or a plain path. */
  url: string;
  /** What relative paths are resolved against (the spec file's directory). */
  baseDir: string;
  /** How long a step waits for the app's connections to let go of the database. */
  lockTimeoutMs?: number;
  /** Retries, with back-off, after that wait runs out. */
  retries?: number;
}

/** How often a waiting runner looks at a lock again. */
const LOCK_POLL_MS = 25;

const TABLE_SQL = `CREATE TABLE IF NOT EXISTS turquoise_migrations (
  version INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  checksum TEXT NOT NULL,
  phase TEXT NOT NULL,
  applied_at INTEGER NOT NULL,
  down_checksum TEXT
)`;
/** Tables made before down checksums lack the column; a run adds it, a status read does without. */
const PROGRESS_TABLE_SQL = `CREATE TABLE IF NOT EXISTS ${PROGRESS_TABLE} (
  version INTEGER NOT NULL,
  direction TEXT NOT NULL,
  checksum TEXT NOT NULL,
  last_key TEXT,
  rows_done INTEGER NOT NULL,
  batches INTEGER NOT NULL,
  started_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (version, direction)
)`;
const DOWN_COLUMN_SQL = "ALTER TABLE turquoise_migrations ADD COLUMN down_checksum TEXT";

/** The database file a sqlite URL names. */
export function sqlitePath(url: string, baseDir: string): string {
  let path = url;
  const m = /^(sqlite3?|file):(.*)$/i.exec(url);
  if (m) {
    path = m[2]!.split("?")[0]!;
    // sqlite:///abs → /abs; sqlite://rel (no third slash) is read as relative, like sqlite:rel.
    if (path.startsWith("//")) path = path.slice(2);
    path = decodeURIComponent(path);
  }
  if (path === "" || path === ":memory:") {
    throw new TurquoiseError("USAGE", `the sqlite URL ${url} names no file; releases share the database, so it must be a file`);
  }
  return isAbsolute(path) ? path : resolve(baseDir, path);
}

export class SqliteMigrator extends StepMigrator<Database.Database> {
  readonly driver = "sqlite" as const;
  readonly path: string;
  private readonly lockTimeoutMs: number;
  private readonly retries: number;
  private readonly open = new Set<Database.Database>();

  constructor(opts: SqliteMigratorOptions) {
    super();
    this.path = sqlitePath(opts.url, opts.baseDir);
    this.lockTimeoutMs = opts.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
    this.retries = opts.retries ?? DEFAULT_LOCK_RETRIES;
  }

  async status(steps: MigrationStep[]): Promise<MigrationStatus> {
    const ordered = orderSteps(steps);
    this.checkReachable();
    // A database that does not exist yet is a fresh one; looking at it must not create it.
    if (!existsSync(this.path)) return computeStatus(ordered, []);
    const db = this.connect(true);
    try {
      const backfills = await readUnfinishedBackfills(async (sql) => this.whenNotBusy(() => ({ rows: db.prepare(sql).all() as Record<string, unknown>[], rowCount: 0 })));
      return { ...computeStatus(ordered, await this.readApplied(db)), backfills };
    } finally {
      this.disconnect(db);
    }
  }

  async close(): Promise<void> {
    for (const db of this.open) this.disconnect(db);
  }

  /** Connects, takes the runner lock, makes the table, runs work, and always lets go. */
  protected async run(opts: MigrateOptions, work: (db: Database.Database, emit: ReturnType<typeof emitter>) => Promise<MigrationRun>): Promise<MigrationRun> {
    const emit = emitter(opts);
    this.checkReachable();
    const db = this.connect(false);
    let lock: Database.Database | undefined;
    try {
      lock = await this.acquireRunnerLock(opts, emit);
      if (!(await this.whenNotBusy(() => hasTable(db)))) await this.write(db, () => db.exec(TABLE_SQL));
      if (!(await this.whenNotBusy(() => hasDownColumn(db)))) await this.write(db, () => db.exec(DOWN_COLUMN_SQL));
      return await work(db, emit);
    } finally {
      if (db.inTransaction) safely(() => db.exec("ROLLBACK"));
      this.disconnect(db);
      if (lock) this.disconnect(lock);
    }
  }

  private async acquireRunnerLock(opts: MigrateOptions, emit: ReturnType<typeof emitter>): Promise<Database.Database> {
    const lock = this.connect(false, `${this.path}-migrate.lock`);
    let waiting = false;
    try {
      for (;;) {
        try {
          lock.exec("BEGIN EXCLUSIVE");
          return lock;
        } catch (e) {
          if (!isBusy(e)) throw e;
        }
        if (opts.noWait) {
          throw new TurquoiseError("LOCKED", `another migration is running on the sqlite database ${this.path}; try again when it is done`);
        }
        if (!waiting) {
          waiting = true;
          emit({ type: "waiting-for-lock" });
        }
        await sleep(LOCK_POLL_MS);
      }
    } catch (e) {
      this.disconnect(lock);
      if (e instanceof TurquoiseError) throw e;
      throw this.unreachable(e);
    }
  }

  /**
   * Outside a step, the wait for the app's connections is the whole budget a step would get with
   * all its retries; there is no step to name in a retry event.
   */
  private waitBudgetMs(): number {
    let total = this.lockTimeoutMs * (this.retries + 1);
    for (let attempt = 1; attempt <= this.retries; attempt++) total += backoffMs(attempt);
    return total;
  }

  /** Runs fn inside BEGIN EXCLUSIVE. */
  private async write<T>(db: Database.Database, fn: () => T): Promise<T> {
    if (!(await this.tryBeginExclusive(db, this.waitBudgetMs()))) {
      throw new TurquoiseError("MIGRATION_FAILED", `the sqlite database ${this.path} stayed locked by another connection for ${this.waitBudgetMs()} ms`);
    }
    try {
      const result = fn();
      db.exec("COMMIT");
      return result;
    } catch (e) {
      if (db.inTransaction) safely(() => db.exec("ROLLBACK"));
      throw e;
    }
  }

  /** Runs a read, polling while another connection keeps the database busy. */
  private async whenNotBusy<T>(fn: () => T): Promise<T> {
    const deadline = performance.now() + this.waitBudgetMs();
    for (;;) {
      try {
        return fn();
      } catch (e) {
        if (!isBusy(e) || performance.now() >= deadline) throw this.unreachable(e);
      }
      await sleep(LOCK_POLL_MS);
    }
  }

  /** False when the database stayed busy for the whole wait. */
  private async tryBeginExclusive(db: Database.Database, waitMs: number): Promise<boolean> {
    const deadline = performance.now() + waitMs;
    for (;;) {
      try {
        db.exec("BEGIN EXCLUSIVE");
        return true;
      } catch (e) {
        if (!isBusy(e)) throw e;
      }
      if (performance.now() >= deadline) return false;
      await sleep(Math.min(LOCK_POLL_MS, Math.max(1, deadline - performance.now())));
    }
  }

  protected async runStep(db: Database.Database, step: MigrationStep, direction: "up" | "down", emit: ReturnType<typeof emitter>): Promise<void> {
    const backfill = step.backfill?.[direction];
    if (backfill) return this.runBackfillStep(db, step, direction, backfill, emit);
    const sql = isModuleStep(step) ? undefined : await readStepSql(step, direction);
    const mod = isModuleStep(step) ? await loadModule(step) : undefined;
    const body = async (): Promise<void> => {
      if (sql !== undefined) db.exec(sql);
      else if (direction === "up") await mod!.up(sqliteDb(db));
      else await mod!.down!(sqliteDb(db));
    };
    const record = (): void => recordStep(db, step, direction);

    if (!step.transactional) {
      // Outside a transaction statements take their locks one at a time; here sqlite's own
      // busy handler is the only way to wait, so it may block the process for the lock timeout.
      db.pragma(`busy_timeout = ${this.lockTimeoutMs}`);
      try {
        await body();
      } catch (e) {
        throw stepFailed(step, direction, errorMessage(e), { data: sqliteData(e) });
      } finally {
        db.pragma("busy_timeout = 0");
      }
      try {
        await this.write(db, record);
      } catch (e) {
        throw stepFailed(step, direction, `it ran, but recording it failed: ${errorMessage(e)}`);
      }
      return;
    }

    await this.transaction(db, step, direction, emit, async () => {
      await body();
      record();
    });
  }

  /** BEGIN EXCLUSIVE, waited for without freezing the process, tried again with back-off; then fn, then COMMIT. */
  private async transaction<T>(db: Database.Database, step: MigrationStep, direction: "up" | "down", emit: ReturnType<typeof emitter>, fn: () => Promise<T>, line?: number): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      if (await this.tryBeginExclusive(db, this.lockTimeoutMs)) break;
      if (attempt > this.retries) {
        throw stepFailed(
          step,
          direction,
          `the database stayed locked by another connection (gave up after ${attempt} attempts, waiting ${this.lockTimeoutMs} ms each)`,
        );
      }
      const delayMs = backoffMs(attempt);
      emit({ type: "step-retry", version: step.version, attempt, reason: `database is locked (waited ${this.lockTimeoutMs} ms)`, delayMs });
      await sleep(delayMs);
    }
    try {
      const out = await fn();
      db.exec("COMMIT");
      return out;
    } catch (e) {
      if (db.inTransaction) safely(() => db.exec("ROLLBACK"));
      if (e instanceof TurquoiseError) throw e;
      throw stepFailed(step, direction, errorMessage(e), { data: sqliteData(e), ...(line === undefined ? {} : { line }) });
    }
  }

  /** A backfill step: its setup once, then batches of short transactions; see migrate/backfill.ts. */
  private async runBackfillStep(db: Database.Database, step: MigrationStep, direction: "up" | "down", spec: BackfillSpec, emit: ReturnType<typeof emitter>): Promise<void> {
    const { sql } = await readBackfillSql(step, direction);
    const q: Query = async (statement, params = []) => {
      let stmt: Database.Statement;
      try {
        stmt = db.prepare(statement);
      } catch (e) {
        // The setup may be several statements (a trigger, say): run it as a script, the way a .sql file runs.
        if (params.length === 0 && e instanceof RangeError && /more than one statement/.test(e.message)) {
          db.exec(statement);
          return { rows: [], rowCount: 0 };
        }
        throw e;
      }
      if (stmt.reader) return { rows: stmt.all(...params) as Record<string, unknown>[], rowCount: 0 };
      return { rows: [], rowCount: stmt.run(...params).changes };
    };
    let inBatches = false;
    const driver: BackfillDriver = {
      param: () => "?",
      transaction: (fn) => this.transaction(db, step, direction, emit, () => fn(q), inBatches ? sql.line : undefined),
      query: async (statement, params) => this.whenNotBusy(() => {
        const stmt = db.prepare(statement);
        return { rows: stmt.all(...(params ?? [])) as Record<string, unknown>[], rowCount: 0 };
      }),
      upperBoundSql: (b, first) => `SELECT max(k) AS hi FROM (SELECT ${b.key} AS k FROM ${b.table} WHERE ${first ? `${b.key} IS NOT NULL` : `${b.key} > ?`} ORDER BY ${b.key} LIMIT ${b.batchSize})`,
      estimateRows: (table) => this.whenNotBusy(() => Number((db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n)),
      progressTableSql: PROGRESS_TABLE_SQL,
      nowMs: "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
    };
    await runBackfill(driver, step, direction, spec, sql, (e) => {
      if (e.type === "backfill-progress") inBatches = true;
      emit(e);
    }, async () => recordStep(db, step, direction));
  }

  protected async readApplied(db: Database.Database): Promise<AppliedMigration[]> {
    return this.whenNotBusy(() => {
      if (!hasTable(db)) return [];
      const down = hasDownColumn(db) ? "down_checksum" : "NULL AS down_checksum";
      const rows = db.prepare(`SELECT version, name, checksum, phase, applied_at, ${down} FROM turquoise_migrations ORDER BY version`).all() as Array<{
        version: number;
        name: string;
        checksum: string;
        phase: MigrationPhase;
        applied_at: number;
        down_checksum: string | null;
      }>;
      return rows.map((r) => ({ version: r.version, name: r.name, checksum: r.checksum, phase: r.phase, appliedAt: r.applied_at, downChecksum: r.down_checksum }));
    });
  }

  protected async recordDownChecksum(db: Database.Database, version: number, downChecksum: string): Promise<void> {
    await this.write(db, () => db.prepare("UPDATE turquoise_migrations SET down_checksum = ? WHERE version = ? AND down_checksum IS NULL").run(downChecksum, version));
  }

  /** A database whose directory is missing is unreachable; a missing file is merely fresh. */
  private checkReachable(): void {
    const dir = dirname(this.path);
    let isDir = false;
    try {
      isDir = statSync(dir).isDirectory();
    } catch {
      // reported below
    }
    if (!isDir) {
      throw new TurquoiseError("MIGRATION_FAILED", `cannot open the sqlite database at ${this.path}: the directory ${dir} does not exist`);
    }
  }

  private connect(readonly: boolean, path = this.path): Database.Database {
    let db: Database.Database;
    try {
      db = new Database(path, readonly ? { readonly: true, fileMustExist: true } : {});
      db.pragma("busy_timeout = 0");
    } catch (e) {
      throw this.unreachable(e);
    }
    this.open.add(db);
    return db;
  }

  private disconnect(db: Database.Database): void {
    this.open.delete(db);
    safely(() => db.close());
  }

  private unreachable(e: unknown): TurquoiseError {
    if (e instanceof TurquoiseError) return e;
    return new TurquoiseError("MIGRATION_FAILED", `cannot open the sqlite database at ${this.path}: ${errorMessage(e)}`, { data: sqliteData(e) });
  }
}

/** The module-step interface over one better-sqlite3 connection. */
function sqliteDb(db: Database.Database): MigrationDb {
  return {
    async query(sql, params = []) {
      if (params.length === 0) {
        let stmt: Database.Statement;
        try {
          stmt = db.prepare(sql);
        } catch (e) {
          // Several statements and no values: run them as a script, the way a .sql file runs.
          if (e instanceof RangeError && /more than one statement/.test(e.message)) {
            db.exec(sql);
            return { rows: [] };
          }
          throw e;
        }
        return { rows: stmt.reader ? (stmt.all() as Record<string, unknown>[]) : (stmt.run(), []) };
      }
      const q = toSqliteParams(sql, params);
      const values = q.params.map((v) => (typeof v === "boolean" ? (v ? 1 : 0) : v === undefined ? null : v));
      const stmt = db.prepare(q.sql);
      return { rows: stmt.reader ? (stmt.all(values) as Record<string, unknown>[]) : (stmt.run(values), []) };
    },
  };
}

/** The bookkeeping row: written by the transaction that finishes the step, or removed by the one that reverts it. */
function recordStep(db: Database.Database, step: MigrationStep, direction: "up" | "down"): void {
  if (direction === "up") {
    db.prepare("INSERT INTO turquoise_migrations (version, name, checksum, phase, applied_at, down_checksum) VALUES (?, ?, ?, ?, ?, ?)").run(
      step.version,
      step.name,
      step.checksum,
      step.phase,
      Date.now(),
      step.downChecksum ?? null,
    );
  } else {
    db.prepare("DELETE FROM turquoise_migrations WHERE version = ?").run(step.version);
  }
}

function hasTable(db: Database.Database): boolean {
  return db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'turquoise_migrations'").get() !== undefined;
}

function hasDownColumn(db: Database.Database): boolean {
  return db.prepare("SELECT 1 FROM pragma_table_info('turquoise_migrations') WHERE name = 'down_checksum'").get() !== undefined;
}

function isBusy(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === "SQLITE_BUSY" || code === "SQLITE_LOCKED";
}

function sqliteData(e: unknown): Record<string, unknown> {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" ? { sqliteCode: code } : {};
}

function safely(fn: () => unknown): void {
  try {
    fn();
  } catch {
    // Cleanup after a failure must not hide the failure.
  }
}
