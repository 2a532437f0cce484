// The one place that picks a Store driver, so callers depend on the contract and not on a driver.

import { TurquoiseError } from "../errors.js";
import type { Store } from "./contract.js";
import { MemoryStore } from "./memory.js";
import { SqliteStore } from "./sqlite.js";

export type { Store } from "./contract.js";

export function openStore(opts: { driver: "sqlite" | "memory"; path?: string }): Store {
  switch (opts.driver) {
    case "memory":
      return new MemoryStore();
    case "sqlite":
      if (!opts.path) throw new TurquoiseError("USAGE", "the sqlite state driver needs a file path");
      return new SqliteStore(opts.path);
    default:
      throw new TurquoiseError("USAGE", `unknown state driver "${String((opts as { driver: unknown }).driver)}"`);
  }
}
