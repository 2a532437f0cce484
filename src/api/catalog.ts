// The registry's read views: services, their instances and their health checks, as Consul's
// catalog and health endpoints show them.
import type { ApiHost } from "./host.js";
import { TurquoiseError } from "../errors.js";
import type { WatchSpec } from "../spec/types.js";
import { isInternalKey, isInternalPrefix } from "../state/namespace.js";
import { userGet, userList } from "./kv.js";

export interface CatalogInstance {
  id: string;
  service: string;
  address: string;
  port: number;
  slot: string;
  release: string;
  /** live: in the proxy's route; warm: kept for an instant rollback; preview: a deploy's new slot. */
  role: "live" | "warm" | "preview";
  health: { status: string; output: string };
}

export async function catalog(agent: ApiHost): Promise<Array<{ name: string; color: string | null; release: string | null; instances: number; passing: number; degraded: unknown }>> {
  const out = [];
  for (const name of Object.keys(agent.spec.services)) {
    const instances = await catalogService(agent, name);
    const color = (await agent.records.color(name)) ?? null;
    const live = color ? await agent.records.slot(name, color) : undefined;
    out.push({
      name, color, release: live?.release ?? null, instances: instances.length,
      passing: instances.filter((i) => i.role === "live" && i.health.status === "passing").length,
      degraded: (await agent.records.degraded(name)) ?? null,
    });
  }
  return out;
}

export async function catalogService(agent: ApiHost, name: string): Promise<CatalogInstance[]> {
  if (!agent.spec.services[name]) throw new TurquoiseError("NOT_FOUND", `no service named "${name}"`);
  const color = await agent.records.color(name);
  const out: CatalogInstance[] = [];
  for (const i of agent.fleet.list(name)) {
    const rec = await agent.records.slot(name, i.slot);
    const role = i.slot === color && rec?.state === "live" ? "live" : rec?.state === "warm" ? "warm" : "preview";
    const check = agent.monitor.state(i.id);
    out.push({
      id: i.id, service: name, address: i.host, port: i.port, slot: i.slot, release: i.release, role,
      health: { status: check?.status ?? (role === "preview" ? "critical" : "passing"), output: check?.lastResult?.output ?? "" },
    });
  }
  return out;
}

/** Health checks, optionally of one service and in one state (passing, warning, critical). */
export async function checks(agent: ApiHost, service?: string, state?: string): Promise<Array<{ id: string; service: string; slot: string; release: string; status: string; output: string; history: unknown[] }>> {
  if (state && !["passing", "warning", "critical"].includes(state)) throw new TurquoiseError("USAGE", `?state must be passing, warning or critical, got "${state}"`);
  return agent.fleet
    .list(service)
    .flatMap((i) => {
      const check = agent.monitor.state(i.id);
      if (!check) return [];
      return [{ id: i.id, service: i.service, slot: i.slot, release: i.release, status: check.status, output: check.lastResult?.output ?? "", history: check.history }];
    })
    .filter((c) => !state || c.status === state);
}

/** What a watch looks at, as the JSON its handler gets. */
export async function watchView(agent: ApiHost, w: WatchSpec): Promise<unknown> {
  switch (w.type) {
    case "service":
      return catalogService(agent, w.service!);
    case "checks":
      // Without the history, which changes with every check: the handler runs when a state changes.
      return (await checks(agent, w.service, w.state)).map(({ history: _history, ...c }) => c);
    case "key":
      return (await userGet(agent.store, w.key!)) ?? null;
    case "keyprefix":
      return userList(agent.store, w.prefix ?? "");
  }
}

/** Why a watch may not run: it looks at the agent's own records. Undefined for a watch that may. */
export function watchRefusal(w: WatchSpec): string | undefined {
  if (w.type === "key" && w.key !== undefined && isInternalKey(w.key)) return `its key "${w.key}" is in the agent's reserved namespace`;
  if (w.type === "keyprefix" && isInternalPrefix(w.prefix ?? "")) return `its prefix "${w.prefix}" is in the agent's reserved namespace`;
  return undefined;
}
