// signalIfOurs and signalIfMarked: the agent signals a process only when its record, or the marks in
// its own environment, prove the agent started it; and the /proc readers beside them.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { after, describe, it } from "node:test";
import net from "node:net";
import { identify, identifyMarked, listeningSockets, processesMarked, readProcStat, signalIfMarked, signalIfOurs, startedAtMs } from "../../src/util/proc.js";

const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

/** A live process that is none of the agent's business, leading its own group as instances do. */
function bystander(opts: { detached?: boolean } = {}): { pid: number; startTicks: number } {
  const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore", detached: opts.detached ?? true });
  children.push(child);
  return { pid: child.pid!, startTicks: readProcStat(child.pid!)!.startTicks };
}

function isRunning(pid: number): boolean {
  const stat = readProcStat(pid);
  return stat !== undefined && stat.state !== "Z";
}

async function waitGone(pid: number): Promise<void> {
  for (const deadline = Date.now() + 5_000; Date.now() < deadline; ) {
    if (!isRunning(pid)) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`pid ${pid} is still running`);
}

/** Records what would have been signalled: the pid 1 cases must never reach a real kill. */
function spy(): { calls: Array<[number, string]>; kill: (pid: number, signal: NodeJS.Signals) => void } {
  const calls: Array<[number, string]> = [];
  return { calls, kill: (pid, signal) => void calls.push([pid, signal]) };
}

describe("signalIfOurs", () => {
  it("refuses pid 1, 0, negative and non-numbers, even with pid 1's own start time", () => {
    const initTicks = readProcStat(1)?.startTicks;
    for (const pid of [1, 0, -1, -4242, Number.NaN]) {
      for (const group of [false, true]) {
        const s = spy();
        const r = signalIfOurs({ pid, startTicks: pid === 1 ? initTicks : 12345 }, "SIGTERM", { group, kill: s.kill });
        assert.equal(r.verdict, "refused", `pid ${pid}`);
        assert.match((r as { reason: string }).reason, /cannot be a process the agent started/);
        assert.deepEqual(s.calls, [], `pid ${pid} was signalled`);
      }
    }
  });

  it("refuses a live process whose record has no start time, and leaves it running", async () => {
    const other = bystander();
    for (const group of [false, true]) {
      const r = signalIfOurs({ pid: other.pid, startTicks: undefined }, "SIGTERM", { group });
      assert.equal(r.verdict, "refused");
      assert.match((r as { reason: string }).reason, /no start time is recorded/);
    }
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(isRunning(other.pid), "the process was signalled");
  });

  it("refuses a live process with another start time than the record's, and leaves it running", async () => {
    const other = bystander();
    const r = signalIfOurs({ pid: other.pid, startTicks: other.startTicks - 1 }, "SIGTERM", { group: true });
    assert.equal(r.verdict, "refused");
    assert.match((r as { reason: string }).reason, /it is another process/);
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(isRunning(other.pid), "the process was signalled");
  });

  it("refuses to signal the group of a process that leads none", () => {
    // Not detached: it sits in the test runner's own group.
    const member = bystander({ detached: false });
    const s = spy();
    const r = signalIfOurs(member, "SIGTERM", { group: true, kill: s.kill });
    assert.equal(r.verdict, "refused");
    assert.match((r as { reason: string }).reason, /does not lead a process group/);
    assert.deepEqual(s.calls, []);
  });

  it("signals a process whose pid and start time match the record", async () => {
    const ours = bystander();
    assert.deepEqual(identify(ours, { group: true }), { verdict: "ours" });
    assert.deepEqual(signalIfOurs(ours, "SIGTERM", { group: true }), { verdict: "signalled" });
    await waitGone(ours.pid);
    assert.deepEqual(signalIfOurs(ours, "SIGTERM", { group: true }), { verdict: "gone" });
  });

  it("reaches what is left of a group whose leader has exited", async () => {
    // The leader exits at once; the member it started stays in its group.
    const leader = spawn("sh", ["-c", "sleep 30 & echo $!"], { stdio: ["ignore", "pipe", "ignore"], detached: true });
    children.push(leader);
    const startTicks = readProcStat(leader.pid!)!.startTicks;
    let out = "";
    leader.stdout!.on("data", (c: Buffer) => (out += c.toString()));
    await new Promise((r) => leader.on("exit", r));
    const member = Number(out.trim());
    assert.ok(isRunning(member));
    const record = { pid: leader.pid!, startTicks };
    assert.deepEqual(identify(record), { verdict: "gone" }, "the leader alone is gone");
    assert.deepEqual(signalIfOurs(record, "SIGKILL", { group: true }), { verdict: "signalled" });
    await waitGone(member);
    assert.deepEqual(identify(record, { group: true }), { verdict: "gone" });
  });
});

/** A live process with marks in its environment, leading its own group (detached) or not. */
function marked(env: Record<string, string>, opts: { detached?: boolean } = {}): { pid: number; startTicks: number } {
  const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore", detached: opts.detached ?? true, env: { ...process.env, ...env } });
  children.push(child);
  return { pid: child.pid!, startTicks: readProcStat(child.pid!)!.startTicks };
}

