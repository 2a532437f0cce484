// End to end: the agent SIGKILLed at every boundary between its lock, its journal, its instance
// records and the instances' start. After a restart exactly the recorded live instances run,
// `down` leaves nothing with the agent's mark, and the next deploy goes through at once.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import type { Workspace } from "../../src/demo/workspace.js";
import { START_FAILPOINTS } from "../../src/deploy/fleet.js";
import { RELEASE_KINDS, agentEvents, crashingDeploy, markedPids, status, workspaceWith } from "./helpers.js";

/** These tests are about crashes around the start, not the bake window: each deploy is 3 s (its default bake) shorter. */
const NO_BAKE = "    bake: 0s\n";

const refs = (s: Awaited<ReturnType<typeof status>>) => s.instances.map((i) => Number(i.ref)).sort((a, b) => a - b);

/** In the order a deploy passes them, with the release live after a restart. */
const BOUNDARIES: Array<[failpoint: string, between: string, live: "v1" | "v2"]> = [
  ["lock", "the lock is taken, nothing journaled", "v1"],
  [START_FAILPOINTS.beforeIntent, "the start is journaled, nothing recorded", "v1"],
  [START_FAILPOINTS.recorded, "an instance is recorded as starting, nothing started", "v1"],
  [START_FAILPOINTS.started, "an instance runs, recorded only as starting", "v1"],
  [START_FAILPOINTS.marked, "an instance is recorded as started, the step not journaled done", "v1"],
  ["start", "the start step is journaled done", "v1"],
  ["cleared", "the journal is cleared, the lock still held", "v2"],
];

describe("crash at instance start", () => {
  const spaces: Workspace[] = [];
  after(async () => { for (const ws of spaces) await ws.destroy(); });

  for (const [failpoint, between, live] of BOUNDARIES) {
    it(`killed where ${between} (${failpoint}): ${live} live, only recorded instances, down leaves nothing, the next deploy goes through`, async () => {
      const ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.good("v2") }, { replicas: 2, extraServiceYaml: NO_BAKE });
      spaces.push(ws);
      await ws.cli(["up", "--detach"]);
      await ws.cli(["deploy", "books", "--release", "v1"]);
      assert.equal(await crashingDeploy(ws, "v2", failpoint), "SIGKILL", `the agent did not die at ${failpoint}`);

      await ws.cli(["up", "--detach"]);
      const s = await status(ws);
      assert.equal(s.release, live);
      assert.equal(s.lock, null, "no held lock");
      assert.equal(s.instances.length, 2);
      assert.ok(s.instances.every((i) => i.release === live && i.slot === s.color), "one live slot, nothing else recorded");
      assert.deepEqual(markedPids(ws), refs(s), "exactly the recorded live instances run");
      if (failpoint === START_FAILPOINTS.recorded) {
        const dropped = await agentEvents(ws, "instance.abandoned");
        assert.ok(dropped.length >= 1 && dropped.every((e) => /it never started; its record is dropped$/.test(e.message)), JSON.stringify(dropped));
      }

      const next = live === "v1" ? "v2" : "v1";
      const t0 = Date.now();
      await ws.cli(["deploy", "books", "--release", next]);
      const after = await status(ws);
      assert.equal(after.release, next, `the deploy after the crash took ${Date.now() - t0}ms`);
      assert.deepEqual(markedPids(ws), refs(after));

      await ws.cli(["down"]);
      assert.deepEqual(markedPids(ws), [], "down left processes with the agent's mark");
    });
  }

  it("an instance started but not recorded as started is stopped by down with no agent", async () => {
    const ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.good("v2") }, { replicas: 1, extraServiceYaml: NO_BAKE });
    spaces.push(ws);
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    const live = refs(await status(ws));
    assert.equal(await crashingDeploy(ws, "v2", START_FAILPOINTS.started), "SIGKILL");
    const orphans = markedPids(ws).filter((p) => !live.includes(p));
    assert.equal(orphans.length, 1, "the crash left one unrecorded instance running");

    // No agent: down finds it by its mark, not by a record.
    const r = await ws.cli(["down", "--json"]);
    assert.deepEqual(markedPids(ws), []);
    assert.equal((JSON.parse(r.stdout) as { instances: number }).instances, 2);

    // down dropped the intent too: the restarted agent finds nothing to undo but the journal.
    await ws.cli(["up", "--detach"]);
    const s = await status(ws);
    assert.equal(s.release, "v1");
    assert.deepEqual(markedPids(ws), refs(s));
    assert.deepEqual(await agentEvents(ws, "instance.abandoned"), []);
    await ws.cli(["deploy", "books", "--release", "v2"]);
  });

  it("a restarted agent stops the unrecorded instance and reports it", async () => {
    const ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.good("v2") }, { replicas: 1, extraServiceYaml: NO_BAKE });
    spaces.push(ws);
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    assert.equal(await crashingDeploy(ws, "v2", START_FAILPOINTS.started), "SIGKILL");
    await ws.cli(["up", "--detach"]);
    const s = await status(ws);
    assert.deepEqual(markedPids(ws), refs(s));
    const orphan = await agentEvents(ws, "instance.orphan");
    assert.equal(orphan.length, 1);
    assert.match(orphan[0]!.message, /^stopped books-(blue|green)-\w+ \(v2, green; process \d+\): it carried this agent's marks, but no record named it as started$/);
    const abandoned = await agentEvents(ws, "instance.abandoned");
    assert.match(abandoned[0]!.message, /it was running and was stopped/);
  });
});
