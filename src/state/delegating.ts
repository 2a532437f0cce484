// A Store that hands every call to another one: the base of the stores that fence writes (the
// deploy lock's in deploy/lock.ts, the leader's in leader-store.ts), which override only writes.
import type { EventRecord, HistoryEntry, HistoryWriteOptions, KeyValue, LockInfo, LockResult, NewEvent, NewHistoryEntry, PutOptions, Store, WatchEvent, WriteResult } from "./contract.js";

export class DelegatingStore implements Store {
  constructor(protected readonly inner: Store) {}

  get(key: string): Promise<KeyValue | undefined> {
    return this.inner.get(key);
  }

  list(prefix: string): Promise<KeyValue[]> {
    return this.inner.list(prefix);
  }

  put(key: string, value: string, opts?: PutOptions): Promise<WriteResult> {
    return this.inner.put(key, value, opts);
  }

  delete(key: string, opts?: PutOptions): Promise<WriteResult> {
    return this.inner.delete(key, opts);
  }

  revision(): Promise<number> {
    return this.inner.revision();
  }

  watch(prefix: string, onEvent: (e: WatchEvent) => void, opts?: { fromRevision?: number }): () => void {
    return this.inner.watch(prefix, onEvent, opts);
  }

  acquireLock(name: string, owner: string, ttlMs: number): Promise<LockResult> {
    return this.inner.acquireLock(name, owner, ttlMs);
  }

  renewLock(name: string, owner: string, ttlMs: number): Promise<boolean> {
    return this.inner.renewLock(name, owner, ttlMs);
  }

  releaseLock(name: string, owner: string): Promise<boolean> {
    return this.inner.releaseLock(name, owner);
  }

  getLock(name: string): Promise<LockInfo | undefined> {
    return this.inner.getLock(name);
  }

  addHistory(entry: NewHistoryEntry, opts?: HistoryWriteOptions): Promise<HistoryEntry> {
    return this.inner.addHistory(entry, opts);
  }

  updateHistory(id: number, patch: Partial<NewHistoryEntry>, opts?: HistoryWriteOptions): Promise<HistoryEntry> {
    return this.inner.updateHistory(id, patch, opts);
  }

  listHistory(service: string, limit?: number): Promise<HistoryEntry[]> {
    return this.inner.listHistory(service, limit);
  }

  appendEvent(event: NewEvent): Promise<EventRecord> {
    return this.inner.appendEvent(event);
  }

  listEvents(opts?: { afterId?: number; service?: string; limit?: number }): Promise<EventRecord[]> {
    return this.inner.listEvents(opts);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
