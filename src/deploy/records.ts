// Typed access to the records the agent keeps in the Store, all under the reserved prefix
// (state/namespace.ts) that the KV API refuses. Every read is validated (record-guards.ts): a value
// that does not validate is set aside under <prefix>quarantine/, reported as an event and in
// `status`, and read as absent. The live slot is rebuilt from the facts that remain (the slot
// records, the instance records) so that a bad record can never take a service offline.
import type { KeyValue, Store } from "../state/contract.js";
import { INTERNAL_PREFIX, internalKey } from "../state/namespace.js";
import type { SchemaRange } from "../plan/planner.js";
import { SLOTS, type InstanceInfo, type Slot } from "../runtime/contract.js";
import type { RouteTable } from "../proxy/contract.js";
import {
  colorProblem, degradedProblem, instanceProblem, journalProblem, parseObject,
  previousProblem, slotProblem, tableVersionProblem, type Problem,
} from "./record-guards.js";

/** held: a preview that `deploy --hold` left waiting for `promote` or `abort`. */
export type SlotState = "preview" | "held" | "live" | "warm";

export interface SlotRecord {
  slot: Slot;
  release: string;
  poolId: string;
  state: SlotState;
  startedAt: number;
  /** For a warm slot: when it is stopped. */
  warmUntil?: number;
  /** The schema versions the release declared when it started (services with a database). */
  schema?: SchemaRange;
  /** For a held slot: the history entry of the deploy that holds it, and since when. */
  heldBy?: { historyId: number; since: number; actor: string };
}

/** What `rollback` goes back to: the release live before the last deploy, and the turquoise release it went through. */
export interface PreviousRecord {
  release: string;
  via: string | null;
}

/** Self-healing gave up on a service; the next deploy clears it. */
export interface DegradedRecord {
  since: number;
  slot: Slot;
  release: string;
  reason: string;
}

export interface Journal {
  historyId: number;
  service: string;
  kind: "deploy" | "rollback";
  release: string;
  via: string | null;
  actor: string;
  owner: string;
  /** The release live when the flow started. */
  previousRelease: string | null;
  /** Steps as journaled: "<name>:started" / "<name>:done". */
  steps: string[];
  startedAt: number;
}

/**
 * An instance recorded before it is started, under the same key its started record replaces: if
 * the agent dies in between, the next one finds the intent, stops whatever carries its id
 * (runtime/identity.ts) and drops it.
 */
export interface InstanceIntent {
  id: string;
  service: string;
  slot: Slot;
  release: string;
  runtime: string;
  state: "starting";
  recordedAt: number;
}

/** A record that failed validation, as it was found. */
export interface QuarantineEntry {
  key: string;
  service: string | null;
  reason: string;
  at: number;
  /** The value found, cut to MAX_QUARANTINED_VALUE characters. */
  value: string;
}

/** Enough of a bad value to see what it was, not so much that a huge one is kept twice. */
export const MAX_QUARANTINED_VALUE = 2_000;

export const keys = {
  color: (svc: string) => internalKey(`services/${svc}/color`),
  slot: (svc: string, slot: Slot) => internalKey(`services/${svc}/slots/${slot}`),
  previous: (svc: string) => internalKey(`services/${svc}/previous`),
  degraded: (svc: string) => internalKey(`services/${svc}/degraded`),
  instance: (svc: string, id: string) => internalKey(`instances/${svc}/${id}`),
  instances: (svc?: string) => internalKey(svc ? `instances/${svc}/` : "instances/"),
  journal: (svc: string) => internalKey(`journal/${svc}`),
  journals: () => internalKey("journal/"),
  tableVersion: () => internalKey("proxy/table-version"),
  /** The route table the leader last applied: every agent's proxy follows it (several agents). */
  routeTable: () => internalKey("proxy/table"),
  quarantine: (key: string) => internalKey(`quarantine/${key.startsWith(INTERNAL_PREFIX) ? key.slice(INTERNAL_PREFIX.length) : key}`),
  quarantined: () => internalKey("quarantine/"),
  /** Present once keys of the old layout (before the reserved prefix) were moved in. */
  layout: () => internalKey("layout"),
  /** A lock name in the Store's lock table, not a key. */
  lock: (svc: string) => `deploy/${svc}`,
};

export type RecordEvent = (service: string | null, type: string, message: string, data?: Record<string, unknown>) => void;

export class Records {
  /** Services with a record set aside since this agent started: the agent stops nothing of theirs at start. */
  readonly held = new Set<string>();

  constructor(readonly store: Store, private readonly event: RecordEvent = () => {}) {}

  async color(svc: string): Promise<Slot | undefined> {
    const kv = await this.store.get(keys.color(svc));
    if (!kv) return undefined;
    const problem = colorProblem(kv.value);
    if (!problem) return kv.value as Slot;
    await this.setAside(kv, svc, problem);
    return this.repairColor(svc);
  }

  async setColor(svc: string, slot: Slot): Promise<void> {
    await this.store.put(keys.color(svc), slot);
  }

