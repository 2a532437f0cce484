// Webhook delivery records: a delivery's key (a signed body's sha256, or a token caller's delivery
// id) is claimed atomically before its deploy, and its record follows the deploy to its outcome, so
// a replay is answered, never run twice, while a redelivery of one that failed (GitHub's
// "Redeliver") runs again, once however many copies arrive.
import { createHash } from "node:crypto";
import { RELEASE_NAME } from "../deploy/release.js";
import { ownerIsDeadHere } from "../deploy/lock-owner.js";
import type { HistoryEntry, Store } from "../state/contract.js";
import { agentId } from "../state/leader.js";
import { internalKey } from "../state/namespace.js";

/** How many delivery ids a service remembers: replays older than that many deliveries run again. */
export const REMEMBERED_DELIVERIES = 500;
/**
 * How far back in a service's history a delivery's entry is looked for when its record still says
 * running. One flow runs at a time per service, so an entry further back is not running; its
 * outcome unknown, the delivery is taken as done rather than run twice.
 */
export const DELIVERY_HISTORY_LOOKBACK = 50;

export const hookKeys = {
  delivery: (svc: string, id: string) => internalKey(`hooks/${svc}/${id}`),
  deliveries: (svc: string) => internalKey(`hooks/${svc}/`),
};

/** running: claimed, its deploy not yet over; failed: over without a successful deploy, so it may run again. */
export type DeliveryOutcome = "running" | "succeeded" | "failed";

export interface Delivery {
  at: number;
  release: string;
  historyId: number | null;
  outcome: DeliveryOutcome;
  /** How many times the delivery was run: 1, and one more for each redelivery of a failed one. */
  attempt: number;
  /** The delivery id its sender gave (X-GitHub-Delivery, Idempotency-Key) on the claim that stands, for operators; null for none. */
  delivery: string | null;
  /** The agent that claimed it ("host:pid"); null in records from before claims named one. */
  agent: string | null;
}

const AGENT_ID = /^\S+:\d+$/;

/**
 * The key of a signed delivery: GitHub's signature covers the body only, not X-GitHub-Delivery, so
 * the body is what a replay cannot change, and the same body is the same delivery whatever id it names.
 */
export function bodyDeliveryKey(body: Buffer): string {
  return `body-sha256:${createHash("sha256").update(body).digest("hex")}`;
}

/** A delivery record as the agent wrote it, or undefined: a record is checked whenever it is read. */
export function deliveryRecord(text: string | undefined): Delivery | undefined {
  if (text === undefined) return undefined;
  try {
    const v = JSON.parse(text) as Partial<Delivery>;
    if (typeof v.release === "string" && RELEASE_NAME.test(v.release) && (v.historyId === null || Number.isInteger(v.historyId))) {
      // A record from before outcomes were kept reads as running: its history entry, if any, decides.
      const outcome = v.outcome === "succeeded" || v.outcome === "failed" ? v.outcome : "running";
      const delivery = typeof v.delivery === "string" ? v.delivery : null;
      const agent = typeof v.agent === "string" && AGENT_ID.test(v.agent) ? v.agent : null;
      return { at: Number(v.at) || 0, release: v.release, historyId: v.historyId ?? null, outcome, attempt: Number.isInteger(v.attempt) && v.attempt! > 0 ? v.attempt! : 1, delivery, agent };
    }
  } catch { /* not one of ours */ }
  return undefined;
}

/**
 * Whether a delivery's deploy is over, and how. A record says running until its deploy settles;
 * if the agent died or lost its lock meanwhile, the history entry it points to (which recovery
 * closes) says how it ended. A record with no history id yet (the deploy had not begun, or the
 * id was never written: the agent died first, or the store failed) is settled by the entry whose
 * actor names this delivery and attempt, if there is one; with none, it is still planning or
 * waiting, unless the agent that claimed it is a process of this host that is gone: then nothing
 * ran, and the delivery failed (a redelivery runs it). `key`: what the delivery is known by.
 * unknown: the entry is too far back to be running, and how it ended is not known.
 */
export async function settledOutcome(store: Store, service: string, key: string, d: Delivery): Promise<DeliveryOutcome | "unknown"> {
  if (d.outcome !== "running") return d.outcome;
  const recent = await store.listHistory(service, DELIVERY_HISTORY_LOOKBACK);
  if (d.historyId === null) {
    const suffix = deliveryActorSuffix(d.delivery ?? key, d.attempt);
    const entry = recent.find((h) => h.actor.startsWith("webhook (") && h.actor.endsWith(suffix));
    if (entry) return entryOutcome(entry.outcome);
    return d.agent !== null && ownerIsDeadHere(`agent ${d.agent}`) ? "failed" : "running";
  }
  const entry = recent.find((h) => h.id === d.historyId);
  return entry ? entryOutcome(entry.outcome) : "unknown";
}

