// The status view: every service's live slot, release, slots, instances with their health, lock
// and degraded mark, the records set aside, the agent and the proxy. A deploy token sees its services only.
import type { ApiHost } from "./host.js";
import { errorMessage } from "../errors.js";
import { keys } from "../deploy/records.js";
import { SLOTS } from "../runtime/contract.js";

/** How much of a set-aside value status shows: the reason says what was wrong with it. */
const QUARANTINE_VALUE_SHOWN = 200;

export async function status(agent: ApiHost, only?: string[]): Promise<unknown> {
  const services = [];
  for (const svc of Object.values(agent.spec.services)) {
    if (only && !only.includes(svc.name)) continue;
    const color = (await agent.records.color(svc.name)) ?? null;
    const slots: Record<string, unknown> = {};
    for (const slot of SLOTS) slots[slot] = (await agent.records.slot(svc.name, slot)) ?? null;
    const live = color ? (slots[color] as { release: string } | null) : null;
    // A follower checks no instance: it shows the leader's records, with their health unknown here.
    const known = agent.leads ? agent.fleet.list(svc.name) : (await agent.records.instances()).filter((i) => i.service === svc.name);
    const instances = known.map((i) => {
      const check = agent.monitor.state(i.id);
      return {
        id: i.id, slot: i.slot, release: i.release, address: `${i.host}:${i.port}`, ref: i.ref, startedAt: i.startedAt,
        health: check ? { status: check.status, history: check.history } : { status: "unknown", history: [] },
      };
    });
    services.push({
      name: svc.name,
      route: svc.route,
      color,
      release: live?.release ?? null,
      previous: (await agent.records.previous(svc.name)) ?? null,
      slots,
      instances,
      lock: (await agent.store.getLock(keys.lock(svc.name))) ?? null,
      degraded: (await agent.records.degraded(svc.name)) ?? null,
    });
  }
  const quarantined = (await agent.records.quarantined())
    .filter((q) => !only || (q.service !== null && only.includes(q.service)))
    .map((q) => ({ ...q, value: q.value.slice(0, QUARANTINE_VALUE_SHOWN) }));
  const proxy = { pid: agent.proxy.pid, address: `${agent.spec.proxy.host}:${agent.proxy.listenPort}` };
  return {
    quarantined,
    agent: { pid: process.pid, api: agent.apiUrl, startedAt: agent.startedAt, leader: agent.leads },
    // Several agents on one store: who leads, and who else is there.
    ...(agent.leadership.shared ? { cluster: await agent.leadership.view() } : {}),
    // The proxy's counters cover every service: not for a token scoped to some of them.
    proxy: only ? proxy : { ...proxy, stats: await agent.proxy.stats().catch((e) => ({ error: errorMessage(e) })) },
    services,
  };
}
