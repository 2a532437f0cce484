// What a release says about itself: the schema versions it runs on. For the process runtime the
// declaration is <release dir>/turquoise.json, e.g. {"schema": {"min": 1, "max": 2}}; the CLI's
// --schema overrides it.
import fs from "node:fs";
import path from "node:path";
import { TurquoiseError } from "../errors.js";
import type { ReleaseInfo, SchemaRange } from "../plan/planner.js";

export const RELEASE_MANIFEST = "turquoise.json";

/** "2" or "1..3" → a range; anything else is a usage error. */
export function parseSchemaRange(text: string): SchemaRange {
  const m = /^(\d+)(?:\.\.(\d+))?$/.exec(text.trim());
  if (!m) throw new TurquoiseError("USAGE", `invalid schema range "${text}": write a version (2) or a range (1..3)`);
  const min = Number(m[1]);
  const max = Number(m[2] ?? m[1]);
  if (min > max) throw new TurquoiseError("USAGE", `invalid schema range "${text}": ${min} is above ${max}`);
  return { min, max };
}

export function formatRange(r: SchemaRange): string {
  return r.min === r.max ? String(r.min) : `${r.min}..${r.max}`;
}

/** The release's declared schema range, or null when it declares none. */
export function readDeclaredSchema(releaseDir: string): SchemaRange | null {
  const file = path.join(releaseDir, RELEASE_MANIFEST);
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
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

/**
 * The release as the planner sees it. A service with a database refuses a release that declares
 * nothing: running it on an unknown schema is exactly what Turquoise exists to prevent.
 */
export function releaseInfo(service: string, release: string, releaseDir: string, override?: SchemaRange): ReleaseInfo {
  const schema = override ?? readDeclaredSchema(releaseDir);
  if (!schema) {
    throw new TurquoiseError("USAGE", `release "${release}" of ${service} declares no schema range, and ${service} has a database: add {"schema": {"min": N, "max": M}} to ${path.join(releaseDir, RELEASE_MANIFEST)} or pass --schema N..M`);
  }
  return { name: release, schema };
}
