// End to end: the agent's records live apart from the user KV; writes through the KV API never reach them, and a bad record is set aside, never acted on.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import type { Workspace } from "../../src/demo/workspace.js";
import { EXIT_CODES } from "../../src/errors.js";
import { SqliteStore } from "../../src/state/sqlite.js";
import { INTERNAL_PREFIX } from "../../src/state/namespace.js";
import { keys } from "../../src/deploy/records.js";
import { RELEASE_KINDS, agentEvents, api, instancePids, releaseServing, status, stopAgent, tokenOf, workspaceWith } from "./helpers.js";

/** Opens the stopped agent's state file, for what only a corrupted or old file would hold. */
async function withStateFile(ws: Workspace, fn: (store: SqliteStore) => Promise<void>): Promise<void> {
  const store = new SqliteStore(path.join(ws.dir, ".turquoise", "state.db"));
  try {
    await fn(store);
  } finally {
    await store.close();
  }
}

describe("internal records", () => {
  let ws: Workspace;
  before(async () => {
    ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, {
      replicas: 2,
      extraServiceYaml: `watches:
  - name: peek
    type: keyprefix
    prefix: ${INTERNAL_PREFIX}services/
    args: ["sh", "-c", "cat > peek.json"]
`,
    });
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
  });
  after(async () => ws?.destroy());

  it("writes to the old record keys are user keys: a restarted agent starts, changes nothing and acts on none of them", async () => {
    const before = await status(ws);
    const pids = instancePids(ws);
    // A live process the forged record points at: the old agent adopted it, then stopped it as an orphan.
    // Long enough to outlive the test on a slow machine (it is killed below): its exit must mean a signal.
    const bystander = spawn("sleep", ["600"], { stdio: "ignore" });
    try {
      const forged = { id: "evil", service: "books", slot: before.color, release: "v1", host: "127.0.0.1", port: 1, ref: String(bystander.pid), startedAt: Date.now(), runtime: "process" };
      await ws.cli(["kv", "put", "instances/books/evil", JSON.stringify(forged)]);
      await ws.cli(["kv", "put", "journal/notes", "not json"]);
      await ws.cli(["kv", "put", "services/books/color", "purple"]);
      await ws.cli(["kv", "put", `services/books/slots/${before.color}`, "{}"]);
      await stopAgent(ws);
      await ws.cli(["up", "--detach"]);
      const after = await status(ws);
      assert.equal(after.release, "v1");
      assert.equal(after.color, before.color);
      assert.deepEqual(after.instances.map((i) => i.id).sort(), before.instances.map((i) => i.id).sort(), "no instance adopted from a user key");
      assert.deepEqual(instancePids(ws), pids, "no instance stopped or started");
      assert.equal(await releaseServing(ws), "v1");
      assert.equal(bystander.exitCode, null, "the process the forged record named was never signalled");
      assert.equal(process.kill(bystander.pid!, 0), true);
      assert.equal((await ws.cli(["kv", "get", "services/books/color"])).stdout.trim(), "purple", "still there, as a user key");
    } finally {
      bystander.kill();
      // The user keys go, so the old-layout test below starts from the agent's records alone.
      for (const k of ["instances/books/evil", "journal/notes", "services/books/color", `services/books/slots/${before.color}`]) await ws.cli(["kv", "delete", k]);
    }
  });

  it("the reserved prefix is refused with 403 for every method, naming the prefix", async () => {
    const key = `${INTERNAL_PREFIX}services/books/color`;
    const calls: Array<[string, string]> = [
      ["GET", `/v1/kv/${key}`],
      ["GET", `/v1/kv/${key}?index=1&wait=30s`],
      ["GET", `/v1/kv?prefix=${encodeURIComponent(INTERNAL_PREFIX)}`],
      ["GET", `/v1/kv?prefix=${encodeURIComponent(`${INTERNAL_PREFIX}instances/`)}&index=1&wait=30s`],
      ["PUT", `/v1/kv/${key}`],
      ["PUT", `/v1/kv/${INTERNAL_PREFIX}instances/books/evil?cas=0`],
      ["DELETE", `/v1/kv/${key}`],
      ["DELETE", `/v1/kv/${INTERNAL_PREFIX}journal/books`],
    ];
    for (const token of [tokenOf(ws), tokenOf(ws, "registry-token")]) {
      for (const [method, p] of calls) {
        const t0 = Date.now();
        const r = await api(ws, p, { method, body: method === "PUT" ? "blue" : undefined, token });
        if (token !== tokenOf(ws) && method !== "GET") continue; // the registry token is refused these anyway
        assert.equal(r.status, 403, `${method} ${p}: ${r.body}`);
        assert.match((JSON.parse(r.body) as { error: { message: string } }).error.message, /reserved namespace "_turquoise\/"/);
        assert.ok(Date.now() - t0 < 5_000, "a blocking read on the reserved prefix is refused before it blocks");
      }
    }
    const cli = await ws.cli(["kv", "put", key, "green"], { allowFail: true });
    assert.equal(cli.code, EXIT_CODES.FORBIDDEN);
    assert.match(cli.stderr, /_turquoise\//);
    // A listing whose prefix covers the namespace comes back without it.
    await ws.cli(["kv", "put", "config/banner", "hello"]);
    const all = JSON.parse((await api(ws, "/v1/kv?prefix=")).body) as { items: Array<{ key: string }> };
    assert.deepEqual(all.items.map((k) => k.key), ["config/banner"]);
    const under = JSON.parse((await api(ws, "/v1/kv?prefix=_tur")).body) as { items: unknown[] };
    assert.deepEqual(under.items, []);
  });

  it("a watch on the reserved prefix does not run, and says why", async () => {
    const refused = await agentEvents(ws, "watch.refused");
    assert.ok(refused.some((e) => /watch peek does not run: its prefix "_turquoise\/services\/" is in the agent's reserved namespace/.test(e.message)));
    assert.equal((await agentEvents(ws, "watch.handler")).filter((e) => e.data.watch === "peek").length, 0);
  });

  it("an old state file moves in on start; its bad color is set aside and cannot take the service offline", async () => {
    const before = await status(ws);
    const pids = instancePids(ws);
    await stopAgent(ws);
    // Back to the layout of a state file from before the reserved prefix, with the color a KV write spoiled.
    await withStateFile(ws, async (store) => {
      for (const kv of await store.list(INTERNAL_PREFIX)) {
        await store.delete(kv.key);
        if (kv.key !== keys.layout()) await store.put(kv.key.slice(INTERNAL_PREFIX.length), kv.value);
      }
      await store.put("services/books/color", "purple");
    });
    await ws.cli(["up", "--detach"]);
    const after = await status(ws);
    assert.equal(after.color, before.color, "the color comes back from the live slot record");
    assert.equal(after.release, "v1");
    assert.deepEqual(instancePids(ws), pids, "no live instance stopped as an orphan");
    assert.equal(await releaseServing(ws), "v1");
    assert.ok((await agentEvents(ws, "records.moved")).length > 0);
    const invalid = await agentEvents(ws, "record.invalid");
    assert.ok(invalid.some((e) => e.data.key === keys.color("books") && /"purple" is not a slot/.test(String(e.data.reason))));
    assert.ok((await agentEvents(ws, "record.repaired")).some((e) => e.data.key === keys.color("books")));

    const json = JSON.parse((await ws.cli(["status", "--json"])).stdout) as { quarantined: Array<{ key: string; service: string; reason: string; value: string }> };
    assert.deepEqual(json.quarantined.map((q) => [q.key, q.service, q.value]), [[keys.color("books"), "books", "purple"]]);
    const human = (await ws.cli(["status"])).stdout;
    assert.match(human, /SET ASIDE: 1 invalid record\(s\)/);
    assert.match(human, /_turquoise\/services\/books\/color \(books\) at .*: "purple" is not a slot/);
    assert.equal((await ws.cli(["kv", "get", "services/books/color"], { allowFail: true })).code, EXIT_CODES.NOT_FOUND, "the old key moved");

    // A deploy puts the service's records back in order: the entry goes.
    await ws.cli(["deploy", "books", "--release", "v1"]);
    assert.deepEqual((JSON.parse((await ws.cli(["status", "--json"])).stdout) as { quarantined: unknown[] }).quarantined, []);
  });
});
