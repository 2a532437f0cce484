// The memory runtime: the shared Runtime suite, run against an in-process twin of the echo app,
// plus the failure injection the orchestrator and healer tests rely on.
import assert from "node:assert/strict";
import { get } from "node:http";
import { dirname } from "node:path";
import { afterEach, beforeEach, describe, test } from "node:test";
import type { ExitEvent, InstanceInfo, StartRequest } from "../../src/runtime/contract.js";
import { newInstanceId } from "../../src/runtime/identity.js";
import { MemoryMachine, MemoryRuntime, releaseApp, type MemoryApp } from "../../src/runtime/memory.js";
import { runRuntimeContract } from "./contract.test-suite.js";
import { ECHO_APP, getJson, waitFor, waitReachable } from "./helpers.js";

/** test/fixtures/echo-app.mjs as a memory app: the same knobs, answers and log lines. */
const echoApp: MemoryApp = async (proc) => {
  if (proc.env.EXIT_AT_ONCE === "1") {
    proc.error("echo-app: EXIT_AT_ONCE is set, exiting with code 3");
    return proc.exit(3);
  }
  const server = await proc.listen((req, res) => {
    if (req.method === "GET" && req.url === "/env") {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(proc.env));
      return;
    }
    if (req.method !== "GET" || req.url !== "/") return void res.writeHead(404).end();
    const facts = Object.fromEntries(Object.entries(proc.env).filter(([key]) => key === "PORT" || key === "HOST" || key === "GREETING" || key.startsWith("TURQUOISE_")));
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ pid: process.pid, cwd: proc.cwd, env: facts }));
  });
  proc.log(`echo-app: listening on 127.0.0.1:${proc.env.PORT}`);
  proc.error("echo-app: stderr works too");
  proc.on("SIGTERM", () => {
    if (proc.env.IGNORE_SIGTERM === "1") return proc.log("echo-app: SIGTERM received, ignoring it");
    proc.log("echo-app: SIGTERM received, shutting down");
    server.close(() => proc.exit(0));
    server.closeIdleConnections();
  });
  proc.on("SIGUSR2", () => proc.log("echo-app: SIGUSR2 received"));
};

const AGENT_ID = "test-memory";

runRuntimeContract("memory", async () => {
  // A restarted agent's runtime is a new one over the same machine.
  const machine = new MemoryMachine({ apps: { "echo-app": echoApp } });
  return {
    runtime: new MemoryRuntime({ machine, agentId: AGENT_ID }),
    agentId: AGENT_ID,
    peer: (agentId = AGENT_ID) => new MemoryRuntime({ machine, agentId }),
    cleanup: async () => {},
    echoApp: { command: ["echo-app"], cwd: dirname(ECHO_APP) },
  };
});

// The twin of swarm's slot-level capability: instances that end by themselves run again under their id.
runRuntimeContract("memory with restarts", async () => {
  const machine = new MemoryMachine({ apps: { "echo-app": echoApp } });
  const runtimes: MemoryRuntime[] = [];
  const make = (agentId = AGENT_ID) => {
    const runtime = new MemoryRuntime({ machine, agentId, restarts: { delayMs: 200 } });
    runtimes.push(runtime);
    return runtime;
  };
  const runtime = make();
  return {
    runtime,
    agentId: AGENT_ID,
    peer: make,
    // Whatever a test left between runs must not come back after it.
    cleanup: async () => {
      for (const r of runtimes) await r.slots!.stop(await r.list(), 100);
    },
    echoApp: { command: ["echo-app"], cwd: dirname(ECHO_APP) },
  };
});

