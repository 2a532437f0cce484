// End to end on the three-node Swarm lab (scripts/swarm-lab.sh): the real agent, proxy and CLI, with
// books-service as Swarm tasks on the two workers, images copied to every node without a registry.
// Under keep-alive GET + POST load through Turquoise's proxy, deploys and rollbacks drop nothing.

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { ensureBooksImages, ensureImage } from "../../src/demo/images.js";
import { LoadGenerator } from "../../src/demo/load.js";
import { createWorkspace, type Workspace } from "../../src/demo/workspace.js";
import { LABELS } from "../../src/runtime/docker.js";
import { agentIdFor } from "../../src/runtime/identity.js";
import { copyImageToNodes } from "../../src/runtime/swarm-images.js";
import { LAB_NODES, ensureSwarmLab, labAddr, labApi, labNodeSockets, labSocket } from "../support/swarm-lab.js";
import { CRASH_AFTER_APP, agentEvents, releaseServing, status, waitFor } from "./helpers.js";

const BOOKS_REPO = "turquoise-test-swarm-books";
/** Deploy-and-rollback cycles under load. */
const CYCLES = 10;
const manager = labApi("node1");
let ws: Workspace;

before(async () => {
  ensureSwarmLab();
  const images = await ensureBooksImages({ prefix: BOOKS_REPO, api: manager });
  for (const release of ["v1", "v2"]) await copyImageToNodes(images[release]!, manager, [labApi("node2"), labApi("node3")]);
  ws = await createWorkspace({
    replicas: 2,
    keepPrevious: "0s",
    drainTimeout: "1s",
    deployTimeout: "30s",
    healthInterval: "500ms",
    runtime: { kind: "swarm", image: `${BOOKS_REPO}:{release}`, manager: labSocket("node1"), nodes: labNodeSockets(), placement: ["node.role==worker"] },
  });
  await ws.cli(["up", "--detach"]);
  await ws.cli(["deploy", "books", "--release", "v1"]);
});

after(async () => {
  await ws?.destroy();
});

