// End to end: Consul clients follow a blue/green flip through the agent's Consul API: the consul
// npm client's watch (blocking queries), and the queries Prometheus' consul_sd sends, as its Go
// client sends and parses them (Debian's Prometheus is built without consul_sd_configs).
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import Consul from "consul";
import type { Workspace } from "../../src/demo/workspace.js";
import { RELEASE_KINDS, api, tokenOf, waitFor, workspaceWith } from "./helpers.js";
import { consulRequest, enableConsul } from "./consul-helpers.js";

interface HealthEntry {
  Node: { Address: string };
  Service: { ID: string; Address: string; Port: number; Tags: string[]; Meta: Record<string, string> };
  Checks: Array<{ Status: string }>;
}

/** Prometheus' target address for a health entry: the service's address, else its node's (discovery/consul/consul.go). */
function targetOf(e: HealthEntry): string {
  return `${e.Service.Address || e.Node.Address}:${e.Service.Port} ${e.Service.Meta.release}`;
}

/** What Prometheus' Go client demands of every query's answer (hashicorp/consul/api parseQueryMeta), or why it would fail. */
function goClientProblem(headers: Record<string, string | string[] | undefined>): string | undefined {
  if (!/^\d+$/.test(String(headers["x-consul-index"]))) return `X-Consul-Index ${headers["x-consul-index"]} is not a uint`;
  if (!/^\d+$/.test(String(headers["x-consul-lastcontact"]))) return `X-Consul-LastContact ${headers["x-consul-lastcontact"]} is not a uint`;
  if (headers["x-consul-knownleader"] !== "true") return "X-Consul-KnownLeader is not true";
  return undefined;
}

describe("Consul clients follow a flip", () => {
  let ws: Workspace;
  let port: number;
  let token: string;

  before(async () => {
    ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.good("v2") }, { replicas: 2 });
    port = await enableConsul(ws);
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    token = tokenOf(ws, "registry-token");
  });
  after(async () => ws?.destroy());

  /** The live instances as Turquoise's own API lists them, as "address:port release". */
  async function live(): Promise<string[]> {
    const r = await api(ws, "/v1/catalog/service/books");
    return (JSON.parse(r.body) as Array<{ address: string; port: number; role: string; release: string }>)
      .filter((i) => i.role === "live")
      .map((i) => `${i.address}:${i.port} ${i.release}`)
      .sort();
  }

  it("the consul npm client's watch and Prometheus-shaped blocking queries see the new instances in and the old ones out", async () => {
    const before = await live();
    assert.equal(before.length, 2);

    // The consul npm client: a watch on the live-tagged instances, as a client of a blue/green registry would keep.
    const consul = new Consul({ host: "127.0.0.1", port, defaults: { token } });
    let seen: string[] = [];
    const errors: unknown[] = [];
    const watch = consul.watch({ method: consul.health.service, options: { service: "books", tag: "live", wait: "2m" } as unknown as Record<string, string> });
    watch.on("change", (data: HealthEntry[]) => (seen = data.map(targetOf).sort()));
    watch.on("error", (e: unknown) => errors.push(e));

    // Prometheus' consul_sd (2.x): agent/self for the datacenter, then its health query, as the Go client writes it.
    const self = await consulRequest(port, "/v1/agent/self", { token });
    const dc = (JSON.parse(self.body) as { Config: { Datacenter: string } }).Config.Datacenter;
    const promQuery = (index: number) => `/v1/health/service/books?dc=${dc}${index ? `&index=${index}` : ""}&stale=&tag=live&wait=120000ms`;
    const first = await consulRequest(port, promQuery(0), { token });
    assert.equal(first.status, 200);
    assert.equal(goClientProblem(first.headers), undefined);
    assert.deepEqual((JSON.parse(first.body) as HealthEntry[]).map(targetOf).sort(), before);
    await waitFor("the watch to see v1", () => seen.join() === before.join() || undefined, 10_000);

    // Prometheus' loop: block at the last index; every answer with a new index is a new target list.
    let promIndex = first.index;
    let promTargets: string[] = [];
    let promStop = false;
    const promLoop = (async () => {
      while (!promStop) {
        const a = await consulRequest(port, promQuery(promIndex), { token });
        assert.equal(a.status, 200, a.body);
        assert.equal(goClientProblem(a.headers), undefined);
        if (a.index !== promIndex) promTargets = (JSON.parse(a.body) as HealthEntry[]).map(targetOf).sort();
        promIndex = a.index;
      }
    })();

    await ws.cli(["deploy", "books", "--release", "v2"]);
    const deployed = Date.now();
    const after = await live();
    assert.deepEqual(after.map((t) => t.split(" ")[1]), ["v2", "v2"]);
    assert.deepEqual(after.filter((t) => before.includes(t)), []);
    await waitFor("the watch to see v2 only", () => seen.join() === after.join() || undefined, 10_000);
    await waitFor("the Prometheus-shaped loop to see v2 only", () => promTargets.join() === after.join() || undefined, 10_000);
    console.log(`# both clients saw the flip ${Date.now() - deployed}ms after the deploy returned`);
    watch.end();
    promStop = true;
    // Wake the loop's last blocked query.
    await ws.cli(["kv", "put", "config/books/wake", "1"]);
    await promLoop;
    assert.deepEqual(errors, []);
  });
});
