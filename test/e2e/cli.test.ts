// End to end: the CLI's contract with its users: help, exit codes, bad specs that start nothing.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it, type TestContext } from "node:test";
import { EXIT_CODES } from "../../src/errors.js";
import { cliIn } from "./helpers.js";

const cli = (args: string[], cwd: string) => cliIn(cwd, args);

const made: string[] = [];

/** A temp dir removed when test t ends, whatever its outcome. */
function tempDir(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "turquoise-cli-"));
  made.push(dir);
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

describe("cli", () => {
  it("--help lists every command; each command has help with examples", async (t) => {
    const dir = tempDir(t);
    const top = await cli(["--help"], dir);
    assert.equal(top.code, 0);
    for (const cmd of ["init", "up", "down", "deploy", "rollback", "status", "history", "logs", "kv", "token", "demo", "validate", "schema"]) {
      assert.match(top.stdout, new RegExp(`\\n  ${cmd} `));
      const h = await cli([cmd, "--help"], dir);
      assert.equal(h.code, 0, cmd);
      assert.match(h.stdout, /example/, `${cmd} --help has examples`);
    }
  });

  it("--version prints the version of the package it runs from", async (t) => {
    const dir = tempDir(t);
    const pkg = JSON.parse(fs.readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string };
    for (const arg of ["--version", "version"]) {
      const r = await cli([arg], dir);
      assert.equal(r.code, 0);
      assert.equal(r.stdout.trim(), `turquoise ${pkg.version}`);
    }
  });

  it("usage errors exit 2 and say what is wrong", async (t) => {
    const dir = tempDir(t);
    const unknown = await cli(["deplo"], dir);
    assert.equal(unknown.code, EXIT_CODES.USAGE);
    assert.match(unknown.stderr, /unknown command "deplo"/);
    const badFlag = await cli(["deploy", "books", "--releese", "v2"], dir);
    assert.equal(badFlag.code, EXIT_CODES.USAGE);
    assert.match(badFlag.stderr, /releese/);
    const missing = await cli(["deploy", "books"], dir);
    assert.equal(missing.code, EXIT_CODES.USAGE);
  });

  it("a bad spec: up exits 3 naming file, line and key, and starts nothing", async (t) => {
    const dir = tempDir(t);
    const file = path.join(dir, "turquoise.yml");
    fs.writeFileSync(file, `version: 1
services:
  books:
    command: ["node", "server.mjs"]
    cwd: releases/{release}
    route: { path: / }
    helth: { http: /health }
  shop:
    command: node shop.js
    cwd: shop/{release}
    route: { path: / }
    health: { http: /health }
`);
    const r = await cli(["up", "--detach"], dir);
    assert.equal(r.code, EXIT_CODES.SPEC_INVALID);
    assert.match(r.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}:7:5: services\\.books\\.helth: unknown key "helth".*did you mean "health"`));
    assert.match(r.stderr, /:9:\d+: services\.shop\.command: .*argv/);
    assert.equal(fs.existsSync(path.join(dir, ".turquoise")), false, "nothing was started or created");
    const json = await cli(["validate", "--json"], dir);
    assert.equal(json.code, EXIT_CODES.SPEC_INVALID);
    const body = JSON.parse(json.stdout) as { ok: boolean; errors: Array<{ line: number; path: string }> };
    assert.equal(body.ok, false);
    assert.ok(body.errors.some((e) => e.line === 7));
  });

  it("init writes a valid commented spec and a 0600 token; refuses to overwrite", async (t) => {
    const dir = tempDir(t);
    const r = await cli(["init", "--service", "books"], dir);
    assert.equal(r.code, 0, r.stderr);
    const text = fs.readFileSync(path.join(dir, "turquoise.yml"), "utf8");
    assert.match(text, /^# /m);
    assert.match(text, /books:/);
    assert.equal(fs.statSync(path.join(dir, ".turquoise", "token")).mode & 0o777, 0o600);
    assert.equal((await cli(["validate"], dir)).code, 0);
    const again = await cli(["init"], dir);
    assert.equal(again.code, EXIT_CODES.CONFLICT);
  });

  it("commands that need the agent say how to start it", async (t) => {
    const dir = tempDir(t);
    await cli(["init"], dir);
    const r = await cli(["status"], dir);
    assert.equal(r.code, EXIT_CODES.AGENT_UNREACHABLE);
    assert.match(r.stderr, /turquoise up --detach/);
  });

  it("schema prints the JSON Schema, matching the committed copy for editors", async (t) => {
    const r = await cli(["schema"], tempDir(t));
    const schema = JSON.parse(r.stdout) as { properties: Record<string, unknown> };
    assert.ok(schema.properties.services);
    const committed = fs.readFileSync(new URL("../../../schema/turquoise.schema.json", import.meta.url), "utf8");
    assert.deepEqual(JSON.parse(committed), schema, "run `node bin/turquoise.js schema > schema/turquoise.schema.json`");
  });

  it("leaves no turquoise-cli-* directory in the temp folder", () => {
    assert.ok(made.length > 0);
    assert.deepEqual(made.filter((dir) => fs.existsSync(dir)), []);
  });
});
