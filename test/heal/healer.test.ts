// Self-healing, in-process: the supervisor and the health monitor over the memory runtime and
// proxy. A live instance that dies, or whose checks go critical, is replaced in its slot with the
// same release, and the proxy routes to the replacement; the slot's other replicas serve throughout.
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import type { InstanceInfo } from "../../src/runtime/contract.js";
import { SERVICE, World, type TestAgent } from "../support/world.js";
import { waitFor } from "../runtime/helpers.js";

describe("self-healing (in-process)", () => {
  let world: World;
  afterEach(async () => world?.close());

  async function liveV1(): Promise<{ agent: TestAgent; victim: InstanceInfo; other: InstanceInfo }> {
    world = await World.create({ replicas: 2 });
    const agent = world.agent();
    await agent.orchestrator.deploy({ service: SERVICE, release: "v1", actor: "test" });
    const healing = agent.heal();
    await healing.monitor.sync();
    const [victim, other] = agent.fleet.list(SERVICE);
    return { agent, victim: victim!, other: other! };
  }

  /** The live slot runs two v1 instances again, one of them new, and the proxy routes to both. */
  async function replaced(agent: TestAgent, victim: InstanceInfo): Promise<InstanceInfo> {
    const fresh = await waitFor("a replacement in the proxy's table", async () => {
      const upstreams = world.proxy.table().routes.find((r) => r.service === SERVICE)?.upstreams ?? [];
      const ids = upstreams.map((u) => u.id);
      const running = agent.fleet.list(SERVICE);
      return running.length === 2 && !ids.includes(victim.id) && ids.length === 2 ? running.find((i) => i.id !== victim.id && ids.includes(i.id) && i.startedAt > victim.startedAt) : undefined;
    }, 3_000);
    assert.equal(fresh.release, "v1");
    assert.equal(fresh.slot, victim.slot);
    await world.assertSettled("v1");
    return fresh;
  }

  it("an instance that dies leaves rotation at once and is replaced with the same release in its slot", async () => {
    const { agent, victim } = await liveV1();
    const t0 = Date.now();
    world.machine.crash(victim);
    // The other replica keeps the service up while the replacement starts.
    assert.equal(await world.serving(), "v1");
    await replaced(agent, victim);
    assert.ok(Date.now() - t0 < 2_000, `replaced after ${Date.now() - t0}ms`);
    assert.deepEqual(world.events.filter((e) => e.type === "instance.replaced").length, 1);
  });

  it("an instance whose health check goes critical is taken out of rotation, stopped and replaced", async () => {
    const { agent, victim } = await liveV1();
    world.machine.affect(victim, { answer: { path: "/health", status: 500 } });
    await waitFor("the critical instance out of rotation", async () => world.events.some((e) => e.type === "check.changed" && e.message.startsWith(`${victim.id} `) && e.message.endsWith("critical")), 2_000);
    // Every request goes to the healthy replica while the critical one is dealt with.
    for (let i = 0; i < 5; i++) assert.equal(await world.serving(), "v1");
    await replaced(agent, victim);
    assert.deepEqual(await agent.runtime.inspect(victim), { running: false, exitCode: 0, signal: null }, "stopped gracefully");
  });

  it("a replacement that cannot start is retried after a backoff", async () => {
    const { agent, victim } = await liveV1();
    world.machine.inject({ release: "v1", times: 1, failStart: "no space left on device" });
    world.machine.crash(victim);
    await replaced(agent, victim);
    const types = world.events.map((e) => e.type);
    assert.ok(types.indexOf("heal.failed") >= 0 && types.indexOf("heal.failed") < types.indexOf("instance.replaced"), types.join(", "));
  });

  it("a replacement that never turns healthy is stopped and retried", async () => {
    const { agent, victim } = await liveV1();
    world.machine.inject({ release: "v1", times: 1, answer: { path: "/health", status: 500 } });
    world.machine.crash(victim);
    await replaced(agent, victim);
    assert.ok(world.events.some((e) => e.type === "heal.failed" && /did not turn healthy/.test(e.message)));
    assert.equal(world.machine.running().filter((i) => i.service === SERVICE).length, 2, "the failed replacement was stopped");
  });
});
