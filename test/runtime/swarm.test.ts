// The swarm runtime on a real three-node Swarm (scripts/swarm-lab.sh: network namespaces, one
// dockerd each), with images copied to every node through the Engine API, no registry. The lab is
// started when it is not up; npm test starts it and tears it down.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import type { StartRequest } from "../../src/runtime/contract.js";
import { LABELS } from "../../src/runtime/docker.js";
import { newInstanceId } from "../../src/runtime/identity.js";
import { copyImageToNodes } from "../../src/runtime/swarm-images.js";
import { SwarmRuntime, type SwarmRuntimeOptions } from "../../src/runtime/swarm.js";
import { echoImageOptions, ensureTestImage, removeTestImage } from "../support/images.js";
import { LAB_HOST_ADDR, LAB_NODES, ensureSwarmLab, labAddr, labApi, labNodeSockets, labSocket } from "../support/swarm-lab.js";
import { runRuntimeContract } from "./contract.test-suite.js";
import { waitFor, waitReachable } from "./helpers.js";

const IMAGE_REPO = "turquoise-test-swarm-runtime";
const RUN_LABEL = "turquoise.test-run";
const RUN_ID = randomBytes(4).toString("hex");
const AGENT_ID = `test-${RUN_ID}`;
const manager = labApi("node1");
let echoImage = "";
/** Images only this run uses: removed from every node afterwards. */
const images: string[] = [];

before(async () => {
  ensureSwarmLab();
  echoImage = await ensureTestImage(IMAGE_REPO, { ...echoImageOptions(), api: manager });
  await copyImageToNodes(echoImage, manager, [labApi("node2"), labApi("node3")]);
});

after(async () => {
  for (const s of await manager.listServices({ labels: [`${RUN_LABEL}=${RUN_ID}`] })) await manager.removeService(s.ID).catch(() => undefined);
  for (const image of images) for (const node of LAB_NODES) await removeTestImage(image, labApi(node));
});

function newRuntime(opts: Partial<SwarmRuntimeOptions> = {}): SwarmRuntime {
  return new SwarmRuntime({ agentId: AGENT_ID, socketPath: labSocket("node1"), nodeSockets: labNodeSockets(), ...opts, labels: { [RUN_LABEL]: RUN_ID } });
}

runRuntimeContract("swarm", async () => {
  const runtime = newRuntime();
  const peers: SwarmRuntime[] = [];
  return {
    runtime,
    agentId: AGENT_ID,
    peer: (agentId = AGENT_ID) => {
      const peer = newRuntime({ agentId });
      peers.push(peer);
      return peer;
    },
    echoApp: { command: [], cwd: "/", image: echoImage },
    cleanup: async () => {
      runtime.close();
      for (const peer of peers) peer.close();
    },
  };
});

