// End to end with runtime: docker: the real agent, proxy and CLI, books-service as containers on
// the local Docker Engine (images built here by src/demo/images.ts; nothing is pulled). The same
// flows as with local processes: deploy, rollback, the turquoise path on PostgreSQL (host
// networking), failures that must leave the live release alone, an agent restart, signals.
// scripts/ensure-docker.sh installs and starts Docker first, so these tests run on a fresh machine.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { ensureBooksImages, ensureImage, hostBinary, removeImage } from "../../src/demo/images.js";
import { LoadGenerator } from "../../src/demo/load.js";
import { createWorkspace, type Workspace } from "../../src/demo/workspace.js";
import { EXIT_CODES } from "../../src/errors.js";
import { DockerApi, type ContainerInspect } from "../../src/runtime/docker-api.js";
import { LABELS } from "../../src/runtime/docker.js";
import type { HistoryEntry } from "../../src/state/contract.js";
import { freshDatabase, PG_URL_ENV } from "../support/postgres.js";
import { get, readAgentPid, releaseServing, status, waitFor } from "./helpers.js";

const SCRIPTS = fileURLToPath(new URL("../../../scripts/", import.meta.url));
/** This file's own books images, so a benchmark rebuilding turquoise-books:* never races it. Kept: they are cached by content. */
const BOOKS_REPO = "turquoise-test-e2e-books";
const IMAGE = `${BOOKS_REPO}:{release}`;
/** A release whose container dies at start; unique per run, removed afterwards. */
const CRASH_RELEASE = `crash-${randomBytes(4).toString("hex")}`;
/** The agent's label on its containers (src/agent.ts): tells this workspace's containers from any other's. */
const AGENT_LABEL = "turquoise.agent";

const api = new DockerApi();
const workspaces: Workspace[] = [];

before(async () => {
  execFileSync("bash", [path.join(SCRIPTS, "ensure-docker.sh")], { stdio: ["ignore", "inherit", "inherit"], timeout: 300_000 });
  if (!process.env[PG_URL_ENV]) {
    // Run alone (not through npm test): set PostgreSQL up the same way npm test does.
    const line = execFileSync("bash", [path.join(SCRIPTS, "ensure-postgres.sh")], { encoding: "utf8", timeout: 300_000 }).trim().split("\n").pop()!;
    process.env[PG_URL_ENV] = line.slice(line.indexOf("=") + 1);
  }
  await ensureBooksImages({ prefix: BOOKS_REPO, api });
  // No node needed to fail: a shell that says why it cannot start, then exits with 3.
  await ensureImage(BOOKS_REPO, {
    api,
    node: false,
    tag: CRASH_RELEASE,
    files: hostBinary("/bin/sh", "/bin/sh"),
    cmd: ["/bin/sh", "-c", "echo 'starting books-service'; echo 'fatal: cannot read config file /etc/books.conf' >&2; exit 3"],
  });
});

after(async () => {
  for (const ws of workspaces) await ws.destroy();
  await removeImage(`${BOOKS_REPO}:${CRASH_RELEASE}`, api);
});

async function dockerWorkspace(opts: Parameters<typeof createWorkspace>[0] = {}): Promise<Workspace> {
  const ws = await createWorkspace({ replicas: 2, keepPrevious: "0s", ...opts, runtime: { kind: "docker", image: IMAGE, ...opts.runtime } });
  workspaces.push(ws);
  return ws;
}

/** Every container of this workspace's agent, running or not, inspected. */
async function containersOf(ws: Workspace): Promise<ContainerInspect[]> {
  const label = createHash("sha256").update(path.join(ws.dir, ".turquoise")).digest("hex").slice(0, 12);
  const found = await api.listContainers({ all: true, labels: [`${AGENT_LABEL}=${label}`] });
  return Promise.all(found.map((c) => api.inspectContainer(c.Id)));
}

async function containerIds(ws: Workspace): Promise<string[]> {
  return (await containersOf(ws)).map((c) => c.Id).sort();
}

async function history(ws: Workspace): Promise<HistoryEntry[]> {
  return JSON.parse((await ws.cli(["history", "books", "--json"])).stdout) as HistoryEntry[];
}

