// Schema ranges as people write them and read them: "2" or "1..3". The runtime reads them from a
// release's declaration, the API and the CLI from --schema, the planner's messages print them.
import { TurquoiseError } from "../errors.js";
import type { SchemaRange } from "./planner.js";

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