  async clearColor(svc: string): Promise<void> {
    await this.store.delete(keys.color(svc));
  }

  async slot(svc: string, slot: Slot): Promise<SlotRecord | undefined> {
    const kv = await this.store.get(keys.slot(svc, slot));
    if (!kv) return undefined;
    return (await this.validated<SlotRecord>(kv, svc, (v) => slotProblem(v, slot))) ?? this.repairSlot(svc, slot);
  }

  async setSlot(svc: string, rec: SlotRecord): Promise<void> {
    await this.store.put(keys.slot(svc, rec.slot), JSON.stringify(rec));
  }

  async clearSlot(svc: string, slot: Slot): Promise<void> {
    await this.store.delete(keys.slot(svc, slot));
  }

  async previous(svc: string): Promise<PreviousRecord | undefined> {
    const kv = await this.store.get(keys.previous(svc));
    return kv && this.validated<PreviousRecord>(kv, svc, previousProblem);
  }

  async setPrevious(svc: string, prev: PreviousRecord): Promise<void> {
    await this.store.put(keys.previous(svc), JSON.stringify(prev));
  }

  async degraded(svc: string): Promise<DegradedRecord | undefined> {
    const kv = await this.store.get(keys.degraded(svc));
    return kv && this.validated<DegradedRecord>(kv, svc, degradedProblem);
  }

  async setDegraded(svc: string, rec: DegradedRecord): Promise<void> {
    await this.store.put(keys.degraded(svc), JSON.stringify(rec));
  }

  async clearDegraded(svc: string): Promise<void> {
    await this.store.delete(keys.degraded(svc));
  }

  /** Instances recorded as started (intents left out). */
  async instances(svc?: string): Promise<InstanceInfo[]> {
    return (await this.instanceRecords(svc)).started;
  }

  /** Instances recorded as starting: the agent that recorded them has not (yet) recorded them as started. */
  async intents(svc?: string): Promise<InstanceIntent[]> {
    return (await this.instanceRecords(svc)).starting;
  }

  private async instanceRecords(svc?: string): Promise<{ started: InstanceInfo[]; starting: InstanceIntent[] }> {
    const started: InstanceInfo[] = [];
    const starting: InstanceIntent[] = [];
    const base = keys.instances();
    for (const kv of await this.store.list(keys.instances(svc))) {
      const [service = "", id = "", ...rest] = kv.key.slice(base.length).split("/");
      const o = await this.validated<InstanceInfo | InstanceIntent>(kv, service || null, (v) => (rest.length ? "the key has more parts than instances/<service>/<id>" : instanceProblem(v, service, id)));
      if (o && isIntent(o)) starting.push(o);
      else if (o) started.push(o);
    }
    return { started, starting };
  }

  /** Before the start: the intent. addInstance() then overwrites it with the started instance. */
  async addIntent(intent: InstanceIntent): Promise<void> {
    await this.store.put(keys.instance(intent.service, intent.id), JSON.stringify(intent));
  }

  async addInstance(inst: InstanceInfo): Promise<void> {
    await this.store.put(keys.instance(inst.service, inst.id), JSON.stringify(inst));
  }

  async removeInstance(inst: { service: string; id: string }): Promise<void> {
    await this.store.delete(keys.instance(inst.service, inst.id));
  }

  async journal(svc: string): Promise<Journal | undefined> {
    const kv = await this.store.get(keys.journal(svc));
    return kv && this.validated<Journal>(kv, svc, (v) => journalProblem(v, svc));
  }

  async journals(): Promise<Journal[]> {
    const out: Journal[] = [];
    const base = keys.journals();
    for (const kv of await this.store.list(base)) {
      const service = kv.key.slice(base.length);
      const o = await this.validated<Journal>(kv, service, (v) => journalProblem(v, service));
      if (o) out.push(o);
    }
    return out;
  }

  async writeJournal(j: Journal): Promise<void> {
    await this.store.put(keys.journal(j.service), JSON.stringify(j));
  }

  async clearJournal(svc: string): Promise<void> {
    await this.store.delete(keys.journal(svc));
  }

  /** A route table version that keeps growing across agent and proxy restarts. */
  async nextTableVersion(): Promise<number> {
    const kv = await this.store.get(keys.tableVersion());
    const problem = kv && tableVersionProblem(kv.value);
    if (kv && problem) await this.setAside(kv, null, problem);
    const cur = kv && !problem ? Number(kv.value) : 0;
    const next = Math.max(cur + 1, Date.now());
    await this.store.put(keys.tableVersion(), String(next));
    return next;
  }

  /** Publishes the route table for every agent's proxy to follow (route-follower.ts). */
  async publishTable(table: RouteTable): Promise<void> {
    await this.store.put(keys.routeTable(), JSON.stringify(table));
  }

  /** The version of the route table published last; undefined when there is none or it does not read as one. */
  async publishedVersion(): Promise<number | undefined> {
    const kv = await this.store.get(keys.routeTable());
    if (!kv) return undefined;
    try {
      const version = (JSON.parse(kv.value) as { version?: unknown } | null)?.version;
      return typeof version === "number" ? version : undefined;
    } catch {
      return undefined;
    }
  }

