// The deploy lock: one flow at a time per service (deploy, rollback, migrate, healing, warm
// expiry, recovery). It lives in the Store's lock table with a TTL and is renewed while the flow
// runs. A lock can still be lost (the event loop was blocked past the TTL, or another agent took
// it): renewal notices, the flow's step boundaries check, and every write of the flow carries the
// lock as a fence, so a flow that lost its lock cannot overwrite what its successor wrote.
import { TurquoiseError, errorMessage } from "../errors.js";
import { formatTime } from "../util/time.js";
import type { Fence, HistoryEntry, HistoryWriteOptions, LockInfo, NewHistoryEntry, PutOptions, Store, WriteResult } from "../state/contract.js";
import { DelegatingStore } from "../state/delegating.js";
import { keys, type RecordEvent as EventLog } from "./records.js";

export const LOCK_TTL_MS = 30_000;
const LOCK_POLL_MS = 250;

export interface TakeOptions {
  /** Queue behind the holder instead of failing at once. */
  wait?: boolean;
  /** Where a queued flow says whom it waits for. */
  onWait?: (message: string) => void;
  /** A queued flow gives up at this time (epoch ms)... */
  deadline?: number;
  /** ...or when this aborts (its client went away). */
  signal?: AbortSignal;
  /** A flow that had to queue: whether it got the lock or gave up, and after how long (metrics). */
  onWaited?: (result: "acquired" | "gave-up", waitedMs: number) => void;
  ttlMs?: number;
}

export function isLockLost(e: unknown): e is TurquoiseError {
  return e instanceof TurquoiseError && e.code === "LOCK_LOST";
}

export class DeployLock {
  private lostBecause: string | undefined;
  private readonly renewal: NodeJS.Timeout;

  private constructor(
    private readonly store: Store,
    private readonly event: EventLog,
    readonly service: string,
    readonly owner: string,
    private readonly ttlMs: number,
  ) {
    this.renewal = setInterval(() => void this.renew(), Math.max(1, Math.floor(ttlMs / 3)));
  }

  /**
   * Takes the deploy lock, or fails at once naming its holder; with wait, queues behind the
   * holder until the deadline passes or the signal aborts.
   */
  static async take(store: Store, event: EventLog, service: string, owner: string, opts: TakeOptions = {}): Promise<DeployLock> {
    const ttlMs = opts.ttlMs ?? LOCK_TTL_MS;
    let told = false;
    const started = Date.now();
    for (;;) {
      const r = await store.acquireLock(keys.lock(service), owner, ttlMs);
      if (r.ok) {
        if (told) opts.onWaited?.("acquired", Date.now() - started);
        return new DeployLock(store, event, service, owner, ttlMs);
      }
      const since = formatTime(r.holder.since);
      if (!opts.wait) {
        throw new TurquoiseError("LOCKED", `a deploy of ${service} is already running: lock held by ${r.holder.owner} since ${since} (${Math.round((Date.now() - r.holder.since) / 1000)}s ago); use --wait to queue behind it`, { data: { holder: r.holder } });
      }
      // A queue without bounds grows with every client that gave up, and holds each one forever.
      const why = opts.signal?.aborted ? "its client went away" : opts.deadline !== undefined && Date.now() >= opts.deadline ? "its --wait-timeout ran out" : undefined;
      if (why) {
        event(service, "deploy.dropped", `a queued ${owner} was dropped: ${why} while ${r.holder.owner} held the lock`, { owner, holder: r.holder.owner });
        opts.onWaited?.("gave-up", Date.now() - started);
        throw new TurquoiseError("LOCKED", `gave up waiting for the deploy lock of ${service} (${why}): held by ${r.holder.owner} since ${since}`, { data: { holder: r.holder } });
      }
      if (!told) opts.onWait?.(`waiting for the deploy lock, held by ${r.holder.owner} since ${since}`);
      told = true;
      await new Promise((res) => setTimeout(res, LOCK_POLL_MS));
    }
  }

  /** Takes the lock when it is free; undefined when someone holds it (healing and warm expiry try again later). */
  static async tryTake(store: Store, event: EventLog, service: string, owner: string, ttlMs = LOCK_TTL_MS): Promise<DeployLock | undefined> {
    const r = await store.acquireLock(keys.lock(service), owner, ttlMs);
    return r.ok ? new DeployLock(store, event, service, owner, ttlMs) : undefined;
  }

