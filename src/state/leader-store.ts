// The Store as an agent that shares it with others writes to it: every write is conditional on
// this agent still leading (the leader lock as a fence, checked by etcd in the write's own
// transaction), so an agent that was paused past its lease writes nothing. A refused write is
// logged and fails with NOT_LEADER. Writes that already carry a deploy lock's fence keep it: a new
// leader breaks every deploy lock of the term before it, and deploy locks are taken only by a
// confirmed leader, so that fence holds only within the current leader's term.
import { TurquoiseError } from "../errors.js";
import type { Fence, HistoryEntry, HistoryWriteOptions, LockResult, NewHistoryEntry, PutOptions, Store, WriteResult } from "./contract.js";
import { DelegatingStore } from "./delegating.js";
import type { Leadership } from "./leader.js";

/** Told of every write the store refused because this agent does not lead (or its deploy lock was broken). */
export type RefusedWrite = (action: string, reason: string) => void;

export class LeaderStore extends DelegatingStore {
  constructor(
    inner: Store,
    private readonly leadership: Leadership,
    private readonly refused: RefusedWrite,
  ) {
    super(inner);
  }

  override put(key: string, value: string, opts?: PutOptions): Promise<WriteResult> {
    return this.write(`put of ${key}`, opts, (o) => this.inner.put(key, value, o));
  }

  override delete(key: string, opts?: PutOptions): Promise<WriteResult> {
    return this.write(`delete of ${key}`, opts, (o) => this.inner.delete(key, o));
  }

  /**
   * Only the leader takes locks (deploy, healing, recovery). The leadership is read again after the
   * lock is taken: a new leader breaks every lock once it is elected, so a lock taken before that
   * read is broken by it, and one taken after it is refused here.
   */
  override async acquireLock(name: string, owner: string, ttlMs: number): Promise<LockResult> {
    await this.leaderFence(`taking of lock ${name}`);
    const r = await this.inner.acquireLock(name, owner, ttlMs);
    if (r.ok && !(await this.leadership.confirm())) {
      await this.inner.releaseLock(name, owner);
      this.refused(`taking of lock ${name}`, "this agent no longer leads");
      throw await this.leadership.notLeader(`taking of lock ${name}`);
    }
    return r;
  }

  /** An agent that no longer leads renews nothing: its flow learns that it lost its lock. */
  override async renewLock(name: string, owner: string, ttlMs: number): Promise<boolean> {
    if (!this.leadership.isLeader) {
      this.refused(`renewal of lock ${name}`, "this agent no longer leads");
      return false;
    }
    return this.inner.renewLock(name, owner, ttlMs);
  }

  override async addHistory(entry: NewHistoryEntry, opts?: HistoryWriteOptions): Promise<HistoryEntry> {
    const action = `history entry of ${entry.service}`;
    const fence = opts?.fence ?? (await this.leaderFence(action));
    try {
      return await this.inner.addHistory(entry, { ...opts, fence });
    } catch (e) {
      throw await this.historyRefused(e, action, opts?.fence);
    }
  }

  override async updateHistory(id: number, patch: Partial<NewHistoryEntry>, opts?: HistoryWriteOptions): Promise<HistoryEntry> {
    const action = `update of history entry ${id}`;
    const fence = opts?.fence ?? (await this.leaderFence(action));
    try {
      return await this.inner.updateHistory(id, patch, { ...opts, fence });
    } catch (e) {
      throw await this.historyRefused(e, action, opts?.fence);
    }
  }

  /** The leader's fence, or NOT_LEADER (logged) when this agent does not lead. */
  private async leaderFence(action: string): Promise<Fence> {
    const fence = this.leadership.fence;
    if (fence) return fence;
    this.refused(action, "this agent does not lead");
    throw await this.leadership.notLeader(action);
  }

  private async write(action: string, opts: PutOptions | undefined, run: (opts: PutOptions) => Promise<WriteResult>): Promise<WriteResult> {
    if (opts?.fence) {
      const r = await run(opts);
      if (!r.ok && r.fenced) this.refused(action, `the lock ${opts.fence.lock} it was fenced by is no longer held by ${opts.fence.owner}`);
      return r;
    }
    const fence = await this.leaderFence(action);
    const r = await run({ ...opts, fence });
    if (!r.ok && r.fenced) {
      this.refused(action, "etcd no longer names this agent as leader");
      throw await this.leadership.notLeader(action);
    }
    return r;
  }

  private async historyRefused(e: unknown, action: string, ownFence: Fence | undefined): Promise<unknown> {
    if (!(e instanceof TurquoiseError) || e.code !== "LOCK_LOST") return e;
    if (ownFence) {
      this.refused(action, `the lock ${ownFence.lock} it was fenced by is no longer held by ${ownFence.owner}`);
      return e;
    }
    this.refused(action, "etcd no longer names this agent as leader");
    return this.leadership.notLeader(action);
  }
}
