// End to end: a deploy lock names a living owner. An agent killed before its flow was journaled
// (the plan step waiting on a database that never answers, or between history and journal)
// leaves a lock a restarted agent releases at once, and no history entry stays "running".
import assert from "node:assert/strict";
import net from "node:net";
import { after, describe, it } from "node:test";
import { createWorkspace, type Workspace } from "../../src/demo/workspace.js";
import { freshDatabase } from "../support/postgres.js";
import { RELEASE_KINDS, crashingDeploy, readAgentPid, status, waitFor, workspaceWith } from "./helpers.js";

interface History { outcome: string; error: string | null }

async function history(ws: Workspace): Promise<History[]> {
  return JSON.parse((await ws.cli(["history", "books", "--json"])).stdout) as History[];
}

describe("locks that name a living owner", () => {
  const cleanups: Array<() => Promise<void>> = [];
  after(async () => { for (const c of cleanups.reverse()) await c().catch(() => undefined); });

  it("agent killed while the plan waits on a database that never answers: the restarted agent deploys at once", async () => {
    // Accepts the connection and never says a word: the postgres client waits in the plan step.
    const sockets = new Set<net.Socket>();
    const hanging = net.createServer((s) => { sockets.add(s); s.on("error", () => undefined); });
    await new Promise<void>((r) => hanging.listen(0, "127.0.0.1", r));
    cleanups.push(async () => { for (const s of sockets) s.destroy(); await new Promise((r) => hanging.close(r)); });
    const port = (hanging.address() as net.AddressInfo).port;
    const db = await freshDatabase();
    cleanups.push(db.drop);

    // The example's releases: they declare the schema range a deploy onto a database needs.
    const ws = await createWorkspace({ replicas: 1, database: { driver: "postgres", url: "${BOOKS_DATABASE_URL}" } });
    cleanups.push(() => ws.destroy());
    await ws.cli(["up", "--detach"], { env: { BOOKS_DATABASE_URL: `postgres://books:pw@127.0.0.1:${port}/books` } });
    const deploying = ws.cli(["deploy", "books", "--release", "v1"], { allowFail: true });
    let ended: unknown;
    void deploying.then((r) => (ended = r));
    await waitFor("the plan step's connection to the hanging database", () => {
      if (ended) throw new Error(`the deploy ended before it reached the database: ${JSON.stringify(ended)}`);
      return sockets.size > 0 || undefined;
    }, 20_000);
    const s = await status(ws);
    assert.ok(s.lock, "the deploy holds the lock while it waits");
    process.kill(readAgentPid(ws), "SIGKILL");
    assert.notEqual((await deploying).code, 0);

    await ws.cli(["up", "--detach"], { env: { BOOKS_DATABASE_URL: db.url } });
    const started = Date.now();
    await ws.cli(["deploy", "books", "--release", "v1"], { env: { BOOKS_DATABASE_URL: db.url } });
    assert.ok(Date.now() - started < 20_000, "no wait for the dead agent's lock to expire");
    const h = await history(ws);
    assert.ok(!h.some((e) => e.outcome === "running"), JSON.stringify(h));
    assert.equal(h[0]!.outcome, "succeeded");
  });

  it("agent killed between the history entry and the journal: restart frees the lock and closes the entry", async () => {
    const ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.good("v2") }, { replicas: 1 });
    cleanups.push(() => ws.destroy());
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    assert.equal(await crashingDeploy(ws, "v2", "history"), "SIGKILL");

    await ws.cli(["up", "--detach"]);
    assert.equal((await status(ws)).lock, null, "the dead agent's lock is gone at once");
    const [h] = await history(ws);
    assert.equal(h!.outcome, "aborted");
    assert.match(h!.error ?? "", /interrupted/);
    await ws.cli(["deploy", "books", "--release", "v2"]);
    assert.equal((await status(ws)).release, "v2");
  });
});
