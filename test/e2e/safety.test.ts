// End to end: the agent's safety rules: it signals only what it started, a command cannot outlive
// its timeout, and instances get a minimal environment.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { after, describe, it } from "node:test";
import type { Workspace } from "../../src/demo/workspace.js";
import { Records } from "../../src/deploy/records.js";
import type { InstanceInfo } from "../../src/runtime/contract.js";
import { openStore } from "../../src/state/index.js";
import { readProcStat } from "../../src/util/proc.js";
import { RELEASE_KINDS, instancePids, logRecords, readAgentPid, status, waitFor, workspaceWith } from "./helpers.js";

const bystanders: ChildProcess[] = [];
after(() => {
  for (const b of bystanders) b.kill("SIGKILL");
});

/** A process Turquoise did not start, leading its own process group as an instance does. */
function bystander(): number {
  const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore", detached: true });
  bystanders.push(child);
  return child.pid!;
}

function isRunning(pid: number): boolean {
  const stat = readProcStat(pid);
  return stat !== undefined && stat.state !== "Z";
}

/** Pids of live `sleep <seconds>` processes. */
function sleepsRunning(seconds: string): number[] {
  return fs.readdirSync("/proc").filter((e) => /^\d+$/.test(e)).map(Number).filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8") === `sleep\0${seconds}\0` && isRunning(pid);
    } catch {
      return false;
    }
  });
}

function forged(pid: number, name: string, procStartTicks?: number): InstanceInfo {
  return {
    id: `books-green-${name}`, service: "books", slot: "green", release: "v0", host: "127.0.0.1", port: 1, ref: String(pid),
    startedAt: Date.now(), runtime: "process", ...(procStartTicks === undefined ? {} : { procStartTicks }),
  };
}

/** Writes instance records straight into the workspace's store, as anything with access to the file could. */
async function forge(ws: Workspace, records: InstanceInfo[]): Promise<void> {
  const store = await openStore({ driver: "sqlite", path: path.join(ws.dir, ".turquoise", "state.db") });
  try {
    for (const r of records) await new Records(store).addInstance(r);
  } finally {
    await store.close();
  }
}

async function recordedIds(ws: Workspace): Promise<string[]> {
  const store = await openStore({ driver: "sqlite", path: path.join(ws.dir, ".turquoise", "state.db") });
  try {
    return (await new Records(store).instances()).map((i) => i.id).sort();
  } finally {
    await store.close();
  }
}

describe("the agent signals only what it started", () => {
  const spaces: Workspace[] = [];
  after(async () => { for (const ws of spaces) await ws.destroy(); });

  it("a restarted agent reports forged instance records, signals nothing and drops them", async () => {
    const ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, { replicas: 1 });
    spaces.push(ws);
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    await ws.cli(["down", "--agent-only"]);

    const [noStart, wrongStart] = [bystander(), bystander()];
    await forge(ws, [forged(noStart, "nostart"), forged(wrongStart, "wrongstart", readProcStat(wrongStart)!.startTicks + 7)]);
    await ws.cli(["up", "--detach"]);

    const s = await status(ws);
    assert.deepEqual(s.instances.map((i) => i.release), ["v1"], "only the real instance is adopted");
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(isRunning(noStart), "the process named by a record without a start time was signalled");
    assert.ok(isRunning(wrongStart), "the process named by a record with another start time was signalled");
    const refused = logRecords(ws).filter((r) => r.event === "instance.refused").map((r) => r.message).join("\n");
    assert.match(refused, new RegExp(`^not adopting books-green-nostart \\(ref ${noStart}\\), nor signalling it: no start time is recorded`, "m"));
    assert.match(refused, new RegExp(`^not adopting books-green-wrongstart \\(ref ${wrongStart}\\), nor signalling it: pid ${wrongStart} started at tick \\d+`, "m"));
    await ws.cli(["down", "--agent-only"]);
    assert.deepEqual(await recordedIds(ws), s.instances.map((i) => i.id), "the forged records are dropped");
  });

  it("down without an agent stops the real instances and reports a forged record instead of signalling it", async () => {
    const ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, { replicas: 2 });
    spaces.push(ws);
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    process.kill(readAgentPid(ws), "SIGKILL");
    await waitFor("the agent to die", () => (isRunning(readAgentPid(ws)) ? undefined : true));
    assert.equal(instancePids(ws).length, 2);

    const victim = bystander();
    await forge(ws, [forged(victim, "forged")]);
    const r = await ws.cli(["down"]);
    assert.match(r.stdout, /no agent was running; stopped the proxy and 2 leftover instances/);
    assert.match(r.stderr, new RegExp(`not stopped: instance record books-green-forged \\(ref ${victim}\\): no start time is recorded`));
    assert.deepEqual(instancePids(ws), [], "the real instances are stopped");
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(isRunning(victim), "the process named by the forged record was signalled");
    assert.deepEqual(await recordedIds(ws), []);
  });
});

