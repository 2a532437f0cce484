import fs from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { REPO_ROOT } from "../../src/demo/workspace.js";
import { TurquoiseError } from "../../src/errors.js";
import { loadSpecText } from "../../src/spec/loader.js";
import { SPEC_JSON_SCHEMA } from "../../src/spec/schema.js";
import { STARTER_SPEC, starterSpec } from "../../src/spec/template.js";

function propertyNames(schema: unknown, out = new Set<string>()): Set<string> {
  if (schema && typeof schema === "object") {
    const properties = (schema as { properties?: Record<string, unknown> }).properties;
    for (const name of Object.keys(properties ?? {})) out.add(name);
    for (const child of Object.values(schema)) propertyNames(child, out);
  }
  return out;
}

describe("starter spec", () => {
  it("loads with no errors and no warnings", () => {
    const { spec, errors, warnings } = loadSpecText(STARTER_SPEC, "/srv/app/turquoise.yml");
    assert.deepEqual(errors, []);
    assert.deepEqual(warnings, []);
    assert.deepEqual(Object.keys(spec!.services), ["web"]);
  });

  it("mentions every key of the schema", () => {
    const missing = [...propertyNames(SPEC_JSON_SCHEMA)].filter((name) => !STARTER_SPEC.includes(`${name}:`) && !STARTER_SPEC.includes(`${name} `));
    assert.deepEqual(missing, []);
  });

  it("takes the service name, cwd and command", () => {
    const text = starterSpec({ service: "books", cwd: "examples/books service/{release}", command: ["node", "--enable-source-maps", "server.js"] });
    const { spec, errors } = loadSpecText(text, "/srv/app/turquoise.yml");
    assert.deepEqual(errors, []);
    const books = spec!.services.books!;
    assert.equal(books.cwd, "/srv/app/examples/books service/{release}");
    assert.deepEqual(books.command, ["node", "--enable-source-maps", "server.js"]);
    // Routed by path, so that curl http://127.0.0.1:8080/ reaches it; a host is one commented line away.
    assert.equal(books.route.host, undefined);
    assert.equal(books.route.pathPrefix, "/");
    assert.match(text, /^ *# +host: "books\.example\.com"/m);
  });

  it("routes as the README's minimal spec does", () => {
    const readme = fs.readFileSync(path.join(REPO_ROOT, "README.md"), "utf8");
    const minimal = /A minimal spec:\n\n```yaml\n([\s\S]*?)```/.exec(readme);
    assert.ok(minimal, "README has its minimal spec");
    const fromReadme = loadSpecText(minimal[1]!.replace("${DATABASE_URL}", "sqlite:books.db"), "/srv/app/turquoise.yml");
    assert.deepEqual(fromReadme.errors, []);
    const fromInit = loadSpecText(starterSpec({ service: "books" }), "/srv/app/turquoise.yml");
    assert.deepEqual(fromInit.spec!.services.books!.route, fromReadme.spec!.services.books!.route);
  });

  it("refuses a service name the spec would reject", () => {
    assert.throws(() => starterSpec({ service: "Books" }), (err: unknown) => err instanceof TurquoiseError && err.code === "USAGE");
  });
});
