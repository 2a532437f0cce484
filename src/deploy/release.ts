// What a release says about itself: the schema versions it runs on. The runtime reads the
// declaration (process: <release dir>/turquoise.json; docker: the image label turquoise.schema);
// the CLI's --schema overrides it.
import { TurquoiseError } from "../errors.js";
import type { ReleaseInfo, SchemaRange } from "../plan/planner.js";

/** What a release name may hold: it becomes part of paths, image tags and pool ids. */
export const RELEASE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** A release name, or a usage error that names where the bad one came from (`--release`, `body.via`). */
export function checkReleaseName(value: unknown, from: string): string {
  if (typeof value === "string" && RELEASE_NAME.test(value)) return value;
  throw new TurquoiseError("USAGE", `${from} ${JSON.stringify(value)} is not a release name: write 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit (a release names a directory under cwd's {release}, or an image tag; never a path)`);
}

/**
 * The release as the planner sees it. A service with a database refuses a release that declares
 * nothing: running it on an unknown schema is exactly what Turquoise exists to prevent.
 */
export function releaseInfo(service: string, release: string, declared: SchemaRange | null, where: string, override?: SchemaRange): ReleaseInfo {
  const schema = override ?? declared;
  if (!schema) {
    throw new TurquoiseError("USAGE", `release "${release}" of ${service} declares no schema range, and ${service} has a database: declare it in ${where} or pass --schema N..M`);
  }
  return { name: release, schema };
}
