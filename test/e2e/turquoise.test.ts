// End to end, on a real SQLite file and a real PostgreSQL server: the blue → turquoise → green
// path and back under load, and the ways a schema change must be refused or undone.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { BOOKS_DIR, createWorkspace, type Workspace, type WorkspaceOptions } from "../../src/demo/workspace.js";
import { EXIT_CODES } from "../../src/errors.js";
import { LoadGenerator } from "../../src/demo/load.js";
import { freshDatabase } from "../support/postgres.js";
import { get, instancePids, releaseServing, status } from "./helpers.js";

interface Db { database: NonNullable<WorkspaceOptions["database"]>; env: NodeJS.ProcessEnv; drop(): Promise<void> }

const DRIVERS: Record<string, () => Promise<Db>> = {
  sqlite: async () => ({ database: { driver: "sqlite", url: "sqlite:books.db" }, env: {}, drop: async () => {} }),
  postgres: async () => {
    const db = await freshDatabase();
    // The spec names the variable; the URL with its password lives only in the agent's environment.
    return { database: { driver: "postgres", url: "${BOOKS_DATABASE_URL}" }, env: { BOOKS_DATABASE_URL: db.url }, drop: db.drop };
  },
};

async function schemaVersion(ws: Workspace): Promise<number> {
  return (JSON.parse((await ws.cli(["migrate", "books", "status", "--json"])).stdout) as { current: number }).current;
}

async function allTitles(ws: Workspace): Promise<Set<string>> {
  const r = await get(`${ws.proxyUrl}/api/v1/books?all=1`);
  assert.equal(r.status, 200, r.body);
  return new Set((JSON.parse(r.body) as { books: Array<{ title: string }> }).books.map((b) => b.title));
}

