// The deploy flow's failure paths, in-process: the orchestrator over the memory store, runtime and
// proxy, with each step made to fail in turn. Whatever fails, the agent must leave one live slot
// serving, nothing else running, no journal, no lock and no history entry still running.
import assert from "node:assert/strict";
import { writeFile, mkdir } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, it } from "node:test";
import { keys } from "../../src/deploy/records.js";
import type { TurquoiseError } from "../../src/errors.js";
import { SERVICE, World, type Failpoint, type TestAgent, type WorldOptions } from "../support/world.js";

/** Rejects with a DEPLOY_FAILED error at `step`; returns it. */
async function failsAt(deploy: Promise<unknown>, step: string): Promise<TurquoiseError> {
  let error: TurquoiseError | undefined;
  await assert.rejects(deploy, (e: TurquoiseError) => {
    error = e;
    return true;
  });
  assert.equal(error!.code, "DEPLOY_FAILED", error!.message);
  assert.equal(error!.data.step, step, error!.message);
  return error!;
}

describe("deploy failure paths (in-process)", () => {
  let world: World;
  afterEach(async () => world?.close());

  /** A world with v1 live, deployed by the agent returned; its failpoint is armed from then on. */
  async function withV1(opts: WorldOptions & { failpoint?: Failpoint } = {}): Promise<TestAgent> {
    world = await World.create(opts);
    const agent = world.agent();
    await agent.orchestrator.deploy({ service: SERVICE, release: "v1", actor: "test" });
    await world.assertSettled("v1");
    agent.failpoint = opts.failpoint;
    return agent;
  }

  const deployV2 = (agent: TestAgent) => agent.orchestrator.deploy({ service: SERVICE, release: "v2", actor: "test" });
  const lastOutcome = async () => (await world.store.listHistory(SERVICE, 1))[0]!.outcome;

  it("a start that fails stops the replicas that did start; v1 stays live", async () => {
    const agent = await withV1();
    world.machine.inject({ release: "v2", times: 1, failStart: "out of memory" });
    // The runtime's own error comes through as it is, not as a DEPLOY_FAILED of step start.
    await assert.rejects(deployV2(agent), /cannot start books release v2: out of memory/);
    await world.assertSettled("v1");
    assert.equal(await lastOutcome(), "failed");
  });

  it("instances whose health check answers 500 fail the deploy once they are critical, before deploy_timeout; v1 stays live", async () => {
    // A deploy_timeout over 10x the bound, so that failing before it is far from waiting it out on a busy machine.
    const agent = await withV1({ deployTimeout: "60s" });
    world.machine.inject({ release: "v2", answer: { path: "/health", status: 500 } });
    const t0 = Date.now();
    const e = await failsAt(deployV2(agent), "healthy");
    assert.match(e.message, /the check answered HTTP 500.*did not wait out deploy_timeout/s);
    assert.ok(Date.now() - t0 < 5_000, `failed after ${Date.now() - t0}ms`);
    await world.assertSettled("v1");
  });

  it("an instance that never listens fails the deploy at deploy_timeout; v1 stays live", async () => {
    const agent = await withV1();
    world.machine.inject({ release: "v2", times: 1, neverListen: true });
    const e = await failsAt(deployV2(agent), "healthy");
    assert.match(e.message, /not healthy within deploy_timeout/);
    // The runtime tells where the instance listens: nowhere.
    assert.match(String(e.data.output), /ECONNREFUSED.*not listening on any TCP port/);
    await world.assertSettled("v1");
  });

  it("an instance that exits before it is healthy fails the deploy at once, with its last output", async () => {
    const agent = await withV1({ deployTimeout: "60s" });
    world.machine.inject({ release: "v2", times: 1, exitAfterMs: 0, exitCode: 3 });
    const t0 = Date.now();
    const e = await failsAt(deployV2(agent), "healthy");
    assert.match(e.message, /an instance exited before it was healthy/);
    assert.ok(Date.now() - t0 < 5_000, "without waiting for deploy_timeout");
    await world.assertSettled("v1");
  });

  it("a failing smoke check stops the new slot; v1 stays live", async () => {
    const agent = await withV1({ serviceYaml: ["smoke: [{ name: front page, http: { path: /smoke } }]"] });
    world.machine.inject({ release: "v2", answer: { path: "/smoke", status: 500 } });
    const e = await failsAt(deployV2(agent), "smoke");
    assert.match(e.message, /smoke check "front page" failed/);
    await world.assertSettled("v1");
  });

  it("an expand migration that fails before the flip stops the new slot; v1 stays live on the old schema", async () => {
    const migrations = [
      "database: { driver: sqlite, url: \"sqlite:books.db\", migrations: migrations }",
    ];
    world = await World.create({ serviceYaml: migrations });
    await mkdir(path.join(world.dir, "migrations"));
    await writeFile(path.join(world.dir, "migrations", "0001_books.up.sql"), "CREATE TABLE books (id INTEGER PRIMARY KEY);\n");
    // v1 runs on 0..2, so the expand step 2 goes before the flip to v2.
    await world.release("v1", { min: 0, max: 2 });
    await world.release("v2", { min: 1, max: 2 });
    const agent = world.agent();
    await agent.orchestrator.deploy({ service: SERVICE, release: "v1", actor: "test" });
    await writeFile(path.join(world.dir, "migrations", "0002_broken.up.sql"), "ALTER TABLE no_such_table ADD COLUMN title TEXT;\n");
    const e = await failsAt(deployV2(agent), "migrate-expand");
    assert.match(String(e.data.output), /no_such_table/);
    await world.assertSettled("v1");
    const status = await agent.orchestrator.migrations(SERVICE, { action: "status", actor: "test" });
    assert.equal(status.current, 1);
  });

  it("a proxy that refuses the flip's table leaves v1 live and stops v2", async () => {
    const agent = await withV1();
    world.proxy.inject({ times: 1, failApply: "connection refused" });
    // The proxy's own error comes through as it is, not as a DEPLOY_FAILED of step flip.
    await assert.rejects(deployV2(agent), /proxy apply failed: connection refused/);
    await world.assertSettled("v1");
  });

  it("a proxy that refuses both the flip and the flip back still leaves one live slot and no v2 running", async () => {
    const agent = await withV1();
    world.proxy.inject({ times: 2, failApply: "connection refused" });
    await assert.rejects(deployV2(agent));
    await world.assertSettled("v1");
  });

  it("verification through the public route that fails flips traffic back to v1", async () => {
    const agent = await withV1({
      failpoint: (entry, self) => {
        // Healthy and smoked on its own address, failing once behind the proxy.
        if (entry !== "verify:started") return;
        for (const i of self.fleet.list(SERVICE)) if (i.release === "v2") world.machine.affect(i, { answer: { path: "/health", status: 502 } });
      },
    });
    const e = await failsAt(deployV2(agent), "verify");
    assert.match(e.message, /answered 502.*traffic flipped back; v1 \(blue\) is live/s);
    await world.assertSettled("v1");
    assert.equal(await lastOutcome(), "rolled-back");
    assert.ok(world.events.some((ev) => ev.type === "flip.reverted"));
  });

  /** Kills one v2 instance when the bake window opens, after delayMs (0: before the window looks at its instances). */
  const crashInBake = (delayMs: number): Failpoint => (point, self) => {
    if (point !== "bake:started") return;
    const [victim] = self.fleet.list(SERVICE).filter((i) => i.release === "v2");
    if (delayMs === 0) world.machine.crash(victim!);
    else setTimeout(() => world.machine.crash(victim!), delayMs);
  };

  it("an instance of v2 that dies in the bake window reverts the deploy: traffic back on v1, v2 stopped", async () => {
    const agent = await withV1({ failpoint: crashInBake(50) });
    const e = await failsAt(deployV2(agent), "bake");
    assert.match(e.message, /reverted: it failed its bake window.*v1 \(blue\) is live/s);
    await world.assertSettled("v1");
    assert.equal(await lastOutcome(), "reverted");
  });

  it("an instance of v2 that dies between the verify and the bake window's first look reverts the deploy too", async () => {
    const agent = await withV1({ failpoint: crashInBake(0) });
    await failsAt(deployV2(agent), "bake");
    await world.assertSettled("v1");
  });

  it("a drain that hangs past its time still retires v1 once v2 is live", async () => {
    const agent = await withV1();
    world.proxy.inject({ times: 1, hangDrain: 300 });
    await deployV2(agent).catch(() => undefined);
    await world.assertSettled("v2");
  });

  it("a stop that fails at retire leaves v1 recorded, so that it can be stopped later", async () => {
    const agent = await withV1();
    world.machine.inject({ release: "v1", times: 2, failStop: "engine unreachable" });
    await deployV2(agent).catch(() => undefined);
    const recorded = await agent.records.instances(SERVICE);
    const running = world.machine.running().filter((i) => i.service === SERVICE);
    assert.deepEqual(recorded.map((i) => i.id).sort(), running.map((i) => i.id).sort(), "every running instance keeps its record");
    const color = await agent.records.color(SERVICE);
    for (const slot of ["blue", "green"] as const) if (slot !== color) assert.notEqual((await agent.records.slot(SERVICE, slot))?.state, "live");
  });

  it("a deploy that loses its lock mid-flow stops at the next step, before its flip, and leaves the lock to its new holder", async () => {
    const agent = await withV1({
      failpoint: (entry) => {
        if (entry !== "start:done") return;
        // The lock expired (an agent paused past its TTL) and another deploy took it.
        void (async () => {
          const held = await world.store.getLock(keys.lock(SERVICE));
          if (held) {
            await world.store.releaseLock(keys.lock(SERVICE), held.owner);
            await world.store.acquireLock(keys.lock(SERVICE), "other deploy", 30_000);
          }
        })();
      },
    });
    await assert.rejects(deployV2(agent), (e: TurquoiseError) => e.code === "LOCK_LOST");
    assert.equal(await world.serving(), "v1");
    assert.equal((await world.store.getLock(keys.lock(SERVICE)))?.owner, "other deploy", "the other holder keeps the lock");
  });
});