describe("runtime swarm on three nodes", () => {
  it(`${CYCLES} deploy-and-rollback cycles under keep-alive GET + POST load: 0 failed requests, tasks on the workers only`, async () => {
    assert.equal(await releaseServing(ws), "v1");
    const load = new LoadGenerator({ baseUrl: ws.proxyUrl, concurrency: 4, postEvery: 4, maxRequests: 1_000_000, maxDurationMs: 600_000 }).start();
    const workers = [labAddr("node2"), labAddr("node3")];
    for (let i = 0; i < CYCLES; i++) {
      await ws.cli(["deploy", "books", "--release", "v2"]);
      const onV2 = await status(ws);
      assert.deepEqual(onV2.instances.map((x) => x.release), ["v2", "v2"]);
      for (const inst of onV2.instances as Array<{ address?: string }>) assert.ok(workers.includes(inst.address?.split(":")[0] ?? ""), `a task at ${inst.address}, not on a worker`);
      await ws.cli(["rollback", "books"]);
    }
    const report = await load.stop();
    assert.equal(report.failed, 0, JSON.stringify(report.failures));
    assert.ok(report.byRelease.v1! > 0 && report.byRelease.v2! > 0, JSON.stringify(report.byRelease));
    assert.equal(await releaseServing(ws), "v1");
    // Exactly the live slot runs as one Swarm service of two tasks: every old slot's service was removed.
    const s = await status(ws);
    const services = await agentServices();
    assert.deepEqual(services.map((sv) => sv.ID), [...new Set(s.instances.map((i) => i.ref))]);
    assert.deepEqual(services.map((sv) => [sv.Spec.Labels[LABELS.slot], sv.Spec.Mode.Replicated.Replicas]), [[s.color, 2]]);
    console.log(`# ${CYCLES} cycles: ${report.total} requests, ${report.failed} failed, by release ${JSON.stringify(report.byRelease)}`);
  });

  it("a task killed on its node is restarted by Swarm in its slot and rejoins the pool after its checks, under load: no second replacement, 0 failed GETs", async () => {
    const instances = async () => (await status(ws)).instances as unknown as Array<{ id: string; address: string; health: { status: string } }>;
    const victim = (await instances())[0]!;
    const load = new LoadGenerator({ baseUrl: ws.proxyUrl, concurrency: 4, postEvery: 0, maxRequests: 1_000_000, maxDurationMs: 120_000 }).start();
    const [service] = await agentServices();
    const [host, port] = victim.address.split(":");
    const nodes = await manager.listNodes();
    const task = (await manager.listTasks({ service: [service!.ID] })).find((t) => t.Status.State === "running" && nodes.find((n) => n.ID === t.NodeID)?.Status.Addr === host && t.Status.PortStatus?.Ports?.some((p) => String(p.PublishedPort) === port))!;
    const nodeName = LAB_NODES.find((n) => labAddr(n) === host)!;
    await labApi(nodeName).killContainer(task.Status.ContainerStatus!.ContainerID!, "SIGKILL");
    const back = await waitFor("the victim back in the pool at a new address, passing", async () => {
      const now = await instances();
      const again = now.find((i) => i.id === victim.id);
      return again && again.address !== victim.address && again.health.status === "passing" && now.length === 2 ? again : undefined;
    }, 90_000);
    const report = await load.stop();
    assert.equal(report.failed, 0, JSON.stringify(report.failures));
    assert.ok(back);
    const types = (await agentEvents(ws)).map((e) => e.type);
    assert.ok(types.includes("instance.rejoined"), types.join(", "));
    assert.ok(!types.includes("heal.scheduled") && !types.includes("instance.replaced"), `the healer started a replacement of its own: ${types.join(", ")}`);
    const services = await agentServices();
    assert.deepEqual(services.map((sv) => sv.Spec.Mode.Replicated.Replicas), [2], "still one service of two tasks");
  });

  it("a live release whose tasks keep crashing (Swarm restarting them) is rolled back to the previous release by the healer, once", async () => {
    // Passes its checks, then dies 6 s after each start: Swarm restarts it, and each restart counts.
    const crash = await ensureImage(BOOKS_REPO, {
      api: manager, tag: "crashloop", files: { "/app/crash-after-app.mjs": CRASH_AFTER_APP }, cmd: ["node", "/app/crash-after-app.mjs"],
      env: { CRASH_AT_START: "1", CRASH_START_MS: "6000" },
    });
    await copyImageToNodes(crash, manager, [labApi("node2"), labApi("node3")]);
    const before = (await agentEvents(ws)).length;
    await ws.cli(["deploy", "books", "--release", "crashloop"]);
    const back = await waitFor("the healer's rollback", async () => (await agentEvents(ws, "service.rolled-back"))[0], 150_000);
    assert.match(back.message, /rolled back from crash-looping crashloop to v1/);
    const s = await status(ws) as Awaited<ReturnType<typeof status>> & { degraded?: unknown };
    assert.equal(s.release, "v1");
    assert.ok(!s.degraded, "not degraded");
    assert.equal(await releaseServing(ws), "v1");
    const since = (await agentEvents(ws)).slice(before).map((e) => e.type);
    assert.ok(since.includes("heal.following"), since.join(", "));
    assert.ok(!since.includes("heal.scheduled") && !since.includes("instance.replaced"), `the healer started replacements beside Swarm: ${since.join(", ")}`);
    // The crash-looping slot's service is gone; the live slot is one service of two tasks.
    const services = await waitFor("the crash-looping slot's service removed", async () => {
      const list = await agentServices();
      return list.length === 1 ? list : undefined;
    }, 60_000);
    assert.deepEqual(services.map((sv) => [sv.Spec.Labels[LABELS.release], sv.Spec.Mode.Replicated.Replicas]), [["v1", 2]]);
  });
});

function agentServices() {
  return manager.listServices({ labels: [`${LABELS.managed}=true`, `${LABELS.agent}=${agentIdFor(path.join(ws.dir, ".turquoise"))}`] });
}
