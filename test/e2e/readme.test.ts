// The README's quick start, run as written, in a copy of the repository so that its build
// cannot disturb the tests running beside it.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { it } from "node:test";
import { REPO_ROOT } from "../../src/demo/workspace.js";

const run = promisify(execFile);

function quickStart(): string[] {
  const readme = fs.readFileSync(path.join(REPO_ROOT, "README.md"), "utf8");
  const section = readme.split(/^## /m).find((s) => s.startsWith("Quick start"));
  assert.ok(section, "README has a Quick start section");
  const block = /```bash\n([\s\S]*?)```/.exec(section)![1]!;
  return block.trim().split("\n");
}

it("the README quick start is two commands: install-and-demo, then the tests", () => {
  const lines = quickStart();
  assert.equal(lines.length, 2);
  assert.equal(lines[1], "npm test");
  const ci = fs.readFileSync(path.join(REPO_ROOT, ".ci", "run"), "utf8");
  assert.match(ci, /^npm test$/m, ".ci/run calls the README's test command");
});

it("the README quick start's first command shows a zero-downtime deploy", { timeout: 300_000 }, async () => {
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), "turquoise-readme-"));
  try {
    for (const entry of ["package.json", "package-lock.json", "tsconfig.json", "bin", "src", "test", "bench", "examples", "node_modules"]) {
      if (fs.existsSync(path.join(REPO_ROOT, entry))) fs.cpSync(path.join(REPO_ROOT, entry), path.join(copy, entry), { recursive: true, verbatimSymlinks: true });
    }
    const { stdout } = await run("bash", ["-c", quickStart()[0]!], { cwd: copy, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, npm_config_audit: "false", npm_config_fund: "false" } });
    assert.match(stdout, /requests served: \d+/);
    assert.match(stdout, /failed: 0/);
    assert.match(stdout, /zero failed requests/);
  } finally {
    fs.rmSync(copy, { recursive: true, force: true });
  }
});