  get name(): string {
    return keys.lock(this.service);
  }

  /** What every write of this lock's flow carries: it lands only while the lock is this flow's. */
  get fence(): Fence {
    return { lock: this.name, owner: this.owner };
  }

  /** Why the lock was lost, once renewal, a check or a refused write found it so. */
  get lost(): string | undefined {
    return this.lostBecause;
  }

  /** A step boundary: goes on only while the Store still names this flow as the holder. */
  async check(): Promise<void> {
    if (!this.lostBecause) {
      const holder = await this.store.getLock(this.name);
      if (holder?.owner !== this.owner) this.markLost(lossReason(holder));
    }
    if (this.lostBecause) throw this.lostError();
  }

  /** The Store as this lock's flow writes to it: every write fenced, a refused one a LOCK_LOST error. */
  fencedStore(): Store {
    return new FencedStore(this.store, this);
  }

  /** Stops renewing and lets go of the lock, if it is still this flow's. */
  async release(): Promise<void> {
    clearInterval(this.renewal);
    await this.store.releaseLock(this.name, this.owner);
  }

  /** A fenced write was refused: the Store says who holds the lock now. */
  async refused(): Promise<TurquoiseError> {
    if (!this.lostBecause) this.markLost(lossReason(await this.store.getLock(this.name).catch(() => undefined)));
    return this.lostError();
  }

  private markLost(why: string): void {
    if (this.lostBecause) return;
    this.lostBecause = why;
    clearInterval(this.renewal);
    this.event(this.service, "lock.lost", `the deploy lock held by ${this.owner} was lost: ${why}`, { owner: this.owner, reason: why });
  }

  private lostError(): TurquoiseError {
    return new TurquoiseError("LOCK_LOST", `the deploy lock of ${this.service} was lost (${this.lostBecause})`, { data: { owner: this.owner, reason: this.lostBecause } });
  }

  private async renew(): Promise<void> {
    try {
      if (!(await this.store.renewLock(this.name, this.owner, this.ttlMs))) this.markLost(lossReason(await this.store.getLock(this.name)));
    } catch (e) {
      // The Store did not answer: not a loss yet. The next check or fenced write decides.
      this.event(this.service, "lock.error", `renewing the deploy lock failed: ${errorMessage(e)}`);
    }
  }
}

function lossReason(holder: LockInfo | undefined): string {
  return holder ? `${holder.owner} holds it since ${formatTime(holder.since)}` : "it expired before it was renewed";
}

/** A Store whose writes carry a lock's fence; reads pass through. */
class FencedStore extends DelegatingStore {
  constructor(inner: Store, private readonly lock: DeployLock) {
    super(inner);
  }

  override async put(key: string, value: string, opts?: PutOptions): Promise<WriteResult> {
    return this.checked(await this.inner.put(key, value, { ...opts, fence: this.lock.fence }));
  }

  override async delete(key: string, opts?: PutOptions): Promise<WriteResult> {
    return this.checked(await this.inner.delete(key, { ...opts, fence: this.lock.fence }));
  }

  override addHistory(entry: NewHistoryEntry, opts?: HistoryWriteOptions): Promise<HistoryEntry> {
    return this.inner.addHistory(entry, { ...opts, fence: this.lock.fence }).catch((e) => this.rethrown(e));
  }

  override updateHistory(id: number, patch: Partial<NewHistoryEntry>, opts?: HistoryWriteOptions): Promise<HistoryEntry> {
    return this.inner.updateHistory(id, patch, { ...opts, fence: this.lock.fence }).catch((e) => this.rethrown(e));
  }

  /** The agent's Store outlives every flow: a flow never closes it. */
  override async close(): Promise<void> {}

  private async checked(r: WriteResult): Promise<WriteResult> {
    if (!r.ok && r.fenced) throw await this.lock.refused();
    return r;
  }

  private async rethrown(e: unknown): Promise<never> {
    throw isLockLost(e) ? await this.lock.refused() : e;
  }
}
