// Batched backfills: a step's UPDATE run over the table in keyset-ordered batches, each batch its own
// short transaction that also records how far it got, so live traffic never queues behind one long
// statement and a runner that dies resumes from the last committed batch, losing and repeating nothing.

import { setTimeout as sleep } from "node:timers/promises";
import { TurquoiseError } from "../errors.js";
import type { BackfillSpec, MigrationEvent, MigrationStep, UnfinishedBackfill } from "./contract.js";
import { scanSql, splitSqlStatements } from "./sql-text.js";

/** What a backfill directive declares: `-- turquoise: backfill table=books key=id batch=1000 pause=auto`. */
export const DEFAULT_BATCH_SIZE = 1_000;
export const MAX_BATCH_SIZE = 1_000_000;
/** The adaptive pause never waits longer than this, whatever one slow batch took. */
export const MAX_ADAPTIVE_PAUSE_MS = 5_000;
/** Where the runner keeps each unfinished backfill's last committed key. */
export const PROGRESS_TABLE = "turquoise_backfills";
/** The placeholder a backfill statement puts where its batch's key range goes. */
export const BATCH_PLACEHOLDER = "{batch}";

const IDENT_RE = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$/;
const COLUMN_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const BACKFILL_OPTIONS = ["table", "key", "batch", "pause"] as const;

/**
 * Reads a backfill directive's name=value words. Names are plain SQL identifiers (they are put in
 * SQL as they are written), so a bad one is refused here rather than quoted into something else.
 */
export function parseBackfillOptions(options: Map<string, string>): { spec?: BackfillSpec; problems: string[] } {
  const problems: string[] = [];
  for (const name of options.keys()) {
    if (!(BACKFILL_OPTIONS as readonly string[]).includes(name)) problems.push(`unknown backfill option "${name}"; known: ${BACKFILL_OPTIONS.join(", ")}`);
  }
  const table = options.get("table");
  const key = options.get("key");
  if (table === undefined) problems.push("a backfill needs table=<table>");
  else if (!IDENT_RE.test(table)) problems.push(`backfill table "${table}" is not a plain table name (letters, digits, _; schema.table allowed)`);
  if (key === undefined) problems.push("a backfill needs key=<column> (the primary key, or an indexed column it can walk in order)");
  else if (!COLUMN_RE.test(key)) problems.push(`backfill key "${key}" is not a plain column name (letters, digits, _)`);
  let batchSize = DEFAULT_BATCH_SIZE;
  const batch = options.get("batch");
  if (batch !== undefined) {
    batchSize = /^\d+$/.test(batch) ? Number(batch) : NaN;
    if (!Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > MAX_BATCH_SIZE) problems.push(`backfill batch=${batch}: a whole number of rows from 1 to ${MAX_BATCH_SIZE}`);
  }
  let pauseMs: number | null = null;
  const pause = options.get("pause");
  if (pause !== undefined && pause !== "auto") {
    const m = /^(\d+)(ms|s)$/.exec(pause);
    if (!m) problems.push(`backfill pause=${pause}: "auto" (as long as the last batch took) or a duration such as 50ms or 1s`);
    else pauseMs = Number(m[1]) * (m[2] === "s" ? 1000 : 1);
  }
  if (problems.length > 0) return { problems };
  return { spec: { table: table!, key: key!, batchSize, pauseMs }, problems };
}

/** A backfill file: statements that run once first (in one transaction), then the batched statement. */
export interface BackfillSql {
  setup: string;
  statement: string;
  /** 1-based line of the batched statement in its file. */
  line: number;
}

/** Splits a backfill file; the batched statement is the last one and the only one with {batch}. */
export function splitBackfillSql(text: string): BackfillSql {
  const statements = splitSqlStatements(text);
  const withBatch = statements.filter((s) => hasPlaceholder(s.sql));
  if (withBatch.length !== 1) {
    throw new Error(withBatch.length === 0
      ? `a backfill step needs one statement with ${BATCH_PLACEHOLDER} where its WHERE clause takes the batch's key range, e.g. UPDATE t SET c = ... WHERE ${BATCH_PLACEHOLDER}`
      : `a backfill step has one batched statement; ${withBatch.length} statements here use ${BATCH_PLACEHOLDER}`);
  }
  const last = statements[statements.length - 1]!;
  const batched = withBatch[0]!;
  const line = text.slice(0, batched.offset).split("\n").length;
  if (placeholders(batched.sql) > 1) throw new Error(`the batched statement (line ${line}) uses ${BATCH_PLACEHOLDER} ${placeholders(batched.sql)} times; once is the batch's key range`);
  if (batched !== last) throw new Error(`the statement with ${BATCH_PLACEHOLDER} (line ${line}) must be the step's last: what follows it belongs in a step of its own`);
  return { setup: text.slice(0, batched.offset).trim(), statement: batched.sql, line };
}

