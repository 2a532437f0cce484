// turquoise.yml's log section and the environment variables over it.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TurquoiseError } from "../../src/errors.js";
import { chooseFormat, logSettings } from "../../src/log/settings.js";
import { loadSpecText } from "../../src/spec/loader.js";

const SPEC = ["version: 1", "services:", "  books:", "    command: [node, server.js]", "    cwd: .", "    route: { path: / }", "    health: { http: /health }"];

describe("log settings", () => {
  it("default to info and auto, and read the spec's log section", () => {
    assert.deepEqual(loadSpecText(SPEC.join("\n"), "/srv/turquoise.yml").spec!.log, { level: "info", format: "auto" });
    assert.deepEqual(loadSpecText([...SPEC, "log: { level: debug, format: json }"].join("\n"), "/srv/turquoise.yml").spec!.log, { level: "debug", format: "json" });
  });

  it("name a bad level or format with its line and the allowed values", () => {
    const r = loadSpecText([...SPEC, "log:", "  level: verbose", "  format: xml", "  colour: true"].join("\n"), "/srv/turquoise.yml");
    assert.deepEqual(r.errors.map((e) => [e.line, e.path, e.message]), [
      [9, "log.level", 'must be one of "debug", "info", "warn", "error", got "verbose"'],
      [10, "log.format", 'must be one of "auto", "json", "pretty", got "xml"'],
      [11, "log.colour", 'unknown key "colour" in log'],
    ]);
  });

  it("take TURQUOISE_LOG_LEVEL and TURQUOISE_LOG_FORMAT over the spec, and refuse bad ones by name", () => {
    const spec = { level: "info" as const, format: "auto" as const };
    assert.deepEqual(logSettings(spec, {}), spec);
    assert.deepEqual(logSettings(spec, { TURQUOISE_LOG_LEVEL: " DEBUG ", TURQUOISE_LOG_FORMAT: "json" }), { level: "debug", format: "json" });
    assert.deepEqual(logSettings(spec, { TURQUOISE_LOG_LEVEL: "" }), spec);
    assert.throws(() => logSettings(spec, { TURQUOISE_LOG_LEVEL: "verbose" }), (e: unknown) => e instanceof TurquoiseError && e.code === "USAGE" && e.message === 'TURQUOISE_LOG_LEVEL must be one of debug, info, warn, error; got "verbose"');
    assert.throws(() => logSettings(spec, { TURQUOISE_LOG_FORMAT: "x".repeat(10_000) }), /^TurquoiseError: TURQUOISE_LOG_FORMAT must be one of auto, json, pretty; got "x{40}"$/);
  });

  it("auto means pretty on a terminal, JSON elsewhere; json and pretty mean themselves", () => {
    assert.deepEqual([chooseFormat("auto", true), chooseFormat("auto", false), chooseFormat("json", true), chooseFormat("pretty", false)], ["pretty", "json", "json", "pretty"]);
  });
});
