// The etcd store: Turquoise's state in an etcd cluster that several agents share. It keeps the
// Store contract exactly as the sqlite store does (its own revision counter, growing by one per
// key/value write; a bounded change log for watch replay), with every write an etcd transaction
// conditional on what it read, and locks on etcd leases. docs/state.md describes the key layout.

import { randomBytes } from "node:crypto";
import { FilterType, Range, SortOrder, SortTarget, type IKeyValue, type IRangeRequest, type IRangeResponse, type IRequestOp, type IWatchRequest } from "etcd3";
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
import { EtcdConnection, bytes, deleteOp, putOp, unchanged, type CallPurpose, type EtcdConnectOptions } from "./etcd-client.js";
import { ChangeWatch, type ChangeFeed } from "./etcd-watch.js";
import { CHANGE_LOG_SIZE, casAllows, fenceHolds, fenceLost, roundTrip, withoutUndefined } from "./memory.js";

/** History entries kept per service; the oldest goes when a new one comes. */
export const HISTORY_PER_SERVICE = 1_000;
/** Events kept, all services together; the oldest goes when a new one comes. */
export const EVENT_LOG_SIZE = 10_000;
/** Keys whose state a store remembers for its next write to them. */
const KV_CACHE_SIZE = 1_000;
/** Keys per range read: a page stays far below gRPC's 4 MiB message limit. */
const PAGE = 500;

export interface EtcdStoreOptions extends EtcdConnectOptions {
  /** Every key of this store lives under it; it ends with "/". */
  prefix: string;
  /** How much of each log the store keeps; the defaults suit production, tests shrink them. */
  retention?: { changes?: number; events?: number; historyPerService?: number };
  /** Where the store reports what no caller would otherwise hear of: a watch that fell behind the change log. */
  warn?: (message: string) => void;
}

/** Numbers in keys are zero-padded, so etcd's byte order is their numeric order. */
function pad(n: number): string {
  return String(n).padStart(16, "0");
}

/** A name as error messages show it: quoted, and cut short, since a hostile one can be megabytes long. */
function quoted(name: string): string {
  return JSON.stringify(name.length > 120 ? `${name.slice(0, 120)}...` : name);
}

function newWriteId(): string {
  return randomBytes(8).toString("hex");
}

/** Where each thing lives under the prefix. */
class Layout {
  readonly revision: Buffer;
  readonly historySeq: Buffer;
  readonly eventSeq: Buffer;
  readonly changes: Range;
  readonly events: Range;

  constructor(private readonly root: string) {
    this.revision = bytes(`${root}meta/revision`);
    this.historySeq = bytes(`${root}meta/history-id`);
    this.eventSeq = bytes(`${root}meta/event-id`);
    this.changes = Range.prefix(bytes(`${root}changes/`));
    this.events = Range.prefix(bytes(`${root}events/`));
  }

  kv(key: string): Buffer {
    return bytes(`${this.root}kv/${key}`);
  }

  kvRange(prefix: string): Range {
    return Range.prefix(this.kv(prefix));
  }

  /** The user's key of a kv/ etcd key. */
  keyOf(kv: IKeyValue): string {
    return kv.key.toString("utf8").slice(this.root.length + "kv/".length);
  }

  change(revision: number): Buffer {
    return bytes(`${this.root}changes/${pad(revision)}`);
  }

  lock(name: string): Buffer {
    return bytes(`${this.root}locks/${name}`);
  }

  historyOf(service: string): Range {
    return Range.prefix(bytes(`${this.root}history/${encodeURIComponent(service)}/`));
  }

  history(service: string, id: number): Buffer {
    return bytes(`${this.root}history/${encodeURIComponent(service)}/${pad(id)}`);
  }

  /** Which service an entry id belongs to: updateHistory knows only the id. */
  historyId(id: number): Buffer {
    return bytes(`${this.root}history-ids/${pad(id)}`);
  }

  event(id: number): Buffer {
    return bytes(`${this.root}events/${pad(id)}`);
  }
}

