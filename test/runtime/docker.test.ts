// The docker runtime against the real local Docker Engine: real containers from images built here
// without a registry (test/support/images.ts). scripts/ensure-docker.sh installs and starts Docker
// first, so these tests run on a fresh machine instead of skipping.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, afterEach, before, describe, test } from "node:test";
import type { ExitEvent, InstanceInfo, StartRequest } from "../../src/runtime/contract.js";
import { compareVersions, DockerApi, DockerApiError, demuxDockerStream, MAX_API_VERSION, resolveEndpoint } from "../../src/runtime/docker-api.js";
import { CONTAINER_PORT, DockerRuntime, LABELS, type DockerRuntimeOptions } from "../../src/runtime/docker.js";
import { newInstanceId } from "../../src/runtime/identity.js";
import { echoImageOptions, ensureTestImage, removeTestImage, type TestImageOptions } from "../support/images.js";
import { runRuntimeContract } from "./contract.test-suite.js";
import { waitFor, waitReachable } from "./helpers.js";

const ENSURE_DOCKER = fileURLToPath(new URL("../../../scripts/ensure-docker.sh", import.meta.url));
/** One repository per test file, so a parallel file's cleanup cannot remove these images. */
const IMAGE_REPO = "turquoise-test-docker-runtime";
/** On every container this file starts; after() removes whatever still carries it. */
const RUN_LABEL = "turquoise.test-run";
const RUN_ID = randomBytes(4).toString("hex");
/** The agent id of this file's runtimes: one per run, as one per state dir in an agent. */
const AGENT_ID = `test-${RUN_ID}`;

const api = new DockerApi();
const images: string[] = [];
let echoImage = "";

before(async () => {
  execFileSync("bash", [ENSURE_DOCKER], { stdio: ["ignore", "inherit", "inherit"], timeout: 300_000 });
  echoImage = await buildImage(echoImageOptions());
});

after(async () => {
  for (const c of await api.listContainers({ all: true, labels: [`${RUN_LABEL}=${RUN_ID}`] })) await api.removeContainer(c.Id, { force: true });
  for (const image of images) await removeTestImage(image, api);
});

async function buildImage(opts: TestImageOptions): Promise<string> {
  const ref = await ensureTestImage(IMAGE_REPO, { ...opts, api });
  images.push(ref);
  return ref;
}

function newRuntime(opts: Partial<DockerRuntimeOptions> = {}): DockerRuntime {
  return new DockerRuntime({ agentId: AGENT_ID, ...opts, labels: { [RUN_LABEL]: RUN_ID } });
}

/** The containers this file has left, running or not. */
async function leftovers(): Promise<string[]> {
  return (await api.listContainers({ all: true, labels: [`${RUN_LABEL}=${RUN_ID}`] })).map((c) => c.Names[0] ?? c.Id);
}

runRuntimeContract("docker", async () => {
  const runtime = newRuntime();
  const peers: DockerRuntime[] = [];
  return {
    runtime,
    agentId: AGENT_ID,
    peer: (agentId = AGENT_ID) => {
      const peer = newRuntime({ agentId });
      peers.push(peer);
      return peer;
    },
    // An empty command: the image's own CMD runs the echo app.
    echoApp: { command: [], cwd: "/", image: echoImage },
    cleanup: async () => {
      runtime.close();
      for (const peer of peers) peer.close();
    },
  };
});