for (const [driver, makeDb] of Object.entries(DRIVERS)) {
  describe(`turquoise path on ${driver}`, () => {
    let ws: Workspace;
    let db: Db;
    before(async () => {
      db = await makeDb();
      ws = await createWorkspace({ replicas: 2, database: db.database, env: db.env });
      await ws.cli(["up", "--detach"]);
    });
    after(async () => {
      await ws?.destroy();
      await db?.drop();
    });

    it("the first deploy migrates the empty database, then starts the release", async () => {
      const { stdout } = await ws.cli(["deploy", "books", "--release", "v2"]);
      assert.match(stdout, /migrate first/);
      assert.equal(await schemaVersion(ws), 1);
      assert.equal(await releaseServing(ws), "v2");
    });

    it("a breaking change without a turquoise release is refused, saying what it would need", async () => {
      const plan = await ws.cli(["plan", "books", "--release", "v3"], { allowFail: true });
      assert.equal(plan.code, EXIT_CODES.PLAN_REFUSED);
      assert.match(plan.stderr, /target "v3" runs on schema 3\.\.3 but the database is at 1/);
      assert.match(plan.stderr, /a turquoise release supporting schema 1\.\.3 would make this safe: deploy with --via <release>/);
      const before = instancePids(ws);
      const deploy = await ws.cli(["deploy", "books", "--release", "v3"], { allowFail: true });
      assert.equal(deploy.code, EXIT_CODES.PLAN_REFUSED);
      assert.deepEqual(instancePids(ws), before, "nothing started");
      assert.equal(await schemaVersion(ws), 1);
      assert.equal(await releaseServing(ws), "v2");
    });

    it("a turquoise release that lacks the target's version is refused, naming it", async () => {
      const r = await ws.cli(["plan", "books", "--release", "v3", "--via", "v2-turquoise", "--via-schema", "1..2"], { allowFail: true });
      assert.equal(r.code, EXIT_CODES.PLAN_REFUSED);
      assert.match(r.stderr, /turquoise release "v2-turquoise" runs on schema 1\.\.2 but the target "v3" needs 3/);
    });

    it("plan shows the path and changes nothing", async () => {
      const { stdout } = await ws.cli(["plan", "books", "--release", "v3", "--via", "v2-turquoise"]);
      assert.match(stdout, /start v2-turquoise|v2-turquoise/);
      assert.match(stdout, /migrate/);
      assert.equal(await schemaVersion(ws), 1);
    });

    it("blue → turquoise → green and back under load: no failed request, every acknowledged write readable", async () => {
      const load = new LoadGenerator({ baseUrl: ws.proxyUrl, concurrency: 6, postEvery: 3, maxRequests: 500_000, maxDurationMs: 120_000 }).start();
      const forward = await ws.cli(["deploy", "books", "--release", "v3", "--via", "v2-turquoise", "--json"]);
      const fw = JSON.parse(forward.stdout) as { history: { steps: Array<{ name: string }> } };
      assert.deepEqual(fw.history.steps.map((s) => s.name), ["lock", "plan", "start", "healthy", "smoke", "flip", "verify", "bake", "drain", "retire", "migrate", "recheck", "start", "healthy", "smoke", "flip", "verify", "bake", "drain", "retire", "record"]);
      assert.equal(await schemaVersion(ws), 3);
      assert.equal(await releaseServing(ws), "v3");
      const s = await status(ws);
      assert.deepEqual((s as unknown as { previous: unknown }).previous, { release: "v2", via: "v2-turquoise" });

      await ws.cli(["rollback", "books"]);
      const report = await load.stop();
      assert.equal(await schemaVersion(ws), 1);
      assert.equal(await releaseServing(ws), "v2");
      assert.equal(report.failed, 0, JSON.stringify(report.failures));
      assert.ok(report.byRelease["v2-turquoise"]! > 0 && report.byRelease.v3! > 0, JSON.stringify(report.byRelease));
      const stored = await allTitles(ws);
      const missing = report.acknowledgedWrites.filter((t) => !stored.has(t));
      assert.ok(report.acknowledgedWrites.length > 20);
      assert.deepEqual(missing, []);
    });
  });

  describe(`bad migrations on ${driver}`, () => {
    const cleanups: Array<() => Promise<void>> = [];
    after(async () => { for (const c of cleanups.reverse()) await c(); });

    /** A workspace whose migrations dir we can break: the example's steps plus extras. */
    async function breakable(extra: Record<string, string>): Promise<{ ws: Workspace; dir: string; db: Db }> {
      const db = await makeDb();
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "turquoise-migrations-"));
      for (const f of fs.readdirSync(path.join(BOOKS_DIR, "migrations", driver))) fs.copyFileSync(path.join(BOOKS_DIR, "migrations", driver, f), path.join(dir, f));
      for (const [f, text] of Object.entries(extra)) fs.writeFileSync(path.join(dir, f), text);
      const ws = await createWorkspace({ replicas: 1, database: { ...db.database, migrations: dir }, env: db.env });
      cleanups.push(async () => { await ws.destroy(); await db.drop(); fs.rmSync(dir, { recursive: true, force: true }); });
      await ws.cli(["up", "--detach"]);
      return { ws, dir, db };
    }

    it("a failing step rolls back, releases the lock, leaves the live release, and names the file and the database's message", async () => {
      const { ws, dir } = await breakable({});
      await ws.cli(["deploy", "books", "--release", "v2"]);
      // 0002 is a step v2 cannot run on, so the path goes through v2-turquoise: break it there.
      fs.writeFileSync(path.join(dir, "0002_split_author.up.sql"), "ALTER TABLE books ADD COLUMN author_first TEXT;\nUPDATE books SET nope = 1;\n");
      const r = await ws.cli(["deploy", "books", "--release", "v3", "--via", "v2-turquoise"], { allowFail: true });
      assert.equal(r.code, EXIT_CODES.DEPLOY_FAILED);
      assert.match(r.stdout + r.stderr, /0002_split_author\.up\.sql/);
      assert.match(r.stdout + r.stderr, /nope/);
      assert.equal(await schemaVersion(ws), 1, "the step's transaction rolled back");
      const s = await status(ws);
      assert.equal(s.lock, null, "lock released");
      assert.equal(s.release, "v2-turquoise", "the turquoise release runs on schema 1 and stays live");
      // The failed step left nothing half-done: with the file fixed, the same deploy goes through.
      fs.copyFileSync(path.join(BOOKS_DIR, "migrations", driver, "0002_split_author.up.sql"), path.join(dir, "0002_split_author.up.sql"));
      await ws.cli(["deploy", "books", "--release", "v3", "--via", "v2-turquoise"]);
      assert.equal(await schemaVersion(ws), 3);
    });

    it("an applied step whose file changed is refused", async () => {
      const { ws, dir } = await breakable({});
      await ws.cli(["deploy", "books", "--release", "v2"]);
      fs.appendFileSync(path.join(dir, "0001_create_books.up.sql"), "\n-- edited after it ran\n");
      const r = await ws.cli(["migrate", "books", "status"], { allowFail: true });
      assert.equal(r.code, EXIT_CODES.CONFLICT);
      assert.match(r.stderr, /0001_create_books/);
      const d = await ws.cli(["deploy", "books", "--release", "v3", "--via", "v2-turquoise"], { allowFail: true });
      assert.equal(d.code, EXIT_CODES.CONFLICT);
      assert.equal(await releaseServing(ws), "v2");
    });
  });
}