describe("runtime docker, bridge network", () => {
  let ws: Workspace;
  before(async () => {
    ws = await dockerWorkspace({ deployTimeout: "15s" });
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
  });

  it("deploy v2 and roll back under load: no failed request, history recorded, containers labelled and on loopback only", async () => {
    assert.equal(await releaseServing(ws), "v1");
    const load = new LoadGenerator({ baseUrl: ws.proxyUrl, concurrency: 6, postEvery: 4, maxRequests: 200_000, maxDurationMs: 60_000 }).start();
    await new Promise((r) => setTimeout(r, 300));
    await ws.cli(["deploy", "books", "--release", "v2"]);
    assert.equal(await releaseServing(ws), "v2");
    const onV2 = await containersOf(ws);
    await new Promise((r) => setTimeout(r, 300));
    await ws.cli(["rollback", "books"]);
    await new Promise((r) => setTimeout(r, 300));
    const report = await load.stop();
    assert.equal(report.failed, 0, JSON.stringify(report.failures));
    assert.ok(report.byRelease.v1! > 0 && report.byRelease.v2! > 0, JSON.stringify(report.byRelease));
    assert.equal(await releaseServing(ws), "v1");

    const h = await history(ws);
    assert.deepEqual(h.slice(0, 3).map((e) => [e.kind, e.release, e.previousRelease, e.outcome]), [
      ["rollback", "v1", "v2", "succeeded"],
      ["deploy", "v2", "v1", "succeeded"],
      ["deploy", "v1", null, "succeeded"],
    ]);

    // While v2 was live, only its slot ran: the old slot's containers were stopped and removed.
    assert.equal(onV2.length, 2);
    const s = await status(ws);
    const containers = await containersOf(ws);
    assert.deepEqual(containers.map((c) => c.Id).sort(), s.instances.map((i) => i.ref).sort(), "exactly the live instances run as containers");
    for (const c of containers) {
      const labels = c.Config.Labels ?? {};
      assert.equal(labels[LABELS.managed], "true");
      assert.equal(labels[LABELS.service], "books");
      assert.equal(labels[LABELS.slot], s.color);
      assert.equal(labels[LABELS.release], "v1");
      assert.equal(c.Config.Image, `${BOOKS_REPO}:v1`);
      assert.equal(c.HostConfig.NetworkMode, "bridge");
      const bindings = Object.values(c.NetworkSettings.Ports ?? {}).flatMap((b) => b ?? []);
      assert.ok(bindings.length > 0, "the app's port is published");
      for (const b of bindings) assert.equal(b.HostIp, "127.0.0.1", `published on ${b.HostIp}:${b.HostPort}`);
    }
    for (const c of onV2) assert.equal(c.Config.Labels?.[LABELS.release], "v2");
  });

  it("a missing image is refused at plan time, and nothing starts", async () => {
    const before = await containerIds(ws);
    const r = await ws.cli(["deploy", "books", "--release", "v9"], { allowFail: true });
    assert.equal(r.code, EXIT_CODES.NOT_FOUND);
    assert.match(r.stderr, new RegExp(`image "${BOOKS_REPO}:v9" is not present locally, and no registry is reachable from here`));
    assert.doesNotMatch(r.stdout, /✓ start/);
    assert.deepEqual(await containerIds(ws), before);
    assert.equal(await releaseServing(ws), "v1");
  });

  it("a container that exits at start fails the deploy at healthy with its last output; live untouched, no container left", async () => {
    const before = await containerIds(ws);
    const t0 = Date.now();
    const r = await ws.cli(["deploy", "books", "--release", CRASH_RELEASE, "--json"], { allowFail: true });
    assert.equal(r.code, EXIT_CODES.DEPLOY_FAILED);
    assert.ok(Date.now() - t0 < 12_000, "fails when the container exits, well before deploy_timeout (15s)");
    const out = JSON.parse(r.stdout) as { ok: boolean; error: { message: string; output?: string } };
    assert.equal(out.ok, false);
    assert.match(out.error.message, /failed at healthy: an instance exited before it was healthy; the live release is untouched/);
    assert.match(out.error.output ?? "", /last output:[\s\S]*fatal: cannot read config file \/etc\/books\.conf/);
    assert.equal(await releaseServing(ws), "v1");
    await waitFor("the crashed containers to be removed", async () => JSON.stringify(await containerIds(ws)) === JSON.stringify(before) || undefined, 10_000);
    const s = await status(ws);
    assert.ok(s.instances.every((i) => i.release === "v1"));
    assert.equal(s.lock, null);
  });

  it("turquoise signal reaches the containers", async () => {
    const r = await ws.cli(["signal", "books", "HUP"]);
    assert.match(r.stdout, /SIGHUP sent to 2 instance\(s\) of books/);
    await waitFor("both containers to log the signal", async () => {
      const logs = (await ws.cli(["logs", "books"])).stdout;
      return (logs.match(/books-service v1 got SIGHUP/g) ?? []).length === 2 || undefined;
    }, 5_000);
  });

  it("a restarted agent adopts the running containers and keeps serving", async () => {
    const before = await containerIds(ws);
    const refs = (await status(ws)).instances.map((i) => i.ref).sort();
    assert.deepEqual(refs, before);
    const load = new LoadGenerator({ baseUrl: ws.proxyUrl, concurrency: 4, postEvery: 0, maxRequests: 200_000, maxDurationMs: 60_000 }).start();
    process.kill(readAgentPid(ws), "SIGKILL");
    await new Promise((r) => setTimeout(r, 500));
    await ws.cli(["up", "--detach"]);
    const s = await status(ws);
    await new Promise((r) => setTimeout(r, 500));
    const report = await load.stop();
    assert.equal(report.failed, 0, JSON.stringify(report.failures));
    assert.ok(report.ok > 0);
    assert.deepEqual(s.instances.map((i) => i.ref).sort(), before, "the same containers, adopted");
    assert.deepEqual(await containerIds(ws), before, "none started, none removed");
    assert.equal(s.release, "v1");
    assert.match(fs.readFileSync(path.join(ws.dir, ".turquoise", "agent.log"), "utf8"), /adopted 2 running instance\(s\)/);
    // And the adopted containers are still the agent's to deploy over.
    await ws.cli(["deploy", "books", "--release", "v2"]);
    assert.equal(await releaseServing(ws), "v2");
    assert.equal((await containerIds(ws)).filter((id) => before.includes(id)).length, 0, "the adopted containers were retired");
  });

  it("down removes every container", async () => {
    assert.ok((await containerIds(ws)).length > 0);
    await ws.cli(["down"]);
    assert.deepEqual(await containerIds(ws), []);
  });
});

