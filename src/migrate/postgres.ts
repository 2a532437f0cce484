// The postgres Migrator. Live traffic shares this database, so every step runs with a short
// lock_timeout: a step that would queue behind a long transaction (and make every query behind it
// queue too) gives up quickly, backs off and tries again, instead of stalling the app.
//
// One runner at a time: a session-level advisory lock, held on a connection of its own, so that
// the lock outlives each step's transaction and dies with the runner if the runner dies.

import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
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
import { describeDatabase, scrubSecrets } from "./redact.js";
import { lineAt, splitSqlStatements, withoutLeadingComments } from "./sql-text.js";
import { PROGRESS_TABLE, readUnfinishedBackfills, runBackfill, type BackfillDriver, type Query } from "./backfill.js";

export interface PostgresMigratorOptions {
  /** postgres://user:password@host:port/dbname (postgresql:// too). */
  url: string;
  /** lock_timeout for each step, so it never makes live queries queue behind it for long. */
  lockTimeoutMs?: number;
  /** Retries, with back-off, after a step hits its lock_timeout. */
  retries?: number;
  /** How long connecting may take before the database counts as unreachable. */
  connectTimeoutMs?: number;
}

/** The advisory lock every Turquoise runner takes on a database: sha256("turquoise_migrations")'s first 8 bytes. */
export const MIGRATION_LOCK_KEY = "2542010195254158584";
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const LOCK_TIMEOUT_SQLSTATE = "55P03";
const APPLICATION_NAME = "turquoise migrate";

const TABLE_SQL = `CREATE TABLE IF NOT EXISTS turquoise_migrations (
  version INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  checksum TEXT NOT NULL,
  phase TEXT NOT NULL,
  applied_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
  down_checksum TEXT
)`;
/** Tables made before down checksums lack the column; a run adds it, a status read does without. */
const DOWN_COLUMN_SQL = "ALTER TABLE turquoise_migrations ADD COLUMN IF NOT EXISTS down_checksum TEXT";
const PROGRESS_TABLE_SQL = `CREATE TABLE IF NOT EXISTS ${PROGRESS_TABLE} (
  version INTEGER NOT NULL,
  direction TEXT NOT NULL,
  checksum TEXT NOT NULL,
  last_key TEXT,
  rows_done BIGINT NOT NULL,
  batches INTEGER NOT NULL,
  started_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (version, direction)
)`;
const HAS_DOWN_COLUMN_SQL = "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'turquoise_migrations' AND column_name = 'down_checksum' AND table_schema = ANY (current_schemas(false))) AS ok";

type Emit = ReturnType<typeof emitter>;

export class PostgresMigrator extends StepMigrator<pg.Client> {
  readonly driver = "postgres" as const;
  /** host:port/dbname: what messages name, never the URL. */
  readonly where: string;
  private readonly url: string;
  private readonly lockTimeoutMs: number;
  private readonly retries: number;
  private readonly connectTimeoutMs: number;
  private readonly clients = new Set<pg.Client>();

  constructor(opts: PostgresMigratorOptions) {
    super();
    if (!/^postgres(ql)?:\/\//i.test(opts.url)) {
      throw new TurquoiseError("USAGE", `a postgres database URL starts with postgres:// or postgresql://, not "${describeDatabase(opts.url)}"`);
    }
    this.url = opts.url;
    this.where = describeDatabase(opts.url);
    this.lockTimeoutMs = Math.max(1, Math.round(opts.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS));
    this.retries = opts.retries ?? DEFAULT_LOCK_RETRIES;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  }