// What each etcd value holds, as JSON. `write` tells a write that was retried whether its first try went through.
interface StoredValue {
  value: string;
  createRevision: number;
  modRevision: number;
}
interface StoredChange {
  type: "put" | "delete";
  key: string;
  value?: string;
  write: string;
}
interface StoredLock {
  owner: string;
  since: number;
  expiresAt: number;
  write: string;
}
interface StoredHistoryId {
  service: string;
  write: string;
}
type StoredEvent = EventRecord & { write: string };

function parse<T>(kv: IKeyValue, what: string, valid: (v: Record<string, unknown>) => boolean): T {
  let v: unknown;
  try {
    v = JSON.parse(kv.value.toString("utf8"));
  } catch {
    v = undefined;
  }
  if (typeof v !== "object" || v === null || !valid(v as Record<string, unknown>)) {
    throw new TurquoiseError("INTERNAL", `etcd key ${quoted(kv.key.toString("utf8"))} does not hold ${what} written by Turquoise: was it written by hand?`);
  }
  return v as T;
}

const isNum = (v: unknown): boolean => typeof v === "number" && Number.isFinite(v);
const isStr = (v: unknown): boolean => typeof v === "string";

function storedValue(kv: IKeyValue): StoredValue {
  return parse(kv, "a value", (v) => isStr(v.value) && isNum(v.createRevision) && isNum(v.modRevision));
}

function storedChange(kv: IKeyValue): StoredChange {
  return parse(kv, "a change", (v) => (v.type === "put" ? isStr(v.value) : v.type === "delete") && isStr(v.key) && isStr(v.write));
}

function storedLock(kv: IKeyValue): StoredLock {
  return parse(kv, "a lock", (v) => isStr(v.owner) && isNum(v.since) && isNum(v.expiresAt) && isStr(v.write));
}

function storedHistory(kv: IKeyValue): HistoryEntry {
  return parse(kv, "a history entry", (v) => isNum(v.id) && isStr(v.service) && Array.isArray(v.steps) && Array.isArray(v.plan));
}

function storedEvent(kv: IKeyValue): StoredEvent {
  return parse(kv, "an event", (v) => isNum(v.id) && isNum(v.at) && isStr(v.type) && isStr(v.message) && typeof v.data === "object" && v.data !== null);
}

function counter(kv: IKeyValue | undefined): number {
  if (!kv) return 0;
  const n = Number(kv.value.toString("utf8"));
  if (!Number.isSafeInteger(n) || n < 0) throw new TurquoiseError("INTERNAL", `etcd key ${quoted(kv.key.toString("utf8"))} does not hold a counter written by Turquoise`);
  return n;
}

/** The number a changes/, history/ or events/ key ends with. */
function numberInKey(kv: IKeyValue): number {
  const key = kv.key.toString("utf8");
  return Number(key.slice(key.lastIndexOf("/") + 1));
}

function lockInfo(name: string, stored: StoredLock): LockInfo {
  return { name, owner: stored.owner, since: stored.since, expiresAt: stored.expiresAt };
}

/** The lock as the contract sees it: an expired one holds for nobody, whether or not its lease has run out yet. */
function liveLock(name: string, stored: StoredLock | undefined, now: number): LockInfo | undefined {
  return stored && stored.expiresAt > now ? lockInfo(name, stored) : undefined;
}

/**
 * What this process last saw of the revision counter and of keys, all as of one counter value.
 * Every key/value write moves the counter, so while it has not moved they are all still true: a
 * write from here can go straight to its conditional transaction, which fails (and reads afresh)
 * when another writer moved the counter meanwhile.
 */
class KvCache {
  private counter: IKeyValue | undefined;
  private known = false;
  private readonly keys = new Map<string, IKeyValue | undefined>();

  /** The counter and the key, or undefined when this process does not know them as of one counter value. */
  lookup(key: string): Array<IKeyValue | undefined> | undefined {
    return this.known && this.keys.has(key) ? [this.counter, this.keys.get(key)] : undefined;
  }

