// The way in to migrations: pick the driver for a database URL. Callers see only the contract.

import { TurquoiseError } from "../errors.js";
import type { Migrator } from "./contract.js";
import { PostgresMigrator } from "./postgres.js";
import { SqliteMigrator } from "./sqlite.js";

export interface OpenMigratorOptions {
  driver: "sqlite" | "postgres";
  /** The database URL; it may carry a password, so it is never printed as given. */
  url: string;
  /** What a relative sqlite path is resolved against (the spec file's directory). */
  baseDir: string;
  /** How long one step may wait for a lock held by live traffic (default 2 s). */
  lockTimeoutMs?: number;
  /** Retries, with exponential back-off, after a lock timeout (default 4, so 5 tries). */
  retries?: number;
}

export function openMigrator(opts: OpenMigratorOptions): Migrator {
  const tuning = {
    ...(opts.lockTimeoutMs === undefined ? {} : { lockTimeoutMs: opts.lockTimeoutMs }),
    ...(opts.retries === undefined ? {} : { retries: opts.retries }),
  };
  switch (opts.driver) {
    case "postgres":
      return new PostgresMigrator({ url: opts.url, ...tuning });
    case "sqlite":
      return new SqliteMigrator({ url: opts.url, baseDir: opts.baseDir, ...tuning });
    default:
      // The driver comes from a spec file; the type system cannot vouch for it.
      throw new TurquoiseError("USAGE", `unknown database driver "${String(opts.driver)}": use sqlite or postgres`);
  }
}

export type { Migrator } from "./contract.js";
export { readMigrations } from "./files.js";
export { describeDatabase, redactUrl } from "./redact.js";
