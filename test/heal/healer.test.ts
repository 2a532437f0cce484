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

  describe("on a runtime that restarts instances itself (swarm's twin)", () => {
    async function liveV1Restarting(): Promise<{ agent: TestAgent; victim: InstanceInfo; other: InstanceInfo }> {
      world = await World.create({ replicas: 2, restarts: true });
      const agent = world.agent();
      await agent.orchestrator.deploy({ service: SERVICE, release: "v1", actor: "test" });
      await agent.heal().monitor.sync();
      const [victim, other] = agent.fleet.list(SERVICE);
      return { agent, victim: victim!, other: other! };
    }

    /** The victim, under its own id, back in the proxy's table at its new address. */
    async function rejoined(victim: InstanceInfo): Promise<void> {
      await waitFor("the victim back in the proxy's table at a new address", async () => {
        const upstreams = world.proxy.table().routes.find((r) => r.service === SERVICE)?.upstreams ?? [];
        const back = upstreams.find((u) => u.id === victim.id);
        return upstreams.length === 2 && back && back.port !== victim.port;
      }, 3_000);
      await world.assertSettled("v1");
    }

    const types = () => world.events.map((e) => e.type);

    it("an instance that dies leaves the table, is restarted by the runtime under its id and rejoins after its checks; the healer starts nothing", async () => {
      const { agent, victim } = await liveV1Restarting();
      world.machine.crash(victim);
      await waitFor("the victim out of the proxy's table", async () => !world.proxy.table().routes[0]!.upstreams.some((u) => u.id === victim.id), 2_000);
      assert.equal(await world.serving(), "v1");
      await rejoined(victim);
      assert.ok(types().includes("heal.following") && types().includes("instance.rejoined"), types().join(", "));
      assert.ok(!types().includes("heal.scheduled") && !types().includes("instance.replaced"), `a second replacement: ${types().join(", ")}`);
      assert.deepEqual(agent.fleet.list(SERVICE).map((i) => i.id).sort(), [victim.id, agent.fleet.list(SERVICE).find((i) => i.id !== victim.id)!.id].sort());
      assert.equal(world.machine.running().filter((i) => i.service === SERVICE).length, 2, "no extra instance");
    });

    it("a critical instance has its run ended, and the runtime's restart rejoins the pool", async () => {
      const { victim } = await liveV1Restarting();
      world.machine.affect(victim, { answer: { path: "/health", status: 500 } });
      await waitFor("the restart of the critical instance", async () => types().includes("heal.restarting"), 3_000);
      for (let i = 0; i < 5; i++) assert.equal(await world.serving(), "v1");
      await rejoined(victim);
      assert.ok(!types().includes("instance.replaced"), types().join(", "));
    });

    it("restarts that never turn healthy are a crash loop: the live release goes back to the previous one, once", async () => {
      // A deploy_timeout with room for a loaded machine: the deploys here must succeed.
      world = await World.create({ replicas: 2, restarts: true, deployTimeout: "1500ms" });
      const agent = world.agent();
      agent.heal();
      await agent.orchestrator.deploy({ service: SERVICE, release: "v1", actor: "test" });
      await agent.orchestrator.deploy({ service: SERVICE, release: "v2", actor: "test" });
      await agent.heal().monitor.sync();
      // From now on every run of v2 fails its checks; both die once, and the runtime restarts them.
      world.machine.inject({ release: "v2", answer: { path: "/health", status: 500 } });
      for (const inst of agent.fleet.list(SERVICE)) world.machine.crash(inst);
      await waitFor("the healer's rollback", async () => world.events.find((e) => e.type === "service.rolled-back"), 20_000);
      await waitFor("v1 live again", async () => (await world.serving()) === "v1", 5_000);
      await world.assertSettled("v1");
      assert.ok(!types().includes("service.degraded"), types().join(", "));
      assert.ok(!types().includes("heal.scheduled") && !types().includes("instance.replaced"), types().join(", "));
      assert.match(world.events.find((e) => e.type === "heal.rollback")!.message, /restarts in a row never turned healthy|restarts within/);
    });
  });
});
