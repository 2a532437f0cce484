// End to end: a deploy is done only once it proved itself in real traffic (the bake window), and a
// live release that keeps crashing is rolled back by the healer instead of leaving nothing up.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import type { Workspace } from "../../src/demo/workspace.js";
import { LoadGenerator } from "../../src/demo/load.js";
import { RELEASE_KINDS, agentEvents, releaseServing, status, waitFor, workspaceWith } from "./helpers.js";

interface History { kind: string; release: string; outcome: string; error: string | null; actor: string; steps: Array<{ name: string; ok: boolean; detail?: string; durationMs: number }> }

async function history(ws: Workspace): Promise<History[]> {
  return JSON.parse((await ws.cli(["history", "books", "--json"])).stdout) as History[];
}

describe("bake window", () => {
  const spaces: Workspace[] = [];
  after(async () => { for (const ws of spaces) await ws.destroy(); });

  it("a release that crashes on its 200th request is reverted: the old release serves, few requests fail", async () => {
    const ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.crashAfter("v2", 200) }, { replicas: 2, healthInterval: "300ms", extraServiceYaml: "    bake: 8s\n" });
    spaces.push(ws);
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    const load = new LoadGenerator({ baseUrl: ws.proxyUrl, concurrency: 4, postEvery: 0, maxRequests: 500_000, maxDurationMs: 60_000 }).start();
    const r = await ws.cli(["deploy", "books", "--release", "v2"], { allowFail: true });
    // Requests after the revert must all land on v1.
    await new Promise((res) => setTimeout(res, 500));
    const report = await load.stop();

    assert.notEqual(r.code, 0, "a reverted deploy exits non-zero");
    assert.match(r.stderr + r.stdout, /reverted/);
    const [h] = await history(ws);
    assert.equal(h!.release, "v2");
    assert.equal(h!.outcome, "reverted");
    assert.match(h!.error ?? "", /exited|failed/);
    assert.ok(h!.steps.some((s) => s.name === "bake" && !s.ok), "the bake step failed");
    assert.ok(h!.steps.some((s) => s.name === "revert" && s.ok), "the revert step ran");
    assert.equal(await releaseServing(ws), "v1");
    const s = await status(ws);
    assert.ok(s.instances.every((i) => i.release === "v1"), "the new release is retired");
    assert.equal(s.lock, null);
    assert.ok((await agentEvents(ws, "deploy.reverted")).length >= 1, "an event says so");
    // The proxy retries an idempotent GET that met a reset, so few (usually none) reach a client.
    const timings = h!.steps.map((st) => `${st.name} ${st.durationMs}ms ${st.detail?.split("\n")[0] ?? ""}`).join("; ");
    assert.ok(report.failed <= Math.max(3, report.total * 0.01), `failed ${report.failed} of ${report.total}: ${JSON.stringify(report.failures)}; ${timings}`);
  });

  it("bake: 0s disables the window: the same deploy succeeds", async () => {
    const ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.good("v2") }, { replicas: 1, extraServiceYaml: "    bake: 0s\n" });
    spaces.push(ws);
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    await ws.cli(["deploy", "books", "--release", "v2"]);
    const [h] = await history(ws);
    assert.equal(h!.outcome, "succeeded");
    assert.ok(h!.steps.some((s) => s.name === "bake" && s.detail?.startsWith("skipped:")));
  });
});

describe("crash loop after a deploy", () => {
  const spaces: Workspace[] = [];
  after(async () => { for (const ws of spaces) await ws.destroy(); });

  it("a live release that keeps crashing goes back to the previous release, not down", async () => {
    // v2 passes its checks, then dies 3 s after each start: no bake (0s) catches it, the healer must.
    const ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.crashSoonAfterStart(3000) }, { replicas: 2, healthInterval: "300ms", extraServiceYaml: "    bake: 0s\n" });
    spaces.push(ws);
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    await ws.cli(["deploy", "books", "--release", "v2"]);
    const back = await waitFor("the healer's rollback", async () => (await agentEvents(ws, "service.rolled-back"))[0], 90_000);
    assert.match(back.message, /rolled back from crash-looping v2 to v1/);
    const s = await status(ws) as Awaited<ReturnType<typeof status>> & { degraded?: unknown };
    assert.equal(s.release, "v1");
    assert.ok(!s.degraded, "not degraded");
    assert.equal(await releaseServing(ws), "v1");
    const [h] = await history(ws);
    assert.equal(h!.kind, "rollback");
    assert.equal(h!.outcome, "succeeded");
    assert.match(h!.actor, /healer/);
    const healing = (await agentEvents(ws)).filter((e) => /^(heal|service)\./.test(e.type)).map((e) => `${e.type}: ${e.message}`);
    assert.equal(healing.filter((line) => line.startsWith("service.degraded")).length, 0, healing.join("\n"));
  });
});
