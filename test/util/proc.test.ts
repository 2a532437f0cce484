// signalIfOurs: the agent signals a recorded process only when the record proves it started it.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { after, describe, it } from "node:test";
import { identify, readProcStat, signalIfOurs } from "../../src/util/proc.js";

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