describe("processesMarked and signalIfMarked", () => {
  const mark = `proc-test-${process.pid}-${Date.now()}`;

  it("finds the processes whose environment holds every mark, and only those", () => {
    const a = marked({ TURQUOISE_AGENT: mark, TURQUOISE_INSTANCE: "a" });
    const b = marked({ TURQUOISE_AGENT: mark, TURQUOISE_INSTANCE: "b" });
    marked({ TURQUOISE_AGENT: `${mark}-other`, TURQUOISE_INSTANCE: "a" });
    // A value that only starts with the mark is another value.
    marked({ TURQUOISE_AGENT: `${mark}x`, TURQUOISE_INSTANCE: "a" });
    const all = processesMarked({ TURQUOISE_AGENT: mark });
    assert.deepEqual(all.map((p) => p.pid).sort((x, y) => x - y), [a.pid, b.pid].sort((x, y) => x - y));
    const onlyA = processesMarked({ TURQUOISE_AGENT: mark, TURQUOISE_INSTANCE: "a" });
    assert.deepEqual(onlyA.map((p) => [p.pid, p.startTicks, p.pgrp, p.env.TURQUOISE_INSTANCE]), [[a.pid, a.startTicks, a.pid, "a"]]);
    assert.throws(() => processesMarked({}), /at least one mark/);
  });

  it("signals the group of a marked group leader, and a marked process alone otherwise", () => {
    const leader = marked({ TURQUOISE_AGENT: mark, TURQUOISE_INSTANCE: "lead" });
    const member = marked({ TURQUOISE_AGENT: mark, TURQUOISE_INSTANCE: "member" }, { detached: false });
    const marks = (id: string) => ({ TURQUOISE_AGENT: mark, TURQUOISE_INSTANCE: id });
    const s = spy();
    assert.equal(signalIfMarked({ ...leader, marks: marks("lead") }, "SIGTERM", { kill: s.kill }).verdict, "signalled");
    assert.equal(signalIfMarked({ ...member, marks: marks("member") }, "SIGTERM", { kill: s.kill }).verdict, "signalled");
    assert.deepEqual(s.calls, [[-leader.pid, "SIGTERM"], [member.pid, "SIGTERM"]]);
  });

  it("refuses a process that does not carry the marks, and pid 1; takes another start time for a process gone", () => {
    const p = marked({ TURQUOISE_AGENT: mark, TURQUOISE_INSTANCE: "c" });
    const s = spy();
    const wrong = signalIfMarked({ ...p, marks: { TURQUOISE_AGENT: mark, TURQUOISE_INSTANCE: "d" } }, "SIGTERM", { kill: s.kill });
    assert.equal(wrong.verdict, "refused");
    assert.match((wrong as { reason: string }).reason, /no longer carries TURQUOISE_INSTANCE=d/);
    assert.equal(signalIfMarked({ pid: p.pid, startTicks: p.startTicks + 1, marks: { TURQUOISE_AGENT: mark } }, "SIGTERM", { kill: s.kill }).verdict, "gone");
    assert.equal(signalIfMarked({ pid: 1, startTicks: readProcStat(1)?.startTicks ?? 0, marks: { TURQUOISE_AGENT: mark } }, "SIGTERM", { kill: s.kill }).verdict, "refused");
    assert.deepEqual(s.calls, []);
  });

  it("a real SIGTERM through signalIfMarked ends the process; then it is gone", async () => {
    const p = marked({ TURQUOISE_AGENT: mark, TURQUOISE_INSTANCE: "e" });
    const target = { ...p, marks: { TURQUOISE_AGENT: mark, TURQUOISE_INSTANCE: "e" } };
    assert.equal(identifyMarked(target).verdict, "ours");
    assert.equal(signalIfMarked(target, "SIGTERM").verdict, "signalled");
    await waitGone(p.pid);
    assert.equal(identifyMarked(target).verdict, "gone");
  });
});

describe("listeningSockets and startedAtMs", () => {
  it("lists the TCP addresses a process listens on, IPv4 and IPv6, and nothing it only connects to", async () => {
    const v4 = net.createServer();
    const v6 = net.createServer();
    await new Promise<void>((r) => v4.listen(0, "127.0.0.1", r));
    const haveV6 = await new Promise<boolean>((r) => v6.once("error", () => r(false)).listen(0, "::1", () => r(true)));
    try {
      const sockets = listeningSockets(process.pid);
      assert.ok(sockets.some((a) => a.host === "127.0.0.1" && a.port === (v4.address() as net.AddressInfo).port), JSON.stringify(sockets));
      if (haveV6) assert.ok(sockets.some((a) => a.host === "::1" && a.port === (v6.address() as net.AddressInfo).port), JSON.stringify(sockets));
      const other = bystander();
      assert.deepEqual(listeningSockets(other.pid), []);
    } finally {
      v4.close();
      v6.close();
    }
  });

  it("dates a process's start from its start ticks, within a few seconds of now for a new one", () => {
    const p = bystander();
    const at = startedAtMs(p.startTicks)!;
    assert.ok(Math.abs(Date.now() - at) < 5_000, `started at ${new Date(at).toISOString()}`);
  });
});
