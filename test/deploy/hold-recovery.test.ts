// The agent dying during `deploy --hold` and during a canary, in-process at each failpoint: a new
// agent keeps a held release once its hold was recorded, undoes it before that, and undoes a
// canary at any step, its first route table carrying no canary share.
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { Records } from "../../src/deploy/records.js";
import { AgentDied, SERVICE, World, type TestAgent } from "../support/world.js";

type Deploy = (agent: TestAgent) => Promise<unknown>;

const hold: Deploy = (agent) => agent.orchestrator.deploy({ service: SERVICE, release: "v2", actor: "test", hold: true });
// A long step: the agent dies inside it, and the canary's share is in the proxy's table then.
const canary: Deploy = (agent) => agent.orchestrator.deploy({ service: SERVICE, release: "v2", actor: "test", canary: { steps: [30], stepIntervalMs: 200 } });

async function prepare(): Promise<{ world: World; agent: TestAgent }> {
  const world = await World.create();
  const agent = world.agent();
  await agent.orchestrator.deploy({ service: SERVICE, release: "v1", actor: "test" });
  return { world, agent };
}

async function failpointsOf(deploy: Deploy): Promise<string[]> {
  const { world, agent } = await prepare();
  try {
    const points: string[] = [];
    agent.failpoint = (point) => void points.push(point);
    await deploy(agent);
    return [...new Set(points)];
  } finally {
    await world.close();
  }
}

const holdPoints = await failpointsOf(hold);

describe("the agent dies during deploy --hold", () => {
  let world: World | undefined;
  afterEach(async () => world?.close());

  it("a held release that nothing interrupted is kept held, on its own preview pool, apart from the live route", async () => {
    const prepared = await prepare();
    world = prepared.world;
    const out = (await hold(prepared.agent)) as { history: { outcome: string } };
    assert.equal(out.history.outcome, "held");
    await prepared.agent.start();
    const records = new Records(world.store);
    const color = await records.color(SERVICE);
    const other = await records.slot(SERVICE, color === "blue" ? "green" : "blue");
    assert.equal(other?.state, "held");
    assert.equal(await world.serving(), "v1");
  });

  for (const point of holdPoints) {
    it(`dies at ${point}: ${point === "held" ? "kept held" : "undone, v1 live"}`, async () => {
      const prepared = await prepare();
      world = prepared.world;
      let done = false;
      prepared.agent.failpoint = (at, self) => {
        if (at !== point || done) return;
        done = true;
        throw self.die(`at ${point}`);
      };
      await assert.rejects(hold(prepared.agent), AgentDied);
      const next = world.agent();
      await next.start();
      const records = new Records(world.store);
      const color = await records.color(SERVICE);
      const idle = await records.slot(SERVICE, color === "blue" ? "green" : "blue");
      const [h] = await world.store.listHistory(SERVICE, 1);
      assert.equal(await world.serving(), "v1");
      assert.deepEqual(await records.journals(), []);
      if (point === "held") {
        assert.equal(idle?.state, "held", "its hold was recorded: it waits for promote or abort");
        assert.equal(h!.outcome, "held");
        // And promote takes it from there.
        await next.orchestrator.promote({ service: SERVICE, actor: "test" });
        await world.assertSettled("v2");
      } else {
        await world.assertSettled("v1");
        assert.equal(idle, undefined);
      }
    });
  }
});

describe("the agent dies during a canary", () => {
  let world: World | undefined;
  afterEach(async () => world?.close());

  it("dies in the middle of a canary step: the table still splits, the next agent sends everyone back and stops v2", async () => {
    const prepared = await prepare();
    world = prepared.world;
    prepared.agent.failpoint = (at, self) => {
      if (at !== "canary:started") return;
      // The step's table is applied right after this journal write: die once it is.
      setTimeout(() => self.die("mid-canary"), 50);
    };
    await assert.rejects(canary(prepared.agent), AgentDied);
    assert.ok(world.proxy.table().routes.some((r) => r.canary?.percent === 30), "the dead agent's share is still in the proxy's table");
    await world.agent().start();
    await world.assertSettled("v1");
    assert.ok(world.proxy.table().routes.every((r) => r.canary === undefined), "no canary share is left");
    const [h] = await world.store.listHistory(SERVICE, 1);
    assert.equal(h!.outcome, "aborted");
    assert.match(h!.error ?? "", /agent restarted during canary; undone, v1 stays live/);
  });
});
