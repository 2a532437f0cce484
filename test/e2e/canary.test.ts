// End to end: the preview address (deploy --hold, promote, abort, a held release surviving its
// agent's death) and progressive delivery (canary steps passed, a failing release aborted with
// its figures, an agent killed mid-canary), with a real agent, proxy process and instances.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { writeCanaryReleases, type CanaryRelease } from "../../src/demo/canary-releases.js";
import { LoadGenerator, userAddress } from "../../src/demo/load.js";
import { createWorkspace, type Workspace, type WorkspaceOptions } from "../../src/demo/workspace.js";
import { RELEASE_KINDS, agentEvents, api, get, readAgentPid, releaseServing, waitFor, workspaceWith } from "./helpers.js";

interface History { kind: string; release: string; outcome: string; error: string | null; actor: string; steps: Array<{ name: string; ok: boolean; detail?: string }> }
interface ServiceStatus {
  preview: { slot: string; release: string; held: boolean; url: string | null; heldBy?: string } | null;
  canary: { slot: string; release: string | null; percent: number; steps: number[]; stepStartedAt: number; stepIntervalMs: number } | null;
  instances: Array<{ release: string }>;
}

const PREVIEW = "green.books.localhost";

async function history(ws: Workspace): Promise<History[]> {
  return JSON.parse((await ws.cli(["history", "books", "--json"])).stdout) as History[];
}

async function serviceStatus(ws: Workspace): Promise<ServiceStatus> {
  const s = JSON.parse((await ws.cli(["status", "--json"])).stdout) as { services: ServiceStatus[] };
  return s.services[0]!;
}

async function canaryWorkspace(releases: Record<string, CanaryRelease>, opts: WorkspaceOptions = {}): Promise<Workspace> {
  const releasesDir = fs.mkdtempSync(path.join(os.tmpdir(), "turquoise-canary-"));
  writeCanaryReleases(releasesDir, releases);
  const ws = await createWorkspace({ replicas: 1, healthInterval: "300ms", ...opts, releasesDir });
  const destroy = ws.destroy;
  ws.destroy = async () => {
    await destroy();
    fs.rmSync(releasesDir, { recursive: true, force: true });
  };
  return ws;
}

/** Which release each of n users (own loopback address, no cookie) reaches now. */
async function sidesOfUsers(ws: Workspace, n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await new Promise<string>((resolve, reject) => {
      import("node:http").then(({ default: http }) => {
        http.get(`${ws.proxyUrl}/api/v1/books`, { agent: false, localAddress: userAddress(i) }, (res) => {
          res.resume();
          res.on("end", () => resolve(`${res.statusCode} ${String(res.headers["x-release"])}`));
        }).on("error", reject);
      }, reject);
    });
    out.push(r);
  }
  return out;
}

