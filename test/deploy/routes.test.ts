// The route tables the agent sends its proxy: a flip sends only the flipped service's routes on top
// of the table the proxy acknowledged, and whatever leaves the agent unsure of that table (a proxy at
// another version, a failed apply, a new agent) makes the next table go whole.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Route, RouteTable, RouteTableDelta } from "../../src/proxy/contract.js";
import { keys } from "../../src/deploy/records.js";
import { SERVICE, type TestAgent, World } from "../support/world.js";

describe("route tables sent to the proxy", { timeout: 60_000 }, () => {
  let world: World;
  let agent: TestAgent;
  const sent: Array<{ kind: "whole"; table: RouteTable } | { kind: "delta"; delta: RouteTableDelta; answer?: string }> = [];
  const deploy = (service: string, release: string) => agent.orchestrator.deploy({ service, release, actor: "test" });

  before(async () => {
    world = await World.create({ services: ["films", "music"] });
    // Seen at the proxy itself: what each agent sends.
    const apply = world.proxy.apply.bind(world.proxy);
    const applyDelta = world.proxy.applyDelta.bind(world.proxy);
    world.proxy.apply = async (table) => {
      sent.push({ kind: "whole", table });
      return apply(table);
    };
    world.proxy.applyDelta = async (delta) => {
      const entry: (typeof sent)[number] = { kind: "delta", delta };
      sent.push(entry);
      const answer = await applyDelta(delta);
      entry.answer = answer;
      return answer;
    };
    agent = world.agent();
    await agent.start();
    for (const s of [SERVICE, "films", "music"]) await deploy(s, "v1");
  });
  after(async () => {
    await world?.close();
  });

  it("a flip sends the flipped service's routes alone, and the proxy ends with the table a whole rebuild makes", async () => {
    const from = sent.length;
    const outcome = await deploy("films", "v2");
    assert.equal(outcome.history.outcome, "succeeded", JSON.stringify(outcome.history));
    const flips = sent.slice(from);
    assert.ok(flips.length > 0);
    for (const s of flips) {
      assert.equal(s.kind, "delta", "no whole table once the proxy's is known");
      if (s.kind === "delta") {
        assert.equal(s.answer, "applied");
        assert.ok(s.delta.services.every((n) => n === "films"), `only films: ${s.delta.services.join(", ")}`);
      }
    }
    assert.ok(flips.some((s) => s.kind === "delta" && s.delta.services.includes("films") && s.delta.routes.some((r) => r.poolId.includes("v2"))), "the flip's delta carries films v2");
    // What a fresh agent would build from the Store, every service rebuilt.
    const fresh = world.agent();
    const rebuilt = await fresh.orchestrator.routes.apply();
    const served = world.proxy.table();
    assert.deepEqual(routesOf(served), routesOf(rebuilt));
    assert.equal(sent.at(-1)?.kind, "whole", "a new agent knows nothing of the proxy's table: it sends it whole");
  });

  it("a proxy at another version than the agent thinks refuses the delta, and the agent sends the whole table, rebuilt", async () => {
    // Another agent (the one above) applied since: this agent's delta names a version the proxy left.
    const from = sent.length;
    assert.equal((await deploy("music", "v2")).history.outcome, "succeeded");
    const these = sent.slice(from);
    assert.deepEqual(these.slice(0, 2).map((s) => (s.kind === "delta" ? `delta ${s.answer}` : "whole")), ["delta stale", "whole"]);
    assert.equal(world.proxy.table().routes.find((r) => r.service === "music")?.poolId.includes("v2"), true);
    assert.equal(world.proxy.table().routes.find((r) => r.service === "films")?.poolId.includes("v2"), true, "the other agent's flip is kept: the whole table came from the Store");
  });

  it("after a failed apply the next table goes whole", async () => {
    const disarm = world.proxy.inject({ failApply: "the proxy is down", times: 1 });
    try {
      await assert.rejects(agent.orchestrator.applyRoutes({ [SERVICE]: (await agent.records.color(SERVICE))! }), /the proxy is down/);
    } finally {
      disarm();
    }
    agent.orchestrator.routes.settle(SERVICE);
    const from = sent.length;
    await agent.orchestrator.applyRoutes();
    assert.deepEqual(sent.slice(from).map((s) => s.kind), ["whole"]);
    const next = sent.length;
    await agent.orchestrator.applyRoutes();
    assert.deepEqual(sent.slice(next).map((s) => (s.kind === "delta" ? `delta ${s.delta.services.length}` : "whole")), ["delta 0"], "nothing changed: only the version moves");
  });
});

describe("route tables published for other agents' proxies", { timeout: 60_000 }, () => {
  it("a delta is sent only on top of the table published last: once another leader published, the next table is rebuilt and goes whole, and only whole tables are published", async () => {
    const world = await World.create({ services: ["films"], publishRoutes: true });
    try {
      const kinds: string[] = [];
      const apply = world.proxy.apply.bind(world.proxy);
      const applyDelta = world.proxy.applyDelta.bind(world.proxy);
      world.proxy.apply = async (table) => (kinds.push("whole"), apply(table));
      world.proxy.applyDelta = async (delta) => (kinds.push("delta"), applyDelta(delta));
      const agent = world.agent();
      await agent.start();
      await agent.orchestrator.deploy({ service: SERVICE, release: "v1", actor: "test" });
      await agent.orchestrator.deploy({ service: "films", release: "v1", actor: "test" });
      const published = async (): Promise<RouteTable> => JSON.parse((await world.store.get(keys.routeTable()))!.value) as RouteTable;
      assert.deepEqual(routesOf(await published()), routesOf(world.proxy.table()), "what is published is what the proxy serves");
      assert.ok(kinds.includes("delta"), "deltas while this agent's table is the one published");

      // Another leader's table, published since: this agent's next flip must not merge onto its own older one.
      const other = { ...(await published()), version: (await published()).version + 1, routes: (await published()).routes.filter((r) => r.service !== "films") };
      await agent.records.publishTable(other);
      kinds.length = 0;
      await agent.orchestrator.deploy({ service: SERVICE, release: "v2", actor: "test" });
      assert.equal(kinds[0], "whole", `the first table after another leader's is whole: ${kinds.join(", ")}`);
      assert.deepEqual(routesOf(await published()), routesOf(world.proxy.table()));
      assert.ok((await published()).routes.some((r) => r.service === "films"), "rebuilt from the Store, not from the other leader's table");
    } finally {
      await world.close();
    }
  });
});

/** Each service's routes, whatever their order in the table. */
function routesOf(t: RouteTable): Record<string, Route[]> {
  const out: Record<string, Route[]> = {};
  for (const r of t.routes) (out[r.service] ??= []).push(r);
  return out;
}
