import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { SPEC_JSON_SCHEMA } from "../../src/spec/schema.js";

// Every schema that declares properties, with its JSON pointer.
function objectSchemas(schema: unknown, pointer = "#"): Array<[string, Record<string, unknown>]> {
  if (!schema || typeof schema !== "object") return [];
  const found: Array<[string, Record<string, unknown>]> = [];
  const record = schema as Record<string, unknown>;
  if (record.properties) found.push([pointer, record]);
  // An "if" is a condition on values already described, not a place keys are declared.
  for (const [key, child] of Object.entries(record)) if (key !== "if") found.push(...objectSchemas(child, `${pointer}/${key}`));
  return found;
}

describe("SPEC_JSON_SCHEMA", () => {
  it("describes every property, so editors can show help for it", () => {
    const undescribed = objectSchemas(SPEC_JSON_SCHEMA).flatMap(([pointer, schema]) =>
      Object.entries(schema.properties as Record<string, { description?: string; $ref?: string }>)
        .filter(([, prop]) => !prop.description)
        .map(([name]) => `${pointer}/properties/${name}`),
    );
    assert.deepEqual(undescribed, []);
  });

  it("rejects unknown keys in every object", () => {
    const open = objectSchemas(SPEC_JSON_SCHEMA)
      .filter(([, schema]) => schema.additionalProperties !== false)
      .map(([pointer]) => pointer);
    assert.deepEqual(open, []);
  });
});