describe("DockerRuntime", () => {
  const runtimes: DockerRuntime[] = [];
  const agent = (opts: Partial<DockerRuntimeOptions> = {}) => {
    const runtime = newRuntime(opts);
    runtimes.push(runtime);
    return runtime;
  };
  const echo = (overrides: Partial<StartRequest> = {}): StartRequest => {
    const req = { service: "books", slot: "blue" as const, release: "v1", command: [], cwd: "/", env: {}, apiUrl: "http://127.0.0.1:7070", image: echoImage, ...overrides };
    return { id: newInstanceId(req.service, req.slot), ...req };
  };

  afterEach(async () => {
    for (const runtime of runtimes.splice(0)) {
      for (const instance of await runtime.list()) await runtime.stop(instance, 1_000);
      runtime.close();
    }
  });

  test("a daemon that cannot be reached is a clear error naming the socket", async () => {
    const runtime = new DockerRuntime({ agentId: AGENT_ID, socketPath: "/nonexistent/turquoise/docker.sock" });
    const unreachable = (e: Error & { code?: string }) => {
      assert.equal(e.code, "RUNTIME_UNAVAILABLE");
      assert.match(e.message, /^cannot reach the Docker daemon at \/nonexistent\/turquoise\/docker\.sock \(ENOENT\): is dockerd running\?$/);
      return true;
    };
    await assert.rejects(runtime.start(echo()), unreachable);
    await assert.rejects(runtime.describeRelease({ service: "books", release: "v1", cwd: "/", image: echoImage }), unreachable);
    runtime.close();
  });

  test("a missing image is a clear error, and describeRelease says it does not exist", async () => {
    const runtime = agent();
    await assert.rejects(runtime.start(echo({ image: "turquoise-test-missing:v2", release: "v2" })), (e: Error & { code?: string }) => {
      assert.equal(e.code, "NOT_FOUND");
      assert.equal(
        e.message,
        'cannot start books release v2: image "turquoise-test-missing:v2" is not present locally, and no registry is reachable from here: build or load it first (docker build / docker load)',
      );
      return true;
    });
    const described = await runtime.describeRelease({ service: "books", release: "v2", cwd: "/", image: "turquoise-test-missing:v2" });
    assert.equal(described.exists, false);
    assert.equal(described.schema, null);
    assert.match(described.reason ?? "", /image "turquoise-test-missing:v2" is not present locally, and no registry is reachable/);
    assert.deepEqual(await leftovers(), []);
  });

  test("a container that exits at start fails start with its exit code and last output, and is removed", async () => {
    const runtime = agent({ startCheckMs: 5_000 });
    const exits: ExitEvent[] = [];
    runtime.onExit((e) => exits.push(e));
    const startedAt = Date.now();
    await assert.rejects(runtime.start(echo({ env: { EXIT_AT_ONCE: "1" } })), (e: Error & { code?: string }) => {
      assert.equal(e.code, "DEPLOY_FAILED");
      assert.match(e.message, /^cannot start books release v1: its container exited with code 3 right after it started; its last output:/);
      assert.match(e.message, /echo-app: EXIT_AT_ONCE is set, exiting with code 3/);
      return true;
    });
    // The start check ends with the death, not with the window.
    assert.ok(Date.now() - startedAt < 4_000, `start took ${Date.now() - startedAt}ms`);
    assert.deepEqual(await leftovers(), []);
    assert.deepEqual(await runtime.list(), []);
    assert.deepEqual(exits, [], "an instance that never started is no exit to report");
  });

  test("containers are named and labelled for Turquoise, publish on 127.0.0.1 only, and record the stop timeout", async () => {
    const runtime = agent();
    const info = await runtime.start(echo({ stopTimeoutMs: 7_500 }));
    await waitReachable(info);
    const c = await api.inspectContainer(info.ref);
    assert.equal(c.Name, `/turquoise-${info.id}`);
    assert.deepEqual(
      Object.fromEntries(Object.entries(c.Config.Labels ?? {}).filter(([k]) => k.startsWith("turquoise."))),
      {
        [LABELS.managed]: "true",
        [LABELS.service]: "books",
        [LABELS.slot]: "blue",
        [LABELS.release]: "v1",
        [LABELS.instance]: info.id,
        [LABELS.agent]: AGENT_ID,
        [RUN_LABEL]: RUN_ID,
        "turquoise.test": "true", // from the image
      },
    );
    assert.equal((c.Config as { StopTimeout?: number }).StopTimeout, 8);
    assert.equal(info.host, "127.0.0.1");
    const bindings = c.NetworkSettings.Ports?.[`${CONTAINER_PORT}/tcp`] ?? [];
    assert.deepEqual(bindings, [{ HostIp: "127.0.0.1", HostPort: String(info.port) }]);
    assert.deepEqual(c.HostConfig.PortBindings?.[`${CONTAINER_PORT}/tcp`], [{ HostIp: "127.0.0.1", HostPort: "" }]);
  });

  test("a command in the request replaces the image's CMD; its output stays readable after the container is removed", async () => {
    const runtime = agent();
    const exits: ExitEvent[] = [];
    runtime.onExit((e) => exits.push(e));
    const info = await runtime.start(echo({ command: ["node", "-e", "setTimeout(() => console.log('custom ' + process.env.TURQUOISE_RELEASE), 300)"] }));
    await waitFor("the exit event", async () => exits.length === 1);
    assert.deepEqual([exits[0]!.exitCode, exits[0]!.signal], [0, null]);
    assert.equal(await runtime.logs(info), "custom v1\n");
    assert.deepEqual(await leftovers(), []);
  });

  test("a restarted agent adopts running containers: lists, inspects and stops them", async () => {
    const first = agent();
    const info = await first.start(echo());
    await waitReachable(info);
    first.close();

    const second = agent();
    const exits: ExitEvent[] = [];
    second.onExit((e) => exits.push(e));
    assert.deepEqual(await second.adopt([info]), { alive: [info], dead: [], refused: [] });
    assert.deepEqual((await second.list()).map((i) => i.id), [info.id]);
    assert.deepEqual(await second.inspect(info), { running: true });
    await second.signal(info, "SIGUSR2");
    await waitFor("SIGUSR2 in the logs", async () => (await second.logs(info)).includes("SIGUSR2 received"));

    assert.deepEqual(await second.stop(info, 5_000), { killed: false });
    assert.equal(exits.length, 1);
    assert.deepEqual(await second.list(), []);
    assert.deepEqual(await leftovers(), []);
  });

  test("an adopted container killed from outside fires onExit once on the new agent", async () => {
    const info = await agent().start(echo());
    await waitReachable(info);

    const second = agent();
    const exits: ExitEvent[] = [];
    second.onExit((e) => exits.push(e));
    await second.adopt([info]);
    await api.killContainer(info.ref, "SIGKILL");

    await waitFor("the exit event on the new agent", async () => exits.length === 1);
    assert.equal(exits[0]!.instance.id, info.id);
    assert.equal(exits[0]!.signal, "SIGKILL");
    assert.deepEqual(await second.inspect(info), { running: false, exitCode: null, signal: "SIGKILL" });
    assert.deepEqual(await second.list(), []);
    await waitFor("the dead container to be removed", async () => (await leftovers()).length === 0);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(exits.length, 1);
  });

  test("adopt reports removed or foreign containers as dead; listManaged finds containers nobody recorded", async () => {
    const first = agent();
    const recorded = await first.start(echo());
    const orphan = await first.start(echo({ slot: "green" }));
    const gone = await first.start(echo({ service: "authors" }));
    await first.stop(gone, 1_000);
    first.close();

    const second = agent();
    const foreign: InstanceInfo = { ...recorded, id: "books-blue-foreign" };
    assert.deepEqual(await second.adopt([recorded, gone, foreign]), { alive: [recorded], dead: [gone, foreign], refused: [] });

    const managed = await second.listManaged();
    assert.deepEqual(managed.map((m) => m.instance.id).sort(), [orphan.id, recorded.id].sort());
    const found = managed.find((m) => m.instance.id === orphan.id)!;
    assert.deepEqual(found.instance, orphan);
    assert.deepEqual(found.state, { running: true });
    assert.deepEqual((await second.listManaged("authors")).map((m) => m.instance.id), []);

    // The orphan is stopped by whoever finds it, without adopting it first.
    assert.deepEqual(await second.stop(orphan, 1_000), { killed: false });
    assert.deepEqual((await second.listManaged()).map((m) => m.instance.id), [recorded.id]);
  });

  test("the event watch survives a dropped connection: an exit while it was down is still reported", async () => {
    // A loopback TCP relay to the daemon's socket, so the test can cut the event stream as a daemon restart would.
    const relayed = new Set<net.Socket>();
    const relay = net.createServer((client) => {
      const daemon = net.connect(api.address);
      client.pipe(daemon).pipe(client);
      for (const s of [client, daemon]) {
        relayed.add(s);
        s.on("close", () => relayed.delete(s));
        s.on("error", () => undefined);
      }
    });
    await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
    const runtime = agent({ host: `tcp://127.0.0.1:${(relay.address() as net.AddressInfo).port}` });
    try {
      const exits: ExitEvent[] = [];
      runtime.onExit((e) => exits.push(e));
      const info = await runtime.start(echo());
      await waitReachable(info);

      for (const s of relayed) s.destroy();
      await api.killContainer(info.ref, "SIGKILL");
      await waitFor("the exit event once the watch has reconnected", async () => exits.length === 1);
      assert.equal(exits[0]!.instance.id, info.id);
      assert.equal(exits[0]!.signal, "SIGKILL");
      assert.deepEqual(await runtime.list(), []);
    } finally {
      runtime.close();
      for (const s of relayed) s.destroy();
      relay.close();
    }
  });

  test("host networking: the app gets a free loopback port of the host's own", async () => {
    const runtime = agent();
    const info = await runtime.start(echo({ network: "host" }));
    const reply = await waitReachable(info);
    assert.equal(info.host, "127.0.0.1");
    assert.equal(reply.env.PORT, String(info.port));
    assert.equal(reply.env.HOST, "127.0.0.1");
    const c = await api.inspectContainer(info.ref);
    assert.equal(c.HostConfig.NetworkMode, "host");
    assert.deepEqual((await runtime.list()).map((i) => i.port), [info.port]);
  });

  test("volumes are bind-mounted, read-only when asked", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "turquoise-docker-volume-"));
    writeFileSync(path.join(dir, "greeting.txt"), "from a volume");
    try {
      const runtime = agent();
      const probe = "console.log('volume says: ' + require('fs').readFileSync('/data/greeting.txt', 'utf8')); require('fs').writeFile('/data/x', '', (e) => console.log('write: ' + (e ? e.code : 'ok'))); setInterval(() => {}, 1000);";
      const info = await runtime.start(echo({ command: ["node", "-e", probe], volumes: [{ source: dir, target: "/data", readOnly: true }] }));
      await waitFor("the write attempt", async () => (await runtime.logs(info)).includes("write: "), 10_000);
      const logs = await runtime.logs(info);
      assert.match(logs, /volume says: from a volume/);
      assert.match(logs, /write: EROFS/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("an image's HEALTHCHECK shows in inspect(): starting, then healthy", async () => {
    const probe = "fetch('http://127.0.0.1:' + process.env.PORT).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))";
    const image = await buildImage(echoImageOptions({ healthcheck: `--interval=500ms --timeout=5s CMD ["node", "-e", ${JSON.stringify(probe)}]` }));
    const runtime = agent();
    const info = await runtime.start(echo({ image }));
    assert.deepEqual(await runtime.inspect(info), { running: true, health: "starting" });
    await waitFor("healthy", async () => {
      const state = await runtime.inspect(info);
      return state.running && state.health === "healthy";
    }, 10_000);
  });

  test("describeRelease reads the schema range from the image label turquoise.schema", async () => {
    const runtime = agent();
    const describe = (image: string) => runtime.describeRelease({ service: "books", release: "v3", cwd: "/", image });
    const range = await buildImage(echoImageOptions({ labels: { [LABELS.schema]: "1..3" } }));
    const single = await buildImage(echoImageOptions({ labels: { [LABELS.schema]: "2" } }));
    const invalid = await buildImage(echoImageOptions({ labels: { [LABELS.schema]: "three" } }));

    assert.deepEqual(await describe(range), { exists: true, schema: { min: 1, max: 3 } });
    assert.deepEqual(await describe(single), { exists: true, schema: { min: 2, max: 2 } });
    assert.deepEqual(await describe(echoImage), { exists: true, schema: null });
    await assert.rejects(describe(invalid), (e: Error) => {
      assert.match(e.message, new RegExp(`image "${invalid}" has an invalid label turquoise\\.schema: invalid schema range "three"`));
      return true;
    });
  });
});

describe("DockerApi", () => {
  test("negotiates the API version: the daemon's, capped at the newest this client knows", async () => {
    const { ApiVersion } = await api.version();
    const expected = compareVersions(ApiVersion, MAX_API_VERSION) < 0 ? ApiVersion : MAX_API_VERSION;
    assert.equal(await api.apiVersion(), expected);
    assert.equal(compareVersions("1.9", "1.41"), -1);
    assert.equal(compareVersions("1.41", "1.41"), 0);
  });

  test("an API error carries the daemon's own message and status", async () => {
    await assert.rejects(api.inspectContainer("turquoise-no-such-container"), (e: Error) => {
      assert.ok(e instanceof DockerApiError);
      assert.equal(e.status, 404);
      assert.equal(e.code, "NOT_FOUND");
      assert.match(e.message, /No such container: turquoise-no-such-container/);
      return true;
    });
  });

  test("demultiplexes the 8-byte-header frames of a logs stream", () => {
    const frame = (stream: number, text: string) => {
      const header = Buffer.alloc(8);
      header[0] = stream;
      header.writeUInt32BE(Buffer.byteLength(text), 4);
      return Buffer.concat([header, Buffer.from(text)]);
    };
    const frames = demuxDockerStream(Buffer.concat([frame(1, "out 1\n"), frame(2, "err ü\n"), frame(1, "")]));
    assert.deepEqual(
      frames.map((f) => [f.stream, f.data.toString()]),
      [["stdout", "out 1\n"], ["stderr", "err ü\n"], ["stdout", ""]],
    );
  });

  test("DOCKER_HOST: unix sockets and loopback TCP; anything else is refused", () => {
    const saved = process.env.DOCKER_HOST;
    try {
      delete process.env.DOCKER_HOST;
      assert.deepEqual(resolveEndpoint({}), { socketPath: "/var/run/docker.sock" });
      process.env.DOCKER_HOST = "unix:///var/run/other.sock";
      assert.deepEqual(resolveEndpoint({}), { socketPath: "/var/run/other.sock" });
    } finally {
      if (saved === undefined) delete process.env.DOCKER_HOST;
      else process.env.DOCKER_HOST = saved;
    }
    assert.deepEqual(resolveEndpoint({ host: "unix:///run/user/1000/docker.sock" }), { socketPath: "/run/user/1000/docker.sock" });
    assert.deepEqual(resolveEndpoint({ host: "tcp://127.0.0.1:2375" }), { host: "127.0.0.1", port: 2375 });
    assert.deepEqual(resolveEndpoint({ socketPath: "/tmp/d.sock", host: "tcp://127.0.0.1:2375" }), { socketPath: "/tmp/d.sock" });
    assert.throws(() => resolveEndpoint({ host: "tcp://203.0.113.5:2375" }), /only unix sockets and loopback tcp:\/\/ addresses/);
    assert.throws(() => resolveEndpoint({ host: "ssh://me@box" }), /expected unix:\/\/\/path/);
  });
});
