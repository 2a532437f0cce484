// The Migrator contract: versioned schema steps on a shared database. Implementations: sqlite and
// postgres. One shared suite (test/migrate/contract.test-suite.ts) runs against both, for real.

/** How a step's data change is run in batches (backfill.ts runs it). */
export interface BackfillSpec {
  table: string;
  /** A column the table is ordered by (best the primary key, or one with an index); rows whose key is NULL are not visited. */
  key: string;
  batchSize: number;
  /** A fixed pause between batches; null: as long as the last batch took (the database's load sets the pace). */
  pauseMs: number | null;
}

/** A backfill an interrupted run left, as its progress table records it. */
export interface UnfinishedBackfill {
  version: number;
  direction: "up" | "down";
  rowsDone: number;
  batches: number;
  updatedAt: number;
}

/**
 * expand: safe while the old release runs (adds things). contract: only once no running release
 * needs the old schema (removes or rewrites things).
 */
export type MigrationPhase = "expand" | "contract";

/** One versioned step, read from the migrations directory. */
export interface MigrationStep {
  /** From the file name: 0003_split_name.up.sql → 3. Versions are unique and ordered. */
  version: number;
  /** From the file name: "split_name". */
  name: string;
  phase: MigrationPhase;
  /** False when the step declares it cannot run in a transaction (e.g. CREATE INDEX CONCURRENTLY). */
  transactional: boolean;
  /** True when the step declares that its down cannot give back what up removed. */
  irreversible: boolean;
  /** Absolute path of the up file (.up.sql, or the .js/.mjs module). */
  upFile: string;
  /** Absolute path of the down file; undefined when the step has no down. */
  downFile?: string;
  /** sha256 (hex) of the up file's bytes, recorded when applied. */
  checksum: string;
  /**
   * sha256 (hex) of the .down.sql file's bytes, recorded when applied; undefined without one. A
   * module step has none of its own: its down(db) is in the file the up checksum covers.
   */
  downChecksum?: string;
  /**
   * Set when the up or down file declares `-- turquoise: backfill ...`: that direction runs its
   * statement in keyset-ordered batches, each its own transaction, resumable after a crash.
   */
  backfill?: { up?: BackfillSpec; down?: BackfillSpec };
}

export interface AppliedMigration {
  version: number;
  name: string;
  checksum: string;
  /**
   * The down file's sha256 when the step was applied. null: no down file then, or a row written by
   * a Turquoise from before down checksums; the next up or down run records the file as it is then.
   */
  downChecksum: string | null;
  phase: MigrationPhase;
  appliedAt: number;
}

export interface MigrationProblem {
  version: number;
  message: string;
}

export interface MigrationStatus {
  /** Highest applied version; 0 for a fresh database. */
  current: number;
  applied: AppliedMigration[];
  /** Steps in the directory above current, in order. */
  pending: MigrationStep[];
  /** Applied steps whose up or down file changed (checksum) or disappeared. Any problem blocks up/down. */
  problems: MigrationProblem[];
  /** Backfills an interrupted run left (status() reads them; a run resumes them). */
  backfills?: UnfinishedBackfill[];
}

export type MigrationEvent =
  | { type: "waiting-for-lock" }
  | { type: "step-started"; version: number; name: string; direction: "up" | "down" }
  | { type: "step-retry"; version: number; attempt: number; reason: string; delayMs: number }
  | { type: "step-done"; version: number; name: string; direction: "up" | "down"; durationMs: number }
  | { type: "index-cleanup"; version: number; index: string }
  | BackfillProgress;

/** A backfill's progress: once when it starts (or resumes), after every batch, and once when done. */
export interface BackfillProgress {
  type: "backfill-progress";
  version: number;
  name: string;
  direction: "up" | "down";
  table: string;
  rowsDone: number;
  /** The database's statistics (or a count): an estimate, never below rowsDone. */
  rowsEstimated: number;
  batches: number;
  /** Rows a second over this run so far. */
  rowsPerSec: number;
  /** Time left at that rate; null before the first batch. */
  etaMs: number | null;
  /** Rows an earlier, interrupted run had already committed. */
  resumedFrom: number;
  done: boolean;
}

export interface MigrateOptions {
  /** Target version: up to it (default: the last step) or down to it (required for down). */
  to?: number;
  /** Prints what would run, changes nothing. */
  dryRun?: boolean;
  onEvent?: (e: MigrationEvent) => void;
  /** Fail instead of waiting when another runner holds the migration lock. */
  noWait?: boolean;
}

export interface MigrationRun {
  from: number;
  to: number;
  /** Steps run (or, with dryRun, that would run), in order. */
  steps: Array<{ version: number; name: string; direction: "up" | "down"; durationMs: number }>;
  dryRun: boolean;
}

export interface Migrator {
  readonly driver: "sqlite" | "postgres";
  /** Fails with a clear error (no secrets) when the database is unreachable. */
  status(steps: MigrationStep[]): Promise<MigrationStatus>;
  up(steps: MigrationStep[], opts?: MigrateOptions): Promise<MigrationRun>;
  down(steps: MigrationStep[], opts: MigrateOptions & { to: number }): Promise<MigrationRun>;
  close(): Promise<void>;
}
