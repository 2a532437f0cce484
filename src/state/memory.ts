// The in-memory twin of the sqlite store, for fast unit tests. It keeps the same semantics, down
// to key order and JSON round-trips, so a test that passes here means the same against sqlite.
// It also hosts the watch fan-out that both stores share.

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

/** How many past revisions a store remembers for watch replay. */
export const CHANGE_LOG_SIZE = 10_000;

/** Byte order of the UTF-8 encoding: the order SQLite and etcd sort keys in. */
export function compareKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

/** The live holder of a lock must be the fence's owner; an expired lock holds for nobody. */
export function fenceHolds(fence: Fence | undefined, lock: LockInfo | undefined, now: number): boolean {
  return fence === undefined || (lock !== undefined && lock.owner === fence.owner && lock.expiresAt > now);
}

/** What a history write whose fence does not hold throws. */
export function fenceLost(fence: Fence): TurquoiseError {
  return new TurquoiseError("LOCK_LOST", `lock ${fence.lock} is no longer held by ${fence.owner}: the write was refused`, { data: { lock: fence.lock, owner: fence.owner } });
}

/** Whether a write guarded by opts may go ahead, given the key's current state. */
export function casAllows(current: KeyValue | undefined, opts: PutOptions | undefined): boolean {
  const prev = opts?.prevRevision;
  if (prev === undefined) return true;
  if (prev === 0) return current === undefined;
  return current !== undefined && current.modRevision === prev;
}

interface Watcher {
  prefix: string;
  onEvent: (e: WatchEvent) => void;
  queue: WatchEvent[];
  scheduled: boolean;
}

/**
 * Fans committed changes out to in-process watchers. Delivery is on a microtask, never inside
 * watch() or put(): the caller holds its unsubscribe function before the first event, and a
 * handler that writes to the store cannot re-enter a write that is still notifying.
 */
export class WatchHub {
  private readonly watchers = new Set<Watcher>();

  /** Registers a watcher; replay holds the remembered changes it must see before live ones. */
  add(prefix: string, onEvent: (e: WatchEvent) => void, replay: WatchEvent[]): () => void {
    const watcher: Watcher = { prefix, onEvent, queue: [], scheduled: false };
    this.watchers.add(watcher);
    for (const e of replay) this.enqueue(watcher, e);
    return () => {
      this.watchers.delete(watcher);
    };
  }

  publish(e: WatchEvent): void {
    for (const watcher of this.watchers) {
      if (e.key.startsWith(watcher.prefix)) this.enqueue(watcher, e);
    }
  }

  clear(): void {
    this.watchers.clear();
  }

  private enqueue(watcher: Watcher, e: WatchEvent): void {
    watcher.queue.push(e);
    if (watcher.scheduled) return;
    watcher.scheduled = true;
    queueMicrotask(() => this.flush(watcher));
  }

  private flush(watcher: Watcher): void {
    watcher.scheduled = false;
    // Checked per event, so a stopped watch hears nothing more, even halfway through a batch.
    while (watcher.queue.length > 0 && this.watchers.has(watcher)) {
      watcher.onEvent(watcher.queue.shift()!);
    }
  }
}

/** What the sqlite store would hand back after serialising a value to JSON and reading it again. */
export function roundTrip<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

