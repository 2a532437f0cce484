// The process runtime: the shared Runtime suite, plus what only local processes have: adoption
// by pid and start time, process groups, and records that must never be signalled.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile as readFileAsync, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterEach, beforeEach, describe, test } from "node:test";
import type { ExitEvent, InstanceInfo, StartRequest } from "../../src/runtime/contract.js";
import { newInstanceId } from "../../src/runtime/identity.js";
import { ProcessRuntime } from "../../src/runtime/process.js";
import type { TurquoiseError } from "../../src/errors.js";
import { readProcStat } from "../../src/util/proc.js";
import { runRuntimeContract } from "./contract.test-suite.js";
import { ECHO_APP, getEnv, waitFor, waitReachable } from "./helpers.js";

/** One agent id per test run: instances of another run (or a real agent) are never found here. */
const AGENT_ID = `test-${process.pid}`;

runRuntimeContract("process", async () => {
  const logDir = await mkdtemp(join(tmpdir(), "turquoise-runtime-"));
  return {
    runtime: new ProcessRuntime({ logDir, agentId: AGENT_ID }),
    agentId: AGENT_ID,
    peer: (agentId = AGENT_ID) => new ProcessRuntime({ logDir, agentId }),
    cleanup: () => rm(logDir, { recursive: true, force: true }),
  };
});

function echo(overrides: Partial<StartRequest> = {}): StartRequest {
  const req = {
    service: "books",
    slot: "blue" as const,
    release: "v1",
    command: [process.execPath, ECHO_APP],
    cwd: dirname(ECHO_APP),
    env: {},
    apiUrl: "http://127.0.0.1:7070",
    ...overrides,
  };
  return { id: newInstanceId(req.service, req.slot), ...req };
}