function hasPlaceholder(sql: string): boolean {
  return placeholders(sql) > 0;
}

function placeholders(sql: string): number {
  let found = 0;
  scanSql(sql, true, (i, ch) => {
    if (ch === "{" && sql.startsWith(BATCH_PLACEHOLDER, i)) found++;
  });
  return found;
}

/** The batched statement with {batch} replaced by the key range (placeholders numbered by the driver). */
export function batchStatement(statement: string, key: string, first: boolean, param: (n: number) => string): string {
  const range = first ? `(${key} <= ${param(1)})` : `(${key} > ${param(1)} AND ${key} <= ${param(2)})`;
  let out = "";
  let last = 0;
  scanSql(statement, true, (i, ch) => {
    if (ch === "{" && statement.startsWith(BATCH_PLACEHOLDER, i)) {
      out += statement.slice(last, i) + range;
      last = i + BATCH_PLACEHOLDER.length;
    }
  });
  return out + statement.slice(last);
}

export type Query = (sql: string, params?: unknown[]) => Promise<{ rows: Record<string, unknown>[]; rowCount: number }>;

/** What a driver gives the batch loop. */
export interface BackfillDriver {
  /** $n or ? */
  param(n: number): string;
  /** Runs fn in one short transaction under the step's lock timeout, retried with back-off when it times out. */
  transaction<T>(fn: (q: Query) => Promise<T>): Promise<T>;
  /** Outside any transaction: for the estimate. */
  query: Query;
  /** The SQL that yields `hi`, the key that ends the next batch (as text JSON can carry), or NULL when no rows are left. */
  upperBoundSql(spec: BackfillSpec, first: boolean): string;
  /** A cheap row count estimate for a progress bar (statistics where the database keeps them). */
  estimateRows(table: string): Promise<number>;
  /** DDL for the progress table. */
  progressTableSql: string;
  /** The database's own timestamp expression in milliseconds. */
  nowMs: string;
}

interface ProgressRow {
  lastKey: unknown;
  rowsDone: number;
  batches: number;
  checksum: string;
}

export interface BackfillRun {
  rowsDone: number;
  batches: number;
  /** Rows the run found already done by an earlier, interrupted run. */
  resumedFrom: number;
}

/**
 * Runs a backfill step to its end: the setup statements (once, with the progress row, in one
 * transaction), the batches, then `finish` in the same transaction that drops the progress row, so
 * the step counts as applied exactly when its last batch is in.
 */