/** A patch without its undefined fields: those leave the patched record's values as they are. */
export function withoutUndefined<T extends object>(patch: T): Partial<T> {
  return Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export class MemoryStore implements Store {
  private readonly kv = new Map<string, KeyValue>();
  private readonly changes: WatchEvent[] = [];
  private readonly locks = new Map<string, LockInfo>();
  private readonly history = new Map<number, HistoryEntry>();
  private readonly events: EventRecord[] = [];
  private readonly hub = new WatchHub();
  private rev = 0;
  private nextHistoryId = 1;
  private nextEventId = 1;
  private closed = false;

  async get(key: string): Promise<KeyValue | undefined> {
    this.assertOpen();
    const kv = this.kv.get(key);
    return kv && { ...kv };
  }

  async list(prefix: string): Promise<KeyValue[]> {
    this.assertOpen();
    return [...this.kv.values()]
      .filter((kv) => kv.key.startsWith(prefix))
      .sort((a, b) => compareKeys(a.key, b.key))
      .map((kv) => ({ ...kv }));
  }

  async put(key: string, value: string, opts?: PutOptions): Promise<WriteResult> {
    this.assertOpen();
    if (!this.fenced(opts?.fence)) return { ok: false, revision: this.rev, fenced: true };
    const current = this.kv.get(key);
    if (!casAllows(current, opts)) return { ok: false, revision: this.rev, current: current && { ...current } };
    const revision = ++this.rev;
    this.kv.set(key, { key, value, createRevision: current?.createRevision ?? revision, modRevision: revision });
    this.record({ type: "put", key, value, revision });
    return { ok: true, revision };
  }

  async delete(key: string, opts?: PutOptions): Promise<WriteResult> {
    this.assertOpen();
    if (!this.fenced(opts?.fence)) return { ok: false, revision: this.rev, fenced: true };
    const current = this.kv.get(key);
    if (!casAllows(current, opts)) return { ok: false, revision: this.rev, current: current && { ...current } };
    // Deleting what is not there changes nothing, so it spends no revision.
    if (!current) return { ok: true, revision: this.rev };
    const revision = ++this.rev;
    this.kv.delete(key);
    this.record({ type: "delete", key, revision });
    return { ok: true, revision };
  }

  async revision(): Promise<number> {
    this.assertOpen();
    return this.rev;
  }

  watch(prefix: string, onEvent: (e: WatchEvent) => void, opts?: { fromRevision?: number }): () => void {
    this.assertOpen();
    const from = opts?.fromRevision;
    const replay = from === undefined ? [] : this.changes.filter((e) => e.revision > from && e.key.startsWith(prefix));
    return this.hub.add(prefix, onEvent, replay);
  }

  async acquireLock(name: string, owner: string, ttlMs: number): Promise<LockResult> {
    this.assertOpen();
    const now = Date.now();
    const held = this.liveLock(name, now);
    if (held && held.owner !== owner) return { ok: false, holder: { ...held } };
    const lock: LockInfo = { name, owner, since: held?.since ?? now, expiresAt: now + ttlMs };
    this.locks.set(name, lock);
    return { ok: true, lock: { ...lock } };
  }

  async renewLock(name: string, owner: string, ttlMs: number): Promise<boolean> {
    this.assertOpen();
    const now = Date.now();
    const held = this.liveLock(name, now);
    if (!held || held.owner !== owner) return false;
    held.expiresAt = now + ttlMs;
    return true;
  }

  async releaseLock(name: string, owner: string): Promise<boolean> {
    this.assertOpen();
    const lock = this.locks.get(name);
    if (!lock || lock.owner !== owner) return false;
    this.locks.delete(name);
    // Tells an owner whose lock ran out that it was no longer protected.
    return lock.expiresAt > Date.now();
  }

  async getLock(name: string): Promise<LockInfo | undefined> {
    this.assertOpen();
    const held = this.liveLock(name, Date.now());
    return held && { ...held };
  }

  async addHistory(entry: NewHistoryEntry, opts?: HistoryWriteOptions): Promise<HistoryEntry> {
    this.assertOpen();
    if (!this.fenced(opts?.fence)) throw fenceLost(opts!.fence!);
    const stored: HistoryEntry = { ...roundTrip(entry), id: this.nextHistoryId++ };
    this.history.set(stored.id, stored);
    return roundTrip(stored);
  }

  async updateHistory(id: number, patch: Partial<NewHistoryEntry>, opts?: HistoryWriteOptions): Promise<HistoryEntry> {
    this.assertOpen();
    if (!this.fenced(opts?.fence)) throw fenceLost(opts!.fence!);
    const existing = this.history.get(id);
    if (!existing) throw new TurquoiseError("NOT_FOUND", `history entry ${id} does not exist`);
    const updated: HistoryEntry = { ...existing, ...roundTrip(withoutUndefined(patch)), id };
    this.history.set(id, updated);
    return roundTrip(updated);
  }

  async listHistory(service: string, limit?: number): Promise<HistoryEntry[]> {
    this.assertOpen();
    const newestFirst = [...this.history.values()].filter((h) => h.service === service).sort((a, b) => b.id - a.id);
    return roundTrip(limit === undefined ? newestFirst : newestFirst.slice(0, limit));
  }

  async appendEvent(event: NewEvent): Promise<EventRecord> {
    this.assertOpen();
    const stored: EventRecord = { ...roundTrip(event), id: this.nextEventId++, at: event.at ?? Date.now() };
    this.events.push(stored);
    return roundTrip(stored);
  }

  async listEvents(opts: { afterId?: number; service?: string; limit?: number } = {}): Promise<EventRecord[]> {
    this.assertOpen();
    const { afterId = 0, service, limit } = opts;
    const found = this.events.filter((e) => e.id > afterId && (service === undefined || e.service === service));
    return roundTrip(limit === undefined ? found : found.slice(0, limit));
  }

  async close(): Promise<void> {
    this.closed = true;
    this.hub.clear();
  }

  private record(e: WatchEvent): void {
    this.changes.push(e);
    if (this.changes.length > CHANGE_LOG_SIZE) this.changes.splice(0, this.changes.length - CHANGE_LOG_SIZE);
    this.hub.publish(e);
  }

  private fenced(fence: Fence | undefined): boolean {
    return fence === undefined || fenceHolds(fence, this.locks.get(fence.lock), Date.now());
  }

  private liveLock(name: string, now: number): LockInfo | undefined {
    const lock = this.locks.get(name);
    return lock && lock.expiresAt > now ? lock : undefined;
  }

  private assertOpen(): void {
    if (this.closed) throw new Error("store is closed");
  }
}
