// What every part of the deploy flow is given, and the look-ups each command starts with: the
// service by name, its database, and the environment Turquoise adds to its instances.
import { TurquoiseError } from "../errors.js";
import type { Proxy } from "../proxy/contract.js";
import type { ServiceSpec, Spec } from "../spec/types.js";
import type { Store } from "../state/contract.js";
import { ServiceDatabase } from "./database.js";
import type { Fleet } from "./fleet.js";
import type { RecordEvent, Records } from "./records.js";

/** Records an agent event: a log line, a row in the Store's event log, a push to the event stream. */
export type EventLog = RecordEvent;

export interface OrchestratorDeps {
  spec: Spec;
  store: Store;
  records: Records;
  fleet: Fleet;
  proxy: Proxy;
  apiUrl: string;
  agentId: string;
  event: EventLog;
}

export function serviceNamed(spec: Spec, name: string): ServiceSpec {
  const svc = spec.services[name];
  if (!svc) throw new TurquoiseError("NOT_FOUND", `no service named "${name}" in ${spec.file}; known: ${Object.keys(spec.services).join(", ") || "none"}`);
  return svc;
}

export function openDatabase(spec: Spec, svc: ServiceSpec): ServiceDatabase | undefined {
  return svc.database ? ServiceDatabase.open(svc.database, spec.dir) : undefined;
}

/** The environment Turquoise adds to a service's instances: its database URL, when it has one. */
export function instanceEnvFor(spec: Spec, svc: ServiceSpec): Record<string, string> {
  const db = openDatabase(spec, svc);
  return db ? { [db.spec.envName]: db.url } : {};
}