  observe(counterKv: IKeyValue | undefined, key: string, kv: IKeyValue | undefined): void {
    if (!this.known || counterKv?.mod_revision !== this.counter?.mod_revision) this.keys.clear();
    this.counter = counterKv;
    this.known = true;
    this.remember(key, kv);
  }

  /** This process's own write went through at etcd revision `at`: the other keys it knows are unchanged. */
  wrote(counterKey: Buffer, next: string, key: string, etcdKey: Buffer, value: string | undefined, at: number): void {
    const kv = (k: Buffer, v: string): IKeyValue => ({ key: k, value: bytes(v), create_revision: String(at), mod_revision: String(at), version: "1", lease: "0" });
    this.counter = kv(counterKey, next);
    this.remember(key, value === undefined ? undefined : kv(etcdKey, value));
  }

  private remember(key: string, kv: IKeyValue | undefined): void {
    if (this.keys.size >= KV_CACHE_SIZE) this.keys.clear();
    this.keys.set(key, kv);
  }
}

/** Runs tasks one at a time: this process's writes to one counter never race each other. */
class Serial {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task, task);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

export class EtcdStore implements Store {
  private readonly conn: EtcdConnection;
  private readonly keys: Layout;
  private readonly warn: (message: string) => void;
  private readonly kvWrites = new Serial();
  private readonly cache = new KvCache();
  private readonly historyWrites = new Serial();
  private readonly eventWrites = new Serial();
  private readonly watches = new Set<ChangeWatch>();
  /** Watches still fixing their start: a write waits for them, so a watch sees every write made after it. */
  private readonly starting = new Set<Promise<void>>();
  /** The newest store revision this process has seen, where a watch starts when etcd cannot tell it. */
  private knownRevision = 0;
  private readonly feed: ChangeFeed;
  private readonly keep: { changes: number; events: number; historyPerService: number };

  constructor(opts: EtcdStoreOptions) {
    if (!opts.prefix.endsWith("/")) throw new TurquoiseError("USAGE", `the etcd prefix must end with "/", got ${JSON.stringify(opts.prefix)}`);
    if (opts.endpoints.length === 0) throw new TurquoiseError("USAGE", "the etcd state driver needs at least one endpoint");
    this.conn = new EtcdConnection(opts);
    this.keys = new Layout(opts.prefix);
    this.keep = {
      changes: opts.retention?.changes ?? CHANGE_LOG_SIZE,
      events: opts.retention?.events ?? EVENT_LOG_SIZE,
      historyPerService: opts.retention?.historyPerService ?? HISTORY_PER_SERVICE,
    };
    this.warn = opts.warn ?? ((message) => console.error(`turquoise: etcd store: ${message}`));
    this.feed = this.changeFeed();
  }

  async get(key: string): Promise<KeyValue | undefined> {
    const { results } = await this.read({ action: `read of key ${quoted(key)}`, write: false }, [{ key: this.keys.kv(key) }]);
    const kv = results[0]!.kvs[0];
    return kv && this.keyValue(key, kv);
  }

  async list(prefix: string): Promise<KeyValue[]> {
    const { kvs } = await this.readRange({ action: `listing of prefix ${quoted(prefix)}`, write: false }, this.keys.kvRange(prefix));
    return kvs.map((kv) => this.keyValue(this.keys.keyOf(kv), kv));
  }

  put(key: string, value: string, opts?: PutOptions): Promise<WriteResult> {
    return this.writeKv(key, value, opts);
  }

  delete(key: string, opts?: PutOptions): Promise<WriteResult> {
    return this.writeKv(key, undefined, opts);
  }

  async revision(): Promise<number> {
    const { results } = await this.read({ action: "read of the store's revision", write: false }, [{ key: this.keys.revision }]);
    return this.saw(counter(results[0]!.kvs[0]));
  }

