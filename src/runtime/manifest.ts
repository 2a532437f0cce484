// What a release directory says about itself on disk, for every runtime that runs releases from a
// directory (process, and the memory twin): whether it is there, and the schema range it declares.
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { TurquoiseError } from "../errors.js";
import type { ReleaseDescription } from "./contract.js";

/** Where a process release declares the schema versions it runs on: {"schema": {"min": 1, "max": 2}}. */
export const RELEASE_MANIFEST = "turquoise.json";

/** The release's declared schema range, or null when it declares none. */
export function readDeclaredSchema(releaseDir: string): ReleaseDescription["schema"] {
  const file = join(releaseDir, RELEASE_MANIFEST);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
  let manifest: unknown;
  try {
    manifest = JSON.parse(text);
  } catch (e) {
    throw new TurquoiseError("USAGE", `${file} is not valid JSON: ${(e as Error).message}`);
  }
  const schema = (manifest as { schema?: unknown })?.schema;
  if (schema === undefined) return null;
  const { min, max } = (schema ?? {}) as { min?: unknown; max?: unknown };
  if (!Number.isInteger(min) || !Number.isInteger(max) || (min as number) < 0 || (min as number) > (max as number)) {
    throw new TurquoiseError("USAGE", `${file}: "schema" must be {"min": <integer>, "max": <integer>} with min ≤ max, got ${JSON.stringify(schema)}`);
  }
  return { min: min as number, max: max as number };
}

export function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
