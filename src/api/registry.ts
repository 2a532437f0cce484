// The registry's change index and its listeners, as Consul has them: every change (a Store write,
// a health check turning) bumps one index; a blocking read (?index=N&wait=30s) returns as soon as
// the index passes N, or when the wait runs out, with the index in X-Turquoise-Index.
import type { EventRecord, Store } from "../state/contract.js";
import type { Progress } from "../deploy/step.js";

/** A step of a running flow, as its client sees it: streamed live, never stored (history keeps the timings). */
export interface FlowProgress {
  service: string;
  kind: "deploy" | "rollback";
  at: number;
  progress: Progress;
}

export const MAX_BLOCKING_WAIT_MS = 10 * 60_000;
export const DEFAULT_BLOCKING_WAIT_MS = 5 * 60_000;

export class Registry {
  private index = 1;
  private readonly waiters = new Set<() => void>();
  private readonly eventListeners = new Set<(e: EventRecord) => void>();
  private readonly progressListeners = new Set<(p: FlowProgress) => void>();
  private readonly changeListeners = new Set<(index: number) => void>();
  private readonly stopWatch: () => void;

  constructor(store: Store, startIndex = 1) {
    this.index = Math.max(1, startIndex);
    this.stopWatch = store.watch("", () => this.bump());
  }

  get current(): number {
    return this.index;
  }

  /** Something a reader can see changed. */
  bump(): void {
    this.index++;
    const waiting = [...this.waiters];
    this.waiters.clear();
    for (const w of waiting) w();
    for (const l of this.changeListeners) l(this.index);
  }

  /** What status shows changed, but no registry reader sees (an instance's first check): change listeners only, the index stays. */
  notifyChange(): void {
    for (const l of this.changeListeners) l(this.index);
  }

  /** Called with the index at every change (and notifyChange): the dashboard's stream says "changed" instead of the page polling. */
  onChange(listener: (index: number) => void): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  /** Resolves with the index once it is above `after`, when waitMs runs out, or when the client goes away. */
  waitFor(after: number, waitMs: number, client?: { once(event: "close", fn: () => void): unknown }): Promise<number> {
    // An index above ours comes from before an agent restart: answer now, as Consul does when its index goes backwards.
    if (this.index > after || after > this.index) return Promise.resolve(this.index);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve(this.index);
      };
      const timer = setTimeout(done, Math.min(waitMs, MAX_BLOCKING_WAIT_MS));
      this.waiters.add(done);
      client?.once("close", done);
    });
  }

  onEvent(listener: (e: EventRecord) => void): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  publish(e: EventRecord): void {
    for (const l of this.eventListeners) l(e);
  }

  onProgress(listener: (p: FlowProgress) => void): () => void {
    this.progressListeners.add(listener);
    return () => this.progressListeners.delete(listener);
  }

  publishProgress(p: FlowProgress): void {
    for (const l of this.progressListeners) l(p);
  }

  close(): void {
    this.stopWatch();
    const waiting = [...this.waiters];
    this.waiters.clear();
    for (const w of waiting) w();
  }
}