describe("an unreachable database", () => {
  let ws: Workspace;
  after(async () => ws?.destroy());

  it("is a clear error before anything starts, with no password in it", async () => {
    ws = await createWorkspace({ replicas: 1, database: { driver: "postgres", url: "postgres://books:s3cret-pw@127.0.0.1:1/books" } });
    await ws.cli(["up", "--detach"]);
    const r = await ws.cli(["deploy", "books", "--release", "v2"], { allowFail: true });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /cannot connect/);
    assert.match(r.stderr, /127\.0\.0\.1:1/);
    assert.doesNotMatch(r.stdout + r.stderr, /s3cret-pw/);
    assert.deepEqual(instancePids(ws), []);
    const log = fs.readFileSync(path.join(ws.dir, ".turquoise", "agent.log"), "utf8");
    assert.doesNotMatch(log, /s3cret-pw/);
  });
});

describe("release metadata", () => {
  let ws: Workspace;
  let releases: string;
  after(async () => {
    await ws?.destroy();
    fs.rmSync(releases, { recursive: true, force: true });
  });

  it("with a database, a release that declares no schema range is refused at plan time; --schema overrides", async () => {
    releases = fs.mkdtempSync(path.join(os.tmpdir(), "turquoise-releases-"));
    fs.mkdirSync(path.join(releases, "undeclared"));
    fs.copyFileSync(path.join(BOOKS_DIR, "releases", "v2", "server.mjs"), path.join(releases, "undeclared", "server.mjs"));
    fs.writeFileSync(path.join(releases, "undeclared", "server.mjs"), fs.readFileSync(path.join(releases, "undeclared", "server.mjs"), "utf8").replaceAll("../../lib/", `${path.join(BOOKS_DIR, "lib")}/`));
    ws = await createWorkspace({ replicas: 1, releasesDir: releases, database: { driver: "sqlite", url: "sqlite:books.db" } });
    await ws.cli(["up", "--detach"]);
    const r = await ws.cli(["deploy", "books", "--release", "undeclared"], { allowFail: true });
    assert.equal(r.code, EXIT_CODES.USAGE);
    assert.match(r.stderr, /release "undeclared" of books declares no schema range.*turquoise\.json.*--schema/s);
    assert.deepEqual(instancePids(ws), []);
    await ws.cli(["deploy", "books", "--release", "undeclared", "--schema", "1"]);
    assert.equal(await releaseServing(ws), "undeclared");
  });
});
