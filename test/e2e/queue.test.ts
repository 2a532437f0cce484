// End to end: a queued deploy is bounded: it gives up at its --wait-timeout, and is dropped when its client goes away.
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import type { Workspace } from "../../src/demo/workspace.js";
import { EXIT_CODES } from "../../src/errors.js";
import { RELEASE_KINDS, agentEvents, releaseServing, status, tokenOf, waitFor, workspaceWith } from "./helpers.js";

describe("queued deploys", () => {
  let ws: Workspace;
  let gates: string;
  before(async () => {
    // Each slow release holds its deploy's lock until the test opens its gate: no guess at how long a CLI takes to start.
    gates = fs.mkdtempSync(path.join(os.tmpdir(), "turquoise-gates-"));
    ws = await workspaceWith({
      v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.good("v2"),
      slow: RELEASE_KINDS.gated("slow", path.join(gates, "slow")), slower: RELEASE_KINDS.gated("slower", path.join(gates, "slower")),
    }, { replicas: 1, deployTimeout: "2m" });
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
  });
  after(async () => {
    if (gates) for (const gate of ["slow", "slower"]) fs.writeFileSync(path.join(gates, gate), "");
    await ws?.destroy();
    if (gates) fs.rmSync(gates, { recursive: true, force: true });
  });

  /** Starts a deploy of a gated release and resolves, once it holds the lock, with its end (wrapped: an async function would wait for it) and whether it ended. */
  async function slowDeploy(release: "slow" | "slower"): Promise<{ done: Promise<unknown>; ended: () => boolean; open: () => void }> {
    let ended = false;
    const done = ws.cli(["deploy", "books", "--release", release]).finally(() => (ended = true));
    await waitFor("the slow deploy to hold the lock", async () => ((await status(ws)).lock ? true : undefined), 30_000);
    return { done, ended: () => ended, open: () => fs.writeFileSync(path.join(gates, release), "") };
  }

  it("--wait-timeout gives up on the lock, says so, and never runs", async () => {
    const running = await slowDeploy("slow");
    const queued = await ws.cli(["deploy", "books", "--release", "v2", "--wait-timeout", "500ms"], { allowFail: true });
    assert.equal(queued.code, EXIT_CODES.LOCKED, queued.stdout + queued.stderr);
    assert.match(queued.stderr, /gave up waiting for the deploy lock of books \(its --wait-timeout ran out\): held by .*deploy slow/);
    assert.equal(running.ended(), false, "gave up while the slow deploy still held the lock");
    running.open();
    await running.done;
    assert.equal(await releaseServing(ws), "slow", "the timed-out deploy never ran");
    assert.ok((await agentEvents(ws, "deploy.dropped")).some((e) => /--wait-timeout ran out/.test(e.message)));
    const bad = await ws.cli(["deploy", "books", "--release", "v2", "--wait-timeout", "5"], { allowFail: true });
    assert.equal(bad.code, EXIT_CODES.USAGE);
  });

  it("a queued deploy whose client goes away is dropped", async () => {
    const running = await slowDeploy("slower");
    const body = JSON.stringify({ release: "v2", wait: true, actor: "gone client" });
    const req = http.request({ host: "127.0.0.1", port: ws.agentPort, path: "/v1/services/books/deploy", method: "POST", agent: false, headers: { authorization: `Bearer ${tokenOf(ws)}` } });
    req.on("error", () => undefined);
    const queued = new Promise<void>((resolve) => req.on("response", (res) => {
      res.setEncoding("utf8");
      res.on("data", (c: string) => { if (c.includes("waiting for the deploy lock")) resolve(); });
    }));
    req.end(body);
    await queued;
    req.destroy();
    const dropped = await waitFor("the dropped event", async () => (await agentEvents(ws, "deploy.dropped")).find((e) => /its client went away/.test(e.message)), 30_000);
    assert.match(dropped.message, /gone client/);
    assert.equal(running.ended(), false, "dropped while the slow deploy still held the lock");
    running.open();
    await running.done;
    await new Promise((r) => setTimeout(r, 1_000));
    assert.equal(await releaseServing(ws), "slower", "the dropped deploy never ran after the lock came free");
    const history = JSON.parse((await ws.cli(["history", "books", "--json", "--limit", "1"])).stdout) as Array<{ release: string }>;
    assert.equal(history[0]!.release, "slower");
  });
});
