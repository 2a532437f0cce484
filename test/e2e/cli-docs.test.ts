// docs/cli.md's deploy, rollback and plan examples, run as written against real workspaces and
// compared line by line with what the CLI prints (times, durations, ids and ports aside), so the
// docs cannot show output the CLI does not print. Each example block is marked in the markdown
// source with <!-- example: <workspace> -->; a plan printed in an unmarked block fails the test.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { BOOKS_DIR, REPO_ROOT, createWorkspace, type Workspace, type WorkspaceOptions } from "../../src/demo/workspace.js";
import type { HistoryEntry } from "../../src/state/contract.js";

const CLI_MD = path.join(REPO_ROOT, "docs", "cli.md");

/** The workspaces the examples run in: books with its SQLite database, and without one. */
const SERVICE_YAML = `    smoke:
      - name: health answers
        http: { path: /health }
    hooks:
      after_flip:
        - signal: { service: books, signal: SIGHUP }
`;
const WORKSPACES: Record<string, { opts: WorkspaceOptions; setup: string[][] }> = {
  db: {
    opts: { replicas: 2, keepPrevious: "5m", deployTimeout: "30s", drainTimeout: "10s", extraServiceYaml: SERVICE_YAML, database: { driver: "sqlite", url: "sqlite:books.db", migrations: path.join(BOOKS_DIR, "migrations", "sqlite") } },
    setup: [["up", "--detach"], ["deploy", "books", "--release", "v1"]],
  },
  nodb: {
    opts: { replicas: 2, keepPrevious: "5m", deployTimeout: "30s", drainTimeout: "10s" },
    setup: [["up", "--detach"]],
  },
};

interface Example {
  workspace: string;
  /** The block's lines: `$ turquoise ...` and `$ echo $?` commands, each followed by its output. */
  lines: string[];
}

function examples(): { marked: Example[]; unmarked: string[] } {
  const text = fs.readFileSync(CLI_MD, "utf8");
  const marked: Example[] = [];
  const unmarked: string[] = [];
  for (const m of text.matchAll(/(<!-- example: (\w+)[^>]*-->\n)?```\n([\s\S]*?)```/g)) {
    const body = m[3]!;
    if (m[2]) marked.push({ workspace: m[2], lines: body.replace(/\n$/, "").split("\n") });
    else if (/^(deploy|rollback) (books \S+ \(live: |plan for )/m.test(body)) unmarked.push(body.split("\n")[0]!);
  }
  return { marked, unmarked };
}

/** What varies from run to run: times, durations (and the columns they pad), instance ids, ports, pids. */
function normalize(lines: string[]): string[] {
  const out = lines.map((l) =>
    l.trimEnd()
      .replace(/(\S) {2,}/g, "$1 ")
      .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z/g, "<time>")
      .replace(/\b\d+m\d+s\b|\b\d+(\.\d+)?(ms|s|m)\b/g, "<duration>")
      .replace(/\b(books)-(blue|green)-[0-9a-f]{6}\b/g, "<instance>")
      .replace(/127\.0\.0\.1:\d+/g, "127.0.0.1:<port>")
      .replace(/\bpid \d+/g, "pid <pid>"),
  );
  while (out.length && out[out.length - 1] === "") out.pop();
  return out;
}

/** Runs an example's commands in order and writes the transcript the way the docs show one. */
async function transcript(ws: Workspace, example: Example): Promise<string[]> {
  const out: string[] = [];
  let lastCode = 0;
  for (const line of example.lines.filter((l) => l.startsWith("$ "))) {
    out.push(line);
    const command = line.slice(2).replace(/\s+#.*$/, "");
    if (command === "echo $?") {
      out.push(String(lastCode));
      continue;
    }
    const [bin, ...args] = command.split(/\s+/);
    assert.equal(bin, "turquoise", `an example runs turquoise commands only: ${line}`);
    const r = await ws.cli(args, { allowFail: true });
    lastCode = r.code;
    out.push(...(r.stdout + r.stderr).replace(/\n$/, "").split("\n"));
  }
  return out;
}

describe("docs/cli.md examples", () => {
  const spaces = new Map<string, Workspace>();
  before(async () => {
    for (const [name, { opts, setup }] of Object.entries(WORKSPACES)) {
      const ws = await createWorkspace(opts);
      spaces.set(name, ws);
      for (const args of setup) await ws.cli(args);
    }
  });
  after(async () => {
    for (const ws of spaces.values()) await ws.destroy();
  });

  it("every deploy, rollback and plan example with a plan is marked to be run here", () => {
    const { marked, unmarked } = examples();
    assert.deepEqual(unmarked, []);
    assert.ok(marked.length >= 4, `${marked.length} examples marked`);
    for (const e of marked) assert.ok(e.workspace in WORKSPACES, `unknown workspace ${e.workspace}`);
  });

  it("the deploy, rollback and plan examples are what the CLI prints, plan lines and steps alike", { timeout: 300_000 }, async () => {
    for (const example of examples().marked) {
      const real = await transcript(spaces.get(example.workspace)!, example);
      assert.deepEqual(normalize(example.lines), normalize(real), `docs/cli.md example "${example.lines[0]}" differs from the CLI; it printed:\n${real.join("\n")}`);
    }
  });

  // After the examples: the deploy through v2-turquoise and the rollback back through it.
  it("history shows the turquoise release a deploy went through", async () => {
    const ws = spaces.get("db")!;
    const entries = JSON.parse((await ws.cli(["history", "books", "--json"])).stdout) as HistoryEntry[];
    const through = entries.find((h) => h.kind === "deploy" && h.release === "v3");
    assert.ok(through, `a deploy of v3 in ${JSON.stringify(entries.map((h) => h.release))}`);
    assert.equal(through.via, "v2-turquoise");
    assert.equal(entries.find((h) => h.release === "v2" && h.kind === "deploy")!.via, null, "a plain flip went through nothing");
    const text = (await ws.cli(["history", "books"])).stdout;
    assert.match(text, new RegExp(`^#${through.id} \\S+ deploy   v2 → v2-turquoise → v3  succeeded `, "m"));
    assert.match(text, /rollback v3 → v2-turquoise → v2  succeeded /);
  });
});