  watch(prefix: string, onEvent: (e: WatchEvent) => void, opts?: { fromRevision?: number }): () => void {
    this.conn.assertOpen();
    const watch = new ChangeWatch(this.feed, prefix, onEvent);
    this.watches.add(watch);
    if (opts?.fromRevision !== undefined) {
      watch.fromRevision(opts.fromRevision);
    } else {
      const started = watch.fromNow(this.knownRevision);
      this.starting.add(started);
      void started.finally(() => this.starting.delete(started));
    }
    return () => {
      watch.stop();
      this.watches.delete(watch);
    };
  }

  acquireLock(name: string, owner: string, ttlMs: number): Promise<LockResult> {
    return this.writeLock<LockResult>(name, "taking", ttlMs, (stored) => ({ ok: true, lock: lockInfo(name, stored) }), (stored, now) => {
      const held = liveLock(name, stored, now);
      if (held && held.owner !== owner) return { answer: { ok: false, holder: held } };
      const lock = { owner, since: held?.since ?? now, expiresAt: now + ttlMs };
      return { answer: { ok: true, lock: { name, ...lock } }, lock };
    });
  }

  renewLock(name: string, owner: string, ttlMs: number): Promise<boolean> {
    return this.writeLock(name, "renewal", ttlMs, () => true, (stored, now) =>
      liveLock(name, stored, now)?.owner === owner ? { answer: true, lock: { owner, since: stored!.since, expiresAt: now + ttlMs } } : { answer: false },
    );
  }

  async releaseLock(name: string, owner: string): Promise<boolean> {
    const purpose = { action: `release of lock ${quoted(name)}`, write: true };
    const deadline = this.conn.deadline();
    const key = this.keys.lock(name);
    let released: StoredLock | undefined;
    let seen = await this.conn.read(purpose, deadline, [{ key }]);
    for (;;) {
      const kv = seen.results[0]!.kvs[0];
      const stored = kv && storedLock(kv);
      // Gone after a try whose answer was lost: that try (or the lease running out) released it.
      if (!stored && released) return released.expiresAt > Date.now();
      if (!stored || stored.owner !== owner) return false;
      released = stored;
      const res = await this.conn.write(purpose, deadline, [unchanged(key, kv)], [deleteOp(key)], [{ key }]);
      if (res.succeeded) {
        this.conn.dropLease(kv!.lease);
        // Tells an owner whose lock ran out that it was no longer protected.
        return stored.expiresAt > Date.now();
      }
      seen = res;
    }
  }

  async getLock(name: string): Promise<LockInfo | undefined> {
    const { results } = await this.read({ action: `read of lock ${quoted(name)}`, write: false }, [{ key: this.keys.lock(name) }]);
    const kv = results[0]!.kvs[0];
    return liveLock(name, kv && storedLock(kv), Date.now());
  }

  addHistory(entry: NewHistoryEntry, opts?: HistoryWriteOptions): Promise<HistoryEntry> {
    const purpose = { action: `history entry of ${quoted(entry.service)}`, write: true, bytes: JSON.stringify(entry).length };
    return this.historyWrites.run(async () => {
      const write = newWriteId();
      const deadline = this.conn.deadline();
      const fence = opts?.fence;
      const range = this.keys.historyOf(entry.service);
      const tried: number[] = [];
      const ranges = (): IRangeRequest[] => [
        { key: this.keys.historySeq },
        { key: range.start, range_end: range.end, limit: 1, keys_only: true },
        ...this.fenceRead(fence),
        ...tried.map((id) => ({ key: this.keys.historyId(id) })),
      ];
      let seen = await this.conn.read(purpose, deadline, ranges());
      for (;;) {
        const [seq, oldest, ...rest] = seen.results;
        const lockKv = fence ? rest.shift()!.kvs[0] : undefined;
        const mine = tried.find((_, i) => {
          const kv = rest[i]!.kvs[0];
          return kv !== undefined && parse<StoredHistoryId>(kv, "a history id", (v) => isStr(v.write)).write === write;
        });
        if (mine !== undefined) return roundTrip({ ...entry, id: mine });
        if (fence && !fenceHolds(fence, liveLock(fence.lock, lockKv && storedLock(lockKv), Date.now()), Date.now())) throw fenceLost(fence);
        const seqKv = seq!.kvs[0];
        const id = counter(seqKv) + 1;
        tried.push(id);
        const stored: HistoryEntry = roundTrip({ ...entry, id });
        const ops: IRequestOp[] = [
          putOp(this.keys.historySeq, String(id)),
          putOp(this.keys.history(entry.service, id), JSON.stringify(stored)),
          putOp(this.keys.historyId(id), JSON.stringify({ service: entry.service, write } satisfies StoredHistoryId)),
        ];
        const oldestKv = oldest!.kvs[0];
        if (oldestKv && Number(oldest!.count) >= this.keep.historyPerService) {
          ops.push(deleteOp(oldestKv.key), deleteOp(this.keys.historyId(numberInKey(oldestKv))));
        }
        const compare = [unchanged(this.keys.historySeq, seqKv), ...(fence ? [unchanged(this.keys.lock(fence.lock), lockKv)] : [])];
        const res = await this.conn.write(purpose, deadline, compare, ops, ranges());
        if (res.succeeded) return stored;
        seen = res;
      }
    });
  }

