// The status view: every service's live slot, release, slots, instances with their health, lock
// and degraded mark, the records set aside, the agent and the proxy. A deploy token sees its services only.
import type { ApiHost } from "./host.js";
import { errorMessage } from "../errors.js";
import { keys } from "../deploy/records.js";
import { otherSlot, SLOTS, type Slot } from "../runtime/contract.js";
import type { ServiceSpec } from "../spec/types.js";

/** How much of a set-aside value status shows: the reason says what was wrong with it. */
const QUARANTINE_VALUE_SHOWN = 200;

type SlotView = { release: string; state: string; heldBy?: { historyId: number; since: number; actor: string } } | null;

/** The new release on the preview address (during a deploy, or held): what a dashboard shows beside the live one. */
function previewOf(svc: ServiceSpec, color: Slot | null, slots: Record<string, unknown>): unknown {
  const slot: Slot = color ? otherSlot(color) : "blue";
  const rec = slots[slot] as SlotView;
  if (!rec || (rec.state !== "preview" && rec.state !== "held")) return null;
  return {
    slot, release: rec.release, held: rec.state === "held",
    host: svc.route.previewHost ?? null,
    url: svc.route.previewHost ? `http://${svc.route.previewHost}${svc.route.pathPrefix === "/" ? "" : svc.route.pathPrefix}` : null,
    ...(rec.heldBy ? { heldSince: rec.heldBy.since, heldBy: rec.heldBy.actor, historyId: rec.heldBy.historyId } : {}),
  };
}

/** A deploy under way in canary steps: the new slot and its share of users now. */
function canaryView(agent: ApiHost, service: string, color: Slot | null, slots: Record<string, unknown>): unknown {
  const c = agent.orchestrator.canaryOf(service);
  if (!c || c.slot === color) return null;
  const rec = slots[c.slot] as SlotView;
  return { slot: c.slot, release: rec?.release ?? null, percent: c.percent, steps: c.steps ?? null, stepStartedAt: c.stepStartedAt ?? null, stepIntervalMs: c.stepIntervalMs ?? null };
}

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
      preview: previewOf(svc, color, slots),
      canary: canaryView(agent, svc.name, color, slots),
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