/** How a webhook deploy's actor ends for a delivery known as `named`, run the attempt-th time (hooks.ts writes it). */
export function deliveryActorSuffix(named: string, attempt: number): string {
  return `, delivery ${named}${attempt > 1 ? `, attempt ${attempt}` : ""})`;
}

function entryOutcome(outcome: HistoryEntry["outcome"]): DeliveryOutcome {
  if (outcome === "running") return "running";
  // held: the release stands on its preview address, waiting for promote or abort: not to be deployed again.
  return outcome === "succeeded" || outcome === "held" ? "succeeded" : "failed";
}

export type ClaimResult =
  | { won: true; claim: DeliveryClaim }
  | { won: false; earlier: Delivery | undefined; outcome: DeliveryOutcome | "unknown" | null };

/**
 * Claims a delivery key for one run of its deploy, atomically: a new key by creating its record,
 * a failed one by replacing the record read (compare-and-set on its revision). Of any number of
 * copies sent at once, one wins; the others get the record that stands, to answer duplicate.
 * delivery: the id the sender gave, kept in the record beside the key. The record names this
 * agent, so that a claim it leaves when it dies before its deploy begins is not running for ever.
 */
export async function claimDelivery(store: Store, service: string, id: string, release: string, delivery: string | null = null): Promise<ClaimResult> {
  const key = hookKeys.delivery(service, id);
  const fresh = (attempt: number): Delivery => ({ at: Date.now(), release, historyId: null, outcome: "running", attempt, delivery, agent: agentId() });
  const created = await store.put(key, JSON.stringify(fresh(1)), { prevRevision: 0 });
  if (created.ok) return { won: true, claim: new DeliveryClaim(store, key, created.revision, fresh(1)) };
  const kv = await store.get(key);
  const earlier = deliveryRecord(kv?.value);
  // Not ours, or forgotten between the two reads: answered as a duplicate, as before outcomes were kept.
  if (!kv || !earlier) return { won: false, earlier, outcome: earlier?.outcome ?? null };
  const outcome = await settledOutcome(store, service, id, earlier);
  if (outcome !== "failed") return { won: false, earlier, outcome };
  const again = fresh(earlier.attempt + 1);
  const retaken = await store.put(key, JSON.stringify(again), { prevRevision: kv.modRevision });
  if (retaken.ok) return { won: true, claim: new DeliveryClaim(store, key, retaken.revision, again) };
  // Another copy of the redelivery claimed it first: that one runs it.
  const now = deliveryRecord((await store.get(key))?.value);
  return { won: false, earlier: now, outcome: now?.outcome ?? null };
}

/**
 * A delivery this request claimed: its record follows the deploy (history id, then outcome). Each
 * write is conditional on the last one's revision, so a later claim of the same id (a redelivery,
 * once the history entry says this run failed) is never overwritten by this run's late news.
 */
export class DeliveryClaim {
  private written: Promise<number | undefined>;

  constructor(private readonly store: Store, private readonly key: string, revision: number, private record: Delivery) {
    this.written = Promise.resolve(revision);
  }

  get attempt(): number {
    return this.record.attempt;
  }

  /** Writes the record with patch once the writes before it are done; rejects when the store fails. */
  update(patch: Partial<Pick<Delivery, "historyId" | "outcome">>): Promise<void> {
    this.record = { ...this.record, ...patch };
    const text = JSON.stringify(this.record);
    const write = this.written.then(async (revision) => {
      if (revision === undefined) return undefined;
      const r = await this.store.put(this.key, text, { prevRevision: revision });
      return r.ok ? r.revision : undefined;
    });
    // A failed write stops the ones after it: they would be compared with a revision that never was.
    this.written = write.catch(() => undefined);
    return write.then(() => undefined);
  }
}

/** Keeps the newest REMEMBERED_DELIVERIES ids of a service. */
export async function forgetOldDeliveries(store: Store, service: string): Promise<void> {
  const all = await store.list(hookKeys.deliveries(service));
  if (all.length <= REMEMBERED_DELIVERIES) return;
  const oldest = all.sort((a, b) => a.modRevision - b.modRevision).slice(0, all.length - REMEMBERED_DELIVERIES);
  for (const kv of oldest) await store.delete(kv.key, { prevRevision: kv.modRevision });
}