export async function runBackfill(
  driver: BackfillDriver,
  step: MigrationStep,
  direction: "up" | "down",
  spec: BackfillSpec,
  sql: BackfillSql,
  emit: (e: MigrationEvent) => void,
  finish: (q: Query) => Promise<void>,
): Promise<BackfillRun> {
  const p = (n: number) => driver.param(n);
  const where = `version = ${p(1)} AND direction = ${p(2)}`;
  const checksum = direction === "up" ? step.checksum : (step.downChecksum ?? step.checksum);
  let progress = await readProgress(driver, step.version, direction);
  if (progress && progress.checksum !== checksum) {
    throw new TurquoiseError("CONFLICT", `an interrupted backfill of step ${step.version} (${direction}) was started from a different file (checksum ${progress.checksum.slice(0, 12)}, now ${checksum.slice(0, 12)}); restore the file it started from so it can resume`);
  }
  if (!progress) {
    await driver.transaction(async (q) => {
      await q(driver.progressTableSql);
      if (sql.setup !== "") await q(sql.setup);
      await q(`INSERT INTO ${PROGRESS_TABLE} (version, direction, checksum, last_key, rows_done, batches, started_at, updated_at) VALUES (${p(1)}, ${p(2)}, ${p(3)}, NULL, 0, 0, ${driver.nowMs}, ${driver.nowMs})`, [step.version, direction, checksum]);
    });
    progress = { lastKey: null, rowsDone: 0, batches: 0, checksum };
  }
  const resumedFrom = progress.rowsDone;
  const estimate = Math.max(await driver.estimateRows(spec.table), progress.rowsDone);
  const started = performance.now();
  let { lastKey, rowsDone, batches } = progress;
  const report = (done: boolean): void => {
    const elapsedS = (performance.now() - started) / 1000;
    const rate = elapsedS > 0 ? (rowsDone - resumedFrom) / elapsedS : 0;
    const rowsEstimated = Math.max(estimate, rowsDone);
    emit({
      type: "backfill-progress", version: step.version, name: step.name, direction, table: spec.table,
      rowsDone, rowsEstimated, batches, rowsPerSec: Math.round(rate),
      etaMs: done ? 0 : rate > 0 ? Math.round(((rowsEstimated - rowsDone) / rate) * 1000) : null,
      resumedFrom, done,
    });
  };
  report(false);

  for (;;) {
    const batchStarted = performance.now();
    const first = lastKey === null;
    const result = await driver.transaction(async (q) => {
      const bound = await q(driver.upperBoundSql(spec, first), first ? [] : [lastKey]);
      const hi = bound.rows[0]?.hi ?? null;
      if (hi === null) return null;
      const range = first ? [hi] : [lastKey, hi];
      const changed = await q(batchStatement(sql.statement, spec.key, first, p), range);
      // Parameters in the order they appear: sqlite's ? are positional.
      await q(`UPDATE ${PROGRESS_TABLE} SET last_key = ${p(1)}, rows_done = rows_done + ${p(2)}, batches = batches + 1, updated_at = ${driver.nowMs} WHERE version = ${p(3)} AND direction = ${p(4)}`, [JSON.stringify(hi), changed.rowCount, step.version, direction]);
      return { hi, changed: changed.rowCount };
    });
    if (result === null) break;
    lastKey = result.hi;
    rowsDone += result.changed;
    batches++;
    report(false);
    const tookMs = performance.now() - batchStarted;
    const pauseMs = spec.pauseMs ?? Math.min(MAX_ADAPTIVE_PAUSE_MS, Math.round(tookMs));
    if (pauseMs > 0) await sleep(pauseMs);
  }

  await driver.transaction(async (q) => {
    await finish(q);
    await q(`DELETE FROM ${PROGRESS_TABLE} WHERE ${where}`, [step.version, direction]);
  });
  report(true);
  return { rowsDone, batches, resumedFrom };
}

async function readProgress(driver: BackfillDriver, version: number, direction: string): Promise<ProgressRow | undefined> {
  let r;
  try {
    r = await driver.query(`SELECT last_key, rows_done, batches, checksum FROM ${PROGRESS_TABLE} WHERE version = ${driver.param(1)} AND direction = ${driver.param(2)}`, [version, direction]);
  } catch (e) {
    if (isNoProgressTable(e)) return undefined;
    throw e;
  }
  const row = r.rows[0];
  if (!row) return undefined;
  return {
    lastKey: row.last_key === null ? null : JSON.parse(String(row.last_key)),
    rowsDone: Number(row.rows_done),
    batches: Number(row.batches),
    checksum: String(row.checksum),
  };
}

/** Backfills a database left unfinished: what `migrate status` shows. */
/** The backfills an interrupted run left, oldest step first: the next run of the same direction resumes each. */
export async function readUnfinishedBackfills(query: Query): Promise<UnfinishedBackfill[]> {
  let r;
  try {
    r = await query(`SELECT version, direction, rows_done, batches, updated_at FROM ${PROGRESS_TABLE} ORDER BY version, direction`);
  } catch (e) {
    if (isNoProgressTable(e)) return [];
    throw e;
  }
  return r.rows.map((row) => ({
    version: Number(row.version),
    direction: row.direction === "down" ? "down" : "up",
    rowsDone: Number(row.rows_done),
    batches: Number(row.batches),
    updatedAt: Number(row.updated_at),
  }));
}

/** No backfill ever ran on this database: the progress table is made by the first one. */
function isNoProgressTable(e: unknown): boolean {
  return /no such table|does not exist/i.test(String((e as Error).message));
}