  async status(steps: MigrationStep[]): Promise<MigrationStatus> {
    const ordered = orderSteps(steps);
    const client = await this.connect();
    try {
      const backfills = await readUnfinishedBackfills(pgQuery(client));
      return { ...computeStatus(ordered, await this.readApplied(client)), backfills };
    } catch (e) {
      throw this.scrub(e);
    } finally {
      await this.disconnect(client);
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.clients].map((c) => this.disconnect(c)));
  }

  /** Connects (both connections, before anything runs), takes the lock, runs work, always lets go. */
  protected async run(opts: MigrateOptions, work: (client: pg.Client, emit: Emit) => Promise<MigrationRun>): Promise<MigrationRun> {
    const emit = emitter(opts);
    const lock = await this.connect();
    let client: pg.Client | undefined;
    let locked = false;
    try {
      client = await this.connect();
      await this.acquire(lock, opts, emit);
      locked = true;
      const exists = await client.query<{ ok: boolean }>("SELECT to_regclass('turquoise_migrations') IS NOT NULL AS ok");
      if (!exists.rows[0]?.ok) await client.query(TABLE_SQL);
      if (!(await client.query<{ ok: boolean }>(HAS_DOWN_COLUMN_SQL)).rows[0]?.ok) await client.query(DOWN_COLUMN_SQL);
      return await work(client, emit);
    } catch (e) {
      throw this.scrub(e);
    } finally {
      if (locked) await lock.query("SELECT pg_advisory_unlock($1::bigint)", [MIGRATION_LOCK_KEY]).catch(() => undefined);
      await this.disconnect(lock);
      if (client) await this.disconnect(client);
    }
  }

  private async acquire(lock: pg.Client, opts: MigrateOptions, emit: Emit): Promise<void> {
    // A server- or role-wide timeout must not cut the wait for another runner short.
    await lock.query("SET lock_timeout = 0; SET statement_timeout = 0");
    const tried = await lock.query<{ ok: boolean }>("SELECT pg_try_advisory_lock($1::bigint) AS ok", [MIGRATION_LOCK_KEY]);
    if (tried.rows[0]?.ok) return;
    if (opts.noWait) {
      const holder = await this.lockHolder(lock);
      throw new TurquoiseError(
        "LOCKED",
        `another migration is running on the postgres database ${this.where}: another runner${holder} holds the migration lock (advisory lock ${MIGRATION_LOCK_KEY}); try again when it is done`,
      );
    }
    emit({ type: "waiting-for-lock" });
    await lock.query("SELECT pg_advisory_lock($1::bigint)", [MIGRATION_LOCK_KEY]);
  }

  /** " (pid 123, turquoise migrate)" when postgres can say who holds the lock. */
  private async lockHolder(lock: pg.Client): Promise<string> {
    const key = BigInt.asUintN(64, BigInt(MIGRATION_LOCK_KEY));
    try {
      const r = await lock.query<{ pid: number; app: string | null }>(
        `SELECT l.pid, a.application_name AS app FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid AND l.objsubid = 1`,
        [String(key >> 32n), String(key & 0xffffffffn)],
      );
      const row = r.rows[0];
      return row ? ` (pid ${row.pid}${row.app ? `, ${row.app}` : ""})` : "";
    } catch {
      return "";
    }
  }

  protected async runStep(client: pg.Client, step: MigrationStep, direction: "up" | "down", emit: Emit): Promise<void> {
    const backfill = step.backfill?.[direction];
    if (backfill) return this.runBackfillStep(client, step, direction, backfill, emit);
    const sql = isModuleStep(step) ? undefined : await readStepSql(step, direction);
    const mod = isModuleStep(step) ? await loadModule(step) : undefined;
    const db = pgDb(client);
    const body = async (): Promise<void> => {
      if (sql !== undefined) await client.query(sql);
      else if (direction === "up") await mod!.up(db);
      else await mod!.down!(db);
    };
    const record = () => recordStep(pgQuery(client), step, direction);

    if (!step.transactional) {
      await this.runOutsideTransaction(client, step, direction, sql, body, record, emit);
      return;
    }
    await this.transaction(client, step, emit, async () => {
      await body();
      await record();
    }, (e, attempts) => this.failed(step, direction, e, attempts, sql, 0));
  }

  /** One transaction under the step's lock_timeout, tried again with back-off when it times out. */
  private async transaction<T>(client: pg.Client, step: MigrationStep, emit: Emit, fn: () => Promise<T>, failed: (e: unknown, attempts: number) => TurquoiseError): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        await client.query("BEGIN");
        await client.query(`SET LOCAL lock_timeout = '${this.lockTimeoutMs}ms'`);
        const out = await fn();
        await client.query("COMMIT");
        return out;
      } catch (e) {
        await client.query("ROLLBACK").catch(() => undefined);
        if (isLockTimeout(e) && attempt <= this.retries) {
          await this.backOff(step, attempt, e, emit);
          continue;
        }
        throw e instanceof TurquoiseError ? e : failed(e, attempt);
      }
    }
  }

  /** A backfill step: its setup once, then batches of short transactions; see migrate/backfill.ts. */
  private async runBackfillStep(client: pg.Client, step: MigrationStep, direction: "up" | "down", spec: BackfillSpec, emit: Emit): Promise<void> {
    const { text, sql } = await readBackfillSql(step, direction);
    const q = pgQuery(client);
    let inBatches = false;
    const driver: BackfillDriver = {
      param: (n) => `$${n}`,
      transaction: (fn) => this.transaction(client, step, emit, () => fn(q), (e, attempts) =>
        inBatches ? this.failed(step, direction, e, attempts, undefined, 0, sql.line) : this.failed(step, direction, e, attempts, text, text.indexOf(sql.setup))),
      query: q,
      upperBoundSql: (b, first) => `SELECT (max(k))::text AS hi FROM (SELECT ${b.key} AS k FROM ${b.table} WHERE ${first ? `${b.key} IS NOT NULL` : `${b.key} > $1`} ORDER BY ${b.key} LIMIT ${b.batchSize}) s`,
      estimateRows: async (table) => {
        const r = await client.query<{ n: number | null }>("SELECT reltuples::float8 AS n FROM pg_class WHERE oid = to_regclass($1)", [table]);
        const n = r.rows[0]?.n ?? -1;
        // -1: never analyzed (a new table); counting once is the honest fallback.
        if (n >= 0) return Math.round(n);
        return Number((await client.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`)).rows[0]?.n ?? 0);
      },
      progressTableSql: PROGRESS_TABLE_SQL,
      nowMs: "(extract(epoch FROM clock_timestamp()) * 1000)::bigint",
    };
    await runBackfill(driver, step, direction, spec, sql, (e) => {
      if (e.type === "backfill-progress") inBatches = true;
      emit(e);
    }, (tx) => recordStep(tx, step, direction));
  }

  /**
   * A no-transaction step: statement by statement, each its own implicit transaction, so a lock
   * timeout retries only the statement that hit it. The bookkeeping row comes after.
   */
  private async runOutsideTransaction(
    client: pg.Client,
    step: MigrationStep,
    direction: "up" | "down",
    sql: string | undefined,
    body: () => Promise<void>,
    record: () => Promise<void>,
    emit: Emit,
  ): Promise<void> {
    await client.query(`SET lock_timeout = '${this.lockTimeoutMs}ms'`);
    try {
      if (sql === undefined) {
        try {
          await body();
        } catch (e) {
          throw this.failed(step, direction, e, 1, undefined, 0);
        }
      } else {
        for (const statement of splitSqlStatements(sql)) {
          const index = concurrentIndexName(statement.sql);
          for (let attempt = 1; ; attempt++) {
            try {
              // A build that died (a crash, a cancel, a lock timeout) leaves an invalid index behind
              // that every write still maintains, and that IF NOT EXISTS would take for done.
              if (index) await this.dropInvalidIndex(client, step, index, emit);
              await client.query(statement.sql);
              break;
            } catch (e) {
              if (isLockTimeout(e) && attempt <= this.retries) {
                await this.backOff(step, attempt, e, emit);
                continue;
              }
              if (index) await this.dropInvalidIndex(client, step, index, emit).catch(() => undefined);
              throw this.failed(step, direction, e, attempt, sql, statement.offset);
            }
          }
        }
      }
      try {
        await record();
      } catch (e) {
        throw stepFailed(step, direction, `it ran, but recording it failed: ${this.scrubText(errorMessage(e))}`);
      }
    } finally {
      await client.query("RESET lock_timeout").catch(() => undefined);
    }
  }

  /** Drops the index when a failed CREATE INDEX CONCURRENTLY left it invalid; a valid one is left alone. */
  private async dropInvalidIndex(client: pg.Client, step: MigrationStep, index: string, emit: Emit): Promise<void> {
    const r = await client.query("SELECT 1 FROM pg_index WHERE indexrelid = to_regclass($1) AND NOT indisvalid", [index]);
    if (!r.rowCount) return;
    emit({ type: "index-cleanup", version: step.version, index });
    await client.query(`DROP INDEX CONCURRENTLY IF EXISTS ${index}`);
  }

  private async backOff(step: MigrationStep, attempt: number, e: unknown, emit: Emit): Promise<void> {
    const delayMs = backoffMs(attempt);
    emit({ type: "step-retry", version: step.version, attempt, reason: this.scrubText(errorMessage(e)), delayMs });
    await sleep(delayMs);
  }

  /** The step's error: its file, the database's own words, and the line when postgres gives one. */
  private failed(step: MigrationStep, direction: "up" | "down", e: unknown, attempts: number, sql: string | undefined, offset: number, knownLine?: number): TurquoiseError {
    const err = e as { code?: unknown; position?: unknown; detail?: unknown; hint?: unknown };
    let reason = this.scrubText(errorMessage(e));
    if (isLockTimeout(e)) {
      reason += ` (gave up after ${attempts} ${attempts === 1 ? "attempt" : "attempts"} with a ${this.lockTimeoutMs} ms lock_timeout: another session holds a lock this step needs)`;
    }
    const position = typeof err.position === "string" ? Number(err.position) : NaN;
    const line = sql !== undefined && Number.isFinite(position) ? lineAt(sql, offset + position - 1) : knownLine;
    const data: Record<string, unknown> = {};
    if (typeof err.code === "string") data.sqlState = err.code;
    if (typeof err.detail === "string") data.detail = this.scrubText(err.detail);
    if (typeof err.hint === "string") data.hint = this.scrubText(err.hint);
    return stepFailed(step, direction, reason, { ...(line === undefined ? {} : { line }), data });
  }

  protected async readApplied(client: pg.Client): Promise<AppliedMigration[]> {
    const exists = await client.query<{ ok: boolean }>("SELECT to_regclass('turquoise_migrations') IS NOT NULL AS ok");
    if (!exists.rows[0]?.ok) return [];
    const down = (await client.query<{ ok: boolean }>(HAS_DOWN_COLUMN_SQL)).rows[0]?.ok ? "down_checksum" : "NULL::text AS down_checksum";
    const r = await client.query<{ version: number; name: string; checksum: string; phase: MigrationPhase; applied_at_ms: number; down_checksum: string | null }>(
      `SELECT version, name, checksum, phase, floor(extract(epoch FROM applied_at) * 1000)::float8 AS applied_at_ms, ${down} FROM turquoise_migrations ORDER BY version`,
    );
    return r.rows.map((row) => ({ version: row.version, name: row.name, checksum: row.checksum, phase: row.phase, appliedAt: row.applied_at_ms, downChecksum: row.down_checksum }));
  }

  protected async recordDownChecksum(client: pg.Client, version: number, downChecksum: string): Promise<void> {
    await client.query("UPDATE turquoise_migrations SET down_checksum = $1 WHERE version = $2 AND down_checksum IS NULL", [downChecksum, version]);
  }

  private async connect(): Promise<pg.Client> {
    let client: pg.Client;
    try {
      client = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: this.connectTimeoutMs, application_name: APPLICATION_NAME });
    } catch (e) {
      throw this.unreachable(e);
    }
    // A connection that dies between queries is reported by the next query; without a listener the
    // 'error' event would crash the process instead.
    client.on("error", () => undefined);
    try {
      await client.connect();
    } catch (e) {
      await client.end().catch(() => undefined);
      throw this.unreachable(e);
    }
    this.clients.add(client);
    return client;
  }

  private async disconnect(client: pg.Client): Promise<void> {
    this.clients.delete(client);
    await client.end().catch(() => undefined);
  }

  private unreachable(e: unknown): TurquoiseError {
    const err = e as { code?: unknown; message?: unknown; errors?: unknown };
    let reason: string;
    if (typeof err.code === "string" && /^E[A-Z]+$/.test(err.code)) reason = err.code;
    else if (/timeout/i.test(errorMessage(e))) reason = `no answer within ${this.connectTimeoutMs} ms`;
    else reason = this.scrubText(errorMessage(e)) || "unknown error";
    return new TurquoiseError("MIGRATION_FAILED", `cannot connect to the postgres database at ${this.where}: ${reason}`, {
      data: { database: this.where, ...(typeof err.code === "string" ? { code: err.code } : {}) },
    });
  }

  private scrubText(text: string): string {
    return scrubSecrets(text, this.url);
  }

  /**
   * Our own errors are built from parts that hold no secret (and the database's words, already
   * scrubbed); anything else is rewritten so it cannot carry one.
   */
  private scrub(e: unknown): unknown {
    if (e instanceof TurquoiseError) return e;
    return new TurquoiseError("MIGRATION_FAILED", `postgres database ${this.where}: ${this.scrubText(errorMessage(e))}`, {
      data: typeof (e as { code?: unknown } | null)?.code === "string" ? { sqlState: (e as { code: string }).code } : {},
    });
  }
}

function pgQuery(client: pg.Client): Query {
  return async (sql, params) => {
    const r = await client.query(sql, params);
    return { rows: r.rows as Record<string, unknown>[], rowCount: r.rowCount ?? 0 };
  };
}

/** The bookkeeping row: written by the transaction that finishes the step, or removed by the one that reverts it. */
async function recordStep(q: Query, step: MigrationStep, direction: "up" | "down"): Promise<void> {
  if (direction === "up") {
    await q("INSERT INTO turquoise_migrations (version, name, checksum, phase, down_checksum) VALUES ($1, $2, $3, $4, $5)", [
      step.version,
      step.name,
      step.checksum,
      step.phase,
      step.downChecksum ?? null,
    ]);
  } else {
    await q("DELETE FROM turquoise_migrations WHERE version = $1", [step.version]);
  }
}

function pgDb(client: pg.Client): MigrationDb {
  return {
    async query(sql, params) {
      const r = await client.query(sql, params);
      // Several statements in one query give one result each; the last is what a caller means.
      const last = Array.isArray(r) ? (r as pg.QueryResult[])[(r as pg.QueryResult[]).length - 1] : r;
      return { rows: (last?.rows ?? []) as Record<string, unknown>[] };
    },
  };
}

const IDENT = String.raw`(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)`;
const CONCURRENT_INDEX_RE = new RegExp(String.raw`^CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?(${IDENT}(?:\.${IDENT})?)\s+ON\s`, "i");

/** The index a CREATE INDEX CONCURRENTLY statement names, as written; undefined for anything else (or an unnamed index). */
export function concurrentIndexName(statement: string): string | undefined {
  return CONCURRENT_INDEX_RE.exec(withoutLeadingComments(statement))?.[1];
}

function isLockTimeout(e: unknown): boolean {
  return (e as { code?: unknown } | null)?.code === LOCK_TIMEOUT_SQLSTATE;
}
