// End to end: the deploy flow's failure modes leave the live release untouched.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { EXIT_CODES } from "../../src/errors.js";
import type { Workspace } from "../../src/demo/workspace.js";
import { LoadGenerator } from "../../src/demo/load.js";
import { RELEASE_KINDS, cliRunning, get, instancePids, releaseServing, status, waitFor, workspaceWith } from "./helpers.js";

describe("deploy flow", () => {
  let ws: Workspace;
  let gate: string;
  before(async () => {
    gate = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "turquoise-gate-")), "open");
    // deploy_timeout is 10x the bound a fast failure is held to, and the time a gated deploy may hold its lock.
    ws = await workspaceWith({
      v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.good("v2"), sick: RELEASE_KINDS.unhealthy(),
      crash: RELEASE_KINDS.exitsAtOnce(), gated: RELEASE_KINDS.gated("gated", gate),
    }, { replicas: 2, deployTimeout: "60s" });
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
  });
  after(async () => {
    await ws?.destroy();
    if (gate) fs.rmSync(path.dirname(gate), { recursive: true, force: true });
  });

  it("serves the deployed release through the proxy", async () => {
    assert.equal(await releaseServing(ws), "v1");
    const s = await status(ws);
    assert.equal(s.release, "v1");
    assert.equal(s.color, "blue");
    assert.equal(s.instances.length, 2);
  });

  it("an unhealthy release: live untouched, new slot stopped, the check's output reported", async () => {
    const before = instancePids(ws);
    const r = await ws.cli(["deploy", "books", "--release", "sick"], { allowFail: true });
    assert.equal(r.code, EXIT_CODES.DEPLOY_FAILED);
    assert.match(r.stderr, /failed at healthy/);
    assert.match(r.stdout, /database unreachable|HTTP 500/);
    assert.equal(await releaseServing(ws), "v1");
    assert.deepEqual(instancePids(ws), before, "only the live instances run");
    const s = await status(ws);
    assert.equal(s.release, "v1");
    assert.ok(s.instances.every((i) => i.release === "v1"));
  });

  it("a release that exits at once fails fast with its last output", async () => {
    const t0 = Date.now();
    const r = await ws.cli(["deploy", "books", "--release", "crash", "--json"], { allowFail: true });
    assert.equal(r.code, EXIT_CODES.DEPLOY_FAILED);
    assert.ok(Date.now() - t0 < 6_000, "fails when the instance exits, not at deploy_timeout (60s)");
    const out = JSON.parse(r.stdout) as { ok: boolean; error: { message: string; output: string } };
    assert.equal(out.ok, false);
    assert.match(out.error.message, /exited before it was healthy/);
    assert.match(out.error.output, /cannot read config file/);
    assert.match(out.error.output, /critical: the instance exited \(exit code 3\)/);
    assert.equal(await releaseServing(ws), "v1");
  });

  it("a missing release directory is a clear error and changes nothing", async () => {
    const before = instancePids(ws);
    const r = await ws.cli(["deploy", "books", "--release", "nope"], { allowFail: true });
    assert.equal(r.code, EXIT_CODES.NOT_FOUND);
    assert.match(r.stderr, /release "nope" of books not found: no directory .*nope/);
    assert.deepEqual(instancePids(ws), before);
    assert.equal(await releaseServing(ws), "v1");
  });

  it("a failing smoke check stops the new slot and names the check", async () => {
    const smoky = await workspaceWith({ v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.good("v2") }, {
      replicas: 1,
      extraServiceYaml: `    smoke:\n      - name: has a title\n        http: { path: /api/v1/books, expect_status: 200, expect_body: "title-that-is-not-there" }\n`,
    });
    try {
      await smoky.cli(["up", "--detach"]);
      // No book has that title, so even the first deploy must fail its smoke check.
      const r1 = await smoky.cli(["deploy", "books", "--release", "v1"], { allowFail: true });
      assert.equal(r1.code, EXIT_CODES.DEPLOY_FAILED);
      assert.match(r1.stdout, /smoke/);
      assert.match(r1.stderr, /smoke check "has a title" failed/);
      assert.match(r1.stdout, /body does not contain/);
      assert.equal((await get(`${smoky.proxyUrl}/api/v1/books`)).status, 404, "nothing was routed");
      assert.deepEqual(instancePids(smoky), []);
    } finally {
      await smoky.destroy();
    }
  });

  it("after_flip hooks run once traffic is on the new release; a failing one fails the deploy", async () => {
    const hooked = await workspaceWith({ v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.good("v2") }, {
      replicas: 1,
      extraServiceYaml: `    hooks:\n      after_flip:\n        - signal: { service: books, signal: SIGHUP }\n        - command: ["sh", "-c", "echo flipped to $TURQUOISE_RELEASE >> hooks.log"]\n`,
    });
    try {
      await hooked.cli(["up", "--detach"]);
      const { stdout } = await hooked.cli(["deploy", "books", "--release", "v1", "--json"]);
      const hooks = (JSON.parse(stdout) as { history: { steps: Array<{ name: string; detail?: string }> } }).history.steps.find((s) => s.name === "hooks");
      assert.match(hooks?.detail ?? "", /SIGHUP → 1 instance\(s\) of books/);
      assert.equal(fs.readFileSync(path.join(hooked.dir, "hooks.log"), "utf8"), "flipped to v1\n");
    } finally {
      await hooked.destroy();
    }
  });

  it("a second deploy while one runs fails at once, naming the holder; --wait queues", async () => {
    // The first deploy holds the lock until the test opens its release's gate: no guess at how long a CLI takes to start.
    let firstDone = false;
    const first = ws.cli(["deploy", "books", "--release", "gated"]).finally(() => (firstDone = true));
    try {
      await waitFor("the first deploy to hold the lock", async () => ((await status(ws)).lock ? true : undefined), 30_000);
      const second = await ws.cli(["deploy", "books", "--release", "v2"], { allowFail: true });
      assert.equal(second.code, EXIT_CODES.LOCKED, second.stdout + second.stderr);
      assert.equal(firstDone, false, "the second deploy failed while the first still ran: it did not wait");
      assert.match(second.stderr, /already running: lock held by .*deploy gated.* since \d{4}-\d\d-\d\dT/);
      const queued = cliRunning(ws, ["deploy", "books", "--release", "v2", "--wait"]);
      await queued.printed(/waiting for the deploy lock, held by .*deploy gated/);
      assert.equal(firstDone, false);
      fs.writeFileSync(gate, "");
      await first;
      const q = await queued.done;
      assert.equal(q.code, 0, q.stdout + q.stderr);
      assert.equal(await releaseServing(ws), "v2");
      const h = JSON.parse((await ws.cli(["history", "books", "--json", "--limit", "2"])).stdout) as Array<{ release: string; outcome: string }>;
      assert.deepEqual(h.map((e) => [e.release, e.outcome]), [["v2", "succeeded"], ["gated", "succeeded"]], "the queued deploy ran after the first, not instead of it");
    } finally {
      fs.writeFileSync(gate, "");
      await first.catch(() => undefined);
    }
  });

  it("deploy and rollback under load: zero failed requests, history recorded", async () => {
    const load = new LoadGenerator({ baseUrl: ws.proxyUrl, concurrency: 6, postEvery: 4, maxRequests: 200_000, maxDurationMs: 30_000 }).start();
    await ws.cli(["deploy", "books", "--release", "v1"]);
    await ws.cli(["rollback", "books"]);
    const report = await load.stop();
    assert.equal(report.failed, 0, JSON.stringify(report.failures));
    assert.ok(report.total > 100);
    assert.equal(await releaseServing(ws), "v2");
    const { stdout } = await ws.cli(["history", "books", "--json", "--limit", "2"]);
    const h = JSON.parse(stdout) as Array<{ kind: string; release: string; outcome: string; actor: string; steps: Array<{ name: string }>; plan: string[] }>;
    assert.deepEqual(h.map((e) => [e.kind, e.release, e.outcome]), [["rollback", "v2", "succeeded"], ["deploy", "v1", "succeeded"]]);
    assert.ok(h[0]!.actor.length > 0);
    assert.ok(h[1]!.plan.length >= 5);
    assert.deepEqual(h[1]!.steps.map((s) => s.name), ["lock", "plan", "start", "healthy", "smoke", "migrate-expand", "flip", "verify", "bake", "drain", "retire", "migrate-contract", "record"]);
  });

  it("signal sends a signal to the live instances through the runtime", async () => {
    const r = await ws.cli(["signal", "books", "HUP", "--json"]);
    assert.deepEqual(JSON.parse(r.stdout), { signal: "SIGHUP", sent: 2 });
    const logs = await waitFor("SIGHUP in the logs", async () => {
      const { stdout } = await ws.cli(["logs", "books"]);
      return (stdout.match(/got SIGHUP/g) ?? []).length === 2 ? stdout : undefined;
    });
    assert.match(logs, /got SIGHUP: reloading configuration/);
    const bad = await ws.cli(["signal", "books", "NOPE"], { allowFail: true });
    assert.equal(bad.code, EXIT_CODES.USAGE);
  });

  it("in-flight requests on the old slot finish during the flip", async () => {
    const slow = get(`${ws.proxyUrl}/api/v1/slow?ms=1200`);
    await new Promise((r) => setTimeout(r, 100));
    const { stdout } = await ws.cli(["deploy", "books", "--release", "v1", "--json"]);
    const res = await slow;
    assert.equal(res.status, 200);
    assert.equal(res.headers["x-release"], "v2", "served wholly by the old pool");
    const drain = (JSON.parse(stdout) as { history: { steps: Array<{ name: string; detail?: string }> } }).history.steps.find((s) => s.name === "drain")!;
    // The bake window keeps the old slot running after the flip, so the request may end before the drain starts: never cut.
    assert.match(drain.detail ?? "", /^[01] in-flight request\(s\) finished$/);
  });
});

