// `turquoise signal`, and the signal hooks: a signal to a service's live instances (or all of
// them), through their runtime.
import { TurquoiseError } from "../errors.js";
import type { OrchestratorDeps } from "./deps.js";
import { serviceNamed } from "./deps.js";

export async function signalService(d: Pick<OrchestratorDeps, "spec" | "records" | "fleet" | "event">, service: string, signal: NodeJS.Signals, all = false): Promise<number> {
  const svc = serviceNamed(d.spec, service);
  const color = await d.records.color(svc.name);
  const targets = all ? d.fleet.list(svc.name) : color ? d.fleet.list(svc.name, color) : [];
  if (targets.length === 0) throw new TurquoiseError("NOT_FOUND", `${svc.name} has no ${all ? "" : "live "}instances to signal`);
  await d.fleet.signal(targets, signal);
  d.event(svc.name, "signal", `${signal} sent to ${targets.length} instance(s)`);
  return targets.length;
}