  async updateHistory(id: number, patch: Partial<NewHistoryEntry>, opts?: HistoryWriteOptions): Promise<HistoryEntry> {
    const purpose = { action: `update of history entry ${id}`, write: true, bytes: JSON.stringify(patch).length };
    const deadline = this.conn.deadline();
    const fence = opts?.fence;
    const pointer = this.keys.historyId(id);
    let service: string | undefined;
    for (;;) {
      // The entry's key depends on its service, which only the pointer knows: read the pointer,
      // then the entry and the pointer again in one snapshot, and trust them only if they agree.
      if (service === undefined) {
        const first = (await this.conn.read(purpose, deadline, [{ key: pointer }])).results[0]!.kvs[0];
        if (!first) throw new TurquoiseError("NOT_FOUND", `history entry ${id} does not exist`);
        service = parse<StoredHistoryId>(first, "a history id", (v) => isStr(v.service)).service;
      }
      const key = this.keys.history(service, id);
      const { results } = await this.conn.read(purpose, deadline, [{ key: pointer }, { key }, ...this.fenceRead(fence)]);
      const [pointerKv, entryKv, lockKv] = results.map((r) => r.kvs[0]);
      if (!pointerKv) throw new TurquoiseError("NOT_FOUND", `history entry ${id} does not exist`);
      const now = parse<StoredHistoryId>(pointerKv, "a history id", (v) => isStr(v.service)).service;
      if (now !== service) {
        service = now;
        continue;
      }
      if (!entryKv) throw new TurquoiseError("INTERNAL", `history entry ${id} of ${quoted(service)} is listed but its record is missing`);
      if (fence && !fenceHolds(fence, liveLock(fence.lock, lockKv && storedLock(lockKv), Date.now()), Date.now())) throw fenceLost(fence);
      const updated: HistoryEntry = { ...storedHistory(entryKv), ...roundTrip(withoutUndefined(patch)), id };
      const moved = updated.service !== service;
      const ops = moved
        ? [deleteOp(key), putOp(this.keys.history(updated.service, id), JSON.stringify(updated)), putOp(pointer, JSON.stringify({ service: updated.service, write: newWriteId() }))]
        : [putOp(key, JSON.stringify(updated))];
      const compare = [unchanged(pointer, pointerKv), unchanged(key, entryKv), ...(fence ? [unchanged(this.keys.lock(fence.lock), lockKv)] : [])];
      // Writing the same patch twice leaves the same entry, so a retried try needs no checking.
      if ((await this.conn.write(purpose, deadline, compare, ops)).succeeded) return roundTrip(updated);
      service = undefined;
    }
  }

  async listHistory(service: string, limit?: number): Promise<HistoryEntry[]> {
    if (limit !== undefined && limit <= 0) return [];
    const range = this.keys.historyOf(service);
    const { results } = await this.read({ action: `listing of the history of ${quoted(service)}`, write: false }, [
      { key: range.start, range_end: range.end, sort_order: SortOrder.Descend, sort_target: SortTarget.Key, ...(limit !== undefined ? { limit } : {}) },
    ]);
    return results[0]!.kvs.map(storedHistory);
  }