const readFile = (file: string) => readFileAsync(file, "utf8").catch(() => "");

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
    const runtime = new ProcessRuntime({ logDir, agentId: AGENT_ID });
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

  test("gets PATH, HOME, LANG, LC_*, TZ from the agent's environment, and nothing else of it", async () => {
    const agentOnly = { LANG: "C.UTF-8", LC_TIME: "C", TZ: "UTC", AWS_SECRET_ACCESS_KEY: "forged-secret-for-the-test", NODE_OPTIONS: "--max-old-space-size=64" };
    const saved = Object.fromEntries(Object.keys(agentOnly).map((name) => [name, process.env[name]]));
    Object.assign(process.env, agentOnly);
    let info: InstanceInfo;
    try {
      info = await newAgent().start(echo({ env: { GREETING: "hi", TZ: "Europe/Oslo" } }));
    } finally {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
    const basics: Record<string, string> = {};
    for (const [name, value] of Object.entries(process.env)) if ((name === "PATH" || name === "HOME" || name.startsWith("LC_")) && value !== undefined) basics[name] = value;
    Object.assign(basics, { LANG: agentOnly.LANG, LC_TIME: agentOnly.LC_TIME, TZ: agentOnly.TZ });
    assert.deepEqual(await getEnv(info), {
      ...basics,
      // The service's own env wins over what comes from the agent.
      TZ: "Europe/Oslo",
      GREETING: "hi",
      PORT: String(info.port),
      HOST: "127.0.0.1",
      TURQUOISE_SERVICE: "books",
      TURQUOISE_SLOT: "blue",
      TURQUOISE_RELEASE: "v1",
      TURQUOISE_API: "http://127.0.0.1:7070",
      TURQUOISE_INSTANCE: info.id,
      TURQUOISE_AGENT: AGENT_ID,
    });
  });

  test("a new agent adopts a live instance and stops it", async () => {
    const info = await newAgent().start(echo());
    await waitReachable(info);

    const agentB = newAgent();
    const exits: ExitEvent[] = [];
    agentB.onExit((e) => exits.push(e));
    assert.deepEqual(await agentB.adopt([info]), { alive: [info], dead: [], refused: [] });
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
    assert.deepEqual(await agentB.adopt([info]), { alive: [], dead: [info], refused: [] });
    assert.deepEqual(await agentB.list(), []);
  });

  test("adopt does not take a recycled pid for the instance: it reports it and signals nothing", async () => {
    const info = await newAgent().start(echo());
    // Our own pid is alive, but it started at another time than the recorded instance.
    const recycled: InstanceInfo = { ...info, id: "books-blue-recycled", ref: String(process.pid) };
    const agentB = newAgent();
    const { alive, dead, refused } = await agentB.adopt([recycled]);
    assert.deepEqual([alive, dead], [[], []]);
    assert.deepEqual(refused.map((r) => r.instance), [recycled]);
    assert.match(refused[0]!.reason, new RegExp(`pid ${process.pid} started at tick \\d+, not at tick ${info.procStartTicks}`));
    assert.deepEqual(await agentB.inspect(recycled), { running: false, exitCode: null, signal: null });
    assert.deepEqual(await agentB.stop(recycled, 1_000), { killed: false, refused: refused[0]!.reason });
  });

  describe("forged records", () => {
    const bystanders: ChildProcess[] = [];
    afterEach(() => {
      for (const b of bystanders.splice(0)) b.kill("SIGKILL");
    });
    /** A process the agent did not start, leading its own group as an instance would. */
    const bystander = () => {
      const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore", detached: true });
      bystanders.push(child);
      return child.pid!;
    };
    const forged = (ref: string, procStartTicks?: number): InstanceInfo => ({
      id: `books-blue-forged-${ref}-${procStartTicks ?? "none"}`, service: "books", slot: "blue", release: "v1", host: "127.0.0.1", port: 1, ref, startedAt: Date.now(),
      ...(procStartTicks === undefined ? {} : { procStartTicks }),
    });

    test("a record without a start time naming a live process: refused, never signalled", async () => {
      const pid = bystander();
      const record = forged(String(pid));
      const runtime = newAgent();
      const { alive, dead, refused } = await runtime.adopt([record]);
      assert.deepEqual([alive, dead], [[], []]);
      assert.deepEqual(refused.map((r) => r.instance), [record]);
      assert.match(refused[0]!.reason, /no start time is recorded/);
      assert.deepEqual(await runtime.list(), []);
      assert.deepEqual(await runtime.inspect(record), { running: false, exitCode: null, signal: null });
      assert.deepEqual(await runtime.stop(record, 1_000), { killed: false, refused: refused[0]!.reason });
      await assert.rejects(runtime.signal(record, "SIGTERM"), (e: TurquoiseError) => e.code === "CONFLICT" && /no start time/.test(e.message));
      await new Promise((r) => setTimeout(r, 100));
      assert.ok(!isGone(pid), "the process was signalled");
    });

    test("a record naming a live process with another start time: refused, never signalled", async () => {
      const pid = bystander();
      const record = forged(String(pid), readProcStat(pid)!.startTicks + 1);
      const runtime = newAgent();
      const { refused } = await runtime.adopt([record]);
      assert.match(refused[0]!.reason, /it is another process/);
      assert.deepEqual(await runtime.stop(record, 1_000), { killed: false, refused: refused[0]!.reason });
      await assert.rejects(runtime.signal(record, "SIGTERM"), (e: TurquoiseError) => e.code === "CONFLICT");
      await new Promise((r) => setTimeout(r, 100));
      assert.ok(!isGone(pid), "the process was signalled");
    });

    test("records naming pid 1, 0 or something else than a pid: refused", async () => {
      // Only adopt and inspect, on a runtime afterEach does not stop: one that got this wrong
      // would otherwise signal every process there is (kill -1).
      const runtime = new ProcessRuntime({ logDir, agentId: AGENT_ID });
      const records = [forged("1", readProcStat(1)?.startTicks), forged("1"), forged("0"), forged("-1"), forged("1e3"), forged("")];
      const { alive, dead, refused } = await runtime.adopt(records);
      assert.deepEqual([alive, dead], [[], []]);
      assert.deepEqual(refused.map((r) => r.instance.ref), records.map((r) => r.ref));
      for (const record of records) assert.deepEqual(await runtime.inspect(record), { running: false, exitCode: null, signal: null });
    });
  });

  test("an instance outlives a crashed agent and keeps logging; a new agent takes it over", async () => {
    const processModule = new URL("../../src/runtime/process.js", import.meta.url).href;
    const agentScript = `
      const { ProcessRuntime } = await import(${JSON.stringify(processModule)});
      const runtime = new ProcessRuntime({ logDir: ${JSON.stringify(logDir)}, agentId: ${JSON.stringify(AGENT_ID)} });
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

  test("discover finds what is left of an instance whose leader died, and stop ends it by its marks", async () => {
    // The leader starts a child (same group, same environment) and exits: no record's pid runs any more.
    const leader = `
      const { spawn } = require("node:child_process");
      const c = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
      console.log("child " + c.pid);
      setTimeout(() => process.exit(0), 50);
    `;
    const info = await newAgent().start(echo({ command: [process.execPath, "-e", leader] }));
    const child = await waitFor("the child's pid", async () => {
      const m = /child (\d+)/.exec(await readFile(info.logFile!));
      return m ? Number(m[1]) : undefined;
    });
    await waitFor("the leader to exit", async () => isGone(Number(info.ref)));

    const restarted = newAgent();
    const found = (await restarted.discover()).filter((i) => i.id === info.id);
    assert.deepEqual(found.map((i) => [i.ref, i.service, i.slot, i.release, i.port]), [[String(child), "books", "blue", "v1", info.port]]);
    // The record no longer proves anything (its leader is gone), but the marks do.
    assert.deepEqual(await restarted.adopt([info]), { alive: [], dead: [info], refused: [] });
    assert.deepEqual(await restarted.stop(found[0]!, 2_000), { killed: false });
    assert.ok(isGone(child), "the child was left running");
    assert.deepEqual((await restarted.discover()).filter((i) => i.id === info.id), []);
  });

  test("discover leaves alone a process of another agent, and one whose marks are only in its own words", async () => {
    const other = new ProcessRuntime({ logDir, agentId: `${AGENT_ID}-other` });
    const theirs = await other.start(echo());
    runtimes.push(other);
    // Marks the agent did not write: in the arguments, not the environment.
    const pretender = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)", `TURQUOISE_AGENT=${AGENT_ID}`], { stdio: "ignore" });
    try {
      const found = await newAgent().discover();
      assert.ok(!found.some((i) => i.id === theirs.id), "found another agent's instance");
      assert.ok(!found.some((i) => i.ref === String(pretender.pid)), "found a process by its argv");
    } finally {
      pretender.kill("SIGKILL");
    }
  });

  test("listening names the ports an instance's processes listen on", async () => {
    const elsewhere = `require("node:http").createServer((q, s) => s.end("ok")).listen(0, "127.0.0.1", function () { console.log("port " + this.address().port); });`;
    const runtime = newAgent();
    const info = await runtime.start(echo({ command: [process.execPath, "-e", elsewhere] }));
    const port = await waitFor("the port it chose", async () => {
      const m = /port (\d+)/.exec(await readFile(info.logFile!));
      return m ? Number(m[1]) : undefined;
    });
    assert.deepEqual(await runtime.listening(info), [{ host: "127.0.0.1", port }]);
    assert.notEqual(port, info.port);
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
