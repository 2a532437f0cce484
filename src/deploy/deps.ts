// What every part of the deploy flow is given, and the look-ups each command starts with: the
// service by name, its database, and the environment Turquoise adds to its instances.
import { TurquoiseError } from "../errors.js";
import type { Proxy } from "../proxy/contract.js";
import type { ServiceSpec, Spec } from "../spec/types.js";
import type { Store } from "../state/contract.js";
import { crashPoint } from "../util/failpoint.js";
import type { AgentMetrics } from "../metrics/agent.js";
import { ServiceDatabase } from "./database.js";
import type { Fleet } from "./fleet.js";
import type { MigrationMetricsHook } from "./migration-progress.js";
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
  /** Several agents share the store: every route table goes into it, where each agent's proxy follows it. */
  publishRoutes?: boolean;
  /** Where flows, lock waits and migrations are counted; absent without metrics.listen. */
  metrics?: Pick<AgentMetrics, "flowFinished" | "lockWaited" | "migrationApplied">;
  /**
   * Called at each point of a flow where an agent may die: "lock" once the lock is taken, "history"
   * once its history entry is written, right after each journal write with the entry written
   * ("plan:done", "flip:started", "flip:done"...), and "cleared" once the flow is recorded and its
   * journal removed, before its lock is released. In-process tests abandon the flow here, or break
   * a driver mid-flow. By default, the TURQUOISE_CRASH_AFTER failpoints (util/failpoint.ts).
   */
  failpoint?: (point: string) => void;
  /** Where backfill progress goes besides the client and the event log: the metrics hook (migration-progress.ts). */
  migrationMetrics?: MigrationMetricsHook;
}

/** Passes a failpoint of a flow: the deps' own hook, else the TURQUOISE_CRASH_AFTER one. */
export function passFailpoint(d: Pick<OrchestratorDeps, "failpoint">, point: string): void {
  if (d.failpoint) return d.failpoint(point);
  // The end-to-end tests name a step for the point right after its "done" (TURQUOISE_CRASH_AFTER=flip).
  crashPoint(point.endsWith(":done") ? point.slice(0, -":done".length) : point);
}

export function serviceNamed(spec: Spec, name: string): ServiceSpec {
  // Own keys only: "__proto__" or "constructor" is no service.
  const svc = Object.hasOwn(spec.services, name) ? spec.services[name] : undefined;
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
