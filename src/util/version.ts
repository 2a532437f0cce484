// Turquoise's version, read once from the package.json it ships with (dist/src/util → the root).
import fs from "node:fs";

export const TURQUOISE_VERSION: string = (JSON.parse(fs.readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string }).version;
