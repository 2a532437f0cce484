// Who holds a deploy lock. Every owner string names its agent as "agent <host>:<pid>", so an agent
// that starts can tell a lock left by a dead agent on its own host (released at once) from one a
// living agent holds (left alone: on another host it may be alive, and its TTL still bounds it).
import os from "node:os";
import type { Store } from "../state/contract.js";
import { pidAlive } from "../util/proc.js";
import type { Journal } from "./records.js";
import { keys } from "./records.js";

export interface LockOwnerAgent {
  host: string;
  pid: number;
}

/** The agent an owner string names, or undefined when it names none. */
export function ownerAgent(owner: string): LockOwnerAgent | undefined {
  const m = /\bagent (\S+?):(\d+)(?=[\s,)]|$)/.exec(owner);
  return m ? { host: m[1]!, pid: Number(m[2]) } : undefined;
}

/** True only when the owner is an agent on this host whose process is gone (and is not us). */
export function ownerIsDeadHere(owner: string, here: LockOwnerAgent = { host: os.hostname(), pid: process.pid }, alive: (pid: number) => boolean = pidAlive): boolean {
  const a = ownerAgent(owner);
  return !!a && a.host === here.host && a.pid !== here.pid && a.pid > 1 && !alive(a.pid);
}

type Note = (service: string, type: string, message: string, data?: Record<string, unknown>) => void;

/**
 * Releases every service's deploy lock whose owner is a dead agent on this host. A flow killed
 * before its journal was written (the plan step waiting on a database) left such a lock, which
 * recovery from journals alone cannot see.
 */
export async function releaseDeadOwners(store: Store, services: string[], note: Note, here?: LockOwnerAgent): Promise<string[]> {
  const released: string[] = [];
  for (const service of services) {
    const lock = await store.getLock(keys.lock(service));
    if (!lock || lock.expiresAt <= Date.now() || !ownerIsDeadHere(lock.owner, here)) continue;
    if (!(await store.releaseLock(keys.lock(service), lock.owner))) continue;
    note(service, "lock.released", `released the deploy lock of ${service} held by ${lock.owner}: that agent's process is gone`, { owner: lock.owner });
    released.push(service);
  }
  return released;
}

/** How many history entries to look back through for ones left "running". */
const HISTORY_LOOKBACK = 50;

/**
 * Closes history entries still "running" that no flow can finish: no journal names them and the
 * lock is free. The agent died between writing the entry and its journal.
 */
export async function closeOrphanHistory(store: Store, services: string[], journals: Journal[], note: Note): Promise<number> {
  const journaled = new Set(journals.map((j) => j.historyId));
  let closed = 0;
  for (const service of services) {
    if (await store.getLock(keys.lock(service)).then((l) => l && l.expiresAt > Date.now())) continue;
    for (const h of await store.listHistory(service, HISTORY_LOOKBACK)) {
      if (h.outcome !== "running" || journaled.has(h.id)) continue;
      await store.updateHistory(h.id, { outcome: "aborted", finishedAt: Date.now(), error: "interrupted: the agent died before this flow was journaled; nothing of it ran, the live release is untouched" });
      note(service, "history.closed", `${h.kind} #${h.id} of ${service} ${h.release} was left running by a dead agent: marked aborted (interrupted)`, { historyId: h.id });
      closed++;
    }
  }
  return closed;
}
