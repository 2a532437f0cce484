// The Store contract: every piece of Turquoise state goes through it. Implementations: memory
// (unit tests), sqlite (the default), etcd (later). One shared suite, contract.test-suite.ts,
// runs against each of them.

export interface KeyValue {
  key: string;
  value: string;
  /** Revision of the store when this key was created. */
  createRevision: number;
  /** Revision of the store at this key's last change. */
  modRevision: number;
}

export type WatchEvent =
  | { type: "put"; key: string; value: string; revision: number }
  | { type: "delete"; key: string; revision: number };

/**
 * A fencing token: the write happens only while the named lock is held, unexpired, by this
 * owner, checked in the same transaction as the write. An owner is unique to one taking of a
 * lock, so a flow that lost its lock cannot overwrite what its successor wrote since.
 */
export interface Fence {
  lock: string;
  owner: string;
}

export interface PutOptions {
  /**
   * Compare-and-set: the write happens only if the key's modRevision equals this number.
   * 0 means "only if the key does not exist".
   */
  prevRevision?: number;
  fence?: Fence;
}

/**
 * A compare-and-set that lost, or a fence that no longer holds (fenced), is an expected outcome,
 * so it is a value, not an exception.
 */
export type WriteResult = { ok: true; revision: number } | { ok: false; revision: number; current?: KeyValue; fenced?: true };

/** History writes take a fence too; one whose fence does not hold throws a LOCK_LOST TurquoiseError and changes nothing. */
export interface HistoryWriteOptions {
  fence?: Fence;
}

export interface LockInfo {
  name: string;
  owner: string;
  /** Epoch ms when the current owner took the lock. */
  since: number;
  /** Epoch ms after which the lock is free for anyone. */
  expiresAt: number;
}

export type LockResult = { ok: true; lock: LockInfo } | { ok: false; holder: LockInfo };

/** "reverted": the release failed its bake window in real traffic and traffic went back to the old slot. */
export type Outcome = "running" | "succeeded" | "failed" | "rolled-back" | "reverted" | "aborted" | "held";

export interface StepTiming {
  name: string;
  startedAt: number;
  durationMs: number;
  ok: boolean;
  detail?: string;
}

export interface HistoryEntry {
  id: number;
  service: string;
  kind: "deploy" | "rollback";
  release: string;
  previousRelease: string | null;
  /** The turquoise release the flow went through on its way to release, or null for a direct flip. */
  via: string | null;
  actor: string;
  startedAt: number;
  finishedAt: number | null;
  outcome: Outcome;
  plan: string[];
  steps: StepTiming[];
  error: string | null;
}

export type NewHistoryEntry = Omit<HistoryEntry, "id">;

export interface EventRecord {
  id: number;
  at: number;
  service: string | null;
  type: string;
  message: string;
  data: Record<string, unknown>;
}

export type NewEvent = Omit<EventRecord, "id" | "at"> & { at?: number };

export interface Store {
  get(key: string): Promise<KeyValue | undefined>;
  /** All keys starting with prefix, sorted by key. */
  list(prefix: string): Promise<KeyValue[]>;
  put(key: string, value: string, opts?: PutOptions): Promise<WriteResult>;
  delete(key: string, opts?: PutOptions): Promise<WriteResult>;
  /** The store's current revision: it grows by one with each successful write. */
  revision(): Promise<number>;
  /**
   * Calls onEvent for every change under prefix. With fromRevision, changes after that revision
   * that the store still remembers are replayed first. Returns a function that stops the watch.
   */
  watch(prefix: string, onEvent: (e: WatchEvent) => void, opts?: { fromRevision?: number }): () => void;

  /** Takes the named lock for owner, or reports who holds it. The owner may re-take its own lock. */
  acquireLock(name: string, owner: string, ttlMs: number): Promise<LockResult>;
  /** Extends a held lock; false when owner no longer holds it. */
  renewLock(name: string, owner: string, ttlMs: number): Promise<boolean>;
  /** Releases the lock if owner holds it; false otherwise. */
  releaseLock(name: string, owner: string): Promise<boolean>;
  /** The live holder of a lock, if any (expired locks count as free). */
  getLock(name: string): Promise<LockInfo | undefined>;

  addHistory(entry: NewHistoryEntry, opts?: HistoryWriteOptions): Promise<HistoryEntry>;
  updateHistory(id: number, patch: Partial<NewHistoryEntry>, opts?: HistoryWriteOptions): Promise<HistoryEntry>;
  /** Newest first. */
  listHistory(service: string, limit?: number): Promise<HistoryEntry[]>;

  appendEvent(event: NewEvent): Promise<EventRecord>;
  /** Oldest first, events with id > afterId. */
  listEvents(opts?: { afterId?: number; service?: string; limit?: number }): Promise<EventRecord[]>;

  close(): Promise<void>;
}