describe("health verdicts", () => {
  const spaces: Workspace[] = [];
  after(async () => { for (const s of spaces) await s.destroy(); });

  it("a release whose health answers 500 fails after failures_before_critical × interval, not deploy_timeout, naming the status", async () => {
    // The check: interval 1s, failures_before_critical 2; deploy_timeout 3m, over 10x the bound, so waiting it out cannot pass.
    const w = await workspaceWith({ v1: RELEASE_KINDS.good("v1"), sick: RELEASE_KINDS.unhealthy() }, { replicas: 2, deployTimeout: "3m" });
    spaces.push(w);
    await w.cli(["up", "--detach"]);
    await w.cli(["deploy", "books", "--release", "v1"]);
    const before = instancePids(w);
    const t0 = Date.now();
    const r = await w.cli(["deploy", "books", "--release", "sick", "--json"], { allowFail: true });
    const tookMs = Date.now() - t0;
    assert.equal(r.code, EXIT_CODES.DEPLOY_FAILED);
    assert.ok(tookMs < 15_000, `took ${tookMs}ms: it waited for deploy_timeout (3m)`);
    const out = JSON.parse(r.stdout) as { error: { message: string; output: string } };
    assert.match(out.error.message, /failed at healthy: unhealthy: the check answered HTTP 500 Internal Server Error: database unreachable for 2 × 1s/);
    assert.match(out.error.output, /books-green-\w+: critical: HTTP 500 Internal Server Error: database unreachable/);
    assert.equal(await releaseServing(w), "v1");
    assert.deepEqual(instancePids(w), before, "only the live instances run");
  });

  it("an app that ignores $PORT fails its deploy in seconds, not at deploy_timeout, saying where it listens and where it should", async () => {
    // deploy_timeout is 10× the bound: a deploy that waits it out cannot pass for a fast one.
    const w = await workspaceWith({ wrong: RELEASE_KINDS.wrongPort() }, { replicas: 1, deployTimeout: "2m" });
    spaces.push(w);
    await w.cli(["up", "--detach"]);
    const t0 = Date.now();
    const r = await w.cli(["deploy", "books", "--release", "wrong", "--json"], { allowFail: true });
    const tookMs = Date.now() - t0;
    assert.equal(r.code, EXIT_CODES.DEPLOY_FAILED);
    assert.ok(tookMs < 12_000, `took ${tookMs}ms: it waited for deploy_timeout (2m)`);
    const out = JSON.parse(r.stdout) as { error: { message: string; output: string } };
    assert.match(out.error.message, /failed at healthy: not listening where its check goes: books-(blue|green)-\w+ is listening on 127\.0\.0\.1:\d+, not on \$PORT=\d+\. An app must listen on the port Turquoise gives it in \$PORT/);
    const m = /ECONNREFUSED 127\.0\.0\.1:(\d+) \(listening on 127\.0\.0\.1:(\d+), not on \$PORT=(\d+)\)/.exec(out.error.output);
    assert.ok(m, out.error.output);
    assert.equal(m[1], m[3], "the port it was given is the one checked");
    assert.match(out.error.output, new RegExp(`listening on port ${m[2]}`), "the port named is the one it printed");
  });
});
