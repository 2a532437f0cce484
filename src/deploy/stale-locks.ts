// Deploy locks left by an agent that died: a restarted agent releases them at once instead of
// waiting out their TTL, so that the first deploy after a crash is not refused as locked. Only
// locks whose owner names an agent process on this host that is gone: another host's agent (etcd)
// may be alive, and a live pid may be the owner still at work.
import os from "node:os";
import type { Store } from "../state/contract.js";
import { pidAlive } from "../util/proc.js";
import { keys } from "./records.js";

/**
 * The agent named in a lock owner ("… agent <host>:<pid> …", as the orchestrator, the supervisor
 * and warm expiry write it). The last one counts: the actor, earlier in the text, is the client's words.
 */
export function ownerAgent(owner: string): { host: string; pid: number } | undefined {
  const all = [...owner.matchAll(/\bagent ([^\s,():]+):(\d+)\b/g)];
  const last = all[all.length - 1];
  return last ? { host: last[1]!, pid: Number(last[2]) } : undefined;
}

/** Releases the deploy locks of services held by a dead agent of this host; returns the owners released. */
export async function releaseDeadAgentLocks(store: Store, services: string[], self = { host: os.hostname(), pid: process.pid }): Promise<Array<{ service: string; owner: string }>> {
  const released: Array<{ service: string; owner: string }> = [];
  for (const service of services) {
    const lock = await store.getLock(keys.lock(service));
    const agent = lock && ownerAgent(lock.owner);
    if (!lock || !agent || agent.host !== self.host || agent.pid === self.pid || pidAlive(agent.pid)) continue;
    if (await store.releaseLock(keys.lock(service), lock.owner)) released.push({ service, owner: lock.owner });
  }
  return released;
}
