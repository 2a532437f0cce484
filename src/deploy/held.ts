// A release held by `deploy --hold`: found for `promote`, stopped by `abort`. The abort takes the
// deploy lock like any flow, so it cannot race a promote that is already flipping.
import { TurquoiseError } from "../errors.js";
import { otherSlot, type Slot } from "../runtime/contract.js";
import type { ServiceSpec } from "../spec/types.js";
import type { HistoryEntry } from "../state/contract.js";
import type { OrchestratorDeps } from "./deps.js";
import { undoPreview } from "./flow.js";
import { DeployLock } from "./lock.js";
import { Records, type SlotRecord } from "./records.js";
import type { RouteTables } from "./routes.js";

export interface AbortOutcome {
  service: string;
  release: string;
  slot: Slot;
  /** The held deploy's history entry, now aborted. */
  history: HistoryEntry | null;
}

/** The service's held slot, or NOT_FOUND naming what to do instead. */
export async function heldSlot(records: Records, svc: ServiceSpec): Promise<SlotRecord> {
  const color = await records.color(svc.name);
  const rec = await records.slot(svc.name, color ? otherSlot(color) : "blue");
  if (rec?.state !== "held") throw new TurquoiseError("NOT_FOUND", `${svc.name} has no held release: \`turquoise deploy ${svc.name} --release <r> --hold\` holds one`);
  return rec;
}

export async function abortHeld(d: OrchestratorDeps, routes: RouteTables, svc: ServiceSpec, actor: string): Promise<AbortOutcome> {
  const lock = await DeployLock.take(d.store, d.event, svc.name, `${actor} (abort, agent ${d.agentId})`, { wait: false });
  try {
    const records = new Records(lock.fencedStore(), d.event);
    const rec = await heldSlot(records, svc);
    await undoPreview(d, records, svc, rec.slot);
    // The preview route goes with it.
    await routes.apply();
    let history: HistoryEntry | null = null;
    if (rec.heldBy) history = await records.store.updateHistory(rec.heldBy.historyId, { outcome: "aborted", error: `aborted by ${actor} while held` });
    d.event(svc.name, "deploy.aborted", `held ${rec.release} (${rec.slot}) of ${svc.name} aborted by ${actor}`, { release: rec.release, slot: rec.slot, historyId: rec.heldBy?.historyId ?? null });
    return { service: svc.name, release: rec.release, slot: rec.slot, history };
  } finally {
    await lock.release();
  }
}