describe("preview address: deploy --hold, promote, abort", () => {
  const spaces: Workspace[] = [];
  after(async () => { for (const ws of spaces) await ws.destroy(); });

  it("holds the new release on the preview host, keeps it through an agent's death, promotes it, and aborts the next one", async () => {
    const ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.good("v2"), v3: RELEASE_KINDS.good("v3") }, { replicas: 1, previewHost: PREVIEW });
    spaces.push(ws);
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    // Nothing to preview yet: the preview host has no route of its own, so this any-host route takes it.
    assert.equal((await get(`${ws.proxyUrl}/api/v1/books`, { host: PREVIEW })).headers["x-release"], "v1");

    const held = await ws.cli(["deploy", "books", "--release", "v2", "--hold"]);
    assert.match(held.stdout, /hold .*v2 held in \w+ on http:\/\/green\.books\.localhost/);
    assert.match(held.stdout, /deploy of books v2 held in/);
    assert.equal(await releaseServing(ws), "v1", "the public route stays on the live release");
    assert.equal((await get(`${ws.proxyUrl}/api/v1/books`, { host: PREVIEW })).headers["x-release"], "v2");
    let s = await serviceStatus(ws);
    assert.equal(s.preview?.held, true);
    assert.equal(s.preview?.release, "v2");
    assert.equal(s.preview?.url, `http://${PREVIEW}`);
    assert.equal((await history(ws))[0]!.outcome, "held");
    assert.match((await ws.cli(["status"])).stdout, /HELD: v2 in \w+ on http:\/\/green\.books\.localhost .*turquoise promote books/);

    // The agent dies while v2 is held: the next one keeps it held (it waits for promote or abort).
    process.kill(readAgentPid(ws), "SIGKILL");
    await ws.cli(["up", "--detach"]);
    s = await serviceStatus(ws);
    assert.equal(s.preview?.held, true, "still held after the agent's death");
    assert.equal((await get(`${ws.proxyUrl}/api/v1/books`, { host: PREVIEW })).headers["x-release"], "v2");
    assert.equal(await releaseServing(ws), "v1");

    // A second hold of another release while one is held replaces nothing by surprise: promote takes the held one.
    const promoted = await ws.cli(["promote", "books"]);
    assert.match(promoted.stdout, /promote of books v2 succeeded/);
    assert.equal(await releaseServing(ws), "v2");
    const [p, h] = await history(ws);
    assert.equal(p!.outcome, "succeeded");
    assert.equal(h!.outcome, "succeeded", "the held deploy is done once promoted");
    assert.match(h!.error ?? "", /promoted by/);
    assert.equal((await serviceStatus(ws)).preview, null);

    // Hold v3, then abort it: the live release never saw it.
    await ws.cli(["deploy", "books", "--release", "v3", "--hold"]);
    assert.equal((await get(`${ws.proxyUrl}/api/v1/books`, { host: PREVIEW })).headers["x-release"], "v3");
    const aborted = await ws.cli(["abort", "books", "--json"]);
    assert.equal((JSON.parse(aborted.stdout) as { release: string }).release, "v3");
    assert.equal(await releaseServing(ws), "v2");
    assert.equal((await get(`${ws.proxyUrl}/api/v1/books`, { host: PREVIEW })).headers["x-release"], "v2", "the preview route went with it");
    s = await serviceStatus(ws);
    assert.equal(s.preview, null);
    assert.ok(s.instances.every((i) => i.release === "v2"), JSON.stringify(s.instances));
    assert.equal((await history(ws))[0]!.outcome, "aborted");
    assert.ok((await agentEvents(ws, "deploy.aborted")).length >= 1);

    // Nothing held: promote and abort say so, and change nothing.
    const none = await ws.cli(["promote", "books"], { allowFail: true });
    assert.equal(none.code, 4);
    assert.match(none.stderr, /books has no held release/);
    assert.equal((await ws.cli(["abort", "books"], { allowFail: true })).code, 4);
    // --hold with --canary is refused before anything starts.
    const both = await ws.cli(["deploy", "books", "-r", "v3", "--hold", "--canary", "5,50"], { allowFail: true });
    assert.equal(both.code, 2);
    assert.equal(await releaseServing(ws), "v2");

    // A deploy of another release while one is held replaces it: the held deploy ends aborted, naming what replaced it.
    await ws.cli(["deploy", "books", "--release", "v3", "--hold"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    assert.equal(await releaseServing(ws), "v1");
    const replaced = (await history(ws)).find((e) => e.release === "v3");
    assert.equal(replaced?.outcome, "aborted", JSON.stringify(replaced));
    assert.match(replaced?.error ?? "", /replaced while held by deploy #\d+ of v1/);
    assert.equal((await serviceStatus(ws)).preview, null);
  });
});

describe("canary: progressive delivery judged by the proxy's counters", () => {
  const spaces: Workspace[] = [];
  after(async () => { for (const ws of spaces) await ws.destroy(); });

  it("a good release goes through every step under load with no failed request", async () => {
    const ws = await canaryWorkspace({ v1: {}, v2: {} }, { extraServiceYaml: "    canary: { steps: [20, 50, 100], step_interval: 2s }\n    bake: 0s\n" });
    spaces.push(ws);
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    const load = new LoadGenerator({ baseUrl: ws.proxyUrl, concurrency: 4, postEvery: 0, users: 80, maxRequests: 200_000, maxDurationMs: 60_000 }).start();
    const out = await ws.cli(["deploy", "books", "--release", "v2"]);
    const report = await load.stop();
    assert.match(out.stdout, /canary .*passed: 20 %/);
    assert.match(out.stdout, /canary .*passed: 50 %/);
    assert.equal(report.failed, 0, JSON.stringify(report.failures));
    assert.ok((report.byRelease.v2 ?? 0) > 0 && (report.byRelease.v1 ?? 0) > 0, JSON.stringify(report.byRelease));
    const [h] = await history(ws);
    assert.equal(h!.outcome, "succeeded");
    assert.equal(h!.steps.filter((st) => st.name === "canary" && st.ok).length, 2);
    assert.equal(await releaseServing(ws), "v2");
    assert.equal((await serviceStatus(ws)).canary, null);
  });

  it("a release failing 1 request in 10 is aborted at its first step: every user back, the figures recorded", async () => {
    const ws = await canaryWorkspace({ v1: {}, v2: { failEvery: 10 } });
    spaces.push(ws);
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    const load = new LoadGenerator({ baseUrl: ws.proxyUrl, concurrency: 4, postEvery: 0, users: 80, maxRequests: 200_000, maxDurationMs: 60_000 }).start();
    // A 30 s window: the abort must come from the error rate as it shows, long before the window ends.
    const started = Date.now();
    const out = await ws.cli(["deploy", "books", "--release", "v2", "--canary", "25,50,100", "--step-interval", "30s"], { allowFail: true });
    const tookMs = Date.now() - started;
    await new Promise((r) => setTimeout(r, 300));
    const report = await load.stop();
    assert.equal(out.code, 6, out.stderr);
    assert.match(out.stderr, /aborted by its canary: at 25 %: error rate [\d.]+ % \(\d+ of \d+\) against 0\.0 % on the live release/);
    assert.ok(tookMs < 30_000, `aborted in ${tookMs} ms, before the 30 s window ended`);
    const [h] = await history(ws);
    assert.equal(h!.outcome, "aborted");
    assert.match(h!.error ?? "", /25 % for .*new \d+ request\(s\), [\d.]+ % errors/);
    assert.ok(h!.steps.some((st) => st.name === "revert" && st.ok));
    const ev = (await agentEvents(ws, "deploy.aborted"))[0];
    assert.ok(ev, "an event says so");
    assert.equal(await releaseServing(ws), "v1");
    const after = await sidesOfUsers(ws, 40);
    assert.ok(after.every((x) => x === "200 v1"), after.join(", "));
    assert.ok((await serviceStatus(ws)).instances.every((i) => i.release === "v1"));
    // Only the canary's own injected 500s failed, and few of them.
    assert.deepEqual(Object.keys(report.failures).filter((k) => k !== "HTTP 500"), [], JSON.stringify(report.failures));
    assert.ok((report.failures["HTTP 500"] ?? 0) < 50, JSON.stringify(report.failures));
  });

  it("an agent killed mid-canary: the next one sends every user back to the live release and stops the new one", async () => {
    const ws = await canaryWorkspace({ v1: {}, v2: {} });
    spaces.push(ws);
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    const deploy = ws.cli(["deploy", "books", "--release", "v2", "--canary", "50", "--step-interval", "60s"], { allowFail: true });
    const shown = await waitFor("the canary at 50 %", async () => {
      const c = (await serviceStatus(ws)).canary;
      return c?.percent === 50 ? c : undefined;
    }, 30_000);
    assert.deepEqual({ ...shown, stepStartedAt: typeof shown.stepStartedAt }, { slot: shown.slot, release: "v2", percent: 50, steps: [50], stepStartedAt: "number", stepIntervalMs: 60_000 });
    process.kill(readAgentPid(ws), "SIGKILL");
    await deploy;
    // The proxy keeps its last table: users are still split while no agent runs.
    const during = await sidesOfUsers(ws, 40);
    assert.ok(during.includes("200 v2") && during.includes("200 v1"), during.join(", "));
    await ws.cli(["up", "--detach"]);
    const afterSides = await sidesOfUsers(ws, 40);
    assert.ok(afterSides.every((x) => x === "200 v1"), afterSides.join(", "));
    const s = await serviceStatus(ws);
    assert.equal(s.canary, null);
    assert.ok(s.instances.every((i) => i.release === "v1"), JSON.stringify(s.instances));
    const [h] = await history(ws);
    assert.equal(h!.outcome, "aborted");
    assert.match(h!.error ?? "", /agent restarted during canary; undone, v1 stays live/);
    const token = (await api(ws, "/v1/status")).status;
    assert.equal(token, 200);
  });
});

describe("canary on a service with a database", () => {
  const spaces: Workspace[] = [];
  after(async () => { for (const ws of spaces) await ws.destroy(); });

  it("goes out in steps when both releases run on the current schema; refused with --canary, and skipped saying why with the spec's, when the plan migrates first", async () => {
    // The spec's canary is every deploy's default: one the plan cannot stage flips in one step.
    const ws = await createWorkspace({ replicas: 1, healthInterval: "300ms", database: { driver: "sqlite", url: "sqlite:books.db" }, extraServiceYaml: "    canary: { steps: [50], step_interval: 1s }\n" });
    spaces.push(ws);
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    await ws.cli(["plan", "books", "--release", "v2", "--canary"]);
    const ok = await ws.cli(["deploy", "books", "--release", "v2"]);
    assert.match(ok.stdout, /canary .*passed: 50 %/);
    assert.equal(await releaseServing(ws), "v2");

    const plan = await ws.cli(["plan", "books", "--release", "v3", "--via", "v2-turquoise", "--canary"], { allowFail: true });
    assert.equal(plan.code, 10, plan.stderr);
    assert.match(plan.stderr, /a canary needs both releases on the current schema, and this plan walks through a turquoise release \(v2-turquoise → v3\)/);
    const deploy = await ws.cli(["deploy", "books", "--release", "v3", "--via", "v2-turquoise", "--canary", "50"], { allowFail: true });
    assert.equal(deploy.code, 10, deploy.stderr);
    assert.match(deploy.stderr, /deploy without --canary/);
    assert.equal(await releaseServing(ws), "v2", "nothing changed");
    assert.equal((await history(ws))[0]!.release, "v2", "a refused plan is not recorded");

    // Without --canary, the spec's canary gives way to the turquoise path, and says why.
    const path = await ws.cli(["deploy", "books", "--release", "v3", "--via", "v2-turquoise"]);
    assert.match(path.stdout, /… no canary: a canary needs both releases on the current schema, and this plan walks through a turquoise release/);
    assert.doesNotMatch(path.stdout, /canary .*passed/);
    assert.equal(await releaseServing(ws), "v3");
  });
});
