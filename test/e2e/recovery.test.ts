// End to end: crashes of the agent and of the proxy, and the API's token.
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { after, describe, it } from "node:test";
import type { Workspace } from "../../src/demo/workspace.js";
import { createWorkspace } from "../../src/demo/workspace.js";
import { EXIT_CODES } from "../../src/errors.js";
import { LoadGenerator } from "../../src/demo/load.js";
import { RELEASE_KINDS, crashingDeploy, get, instancePids, readAgentPid, releaseServing, status, waitFor, workspaceWith } from "./helpers.js";

describe("crash recovery", () => {
  const spaces: Workspace[] = [];
  after(async () => { for (const ws of spaces) await ws.destroy(); });

  for (const [step, expected] of [["start", "v1"], ["healthy", "v1"], ["flip", "v2"], ["drain", "v2"]] as const) {
    it(`agent killed after ${step}: restart leaves ${expected} live, no orphans, no lock, one live slot`, async () => {
      const ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.good("v2") }, { replicas: 2 });
      spaces.push(ws);
      await ws.cli(["up", "--detach"]);
      await ws.cli(["deploy", "books", "--release", "v1"]);
      const load = new LoadGenerator({ baseUrl: ws.proxyUrl, concurrency: 4, postEvery: 0, maxRequests: 100_000, maxDurationMs: 30_000 }).start();

      await crashingDeploy(ws, "v2", step);
      // The proxy keeps serving while no agent runs.
      assert.match(await releaseServing(ws), /^v[12]$/);

      await ws.cli(["up", "--detach"]);
      const s = await status(ws);
      const report = await load.stop();
      assert.equal(s.release, expected);
      assert.equal(s.lock, null, "no held lock");
      assert.equal(s.instances.length, 2);
      assert.ok(s.instances.every((i) => i.release === expected && i.slot === s.color), "one live slot, nothing else running");
      assert.deepEqual(instancePids(ws), s.instances.map((i) => Number(i.ref)).sort((a, b) => a - b), "no orphan processes");
      assert.equal(await releaseServing(ws), expected);
      assert.equal(report.failed, 0, `requests failed across the crash: ${JSON.stringify(report.failures)}`);

      const { stdout } = await ws.cli(["history", "books", "--json", "--limit", "1"]);
      const [h] = JSON.parse(stdout) as Array<{ outcome: string; error: string }>;
      assert.equal(h!.outcome, expected === "v2" ? "succeeded" : "aborted");
      assert.match(h!.error, /agent restarted during/);
    });
  }
});

describe("crash recovery on the turquoise path", () => {
  const spaces: Workspace[] = [];
  after(async () => { for (const ws of spaces) await ws.destroy(); });

  for (const [step, outcome] of [["start", "undone"], ["flip", "resumed"], ["migrate", "resumed"]] as const) {
    it(`agent killed after the path's first ${step}: restart ${outcome === "undone" ? "undoes it" : "resumes it to v3"}`, async () => {
      const ws = await createWorkspace({ replicas: 2, database: { driver: "sqlite", url: "sqlite:books.db" } });
      spaces.push(ws);
      await ws.cli(["up", "--detach"]);
      await ws.cli(["deploy", "books", "--release", "v2"]);
      const load = new LoadGenerator({ baseUrl: ws.proxyUrl, concurrency: 4, postEvery: 3, maxRequests: 100_000, maxDurationMs: 60_000 }).start();
      await crashingDeploy(ws, "v3", step, ["--via", "v2-turquoise"]);
      await ws.cli(["up", "--detach"]);
      const expected = outcome === "undone" ? "v2" : "v3";
      const s = await waitFor(`${expected} live with no lock`, async () => {
        const st = await status(ws);
        return st.release === expected && st.lock === null && st.instances.every((i) => i.release === expected) ? st : undefined;
      }, 30_000);
      const report = await load.stop();
      assert.equal(report.failed, 0, JSON.stringify(report.failures));
      assert.deepEqual(instancePids(ws), s.instances.map((i) => Number(i.ref)).sort((a, b) => a - b), "no orphan processes");
      const { stdout } = await ws.cli(["migrate", "books", "status", "--json"]);
      assert.equal((JSON.parse(stdout) as { current: number }).current, expected === "v3" ? 3 : 1);
    });
  }
});