  /** Records set aside, oldest first. */
  async quarantined(): Promise<QuarantineEntry[]> {
    const base = keys.quarantined();
    const out: QuarantineEntry[] = [];
    for (const kv of await this.store.list(base)) {
      const parsed = parseObject(kv.value);
      const e = parsed.ok ? parsed.value : {};
      out.push({
        key: typeof e.key === "string" ? e.key : internalKey(kv.key.slice(base.length)),
        service: typeof e.service === "string" ? e.service : null,
        reason: typeof e.reason === "string" ? e.reason : "(the quarantine entry itself is unreadable)",
        at: typeof e.at === "number" ? e.at : 0,
        value: typeof e.value === "string" ? e.value : "",
      });
    }
    return out.sort((a, b) => a.at - b.at);
  }

  /** A successful deploy or rollback puts a service's records back in order: its entries (and those of no service) go. */
  async clearQuarantine(svc: string): Promise<void> {
    const base = keys.quarantined();
    for (const kv of await this.store.list(base)) {
      const parsed = parseObject(kv.value);
      const service = parsed.ok ? parsed.value.service : null;
      if (service === svc || typeof service !== "string") await this.store.delete(kv.key, { prevRevision: kv.modRevision });
    }
  }

  /** The record as an object when it validates; otherwise it is set aside and undefined comes back. */
  private async validated<T>(kv: KeyValue, service: string | null, check: (o: Record<string, unknown>) => Problem): Promise<T | undefined> {
    const parsed = parseObject(kv.value);
    const problem = parsed.ok ? check(parsed.value) : parsed.problem;
    // The cast is safe: the check for this kind of record passed.
    if (!problem) return parsed.ok ? (parsed.value as unknown as T) : undefined;
    await this.setAside(kv, service, problem);
    return undefined;
  }

  /** Moves a bad record to the quarantine, says so, and holds its service back from anything destructive. */
  private async setAside(kv: KeyValue, service: string | null, problem: string): Promise<void> {
    const entry: QuarantineEntry = { key: kv.key, service, reason: problem, at: Date.now(), value: kv.value.slice(0, MAX_QUARANTINED_VALUE) };
    await this.store.put(keys.quarantine(kv.key), JSON.stringify(entry));
    // Only the value that was judged goes: a good write that raced in stays.
    await this.store.delete(kv.key, { prevRevision: kv.modRevision });
    if (service) this.held.add(service);
    this.event(service, "record.invalid", `${kv.key} is invalid (${problem}): set aside under ${keys.quarantine(kv.key)}; nothing acts on it`, { key: kv.key, reason: problem });
  }

  /**
   * The color was bad: the slot whose record says live is the live one. While a flip is under way
   * both say live, and the earlier one is what the stored color said until the flip's last write.
   */
  private async repairColor(svc: string): Promise<Slot | undefined> {
    const live: SlotRecord[] = [];
    for (const s of SLOTS) {
      const rec = await this.slot(svc, s);
      if (rec?.state === "live") live.push(rec);
    }
    const chosen = live.sort((a, b) => a.startedAt - b.startedAt)[0];
    if (!chosen) return undefined;
    const r = await this.store.put(keys.color(svc), chosen.slot, { prevRevision: 0 });
    if (!r.ok) return this.color(svc);
    this.event(svc, "record.repaired", `${keys.color(svc)} rebuilt as ${chosen.slot} from the live slot record (${chosen.release})`, { key: keys.color(svc), slot: chosen.slot });
    return chosen.slot;
  }

  /** The live slot's record was bad: rebuilt from the instance records running in it, so its route stays. */
  private async repairSlot(svc: string, slot: Slot): Promise<SlotRecord | undefined> {
    const color = await this.store.get(keys.color(svc));
    if (color?.value !== slot) return undefined;
    const running = (await this.instances(svc)).filter((i) => i.slot === slot);
    const releases = [...new Set(running.map((i) => i.release))];
    if (releases.length !== 1) return undefined;
    const release = releases[0]!;
    const rec: SlotRecord = { slot, release, poolId: `${svc}/${slot}/${release}/repaired-${Date.now().toString(36)}`, state: "live", startedAt: Math.min(...running.map((i) => i.startedAt)) };
    const r = await this.store.put(keys.slot(svc, slot), JSON.stringify(rec), { prevRevision: 0 });
    if (!r.ok) return undefined;
    this.event(svc, "record.repaired", `${keys.slot(svc, slot)} rebuilt from ${running.length} running instance record(s) of ${release}`, { key: keys.slot(svc, slot), release });
    return rec;
  }
}

/** Exactly what the validator took for an intent: an instance record may carry a stray "state". */
function isIntent(o: InstanceInfo | InstanceIntent): o is InstanceIntent {
  return (o as Partial<InstanceIntent>).state === "starting";
}
