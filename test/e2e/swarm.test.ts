// End to end on the three-node Swarm lab (scripts/swarm-lab.sh): the real agent, proxy and CLI, with
// books-service as Swarm tasks on the two workers, images copied to every node without a registry.
// Under keep-alive GET + POST load through Turquoise's proxy, deploys and rollbacks drop nothing.

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { ensureBooksImages } from "../../src/demo/images.js";
import { LoadGenerator } from "../../src/demo/load.js";
import { createWorkspace, type Workspace } from "../../src/demo/workspace.js";
import { LABELS } from "../../src/runtime/docker.js";
import { agentIdFor } from "../../src/runtime/identity.js";
import { copyImageToNodes } from "../../src/runtime/swarm-images.js";
import { ensureSwarmLab, labAddr, labApi, labNodeSockets, labSocket } from "../support/swarm-lab.js";
import { releaseServing, status } from "./helpers.js";

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
    // Exactly the live instances run as Swarm services: every old slot was stopped and removed.
    const s = await status(ws);
    const services = await manager.listServices({ labels: [`${LABELS.managed}=true`, `${LABELS.agent}=${agentIdFor(path.join(ws.dir, ".turquoise"))}`] });
    assert.deepEqual(services.map((sv) => sv.ID).sort(), s.instances.map((i) => i.ref).sort());
    console.log(`# ${CYCLES} cycles: ${report.total} requests, ${report.failed} failed, by release ${JSON.stringify(report.byRelease)}`);
  });
});
