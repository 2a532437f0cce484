// One watch of the etcd store: every change under a prefix, in revision order, none missed. It
// follows the store's change log with etcd's revision-ordered watch; when its stream breaks it
// resumes from the last etcd revision it saw, and when etcd has compacted that history away it
// re-reads the change log (live keys, which compaction does not touch) from its last revision.

import { setTimeout as sleep } from "node:timers/promises";
import type { IDuplexStream, IKeyValue, IWatchRequest, IWatchResponse } from "etcd3";
import { errorMessage } from "../errors.js";
import type { WatchEvent } from "./contract.js";

/** What a watch needs of the store. */
export interface ChangeFeed {
  /** The store's revision now, and the etcd revision that read saw. */
  now(): Promise<{ revision: number; etcdRevision: number }>;
  /** Every remembered change after `after`, oldest first; the store's revision and the etcd revision of that read. */
  since(after: number): Promise<{ changes: WatchEvent[]; revision: number; etcdRevision: number }>;
  /** A watch stream over the change log that starts at the given etcd revision. */
  open(fromEtcdRevision: number): Promise<{ stream: IDuplexStream<IWatchRequest, IWatchResponse>; create: IWatchRequest }>;
  /** The change that a log entry records; throws on an entry Turquoise did not write. */
  decode(kv: IKeyValue): WatchEvent;
  /** How many changes the log remembers, for the warning when a watch fell further behind. */
  logSize: number;
  warn(message: string): void;
}

const RETRY_FIRST_MS = 50;
const RETRY_MAX_MS = 1_000;

export class ChangeWatch {
  /** The store revision of the last change this watch took in (delivered, or not under its prefix). */
  private lastRevision = 0;
  /** The etcd revision that change, or the read this watch started after, was seen at. */
  private etcdRevision = 0;
  private stream: IDuplexStream<IWatchRequest, IWatchResponse> | undefined;
  private stopped = false;
  private retryMs = RETRY_FIRST_MS;
  private readonly queue: WatchEvent[] = [];
  private scheduled = false;

  constructor(
    private readonly feed: ChangeFeed,
    private readonly prefix: string,
    private readonly onEvent: (e: WatchEvent) => void,
  ) {}

  /**
   * Watches from the store's revision now. Resolves once "now" is fixed, so a write this process
   * starts after watch() returned is always seen. When etcd cannot be read, "now" is the
   * fallback, the newest revision this process knows of.
   */
  async fromNow(fallback: number): Promise<void> {
    try {
      const now = await this.feed.now();
      this.lastRevision = now.revision;
      this.etcdRevision = now.etcdRevision;
      void this.listen();
    } catch {
      this.lastRevision = fallback;
      void this.catchUp();
    }
  }

  /** Replays the changes after revision, then goes on live. */
  fromRevision(revision: number): void {
    this.lastRevision = revision;
    void this.catchUp();
  }

  stop(): void {
    this.stopped = true;
    this.queue.length = 0;
    this.drop();
  }

  /** Reads the change log after lastRevision, delivers it, then listens from the etcd revision of that read. */
  private async catchUp(): Promise<void> {
    while (!this.stopped) {
      try {
        const { changes, revision, etcdRevision } = await this.feed.since(this.lastRevision);
        if (this.stopped) return;
        // A revision from the future (the store was wiped since): everything from here on is new.
        if (revision < this.lastRevision) this.lastRevision = revision;
        const first = changes[0]?.revision ?? revision + 1;
        if (revision > this.lastRevision && first > this.lastRevision + 1) {
          this.feed.warn(`a watch on "${this.prefix}" missed changes ${this.lastRevision + 1} to ${first - 1}: the change log remembers only the last ${this.feed.logSize}`);
        }
        for (const change of changes) this.take(change);
        this.lastRevision = Math.max(this.lastRevision, revision);
        this.etcdRevision = etcdRevision;
        return void this.listen();
      } catch (e) {
        await this.pause();
      }
    }
  }

  private async listen(): Promise<void> {
    while (!this.stopped) {
      try {
        const { stream, create } = await this.feed.open(this.etcdRevision + 1);
        if (this.stopped) return void stream.cancel();
        this.stream = stream;
        stream.on("data", (res) => this.answer(stream, res));
        stream.on("error", (e) => this.broken(stream, e));
        stream.on("end", () => this.broken(stream, new Error("the watch stream ended")));
        stream.write(create);
        return;
      } catch {
        await this.pause();
      }
    }
  }

  private answer(stream: IDuplexStream<IWatchRequest, IWatchResponse>, res: IWatchResponse): void {
    if (stream !== this.stream) return;
    if (res.canceled) {
      // compact_revision set: etcd no longer has the history after our revision; the change log does.
      this.drop();
      void this.catchUp();
      return;
    }
    this.retryMs = RETRY_FIRST_MS;
    // The stream asks for puts only: the deletes in the log are its trimming.
    for (const ev of res.events ?? []) {
      let change: WatchEvent;
      try {
        change = this.feed.decode(ev.kv);
      } catch (e) {
        this.feed.warn(`a watch on "${this.prefix}" skipped a change-log entry: ${errorMessage(e)}`);
        continue;
      }
      if (change.revision <= this.lastRevision) continue;
      if (change.revision > this.lastRevision + 1) {
        // A hole: never seen in practice, since each revision's entry is written with it; the log fills it.
        this.drop();
        void this.catchUp();
        return;
      }
      this.etcdRevision = Number(ev.kv.mod_revision);
      this.take(change);
    }
  }

  private broken(stream: IDuplexStream<IWatchRequest, IWatchResponse>, _e: unknown): void {
    if (stream !== this.stream) return;
    this.drop();
    // Resumes from the last etcd revision seen; if etcd compacted it meanwhile, the answer says so.
    void this.pause().then(() => this.listen());
  }

  private drop(): void {
    const stream = this.stream;
    this.stream = undefined;
    stream?.cancel();
  }

  private async pause(): Promise<void> {
    await sleep(this.retryMs * (0.5 + Math.random() / 2));
    this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
  }

  private take(change: WatchEvent): void {
    this.lastRevision = change.revision;
    if (!change.key.startsWith(this.prefix) || this.stopped) return;
    this.queue.push(change);
    if (this.scheduled) return;
    this.scheduled = true;
    // Delivered on a microtask, as the other stores do: a handler that throws cannot break the stream's bookkeeping.
    queueMicrotask(() => {
      this.scheduled = false;
      while (this.queue.length > 0 && !this.stopped) this.onEvent(this.queue.shift()!);
    });
  }
}
