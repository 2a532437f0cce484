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
import type { ExitEvent, InstanceInfo, StartRequest } from "../../src/runtime/contract.js";
import { LABELS } from "../../src/runtime/docker.js";
import { newInstanceId } from "../../src/runtime/identity.js";
import { copyImageToNodes } from "../../src/runtime/swarm-images.js";
import { SwarmRuntime, TASK_LABEL_PREFIX, type SwarmRuntimeOptions } from "../../src/runtime/swarm.js";
import { echoImageOptions, ensureTestImage, removeTestImage } from "../support/images.js";
import { LAB_HOST_ADDR, LAB_NODES, ensureSwarmLab, labAddr, labApi, labNodeSockets, labSocket } from "../support/swarm-lab.js";
import { runRuntimeContract } from "./contract.test-suite.js";
import { getJson, waitFor, waitReachable } from "./helpers.js";

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

  test("a slot is one labelled Swarm service <service>-<slot>-<tag> with the slot's replicas, publishing in host mode at each node's address", async () => {
    const runtime = agent();
    const reqs = [1, 2].map(() => echo({ stopTimeoutMs: 7_500, placement: ["node.role==worker"], resources: { cpus: 0.5, memoryBytes: 256 * 1024 * 1024 } }));
    const infos = await runtime.slots.start(reqs);
    assert.deepEqual(infos.map((i) => i.id), reqs.map((r) => r.id), "each instance keeps the id it was recorded under");
    for (const info of infos) {
      const reply = await waitReachable(info);
      assert.ok([labAddr("node2"), labAddr("node3")].includes(info.host), `placed on a worker, got ${info.host}`);
      // Each task reads its own id from its slot's label (a Go template in Swarm's Env).
      assert.equal(reply.env.TURQUOISE_INSTANCE, info.id);
    }
    assert.equal(new Set(infos.map((i) => i.ref)).size, 1, "one service for the slot");
    const s = await manager.inspectService(infos[0]!.ref);
    assert.match(s.Spec.Name, /^books-blue-[0-9a-f]{8}$/);
    assert.equal(s.Spec.Name, runtime.serviceName("books", "blue"));
    assert.deepEqual(s.Spec.Mode, { Replicated: { Replicas: 2 } });
    assert.deepEqual(Object.entries(s.Spec.Labels).filter(([k]) => k.startsWith(TASK_LABEL_PREFIX)).map(([, v]) => v).sort(), infos.map((i) => i.id).sort());
    assert.equal(s.Spec.Labels[LABELS.agent], AGENT_ID);
    assert.equal(s.Spec.TaskTemplate.RestartPolicy.Condition, "any");
    assert.equal(s.Spec.TaskTemplate.ContainerSpec.StopGracePeriod, 7_500_000_000);
    assert.deepEqual(s.Spec.TaskTemplate.Placement?.Constraints, ["node.role==worker"]);
    assert.deepEqual(s.Spec.TaskTemplate.Resources?.Limits, { NanoCPUs: 500_000_000, MemoryBytes: 256 * 1024 * 1024 });
    assert.deepEqual(s.Spec.EndpointSpec?.Ports?.map((p) => [p.TargetPort, p.PublishMode]), [[8080, "host"]]);

    // One more instance scales the slot's service up; another release cannot join the slot.
    const third = await runtime.start(echo({ stopTimeoutMs: 7_500, placement: ["node.role==worker"], resources: { cpus: 0.5, memoryBytes: 256 * 1024 * 1024 } }));
    assert.equal(third.ref, infos[0]!.ref);
    assert.equal((await waitReachable(third)).env.TURQUOISE_INSTANCE, third.id);
    assert.deepEqual((await manager.inspectService(third.ref)).Spec.Mode, { Replicated: { Replicas: 3 } });
    await assert.rejects(runtime.start(echo({ release: "v9" })), /slot blue's Swarm service books-blue-[0-9a-f]{8} runs release v1 with other settings/);

    // One chosen instance stops alone (its container on its node, then a scale-down); the others keep serving.
    const [gone, ...kept] = [infos[0]!, infos[1]!, third];
    await runtime.stop(gone, 2_000);
    await assert.rejects(getJson(gone.host, gone.port), /ECONNREFUSED|ECONNRESET|socket hang up/);
    for (const k of kept) assert.equal((await waitReachable(k)).env.TURQUOISE_INSTANCE, k.id);
    const after = await manager.inspectService(third.ref);
    assert.deepEqual(after.Spec.Mode, { Replicated: { Replicas: 2 } });
    assert.deepEqual(Object.entries(after.Spec.Labels).filter(([k]) => k.startsWith(TASK_LABEL_PREFIX)).map(([, v]) => v).sort(), kept.map((i) => i.id).sort());
    assert.deepEqual((await runtime.list()).map((i) => i.id).sort(), kept.map((i) => i.id).sort());

    // The last ones retire the slot: its service is removed.
    await runtime.slots.stop(kept, 2_000);
    await assert.rejects(manager.inspectService(third.ref), /404|not found|No such service/i);
  });

  test("a task that dies is restarted by Swarm in its slot: the same instance at a new task, reported as an exit then a restart", async () => {
    const runtime = agent();
    const restarts: InstanceInfo[] = [];
    const exits: ExitEvent[] = [];
    runtime.slots.onRestarted((e) => restarts.push(e.instance));
    runtime.onExit((e) => exits.push(e));
    const [a, b] = await runtime.slots.start([echo(), echo()]);
    await waitReachable(a!);
    await runtime.slots.restart(a!, 2_000);
    await waitFor("the exit of its run", async () => exits.some((e) => e.instance.id === a!.id), 20_000);
    assert.equal(exits[0]!.restarting, true);
    const back = await waitFor("its next run", async () => restarts.find((r) => r.id === a!.id), 30_000);
    assert.equal((await waitReachable(back)).env.TURQUOISE_INSTANCE, a!.id, "the new task is the same instance");
    assert.deepEqual((await runtime.list()).map((i) => i.id).sort(), [a!.id, b!.id].sort());
    assert.ok(!exits.some((e) => e.instance.id === b!.id), "the other task never stopped");
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

  test("without node sockets: signal and stopping one chosen task are refused with why; a slot's service removed by hand is an exit for good", async () => {
    const runtime = agent({ nodeSockets: {} });
    const [info, other] = await runtime.slots.start([echo(), echo()]);
    await waitReachable(info!);
    await assert.rejects(runtime.signal(info!, "SIGUSR2"), /Swarm's API cannot signal a task, and the agent has no socket for its node/);
    await assert.rejects(runtime.stop(info!, 1_000), /cannot stop books-blue-\w+ alone: Swarm's API cannot stop a chosen task of a service, and the agent has no socket for its node/);
    assert.equal((await waitReachable(info!)).env.TURQUOISE_INSTANCE, info!.id, "the refused stop touched nothing");
    // Removing the service behind the agent's back ends its tasks for good.
    const exits: ExitEvent[] = [];
    runtime.onExit((e) => exits.push(e));
    await manager.removeService(info!.ref);
    await waitFor("the exits", async () => exits.filter((e) => !e.restarting).length === 2, 20_000);
    assert.deepEqual(exits.map((e) => e.instance.id).sort(), [info!.id, other!.id].sort());
    assert.deepEqual(await runtime.list(), []);
  });
});
