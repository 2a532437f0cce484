// The default store: one SQLite file. The agent is the only process that writes to it, so watchers
// are notified in-process, after each write commits; a second process reading the file sees the
// data but gets no watch events for writes it did not make.

import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { TurquoiseError } from "../errors.js";
import type {
  EventRecord,
  Fence,
  HistoryEntry,
  HistoryWriteOptions,
  KeyValue,
  LockInfo,
  LockResult,
  NewEvent,
  NewHistoryEntry,
  PutOptions,
  Store,
  WatchEvent,
  WriteResult,
} from "./contract.js";
import { CHANGE_LOG_SIZE, WatchHub, casAllows, fenceHolds, fenceLost } from "./memory.js";

/** How long a write waits for a reader's lock (another process inspecting the file) before failing. */
export const BUSY_TIMEOUT_MS = 5_000;

const SCHEMA_VERSION = 2;

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL
  );
  INSERT OR IGNORE INTO meta (id, revision) VALUES (1, 0);

  CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL
  ) WITHOUT ROWID;

  CREATE TABLE IF NOT EXISTS changes (
    rev INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('put', 'delete')),
    value TEXT
  );

  CREATE TABLE IF NOT EXISTS locks (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    since INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
  );

  CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    service TEXT NOT NULL,
    kind TEXT NOT NULL,
    release TEXT NOT NULL,
    previous_release TEXT,
    via TEXT,
    actor TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    outcome TEXT NOT NULL,
    plan TEXT NOT NULL,
    steps TEXT NOT NULL,
    error TEXT
  );
  CREATE INDEX IF NOT EXISTS history_by_service ON history (service, id);

  CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    service TEXT,
    type TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT NOT NULL
  );
  CREATE INDEX IF NOT EXISTS events_by_service ON events (service, id);
