// The version of this Turquoise, read once from the package.json it ships with.
import { readFileSync } from "node:fs";

/** dist/src/version.js sits two directories below the package root, in a checkout and an install alike. */
export const VERSION: string = (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;