describe("MemoryRuntime failure injection", () => {
  let runtime: MemoryRuntime;
  let machine: MemoryMachine;
  let exits: ExitEvent[];
  beforeEach(() => {
    runtime = new MemoryRuntime({ agentId: AGENT_ID, apps: { app: releaseApp, echo: echoApp } });
    machine = runtime.machine;
    exits = [];
    runtime.onExit((e) => exits.push(e));
  });
  afterEach(async () => {
    for (const instance of await runtime.list()) await runtime.stop(instance, 200);
  });

  const req = (overrides: Partial<StartRequest> = {}): StartRequest => ({
    id: newInstanceId("books", "blue"), service: "books", slot: "blue", release: "v1", command: ["app"], cwd: dirname(ECHO_APP), env: {}, apiUrl: "http://127.0.0.1:7070", ...overrides,
  });
  const exitOf = (i: InstanceInfo) => waitFor(`${i.id} to exit`, async () => exits.find((e) => e.instance.id === i.id), 2_000);
  const status = (i: InstanceInfo, path = "/") =>
    new Promise<number>((resolve, reject) => {
      get({ host: i.host, port: i.port, path, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      }).on("error", reject);
    });

  test("releaseApp answers every path with who it is", async () => {
    const info = await runtime.start(req({ release: "v7" }));
    const reply = (await waitReachable(info)) as unknown as Record<string, string>;
    assert.deepEqual(reply, { service: "books", slot: "blue", release: "v7", instance: info.id, agent: AGENT_ID });
  });

  test("failStart makes start() reject, only for the starts it matches and only `times` times", async () => {
    machine.inject({ release: "v2", times: 1, failStart: "disk full" });
    await assert.rejects(runtime.start(req({ release: "v2" })), /cannot start books release v2: disk full \(injected\)/);
    await runtime.start(req({ release: "v1" }));
    await runtime.start(req({ release: "v2" }));
    assert.equal((await runtime.list()).length, 2);
  });

  test("neverListen: the instance runs, its port refuses connections", async () => {
    machine.inject({ neverListen: true });
    const info = await runtime.start(req());
    await new Promise((r) => setTimeout(r, 50));
    await assert.rejects(getJson(info.host, info.port), /ECONNREFUSED/);
    assert.deepEqual(await runtime.inspect(info), { running: true });
    assert.match(await runtime.logs(info), /never listens/);
  });

  test("answer: one path answers an error status, the others are the app's", async () => {
    const disarm = machine.inject({ answer: { path: "/health", status: 500 } });
    const info = await runtime.start(req());
    await waitReachable(info);
    assert.equal(await status(info, "/health?x=1"), 500);
    assert.equal(await status(info, "/"), 200);
    disarm();
    const healthy = await runtime.start(req());
    await waitReachable(healthy);
    assert.equal(await status(healthy, "/health"), 200);
  });

  test("exitAfterRequests: the instance answers that many requests, then exits with exitCode", async () => {
    machine.inject({ exitAfterRequests: 2, exitCode: 7 });
    const info = await runtime.start(req());
    await waitReachable(info);
    assert.equal(await status(info), 200);
    const e = await exitOf(info);
    assert.deepEqual([e.exitCode, e.signal], [7, null]);
    await assert.rejects(getJson(info.host, info.port), /ECONNREFUSED/);
    assert.deepEqual(await runtime.list(), []);
  });

  test("exitAfterMs: the instance exits on its own after the delay", async () => {
    machine.inject({ exitAfterMs: 100 });
    const info = await runtime.start(req());
    const t0 = Date.now();
    const e = await exitOf(info);
    assert.ok(Date.now() - t0 >= 80, `exited after ${Date.now() - t0}ms`);
    assert.equal(e.exitCode, 1);
  });

  test("ignoreSigterm: stop() has to kill it", async () => {
    machine.inject({ ignoreSigterm: true });
    const info = await runtime.start(req());
    await waitReachable(info);
    assert.deepEqual(await runtime.stop(info, 100), { killed: true });
    assert.equal((await exitOf(info)).signal, "SIGKILL");
  });

  test("failStop: stop() rejects and the instance keeps running", async () => {
    machine.inject({ times: 1, failStop: "engine unreachable" });
    const info = await runtime.start(req());
    await waitReachable(info);
    await assert.rejects(runtime.stop(info, 100), /engine unreachable/);
    assert.deepEqual(await runtime.inspect(info), { running: true });
    assert.deepEqual(await runtime.stop(info, 1_000), { killed: false });
  });

  test("affect and crash act on a running instance", async () => {
    const info = await runtime.start(req());
    await waitReachable(info);
    machine.affect(info, { answer: { path: "/health", status: 503 } });
    assert.equal(await status(info, "/health"), 503);
    machine.crash(info);
    assert.deepEqual(await runtime.inspect(info), { running: false, exitCode: null, signal: "SIGKILL" });
    assert.equal(exits.length, 1);
    await assert.rejects(getJson(info.host, info.port), /ECONNREFUSED/);
  });

  test("an app that throws ends with code 1 and its error in the log", async () => {
    const crashing = new MemoryRuntime({ agentId: AGENT_ID, apps: { boom: async () => { throw new Error("cannot read config"); } } });
    const seen: ExitEvent[] = [];
    crashing.onExit((e) => seen.push(e));
    const info = await crashing.start(req({ command: ["boom"] }));
    await waitFor("the exit", async () => seen.length === 1);
    assert.equal(seen[0]!.exitCode, 1);
    assert.match(await crashing.logs(info), /Uncaught Error: cannot read config/);
  });

  test("a restarted agent's runtime adopts what the machine runs; a record whose ref is another instance is refused", async () => {
    const live = await runtime.start(req());
    const gone = await runtime.start(req());
    await runtime.stop(gone, 1_000);
    const forged: InstanceInfo = { ...live, id: "books-blue-forged" };
    const restarted = new MemoryRuntime({ machine, agentId: AGENT_ID });
    assert.deepEqual(await restarted.list(), [], "nothing tracked before it adopts");
    const r = await restarted.adopt([live, gone, forged]);
    assert.deepEqual(r.alive, [live]);
    assert.deepEqual(r.dead, [gone]);
    assert.deepEqual(r.refused.map((x) => x.instance), [forged]);
    assert.match(r.refused[0]!.reason, /is instance books-blue-\w+, not books-blue-forged/);
    assert.deepEqual(await restarted.stop(forged, 100), { killed: false, refused: r.refused[0]!.reason });
    assert.deepEqual((await restarted.list()).map((i) => i.id), [live.id]);
  });

  test("listening says where an instance's servers listen: nowhere for one that never listens", async () => {
    const info = await runtime.start(req());
    await waitReachable(info);
    assert.deepEqual(await runtime.listening(info), [{ host: "127.0.0.1", port: info.port }]);
    machine.inject({ times: 1, neverListen: true });
    const silent = await runtime.start(req());
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(await runtime.listening(silent), []);
  });
});
