// A service's shared database, as the orchestrator uses it: the URL resolved from the agent's
// environment (never printed), the migration steps on disk, and a migrator to run them.
import path from "node:path";
import { TurquoiseError } from "../errors.js";
import type { BackfillProgress, MigrationEvent, MigrationStatus, MigrationStep, Migrator } from "../migrate/contract.js";
import { readMigrations } from "../migrate/files.js";
import { openMigrator } from "../migrate/index.js";
import type { StepInfo } from "../plan/planner.js";
import type { DatabaseSpec } from "../spec/types.js";
import { describeProgress } from "./migration-progress.js";
import { formatMs } from "../util/duration.js";

/** Replaces ${VAR} with the agent's environment; names the missing variable, never the value. */
export function resolveDatabaseUrl(db: DatabaseSpec, specDir: string, env: NodeJS.ProcessEnv = process.env): string {
  const url = db.url.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
    const v = env[name];
    if (v === undefined || v === "") throw new TurquoiseError("USAGE", `database.url refers to \${${name}}, which is not set in the agent's environment`);
    return v;
  });
  if (db.driver !== "sqlite") return url;
  // Instances run in their release directory: give them an absolute SQLite path.
  const file = url.replace(/^sqlite:(\/\/)?/, "");
  return `sqlite://${path.resolve(specDir, file)}`;
}

export interface SchemaState {
  status: MigrationStatus;
  steps: MigrationStep[];
}

export class ServiceDatabase {
  private constructor(readonly spec: DatabaseSpec, readonly url: string, private readonly specDir: string) {}

  static open(db: DatabaseSpec, specDir: string): ServiceDatabase {
    return new ServiceDatabase(db, resolveDatabaseUrl(db, specDir), specDir);
  }

  migrator(): Migrator {
    return openMigrator({ driver: this.spec.driver, url: this.url, baseDir: this.specDir, lockTimeoutMs: this.spec.lockTimeoutMs, retries: this.spec.retries });
  }

  /** Steps on disk and what the database has applied; refuses when an applied step was edited. */
  async state(): Promise<SchemaState> {
    const steps = await readMigrations(this.spec.migrationsDir);
    const m = this.migrator();
    try {
      const status = await m.status(steps);
      if (status.problems.length) {
        throw new TurquoiseError("CONFLICT", `the migrations on disk disagree with the database:\n${status.problems.map((p) => `  ${p.message}`).join("\n")}`, { data: { problems: status.problems } });
      }
      return { status, steps };
    } finally {
      await m.close();
    }
  }

  /**
   * Runs the steps between the current version and `to`, up or down; onApplied after each step
   * that went through. onProgress hears every backfill batch (migration-progress.ts paces it for each listener).
   */
  async migrate(direction: "up" | "down", to: number, onLine: (s: string) => void, onProgress?: (p: BackfillProgress) => void, onApplied: () => void = () => {}): Promise<string> {
    const steps = await readMigrations(this.spec.migrationsDir);
    const m = this.migrator();
    try {
      const onEvent = (e: MigrationEvent) => {
        if (e.type === "waiting-for-lock") onLine("waiting for the migration lock");
        else if (e.type === "step-retry") onLine(`step ${e.version}: ${e.reason}; retry ${e.attempt} in ${formatMs(e.delayMs)}`);
        else if (e.type === "step-done") {
          onLine(`${e.direction} ${String(e.version).padStart(4, "0")}_${e.name} in ${formatMs(e.durationMs)}`);
          onApplied();
        } else if (e.type === "index-cleanup") onLine(`step ${e.version}: dropped the invalid index ${e.index} that an earlier, failed build left, before building it again`);
        else if (e.type === "backfill-progress") {
          if (e.done || (e.batches === 0 && e.resumedFrom > 0)) onLine(describeProgress(e));
          onProgress?.(e);
        }
      };
      const run = direction === "up" ? await m.up(steps, { to, onEvent }) : await m.down(steps, { to, onEvent });
      return `schema ${run.from} → ${run.to}: ${run.steps.map((s) => `${s.direction} ${String(s.version).padStart(4, "0")}_${s.name}`).join(", ") || "nothing to run"}`;
    } finally {
      await m.close();
    }
  }
}

export function stepInfos(steps: MigrationStep[]): StepInfo[] {
  return steps.map((s) => ({ version: s.version, name: s.name, phase: s.phase, hasDown: s.downFile !== undefined, irreversible: s.irreversible }));
}