describe("runtime docker, host network, on PostgreSQL", () => {
  let ws: Workspace;
  let drop: () => Promise<void> = async () => {};
  before(async () => {
    const db = await freshDatabase();
    drop = db.drop;
    // The spec names the variable; the URL with its password lives only in the agent's environment.
    ws = await dockerWorkspace({
      runtime: { kind: "docker", image: IMAGE, network: "host" },
      database: { driver: "postgres", url: "${BOOKS_DATABASE_URL}" },
      env: { BOOKS_DATABASE_URL: db.url },
    });
    await ws.cli(["up", "--detach"]);
  });
  after(async () => {
    await ws?.destroy();
    await drop();
  });

  async function schemaVersion(): Promise<number> {
    return (JSON.parse((await ws.cli(["migrate", "books", "status", "--json"])).stdout) as { current: number }).current;
  }

  it("blue → turquoise → green and back under load: no failed request, every acknowledged write readable", async () => {
    await ws.cli(["deploy", "books", "--release", "v2"]);
    assert.equal(await schemaVersion(), 1);
    for (const c of await containersOf(ws)) {
      assert.equal(c.HostConfig.NetworkMode, "host");
      // The database URL reached the container through its environment, never through the spec.
      assert.ok((c.Config.Env ?? []).some((e) => e.startsWith("DATABASE_URL=postgres")));
    }

    const load = new LoadGenerator({ baseUrl: ws.proxyUrl, concurrency: 6, postEvery: 3, maxRequests: 500_000, maxDurationMs: 120_000 }).start();
    await new Promise((r) => setTimeout(r, 300));
    const forward = JSON.parse((await ws.cli(["deploy", "books", "--release", "v3", "--via", "v2-turquoise", "--json"])).stdout) as { history: HistoryEntry };
    assert.deepEqual(forward.history.steps.map((s) => s.name), ["lock", "plan", "start", "healthy", "smoke", "flip", "verify", "bake", "drain", "retire", "migrate", "recheck", "start", "healthy", "smoke", "flip", "verify", "bake", "drain", "retire", "record"]);
    assert.equal(await schemaVersion(), 3);
    assert.equal(await releaseServing(ws), "v3");
    await new Promise((r) => setTimeout(r, 300));
    await ws.cli(["rollback", "books"]);
    await new Promise((r) => setTimeout(r, 300));
    const report = await load.stop();

    assert.equal(await schemaVersion(), 1);
    assert.equal(await releaseServing(ws), "v2");
    assert.equal(report.failed, 0, JSON.stringify(report.failures));
    assert.ok(report.byRelease["v2-turquoise"]! > 0 && report.byRelease.v3! > 0, JSON.stringify(report.byRelease));
    const r = await get(`${ws.proxyUrl}/api/v1/books?all=1`);
    assert.equal(r.status, 200, r.body);
    const stored = new Set((JSON.parse(r.body) as { books: Array<{ title: string }> }).books.map((b) => b.title));
    assert.ok(report.acknowledgedWrites.length > 20, `only ${report.acknowledgedWrites.length} writes`);
    assert.deepEqual(report.acknowledgedWrites.filter((t) => !stored.has(t)), []);
    const containers = await containersOf(ws);
    assert.equal(containers.length, 2);
    assert.ok(containers.every((c) => c.Config.Labels?.[LABELS.release] === "v2"));
  });
});

describe("runtime docker, daemon unreachable", () => {
  it("up fails with a clear error and starts nothing", async () => {
    const ws = await dockerWorkspace({ env: { DOCKER_HOST: "unix:///nonexistent.sock" } });
    const r = await ws.cli(["up", "--detach"], { allowFail: true });
    assert.equal(r.code, EXIT_CODES.RUNTIME_UNAVAILABLE, "the detached agent's exit code is passed on");
    assert.match(r.stdout + r.stderr, /cannot reach the Docker daemon at \/nonexistent\.sock \(ENOENT\): is dockerd running\?/);
    const stateDir = path.join(ws.dir, ".turquoise");
    for (const f of ["agent.pid", "agent.json", "proxy.json"]) assert.equal(fs.existsSync(path.join(stateDir, f)), false, `${f} was written`);
    assert.deepEqual(await containerIds(ws), []);
  });
});