describe("proxy and API", () => {
  let ws: Workspace;
  after(async () => ws?.destroy());

  it("a killed proxy is restarted with its routes", async () => {
    ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, { replicas: 1 });
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    const proxyPid = () => (JSON.parse(fs.readFileSync(path.join(ws.dir, ".turquoise", "proxy.json"), "utf8")) as { pid: number }).pid;
    // The proxy's supervisor: its workers stop with it (after answering what they had accepted).
    const killed = proxyPid();
    process.kill(killed, "SIGKILL");
    await waitFor("a new proxy", () => { try { return proxyPid() !== killed || undefined; } catch { return undefined; } });
    const served = await waitFor("the proxy to serve again", async () => {
      const r = await get(`${ws.proxyUrl}/api/v1/books`).catch(() => undefined);
      return r?.status === 200 ? r : undefined;
    });
    assert.equal(served.headers["x-release"], "v1");
  });

  it("the agent dying leaves the proxy serving; a new agent adopts proxy and instances", async () => {
    const before = instancePids(ws);
    process.kill(readAgentPid(ws), "SIGKILL");
    assert.equal(await releaseServing(ws), "v1");
    await ws.cli(["up", "--detach"]);
    assert.deepEqual(instancePids(ws), before, "adopted, not restarted");
    assert.equal(await releaseServing(ws), "v1");
  });

  it("API calls without the token get 401; with it they work", async () => {
    const { agentPort } = ws;
    const noToken = await get(`http://127.0.0.1:${agentPort}/v1/status`);
    assert.equal(noToken.status, 401);
    assert.match(noToken.body, /UNAUTHORIZED/);
    const wrong = await get(`http://127.0.0.1:${agentPort}/v1/status`, { authorization: "Bearer nope" });
    assert.equal(wrong.status, 401);
    const token = fs.readFileSync(path.join(ws.dir, ".turquoise", "token"), "utf8").trim();
    assert.equal(fs.statSync(path.join(ws.dir, ".turquoise", "token")).mode & 0o777, 0o600);
    const ok = await get(`http://127.0.0.1:${agentPort}/v1/status`, { authorization: `Bearer ${token}` });
    assert.equal(ok.status, 200);
    const health = await get(`http://127.0.0.1:${agentPort}/v1/health`);
    assert.equal(health.status, 200, "liveness needs no token");
  });

  it("malformed request paths get 400 and the agent keeps running", async () => {
    const raw = (path: string) => new Promise<string>((resolve, reject) => {
      const sock = net.connect(ws.agentPort, "127.0.0.1", () => sock.end(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
      let text = "";
      sock.on("data", (c) => (text += c));
      sock.on("end", () => resolve(text));
      sock.on("error", reject);
    });
    assert.match(await raw("//["), /^HTTP\/1\.1 400/);
    const token = fs.readFileSync(path.join(ws.dir, ".turquoise", "registry-token"), "utf8").trim();
    const bad = await get(`http://127.0.0.1:${ws.agentPort}/v1/kv/%E0`, { authorization: `Bearer ${token}` });
    assert.equal(bad.status, 400);
    assert.equal((await get(`http://127.0.0.1:${ws.agentPort}/v1/health`)).status, 200);
  });

  it("down stops everything; up restores the live release", async () => {
    await ws.cli(["down"]);
    assert.deepEqual(instancePids(ws), []);
    assert.equal(await get(`${ws.proxyUrl}/`).then(() => "up", () => "down"), "down");
    await ws.cli(["up", "--detach"]);
    assert.equal(await releaseServing(ws), "v1");
  });

  it("kv: put with compare-and-set, get, list, delete", async () => {
    // The live slot is the agent's own record: not in the user KV, and not readable through it.
    assert.equal((await ws.cli(["kv", "get", "_turquoise/services/books/color"], { allowFail: true })).code, EXIT_CODES.FORBIDDEN);
    await ws.cli(["kv", "put", "config/banner", "hello", "--cas", "0"]);
    const again = await ws.cli(["kv", "put", "config/banner", "other", "--cas", "0"], { allowFail: true });
    assert.equal(again.code, EXIT_CODES.CONFLICT);
    assert.equal((await ws.cli(["kv", "get", "config/banner"])).stdout.trim(), "hello");
    const list = JSON.parse((await ws.cli(["kv", "list", "config/", "--json"])).stdout) as Array<{ key: string }>;
    assert.deepEqual(list.map((k) => k.key), ["config/banner"]);
    await ws.cli(["kv", "delete", "config/banner"]);
    assert.equal((await ws.cli(["kv", "get", "config/banner"], { allowFail: true })).code, EXIT_CODES.NOT_FOUND);
  });
});