  appendEvent(event: NewEvent): Promise<EventRecord> {
    const purpose = { action: `event ${quoted(event.type)}`, write: true, bytes: JSON.stringify(event).length };
    return this.eventWrites.run(async () => {
      const write = newWriteId();
      const deadline = this.conn.deadline();
      const tried: number[] = [];
      const ranges = (): IRangeRequest[] => [{ key: this.keys.eventSeq }, ...tried.map((id) => ({ key: this.keys.event(id) }))];
      let seen = await this.conn.read(purpose, deadline, ranges());
      for (;;) {
        const [seq, ...triedKvs] = seen.results;
        const mine = triedKvs.map((r) => r.kvs[0]).find((kv) => kv !== undefined && storedEvent(kv).write === write);
        if (mine) return this.eventRecord(mine);
        const seqKv = seq!.kvs[0];
        const id = counter(seqKv) + 1;
        tried.push(id);
        const record: EventRecord = roundTrip({ id, at: event.at ?? Date.now(), service: event.service, type: event.type, message: event.message, data: event.data });
        const ops = [putOp(this.keys.eventSeq, String(id)), putOp(this.keys.event(id), JSON.stringify({ ...record, write }))];
        if (id > this.keep.events) ops.push(deleteOp(this.keys.event(id - this.keep.events)));
        const res = await this.conn.write(purpose, deadline, [unchanged(this.keys.eventSeq, seqKv)], ops, ranges());
        if (res.succeeded) return record;
        seen = res;
      }
    });
  }

  async listEvents(opts: { afterId?: number; service?: string; limit?: number } = {}): Promise<EventRecord[]> {
    const { afterId = 0, service, limit } = opts;
    if (limit !== undefined && limit <= 0) return [];
    const from = this.keys.event(Math.min(Number.MAX_SAFE_INTEGER, Math.max(0, Math.floor(afterId)) + 1));
    const found: EventRecord[] = [];
    await this.readRange({ action: "listing of events", write: false }, new Range(from, this.keys.events.end), (kv) => {
      const e = this.eventRecord(kv);
      if (service === undefined || e.service === service) found.push(e);
      return limit === undefined || found.length < limit;
    });
    return found;
  }

  async close(): Promise<void> {
    if (this.conn.isClosed) return;
    for (const watch of this.watches) watch.stop();
    this.watches.clear();
    this.conn.close();
  }