/**
 * A sleep that no other process runs, so that it can be found in /proc: 150 s (the was 12 s),
 * so that a deploy that waited for it is told apart by 10x from one that ended at the hook's timeout.
 */
const uniqueSleep = () => `150.${String(Math.floor(Math.random() * 1e6)).padStart(6, "0")}`;

describe("commands end at their timeout, or with the agent", () => {
  const spaces: Workspace[] = [];
  after(async () => { for (const ws of spaces) await ws.destroy(); });

  it("a hook whose grandchild holds stdout open fails at its timeout, the grandchild ended and the lock released", async () => {
    // The reproduction of issue 9: only the shell was killed, the sleep kept stdout open, the deploy waited 12 s.
    const seconds = uniqueSleep();
    const ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, {
      replicas: 1,
      extraServiceYaml: `    hooks:\n      after_flip:\n        - command: ["sh", "-c", "sleep ${seconds}; echo done"]\n          timeout: 1s\n`,
    });
    spaces.push(ws);
    await ws.cli(["up", "--detach"]);
    const started = Date.now();
    const r = await ws.cli(["deploy", "books", "--release", "v1"], { allowFail: true });
    const tookMs = Date.now() - started;
    assert.notEqual(r.code, 0);
    assert.match(r.stderr + r.stdout, /failed at hooks/);
    assert.match(r.stderr + r.stdout, /timed out after 1s/);
    assert.ok(tookMs < 15_000, `the deploy took ${tookMs}ms`);
    assert.deepEqual(sleepsRunning(seconds), [], "the hook's sleep outlived its timeout");
    assert.equal((await status(ws)).lock, null, "the deploy lock is released");
  });

  it("a stopping agent ends the watch handler it is running", async () => {
    const seconds = uniqueSleep();
    const ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, { replicas: 1 });
    spaces.push(ws);
    fs.appendFileSync(ws.specFile, `watches:\n  - name: slow\n    type: service\n    service: books\n    args: ["sh", "-c", "sleep ${seconds}"]\n    timeout: 120s\n`);
    await ws.cli(["up", "--detach"]);
    await waitFor("the watch handler to run", () => (sleepsRunning(seconds).length === 1 ? true : undefined));
    const started = Date.now();
    await ws.cli(["down", "--agent-only"]);
    // 10x under the handler's timeout: a down that waited for it cannot pass.
    assert.ok(Date.now() - started < 12_000, `down took ${Date.now() - started}ms`);
    assert.deepEqual(sleepsRunning(seconds), [], "the handler outlived the agent");
  });
});

describe("instances get a minimal environment", () => {
  let ws: Workspace;
  after(async () => ws?.destroy());

  it("an agent's secret is not visible to instances; a variable named in env_passthrough is", async () => {
    ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, {
      replicas: 1,
      env: { AWS_SECRET_ACCESS_KEY: "forged-secret-for-the-test", AWS_REGION: "eu-north-1", OTHER_DATABASE_URL: "postgres://other:secret@db/other" },
      extraServiceYaml: "    env_passthrough: [AWS_REGION]\n",
    });
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    const [pid] = instancePids(ws);
    assert.ok(pid, "no instance runs");
    const env = Object.fromEntries(fs.readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
    assert.equal(env.AWS_SECRET_ACCESS_KEY, undefined, "the agent's secret reached the instance");
    assert.equal(env.OTHER_DATABASE_URL, undefined);
    assert.equal(env.AWS_REGION, "eu-north-1");
    assert.equal(env.TURQUOISE_SERVICE, "books");
    assert.ok(env.PATH && env.TURQUOISE_TOKEN);
  });
});
