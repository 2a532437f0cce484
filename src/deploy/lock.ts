// The deploy lock: one flow at a time per service (deploy, rollback, migrate, healing, warm
// expiry). It lives in the Store's lock table with a TTL, renewed while the flow runs.
import { TurquoiseError, errorMessage } from "../errors.js";
import type { Store } from "../state/contract.js";
import type { EventLog } from "./deps.js";
import { keys } from "./records.js";
import type { Progress } from "./step.js";

export const LOCK_TTL_MS = 30_000;
const LOCK_RENEW_MS = 10_000;
const LOCK_POLL_MS = 250;

/** Renews a held deploy lock until cleared; a lost lock or a store error is an event, never a crash. */
export function keepLock(store: Store, event: EventLog, service: string, owner: string): NodeJS.Timeout {
  return setInterval(() => {
    store.renewLock(keys.lock(service), owner, LOCK_TTL_MS).then(
      (held) => { if (!held) event(service, "lock.lost", `the deploy lock held by ${owner} expired before it was renewed`); },
      (e) => event(service, "lock.error", `renewing the deploy lock failed: ${errorMessage(e)}`),
    );
  }, LOCK_RENEW_MS);
}

/**
 * Takes the deploy lock, or fails at once naming its holder; with wait, queues behind the holder
 * until the deadline passes or the signal aborts.
 */
export async function takeLock(store: Store, event: EventLog, service: string, owner: string, wait: boolean, emit: (p: Progress) => void, bounds: { deadline?: number; signal?: AbortSignal } = {}): Promise<void> {
  let told = false;
  for (;;) {
    const r = await store.acquireLock(keys.lock(service), owner, LOCK_TTL_MS);
    if (r.ok) return;
    const since = new Date(r.holder.since).toISOString();
    if (!wait) {
      throw new TurquoiseError("LOCKED", `a deploy of ${service} is already running: lock held by ${r.holder.owner} since ${since} (${Math.round((Date.now() - r.holder.since) / 1000)}s ago); use --wait to queue behind it`, { data: { holder: r.holder } });
    }
    // A queue without bounds grows with every client that gave up, and holds each one forever.
    const why = bounds.signal?.aborted ? "its client went away" : bounds.deadline !== undefined && Date.now() >= bounds.deadline ? "its --wait-timeout ran out" : undefined;
    if (why) {
      event(service, "deploy.dropped", `a queued ${owner} was dropped: ${why} while ${r.holder.owner} held the lock`, { owner, holder: r.holder.owner });
      throw new TurquoiseError("LOCKED", `gave up waiting for the deploy lock of ${service} (${why}): held by ${r.holder.owner} since ${since}`, { data: { holder: r.holder } });
    }
    if (!told) emit({ type: "info", message: `waiting for the deploy lock, held by ${r.holder.owner} since ${since}` });
    told = true;
    await new Promise((res) => setTimeout(res, LOCK_POLL_MS));
  }
}