  private async writeKv(key: string, value: string | undefined, opts: PutOptions | undefined): Promise<WriteResult> {
    this.conn.assertOpen();
    const purpose: CallPurpose = {
      action: `${value === undefined ? "delete" : "put"} of key ${quoted(key)}`,
      write: true,
      ...(value !== undefined ? { bytes: Buffer.byteLength(value) } : {}),
    };
    // A watch started before this write must see it: its start is fixed first.
    await Promise.all(this.starting);
    return this.kvWrites.run(async () => {
      const write = newWriteId();
      const deadline = this.conn.deadline();
      const fence = opts?.fence;
      const kvKey = this.keys.kv(key);
      const tried: number[] = [];
      const ranges = (): IRangeRequest[] => [
        { key: this.keys.revision },
        { key: kvKey },
        ...this.fenceRead(fence),
        ...tried.map((r) => ({ key: this.keys.change(r) })),
      ];
      // A lock changes without the counter, so a fenced write always reads it afresh.
      const cached = fence ? undefined : this.cache.lookup(key);
      let seen = cached ?? (await this.conn.read(purpose, deadline, ranges())).results.map((r) => r.kvs[0]);
      let fromCache = cached !== undefined;
      for (;;) {
        const [revKv, currentKv, ...rest] = seen;
        const lockKv = fence ? rest.shift() : undefined;
        // A try whose answer was lost (or that the client sent again) went through after all.
        const mine = rest.find((kv) => kv !== undefined && storedChange(kv).write === write);
        if (mine) return { ok: true, revision: this.saw(numberInKey(mine)) };
        if (!fromCache) this.cache.observe(revKv, key, currentKv);
        const rev = counter(revKv);
        const current = currentKv && this.keyValue(key, currentKv);
        const refusal: WriteResult | undefined =
          fence && !fenceHolds(fence, liveLock(fence.lock, lockKv && storedLock(lockKv), Date.now()), Date.now())
            ? { ok: false, revision: rev, fenced: true }
            : !casAllows(current, opts)
              ? { ok: false, revision: rev, ...(current ? { current } : {}) }
              : // Deleting what is not there changes nothing, so it spends no revision.
                value === undefined && !current
                ? { ok: true, revision: rev }
                : undefined;
        if (refusal) {
          // An answer that writes nothing is given from what etcd says now, never from what this process remembers.
          if (!fromCache) return { ...refusal, revision: this.saw(rev) };
          seen = (await this.conn.read(purpose, deadline, ranges())).results.map((r) => r.kvs[0]);
          fromCache = false;
          continue;
        }
        const next = rev + 1;
        tried.push(next);
        const change: StoredChange = value === undefined ? { type: "delete", key, write } : { type: "put", key, value, write };
        const stored = value === undefined ? undefined : JSON.stringify({ value, createRevision: current?.createRevision ?? next, modRevision: next } satisfies StoredValue);
        const ops: IRequestOp[] = [
          putOp(this.keys.revision, String(next)),
          stored === undefined ? deleteOp(kvKey) : putOp(kvKey, stored),
          putOp(this.keys.change(next), JSON.stringify(change)),
        ];
        if (next > this.keep.changes) ops.push(deleteOp(this.keys.change(next - this.keep.changes)));
        const compare = [unchanged(this.keys.revision, revKv), unchanged(kvKey, currentKv), ...(fence ? [unchanged(this.keys.lock(fence.lock), lockKv)] : [])];
        const res = await this.conn.write(purpose, deadline, compare, ops, ranges());
        if (res.succeeded) {
          this.cache.wrote(this.keys.revision, String(next), key, kvKey, stored, res.revision);
          return { ok: true, revision: this.saw(next) };
        }
        seen = res.results.map((r) => r.kvs[0]);
        fromCache = false;
      }
    });
  }

  /**
   * What taking and renewing a lock share: read it, let decide() say what to write (or what to
   * answer without writing), write that on a fresh lease if the key is unchanged since the read,
   * and otherwise decide again on what the failed transaction read.
   */
  private async writeLock<T>(
    name: string,
    action: string,
    ttlMs: number,
    ours: (stored: StoredLock) => T,
    decide: (stored: StoredLock | undefined, now: number) => { answer: T; lock?: Omit<StoredLock, "write"> },
  ): Promise<T> {
    const purpose = { action: `${action} of lock ${quoted(name)}`, write: true };
    const write = newWriteId();
    const deadline = this.conn.deadline();
    const key = this.keys.lock(name);
    let lease: string | undefined;
    let seen = await this.conn.read(purpose, deadline, [{ key }]);
    for (;;) {
      const kv = seen.results[0]!.kvs[0];
      const stored = kv && storedLock(kv);
      // A try whose answer was lost went through after all: the lock is as it wrote it, on its lease.
      if (stored?.write === write) return ours(stored);
      this.conn.dropLease(lease);
      const { answer, lock } = decide(stored, Date.now());
      if (!lock) return answer;
      // A fresh lease each time: a renewal may ask for a longer time to live than the lease had.
      lease = await this.conn.grantLease(purpose, deadline, ttlMs);
      const res = await this.conn.write(purpose, deadline, [unchanged(key, kv)], [putOp(key, JSON.stringify({ ...lock, write } satisfies StoredLock), lease)], [{ key }]);
      if (res.succeeded) {
        // The key now rides on the new lease; the one it had (ours or a dead owner's) is spent.
        this.conn.dropLease(kv?.lease);
        return answer;
      }
      seen = res;
    }
  }

