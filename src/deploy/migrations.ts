// `turquoise migrate`: the schema's status, or moving it by hand under the deploy lock. A target
// version outside the live release's range is refused: that change belongs in a deploy plan.
import { TurquoiseError } from "../errors.js";
import { openDatabase, serviceNamed, type OrchestratorDeps } from "./deps.js";
import { DeployLock } from "./lock.js";
import type { Planning } from "./planning.js";
import { formatRange } from "../plan/range.js";
import type { BackfillProgress } from "../migrate/contract.js";
import { progressRelay } from "./migration-progress.js";

export interface MigrationRequest {
  action: "status" | "up" | "down" | "to";
  to?: number;
  dryRun?: boolean;
  actor: string;
  /** Hears every backfill batch: the API streams it to the CLI's progress bar. */
  onProgress?: (p: BackfillProgress) => void;
}

export async function runMigrations(d: OrchestratorDeps, planning: Planning, service: string, req: MigrationRequest): Promise<Record<string, unknown>> {
  const svc = serviceNamed(d.spec, service);
  const db = openDatabase(d.spec, svc);
  if (!db) throw new TurquoiseError("USAGE", `${svc.name} has no database block in ${d.spec.file}: nothing to migrate`);
  const { status, steps } = await db.state();
  const color = await d.records.color(svc.name);
  const live = color ? await d.records.slot(svc.name, color) : undefined;
  const liveInfo = live ? await planning.releaseInfo(svc, live.release, live.schema) : null;
  const summary = {
    current: status.current,
    latest: steps.length ? steps[steps.length - 1]!.version : 0,
    applied: status.applied,
    pending: status.pending.map((p) => ({ version: p.version, name: p.name, phase: p.phase, transactional: p.transactional, hasDown: p.downFile !== undefined })),
    live: liveInfo ? { release: liveInfo.name, schema: liveInfo.schema } : null,
    backfills: (status.backfills ?? []).map((b) => ({ ...b, name: steps.find((s) => s.version === b.version)?.name ?? null })),
  };
  if (req.action === "status") return summary;

  const latest = summary.latest;
  const to = req.action === "up" ? (req.to ?? latest) : req.action === "down" ? (req.to ?? Math.max(0, status.current - 1)) : req.to;
  if (to === undefined || !Number.isInteger(to) || to < 0) throw new TurquoiseError("USAGE", `migrate ${req.action} needs a target version (an integer ≥ 0)`);
  if (to > latest) throw new TurquoiseError("USAGE", `no migration step reaches version ${to}: the last step in ${svc.database!.migrationsDir} is ${latest}`);
  const direction = to >= status.current ? "up" : "down";
  if (req.action !== "to" && req.action !== direction && to !== status.current) throw new TurquoiseError("USAGE", `migrate ${req.action} --to ${to}: the database is at ${status.current}, so that is a migrate ${direction}`);
  if (liveInfo && (to < liveInfo.schema.min || to > liveInfo.schema.max)) {
    throw new TurquoiseError("PLAN_REFUSED", `migrating ${svc.name} to ${to} would break the live release ${liveInfo.name}, which runs on schema ${formatRange(liveInfo.schema)}; deploy a release that runs on ${to} (through a turquoise release if needed) and let the deploy migrate`);
  }
  if (req.dryRun) {
    const m = db.migrator();
    try {
      const run = direction === "up" ? await m.up(steps, { to, dryRun: true }) : await m.down(steps, { to, dryRun: true });
      return { ...summary, dryRun: true, from: run.from, to: run.to, steps: run.steps };
    } finally {
      await m.close();
    }
  }
  const owner = `${req.actor} (migrate ${direction} to ${to}, agent ${d.agentId}, #${Math.random().toString(36).slice(2, 8)})`;
  // A long migration must not outlive its lock: it is renewed as a deploy's is.
  const lock = await DeployLock.take(d.store, d.event, svc.name, owner);
  try {
    const lines: string[] = [];
    const progress = progressRelay(svc.name, { ...(req.onProgress ? { live: req.onProgress } : {}), event: d.event, ...(d.migrationMetrics ? { metrics: d.migrationMetrics } : {}) });
    const result = await db.migrate(direction, to, (l) => lines.push(l), progress, () => d.metrics?.migrationApplied(svc.name, direction));
    d.event(svc.name, "migrate", `${req.actor}: ${result}`, { from: status.current, to });
    return { ...summary, dryRun: false, from: status.current, to, result, log: lines };
  } finally {
    await lock.release();
  }
}