describe("SwarmRuntime", () => {
  const runtimes: SwarmRuntime[] = [];
  const agent = (opts: Partial<SwarmRuntimeOptions> = {}) => {
    const runtime = newRuntime(opts);
    runtimes.push(runtime);
    return runtime;
  };
  const echo = (overrides: Partial<StartRequest> = {}) => {
    const req = { service: "books", slot: "blue" as const, release: "v1", command: [], cwd: "/", env: {}, apiUrl: "http://198.18.100.1:7070", image: echoImage, ...overrides };
    return { id: newInstanceId(req.service, req.slot), ...req };
  };

  afterEach(async () => {
    for (const runtime of runtimes.splice(0)) {
      for (const instance of await runtime.list()) await runtime.stop(instance, 1_000);
      runtime.close();
    }
  });

  test("a daemon that is not a Swarm manager is refused with what to do", async () => {
    const worker = new SwarmRuntime({ agentId: AGENT_ID, socketPath: labSocket("node2") });
    await assert.rejects(worker.ping(), /at \/run\/turquoise-lab\/node2\/docker\.sock is not a Swarm manager .*point runtime swarm at a manager's socket/);
    await newRuntime().ping();
  });

  test("each instance is a labelled one-replica service publishing in host mode at its node's address", async () => {
    const runtime = agent();
    const info = await runtime.start(echo({ stopTimeoutMs: 7_500, placement: ["node.role==worker"], resources: { cpus: 0.5, memoryBytes: 256 * 1024 * 1024 } }));
    await waitReachable(info);
    assert.ok([labAddr("node2"), labAddr("node3")].includes(info.host), `placed on a worker, got ${info.host}`);
    const s = await manager.inspectService(info.ref);
    assert.equal(s.Spec.Name, `turquoise-${info.id}`);
    assert.deepEqual(s.Spec.Mode, { Replicated: { Replicas: 1 } });
    assert.equal(s.Spec.Labels[LABELS.instance], info.id);
    assert.equal(s.Spec.Labels[LABELS.agent], AGENT_ID);
    assert.deepEqual(s.Spec.TaskTemplate.RestartPolicy.Condition, "none");
    assert.equal(s.Spec.TaskTemplate.ContainerSpec.StopGracePeriod, 7_500_000_000);
    assert.deepEqual(s.Spec.TaskTemplate.Placement?.Constraints, ["node.role==worker"]);
    assert.deepEqual(s.Spec.TaskTemplate.Resources?.Limits, { NanoCPUs: 500_000_000, MemoryBytes: 256 * 1024 * 1024 });
    assert.deepEqual(s.Spec.EndpointSpec?.Ports?.map((p) => [p.TargetPort, p.PublishMode]), [[8080, "host"]]);
  });

  test("a task on a worker reaches the agent's address on the lab bridge (TURQUOISE_API) and reads a mounted volume", async () => {
    // The agent's side: an HTTP server on the host's lab address, as agent.listen: 198.18.100.1:<port> gives.
    const server = http.createServer((req, res) => res.end(`hello from the host, ${req.url}`));
    await new Promise<void>((resolve) => server.listen(0, LAB_HOST_ADDR, resolve));
    const dir = mkdtempSync(path.join(tmpdir(), "turquoise-swarm-volume-"));
    writeFileSync(path.join(dir, "greeting.txt"), "from a volume");
    try {
      const runtime = agent();
      const probe = [
        "fetch(process.env.TURQUOISE_API + '/probe').then((r) => r.text()).then((t) => console.log('api said: ' + t), (e) => console.log('api failed: ' + e.cause?.code));",
        "console.log('volume says: ' + require('fs').readFileSync('/data/greeting.txt', 'utf8'));",
        "require('fs').writeFile('/data/x', '', (e) => console.log('write: ' + (e ? e.code : 'ok')));",
        "setInterval(() => {}, 1000);",
      ].join(" ");
      const info = await runtime.start(echo({
        command: ["node", "-e", probe],
        apiUrl: `http://${LAB_HOST_ADDR}:${(server.address() as AddressInfo).port}`,
        placement: ["node.role==worker"],
        volumes: [{ source: dir, target: "/data", readOnly: true }],
      }));
      assert.ok([labAddr("node2"), labAddr("node3")].includes(info.host));
      await waitFor("the task's output", async () => /api said: .*\n[\s\S]*write: /.test(await runtime.logs(info)) || /write: [\s\S]*api said/.test(await runtime.logs(info)), 20_000);
      const logs = await runtime.logs(info);
      assert.match(logs, /api said: hello from the host, \/probe/);
      assert.match(logs, /volume says: from a volume/);
      assert.match(logs, /write: EROFS/, "mounted read-only");
    } finally {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("describeRelease finds an image missing on one node, naming the node", async () => {
    const runtime = agent();
    // This run's own image, so no node has it from an earlier run.
    const only = await ensureTestImage(IMAGE_REPO, { ...echoImageOptions({ labels: { [LABELS.schema]: "1..3", [RUN_LABEL]: RUN_ID } }), api: manager });
    images.push(only);
    await copyImageToNodes(only, manager, [labApi("node2")]);
    const described = await runtime.describeRelease({ service: "books", release: "v3", cwd: "/", image: only });
    assert.equal(described.exists, false);
    assert.match(described.reason ?? "", new RegExp(`is not present on node ${labAddr("node3").replace(/\./g, "\\.")}`));
    await copyImageToNodes(only, manager, [labApi("node3")]);
    assert.deepEqual(await runtime.describeRelease({ service: "books", release: "v3", cwd: "/", image: only }), { exists: true, schema: { min: 1, max: 3 } });
  });

  test("a task whose node dies is reported as an exit once Swarm gives it up; without node sockets signal says why", async () => {
    const runtime = agent({ nodeSockets: {} });
    const info = await runtime.start(echo());
    await waitReachable(info);
    await assert.rejects(runtime.signal(info, "SIGUSR2"), /Swarm's API cannot signal a task, and the agent has no socket for its node/);
    // Removing the service behind the agent's back ends its task, as a lost node does.
    await manager.removeService(info.ref);
    const exits: string[] = [];
    runtime.onExit((e) => exits.push(e.instance.id));
    await waitFor("the exit", async () => exits.includes(info.id), 20_000);
    assert.deepEqual(await runtime.list(), []);
  });
});