  /** The read that checks a fence, in the same transaction as the rest. */
  private fenceRead(fence: Fence | undefined): IRangeRequest[] {
    return fence ? [{ key: this.keys.lock(fence.lock) }] : [];
  }

  private read(purpose: CallPurpose, ranges: IRangeRequest[]): Promise<{ revision: number; results: IRangeResponse[] }> {
    return this.conn.read(purpose, this.conn.deadline(), ranges);
  }

  /**
   * Every key in a range, in pages, all pages read at the first page's etcd revision so they form
   * one snapshot, and that revision. each() may stop the reading early by returning false.
   */
  private async readRange(purpose: CallPurpose, range: Range, each?: (kv: IKeyValue) => boolean): Promise<{ kvs: IKeyValue[]; revision: number }> {
    const deadline = this.conn.deadline();
    const kvs: IKeyValue[] = [];
    let start = range.start;
    let at: number | undefined;
    for (;;) {
      const page = await this.conn.attempt(purpose, deadline, (o) =>
        this.conn.client.kv.range({ key: start, range_end: range.end, limit: PAGE, ...(at !== undefined ? { revision: at } : {}) }, o),
      );
      at ??= Number(page.header.revision);
      for (const kv of page.kvs) {
        if (each && !each(kv)) return { kvs, revision: at };
        kvs.push(kv);
      }
      if (!page.more || page.kvs.length === 0) return { kvs, revision: at };
      start = Buffer.concat([page.kvs[page.kvs.length - 1]!.key, Buffer.from([0])]);
    }
  }

  private keyValue(key: string, kv: IKeyValue): KeyValue {
    const stored = storedValue(kv);
    return { key, value: stored.value, createRevision: stored.createRevision, modRevision: stored.modRevision };
  }

  private eventRecord(kv: IKeyValue): EventRecord {
    const { write: _write, ...record } = storedEvent(kv);
    return record;
  }

  private saw(revision: number): number {
    this.knownRevision = Math.max(this.knownRevision, revision);
    return revision;
  }

  private changeFeed(): ChangeFeed {
    const changes = this.keys.changes;
    return {
      logSize: this.keep.changes,
      warn: (message) => this.warn(message),
      now: async () => {
        const { revision, results } = await this.read({ action: "start of a watch", write: false }, [{ key: this.keys.revision }]);
        return { revision: this.saw(counter(results[0]!.kvs[0])), etcdRevision: revision };
      },
      since: async (after) => {
        const purpose = { action: "replay of the change log", write: false };
        const first = await this.read(purpose, [{ key: this.keys.revision }]);
        const log = await this.readRange(purpose, new Range(this.keys.change(Math.max(0, after) + 1), changes.end));
        // The log is read after the counter, so it may hold newer changes: the newest of the two counts.
        const newest = log.kvs.length > 0 ? numberInKey(log.kvs[log.kvs.length - 1]!) : 0;
        return {
          changes: log.kvs.map((kv) => this.watchEvent(kv)),
          revision: Math.max(counter(first.results[0]!.kvs[0]), newest),
          // Everything up to this etcd revision was in the log read: the watch goes on after it.
          etcdRevision: log.revision,
        };
      },
      open: async (fromEtcdRevision) => {
        this.conn.assertOpen();
        const stream = await this.conn.client.watchClient.watch();
        const create: IWatchRequest = {
          create_request: { key: changes.start, range_end: changes.end, start_revision: fromEtcdRevision, filters: [FilterType.Nodelete], progress_notify: true },
        };
        return { stream, create };
      },
      decode: (kv) => this.watchEvent(kv),
    };
  }

  private watchEvent(kv: IKeyValue): WatchEvent {
    const c = storedChange(kv);
    const revision = numberInKey(kv);
    return c.type === "put" ? { type: "put", key: c.key, value: c.value!, revision } : { type: "delete", key: c.key, revision };
  }
}
