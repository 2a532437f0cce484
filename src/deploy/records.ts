// Typed access to the keys the orchestrator keeps in the Store. The live slot lives at
// services/<name>/color, as in the seed article's Consul layout.
import type { Store } from "../state/contract.js";
import type { SchemaRange } from "../plan/planner.js";
import type { InstanceInfo, Slot } from "../runtime/contract.js";

export type SlotState = "preview" | "live" | "warm";

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
}

/** What `rollback` goes back to: the release live before the last deploy, and the turquoise release it went through. */
export interface PreviousRecord {
  release: string;
  via: string | null;
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

export const keys = {
  color: (svc: string) => `services/${svc}/color`,
  slot: (svc: string, slot: Slot) => `services/${svc}/slots/${slot}`,
  previous: (svc: string) => `services/${svc}/previous`,
  /** Self-healing gave up on the service; the next deploy clears it. */
  degraded: (svc: string) => `services/${svc}/degraded`,
  instance: (svc: string, id: string) => `instances/${svc}/${id}`,
  instances: (svc?: string) => (svc ? `instances/${svc}/` : "instances/"),
  journal: (svc: string) => `journal/${svc}`,
  journals: () => "journal/",
  tableVersion: () => "proxy/table-version",
  lock: (svc: string) => `deploy/${svc}`,
};

export class Records {
  constructor(readonly store: Store) {}

  async color(svc: string): Promise<Slot | undefined> {
    return (await this.store.get(keys.color(svc)))?.value as Slot | undefined;
  }

  async setColor(svc: string, slot: Slot): Promise<void> {
    await this.store.put(keys.color(svc), slot);
  }

  async clearColor(svc: string): Promise<void> {
    await this.store.delete(keys.color(svc));
  }

  async slot(svc: string, slot: Slot): Promise<SlotRecord | undefined> {
    return readJson<SlotRecord>(await this.store.get(keys.slot(svc, slot)));
  }

  async setSlot(svc: string, rec: SlotRecord): Promise<void> {
    await this.store.put(keys.slot(svc, rec.slot), JSON.stringify(rec));
  }

  async clearSlot(svc: string, slot: Slot): Promise<void> {
    await this.store.delete(keys.slot(svc, slot));
  }

  async previous(svc: string): Promise<PreviousRecord | undefined> {
    return readJson<PreviousRecord>(await this.store.get(keys.previous(svc)));
  }

  async setPrevious(svc: string, prev: PreviousRecord): Promise<void> {
    await this.store.put(keys.previous(svc), JSON.stringify(prev));
  }

  async instances(svc?: string): Promise<InstanceInfo[]> {
    return (await this.store.list(keys.instances(svc))).map((kv) => JSON.parse(kv.value) as InstanceInfo);
  }

  async addInstance(inst: InstanceInfo): Promise<void> {
    await this.store.put(keys.instance(inst.service, inst.id), JSON.stringify(inst));
  }

  async removeInstance(inst: InstanceInfo): Promise<void> {
    await this.store.delete(keys.instance(inst.service, inst.id));
  }

  async journal(svc: string): Promise<Journal | undefined> {
    return readJson<Journal>(await this.store.get(keys.journal(svc)));
  }

  async journals(): Promise<Journal[]> {
    return (await this.store.list(keys.journals())).map((kv) => JSON.parse(kv.value) as Journal);
  }

  async writeJournal(j: Journal): Promise<void> {
    await this.store.put(keys.journal(j.service), JSON.stringify(j));
  }

  async clearJournal(svc: string): Promise<void> {
    await this.store.delete(keys.journal(svc));
  }

  /** A route table version that keeps growing across agent and proxy restarts. */
  async nextTableVersion(): Promise<number> {
    const cur = Number((await this.store.get(keys.tableVersion()))?.value ?? 0);
    const next = Math.max(cur + 1, Date.now());
    await this.store.put(keys.tableVersion(), String(next));
    return next;
  }
}

function readJson<T>(kv: { value: string } | undefined): T | undefined {
  return kv ? (JSON.parse(kv.value) as T) : undefined;
}
