import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterEach, beforeEach, describe, test } from "node:test";
import type { ExitEvent, InstanceInfo, StartRequest } from "../../src/runtime/contract.js";
import { ProcessRuntime } from "../../src/runtime/process.js";
import { runRuntimeContract } from "./contract.test-suite.js";
import { ECHO_APP, waitFor, waitReachable } from "./helpers.js";

runRuntimeContract("process", async () => {
  const logDir = await mkdtemp(join(tmpdir(), "turquoise-runtime-"));
  return { runtime: new ProcessRuntime({ logDir }), cleanup: () => rm(logDir, { recursive: true, force: true }) };
});

function echo(overrides: Partial<StartRequest> = {}): StartRequest {
  return {
    service: "books",
    slot: "blue",
    release: "v1",
    command: [process.execPath, ECHO_APP],
    cwd: dirname(ECHO_APP),
    env: {},
    apiUrl: "http://127.0.0.1:7070",
    ...overrides,
  };
}

/** Gone, or a zombie nobody has reaped yet: either way it runs no more. */
function isGone(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.startsWith("Z");
  } catch {
    return true;
  }
}

describe("ProcessRuntime", () => {
  let logDir: string;
  const runtimes: ProcessRuntime[] = [];
  const newAgent = () => {
    const runtime = new ProcessRuntime({ logDir });
    runtimes.push(runtime);
    return runtime;
  };

  beforeEach(async () => {
    logDir = await mkdtemp(join(tmpdir(), "turquoise-process-"));
  });

  afterEach(async () => {
    for (const runtime of runtimes.splice(0)) {
      for (const instance of await runtime.list()) await runtime.stop(instance, 1_000);
    }
    await rm(logDir, { recursive: true, force: true });
  });

  test("binds instances to loopback, logs to <logDir>/<service>/<id>.log, records pid and start time", async () => {
    const info = await newAgent().start(echo());
    const reply = await waitReachable(info);
    assert.equal(info.host, "127.0.0.1");
    assert.equal(reply.env.HOST, "127.0.0.1");
    assert.equal(reply.env.PORT, String(info.port));
    assert.equal(info.logFile, join(logDir, "books", `${info.id}.log`));
    assert.equal(info.ref, String(reply.pid));
    assert.ok(typeof info.procStartTicks === "number" && info.procStartTicks > 0);
  });

  test("a new agent adopts a live instance and stops it", async () => {
    const info = await newAgent().start(echo());
    await waitReachable(info);

    const agentB = newAgent();
    const exits: ExitEvent[] = [];
    agentB.onExit((e) => exits.push(e));
    assert.deepEqual(await agentB.adopt([info]), { alive: [info], dead: [] });
    assert.deepEqual((await agentB.list()).map((i) => i.id), [info.id]);
    assert.deepEqual(await agentB.inspect(info), { running: true });

    assert.deepEqual(await agentB.stop(info, 5_000), { killed: false });
    assert.ok(isGone(Number(info.ref)));
    assert.equal(exits.length, 1);
    assert.deepEqual(await agentB.list(), []);
  });

  test("an adopted instance killed from outside fires onExit on the new agent", async () => {
    const info = await newAgent().start(echo());
    await waitReachable(info);
    const agentB = newAgent();
    const exits: ExitEvent[] = [];
    agentB.onExit((e) => exits.push(e));
    await agentB.adopt([info]);

    process.kill(Number(info.ref), "SIGKILL");
    await waitFor("the exit event on the new agent", async () => exits.length === 1, 2_000);
    assert.equal(exits[0]!.instance.id, info.id);
    assert.deepEqual(await agentB.inspect(info), { running: false, exitCode: null, signal: null });
    assert.deepEqual(await agentB.list(), []);
    await new Promise((resolve) => setTimeout(resolve, 450));
    assert.equal(exits.length, 1);
  });

  test("adopt reports an instance whose process is gone as dead", async () => {
    const agentA = newAgent();
    const info = await agentA.start(echo());
    await waitReachable(info);
    await agentA.stop(info, 5_000);
    const agentB = newAgent();
    assert.deepEqual(await agentB.adopt([info]), { alive: [], dead: [info] });
    assert.deepEqual(await agentB.list(), []);
  });

  test("adopt does not take a recycled pid for the instance", async () => {
    const info = await newAgent().start(echo());
    // Our own pid is alive, but it started at another time than the recorded instance.
    const recycled: InstanceInfo = { ...info, id: "books-blue-recycled", ref: String(process.pid) };
    const agentB = newAgent();
    assert.deepEqual(await agentB.adopt([recycled]), { alive: [], dead: [recycled] });
    assert.deepEqual(await agentB.inspect(recycled), { running: false, exitCode: null, signal: null });
    assert.deepEqual(await agentB.stop(recycled, 1_000), { killed: false });
  });

  test("an instance outlives a crashed agent and keeps logging; a new agent takes it over", async () => {
    const processModule = new URL("../../src/runtime/process.js", import.meta.url).href;
    const agentScript = `
      const { ProcessRuntime } = await import(${JSON.stringify(processModule)});
      const runtime = new ProcessRuntime({ logDir: ${JSON.stringify(logDir)} });
      const info = await runtime.start(${JSON.stringify(echo())});
      process.stdout.write(JSON.stringify(info) + "\\n");
      process.kill(process.pid, "SIGKILL");
    `;
    const agent = spawn(process.execPath, ["--input-type=module", "-e", agentScript], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    agent.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    const agentSignal = await new Promise((resolve) => agent.on("close", (_code, signal) => resolve(signal)));
    assert.equal(agentSignal, "SIGKILL");
    const info = JSON.parse(out) as InstanceInfo;

    await waitReachable(info);
    const agentB = newAgent();
    assert.deepEqual((await agentB.adopt([info])).alive.map((i) => i.id), [info.id]);
    await agentB.signal(info, "SIGUSR2");
    await waitFor("the instance to keep writing its log", async () => (await agentB.logs(info)).includes("SIGUSR2 received"));
    assert.deepEqual(await agentB.stop(info, 5_000), { killed: false });
    assert.match(await agentB.logs(info), /SIGTERM received, shutting down/);
  });

  test("stop waits for the whole process group and SIGKILLs what outlives the timeout", async () => {
    // The leader exits on SIGTERM at once; the grandchild it left behind ignores SIGTERM.
    const leader = `
      const { spawn } = require("node:child_process");
      spawn(process.execPath, ["-e", "process.on('SIGTERM', () => {}); console.log('grandchild ' + process.pid); setInterval(() => {}, 1000)"], { stdio: "inherit" });
      process.on("SIGTERM", () => process.exit(0));
      setInterval(() => {}, 1000);
    `;
    const runtime = newAgent();
    const info = await runtime.start(echo({ command: [process.execPath, "-e", leader] }));
    const grandchild = await waitFor("the grandchild's pid", async () => {
      const m = /grandchild (\d+)/.exec(await runtime.logs(info));
      return m ? Number(m[1]) : undefined;
    });
    assert.deepEqual(await runtime.stop(info, 300), { killed: true });
    assert.ok(isGone(grandchild), "the grandchild was left running");
  });
});
