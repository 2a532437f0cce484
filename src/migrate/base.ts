// What the two drivers share: up and down are the same plan-then-run-each-step walk; a driver
// says how it locks and opens the database (run), reads what was applied, and runs one step.
import type { AppliedMigration, MigrateOptions, MigrationEvent, MigrationRun, MigrationStatus, MigrationStep, Migrator } from "./contract.js";
import { computeStatus, downChecksumsToRecord, dryRunResult, orderSteps, planDown, planUp, runSteps } from "./files.js";

export type Emit = (e: MigrationEvent) => void;

export abstract class StepMigrator<Db> implements Migrator {
  abstract readonly driver: "sqlite" | "postgres";
  abstract status(steps: MigrationStep[]): Promise<MigrationStatus>;
  abstract close(): Promise<void>;
  /** Takes the runner lock, opens the database, runs work, releases everything whatever happens. */
  protected abstract run(opts: MigrateOptions, work: (db: Db, emit: Emit) => Promise<MigrationRun>): Promise<MigrationRun>;
  protected abstract readApplied(db: Db): Promise<AppliedMigration[]>;
  protected abstract runStep(db: Db, step: MigrationStep, direction: "up" | "down", emit: Emit): Promise<void>;
  /** Records the down checksum of an applied step that has none yet. */
  protected abstract recordDownChecksum(db: Db, version: number, downChecksum: string): Promise<void>;

  up(steps: MigrationStep[], opts: MigrateOptions = {}): Promise<MigrationRun> {
    return this.migrate("up", steps, opts);
  }

  down(steps: MigrationStep[], opts: MigrateOptions & { to: number }): Promise<MigrationRun> {
    return this.migrate("down", steps, opts);
  }

  private async migrate(direction: "up" | "down", steps: MigrationStep[], opts: MigrateOptions): Promise<MigrationRun> {
    const ordered = orderSteps(steps);
    const planFor = (status: MigrationStatus) => (direction === "up" ? planUp(status, ordered, opts.to) : planDown(status, ordered, opts.to!));
    if (opts.dryRun) {
      const status = await this.status(ordered);
      return dryRunResult(status, planFor(status), direction, direction === "up" ? 0 : opts.to!);
    }
    return this.run(opts, async (db, emit) => {
      let applied = await this.readApplied(db);
      const missing = downChecksumsToRecord(ordered, applied);
      for (const m of missing) await this.recordDownChecksum(db, m.version, m.downChecksum);
      if (missing.length) applied = await this.readApplied(db);
      const status = computeStatus(ordered, applied);
      return runSteps(status, planFor(status), direction, opts.to, emit, (step) => this.runStep(db, step, direction, emit));
    });
  }
}