`;

interface KvRow {
  key: string;
  value: string;
  create_rev: number;
  mod_rev: number;
}

/** A write's outcome, plus the change to announce once the transaction has committed. */
interface KvWrite {
  result: WriteResult;
  change?: WatchEvent;
}

interface ChangeRow {
  rev: number;
  key: string;
  type: "put" | "delete";
  value: string | null;
}

interface LockRow {
  name: string;
  owner: string;
  since: number;
  expires_at: number;
}

interface HistoryRow {
  id: number;
  service: string;
  kind: HistoryEntry["kind"];
  release: string;
  previous_release: string | null;
  via: string | null;
  actor: string;
  started_at: number;
  finished_at: number | null;
  outcome: HistoryEntry["outcome"];
  plan: string;
  steps: string;
  error: string | null;
}

interface EventRow {
  id: number;
  at: number;
  service: string | null;
  type: string;
  message: string;
  data: string;
}

/**
 * A GLOB pattern matching every key that starts with prefix. GLOB rather than LIKE because it is
 * case-sensitive, and SQLite turns a literal GLOB prefix into a range scan on the key index.
 */
function globPrefix(prefix: string): string {
  return prefix.replace(/[*?[]/g, (c) => `[${c}]`) + "*";
}

function toKeyValue(row: KvRow): KeyValue {
  return { key: row.key, value: row.value, createRevision: row.create_rev, modRevision: row.mod_rev };
}

function toWatchEvent(row: ChangeRow): WatchEvent {
  return row.type === "put"
    ? { type: "put", key: row.key, value: row.value ?? "", revision: row.rev }
    : { type: "delete", key: row.key, revision: row.rev };
}

function toLockInfo(row: LockRow): LockInfo {
  return { name: row.name, owner: row.owner, since: row.since, expiresAt: row.expires_at };
}

function toHistoryEntry(row: HistoryRow): HistoryEntry {
  return {
    id: row.id,
    service: row.service,
    kind: row.kind,
    release: row.release,
    previousRelease: row.previous_release,
    via: row.via ?? null,
    actor: row.actor,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    outcome: row.outcome,
    plan: JSON.parse(row.plan) as string[],
    steps: JSON.parse(row.steps) as HistoryEntry["steps"],
    error: row.error,
  };
}

function historyParams(entry: NewHistoryEntry): Omit<HistoryRow, "id"> {
  return {
    service: entry.service,
    kind: entry.kind,
    release: entry.release,
    previous_release: entry.previousRelease,
    via: entry.via ?? null,
    actor: entry.actor,
    started_at: entry.startedAt,
    finished_at: entry.finishedAt,
    outcome: entry.outcome,
    plan: JSON.stringify(entry.plan),
    steps: JSON.stringify(entry.steps),
    error: entry.error,
  };
}

function toEventRecord(row: EventRow): EventRecord {
  return {
    id: row.id,
    at: row.at,
    service: row.service,
    type: row.type,
    message: row.message,
    data: JSON.parse(row.data) as Record<string, unknown>,
  };
}

function prepareStatements(db: Database.Database) {
  return {
    revision: db.prepare<[], { revision: number }>("SELECT revision FROM meta WHERE id = 1"),
    setRevision: db.prepare<[number]>("UPDATE meta SET revision = ? WHERE id = 1"),
    get: db.prepare<[string], KvRow>("SELECT key, value, create_rev, mod_rev FROM kv WHERE key = ?"),
    list: db.prepare<[string], KvRow>("SELECT key, value, create_rev, mod_rev FROM kv WHERE key GLOB ? ORDER BY key"),
    upsert: db.prepare<[string, string, number, number]>(
      "INSERT INTO kv (key, value, create_rev, mod_rev) VALUES (?, ?, ?, ?) " +
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, mod_rev = excluded.mod_rev",
    ),
    deleteKey: db.prepare<[string]>("DELETE FROM kv WHERE key = ?"),
    logChange: db.prepare<[number, string, string, string | null]>(
      "INSERT INTO changes (rev, key, type, value) VALUES (?, ?, ?, ?)",
    ),
    trimChanges: db.prepare<[number]>("DELETE FROM changes WHERE rev <= ?"),
    changesSince: db.prepare<[number, string], ChangeRow>(
      "SELECT rev, key, type, value FROM changes WHERE rev > ? AND key GLOB ? ORDER BY rev",
    ),
    getLock: db.prepare<[string], LockRow>("SELECT name, owner, since, expires_at FROM locks WHERE name = ?"),
    setLock: db.prepare<[string, string, number, number]>(
      "INSERT OR REPLACE INTO locks (name, owner, since, expires_at) VALUES (?, ?, ?, ?)",
    ),
    renewLock: db.prepare<[number, string, string, number]>(
      "UPDATE locks SET expires_at = ? WHERE name = ? AND owner = ? AND expires_at > ?",
    ),
    releaseLock: db.prepare<[string, string], { expires_at: number }>(
      "DELETE FROM locks WHERE name = ? AND owner = ? RETURNING expires_at",
    ),
    addHistory: db.prepare<Omit<HistoryRow, "id">, HistoryRow>(
      "INSERT INTO history (service, kind, release, previous_release, via, actor, started_at, finished_at, outcome, plan, steps, error) " +
        "VALUES (@service, @kind, @release, @previous_release, @via, @actor, @started_at, @finished_at, @outcome, @plan, @steps, @error) " +
        "RETURNING *",
    ),
    getHistory: db.prepare<[number], HistoryRow>("SELECT * FROM history WHERE id = ?"),
    updateHistory: db.prepare<HistoryRow, HistoryRow>(
      "UPDATE history SET service = @service, kind = @kind, release = @release, previous_release = @previous_release, via = @via, " +
        "actor = @actor, started_at = @started_at, finished_at = @finished_at, outcome = @outcome, plan = @plan, " +
        "steps = @steps, error = @error WHERE id = @id RETURNING *",
    ),
    listHistory: db.prepare<[string, number], HistoryRow>(
      "SELECT * FROM history WHERE service = ? ORDER BY id DESC LIMIT ?",
    ),
    appendEvent: db.prepare<Omit<EventRow, "id">, EventRow>(
      "INSERT INTO events (at, service, type, message, data) VALUES (@at, @service, @type, @message, @data) RETURNING *",
    ),
    listEvents: db.prepare<[number, number], EventRow>("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?"),
    listServiceEvents: db.prepare<[number, string, number], EventRow>(
      "SELECT * FROM events WHERE id > ? AND service = ? ORDER BY id LIMIT ?",
    ),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly hub = new WatchHub();
  private readonly sql: Statements;
  private readonly writeKv: (key: string, value: string | undefined, opts: PutOptions | undefined) => KvWrite;
  private readonly takeLock: (name: string, owner: string, ttlMs: number, now: number) => LockResult;
  private readonly patchHistory: (id: number, patch: Partial<NewHistoryEntry>, fence: Fence | undefined) => HistoryEntry;
  private readonly insertHistory: (entry: NewHistoryEntry, fence: Fence | undefined) => HistoryEntry;

  constructor(path: string) {
    if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    this.db.pragma("journal_mode = WAL");
    // In WAL mode NORMAL loses nothing when the process dies; only an OS crash can cost the last commits.
    this.db.pragma("synchronous = NORMAL");
    this.db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    try {
      this.migrate();
    } catch (e) {
      this.db.close();
      throw e;
    }

    this.sql = prepareStatements(this.db);
    const db = this.db;
    const sql = this.sql;
    // Called inside each write's transaction, so the lock cannot change between the check and the write.
    const holds = (fence: Fence | undefined): boolean => {
      const row = fence && sql.getLock.get(fence.lock);
      return fenceHolds(fence, row ? toLockInfo(row) : undefined, Date.now());
    };

    // IMMEDIATE takes the write lock up front, so the compare-and-set check and the write see one state.
    this.writeKv = db.transaction((key: string, value: string | undefined, opts: PutOptions | undefined): KvWrite => {
      const rev = sql.revision.get()!.revision;
      if (!holds(opts?.fence)) return { result: { ok: false, revision: rev, fenced: true } };
      const row = sql.get.get(key);
      const current = row && toKeyValue(row);
      if (!casAllows(current, opts)) return { result: { ok: false, revision: rev, current } };
      // Deleting what is not there changes nothing, so it spends no revision.
      if (value === undefined && !row) return { result: { ok: true, revision: rev } };
      const revision = rev + 1;
      if (value === undefined) sql.deleteKey.run(key);
      else sql.upsert.run(key, value, row?.create_rev ?? revision, revision);
      sql.logChange.run(revision, key, value === undefined ? "delete" : "put", value ?? null);
      sql.trimChanges.run(revision - CHANGE_LOG_SIZE);
      sql.setRevision.run(revision);
      const change: WatchEvent =
        value === undefined ? { type: "delete", key, revision } : { type: "put", key, value, revision };
      return { result: { ok: true, revision }, change };
    }).immediate;

    this.takeLock = db.transaction((name: string, owner: string, ttlMs: number, now: number): LockResult => {
      const row = sql.getLock.get(name);
      const held = row && row.expires_at > now ? toLockInfo(row) : undefined;
      if (held && held.owner !== owner) return { ok: false, holder: held };
      const lock: LockInfo = { name, owner, since: held?.since ?? now, expiresAt: now + ttlMs };
      sql.setLock.run(name, owner, lock.since, lock.expiresAt);
      return { ok: true, lock };
    }).immediate;

    this.patchHistory = db.transaction((id: number, patch: Partial<NewHistoryEntry>, fence: Fence | undefined): HistoryEntry => {
      if (!holds(fence)) throw fenceLost(fence!);
      const row = sql.getHistory.get(id);
      if (!row) throw new TurquoiseError("NOT_FOUND", `history entry ${id} does not exist`);
      const defined = Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined));
      const merged = historyParams({ ...toHistoryEntry(row), ...defined });
      return toHistoryEntry(sql.updateHistory.get({ ...merged, id })!);
    }).immediate;

    this.insertHistory = db.transaction((entry: NewHistoryEntry, fence: Fence | undefined): HistoryEntry => {
      if (!holds(fence)) throw fenceLost(fence!);
      return toHistoryEntry(sql.addHistory.get(historyParams(entry))!);
    }).immediate;
  }

  async get(key: string): Promise<KeyValue | undefined> {
    const row = this.sql.get.get(key);
    return row && toKeyValue(row);
  }

  async list(prefix: string): Promise<KeyValue[]> {
    return this.sql.list.all(globPrefix(prefix)).map(toKeyValue);
  }

  async put(key: string, value: string, opts?: PutOptions): Promise<WriteResult> {
    return this.write(key, value, opts);
  }

  async delete(key: string, opts?: PutOptions): Promise<WriteResult> {
    return this.write(key, undefined, opts);
  }

  async revision(): Promise<number> {
    return this.sql.revision.get()!.revision;
  }

  watch(prefix: string, onEvent: (e: WatchEvent) => void, opts?: { fromRevision?: number }): () => void {
    // Reading the log and registering happen in one synchronous step, so no write can fall between them.
    const from = opts?.fromRevision;
    const replay = from === undefined ? [] : this.sql.changesSince.all(from, globPrefix(prefix)).map(toWatchEvent);
    return this.hub.add(prefix, onEvent, replay);
  }

  async acquireLock(name: string, owner: string, ttlMs: number): Promise<LockResult> {
    return this.takeLock(name, owner, ttlMs, Date.now());
  }

  async renewLock(name: string, owner: string, ttlMs: number): Promise<boolean> {
    const now = Date.now();
    return this.sql.renewLock.run(now + ttlMs, name, owner, now).changes === 1;
  }

  async releaseLock(name: string, owner: string): Promise<boolean> {
    const row = this.sql.releaseLock.get(name, owner);
    // Tells an owner whose lock ran out that it was no longer protected.
    return row !== undefined && row.expires_at > Date.now();
  }

  async getLock(name: string): Promise<LockInfo | undefined> {
    const row = this.sql.getLock.get(name);
    return row && row.expires_at > Date.now() ? toLockInfo(row) : undefined;
  }

  async addHistory(entry: NewHistoryEntry, opts?: HistoryWriteOptions): Promise<HistoryEntry> {
    return this.insertHistory(entry, opts?.fence);
  }

  async updateHistory(id: number, patch: Partial<NewHistoryEntry>, opts?: HistoryWriteOptions): Promise<HistoryEntry> {
    return this.patchHistory(id, patch, opts?.fence);
  }

  async listHistory(service: string, limit?: number): Promise<HistoryEntry[]> {
    return this.sql.listHistory.all(service, limit ?? -1).map(toHistoryEntry);
  }

  async appendEvent(event: NewEvent): Promise<EventRecord> {
    const row = this.sql.appendEvent.get({
      at: event.at ?? Date.now(),
      service: event.service,
      type: event.type,
      message: event.message,
      data: JSON.stringify(event.data),
    });
    return toEventRecord(row!);
  }

  async listEvents(opts: { afterId?: number; service?: string; limit?: number } = {}): Promise<EventRecord[]> {
    const { afterId = 0, service, limit = -1 } = opts;
    const rows =
      service === undefined
        ? this.sql.listEvents.all(afterId, limit)
        : this.sql.listServiceEvents.all(afterId, service, limit);
    return rows.map(toEventRecord);
  }

  async close(): Promise<void> {
    this.hub.clear();
    if (this.db.open) this.db.close();
  }

  private write(key: string, value: string | undefined, opts: PutOptions | undefined): WriteResult {
    const { result, change } = this.writeKv(key, value, opts);
    // The transaction has returned, so the change is committed before any watcher hears of it.
    if (change) this.hub.publish(change);
    return result;
  }

  private migrate(): void {
    const version = this.db.pragma("user_version", { simple: true }) as number;
    if (version > SCHEMA_VERSION) {
      throw new TurquoiseError("INTERNAL", `state file schema ${version} is newer than this turquoise (${SCHEMA_VERSION})`);
    }
    this.db.transaction(() => {
      this.db.exec(SCHEMA);
      // Schema 1 had no history.via: its entries read as direct flips.
      const columns = this.db.prepare<[], { name: string }>("SELECT name FROM pragma_table_info('history')").all();
      if (!columns.some((c) => c.name === "via")) this.db.exec("ALTER TABLE history ADD COLUMN via TEXT");
      this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
    }).immediate();
  }
}
