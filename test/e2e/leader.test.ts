// Several agents on one etcd, end to end: three real agent processes (each with its own API, proxy
// and state dir) share a three-member etcd cluster on loopback. One leads; followers refuse writes
// naming it; every proxy follows the leader's table; a killed leader is replaced, a paused one
// writes nothing when it comes back, and losing etcd's quorum changes nothing until it returns.

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Etcd3 } from "etcd3";
import { agentPid, createAgentCluster, leaderAmong, statusOf, takenOver, type AgentCluster, type ClusterView } from "../../src/demo/cluster.js";
import { LoadGenerator } from "../../src/demo/load.js";
import type { Workspace } from "../../src/demo/workspace.js";
import { EXIT_CODES } from "../../src/errors.js";
import { connectProxy } from "../../src/proxy/builtin.js";
import { startEtcdCluster, type TestEtcd } from "../support/etcd.js";
import { RELEASE_KINDS, api, get, waitFor } from "./helpers.js";

const PREFIX = "/turquoise/leader-test/";
/** Short, so the tests wait little; the wrong behaviour (no new leader ever) is told apart by far more. */
const LEADER_TTL_MS = 2_000;
const NEW_LEADER_BOUND_MS = 20_000;

async function clusterOf(ws: Workspace): Promise<ClusterView> {
  return (await statusOf(ws)).cluster;
}

function apiUrl(ws: Workspace): string {
  return `http://127.0.0.1:${ws.agentPort}`;
}

async function releaseOn(ws: Workspace): Promise<string> {
  const r = await get(`${ws.proxyUrl}/api/v1/books`);
  return r.headers["x-release"] as string;
}

/**
 * Asserts that the agent's proxy answers with the release, in one request; when it does not, the
 * message carries what explains it: the answer, what each proxy took out of rotation, and each
 * agent's last log lines (a failure under load once left only "undefined !== 'v1'").
 */
async function assertServes(agents: Workspace[], a: Workspace, release: string): Promise<void> {
  const r = await get(`${a.proxyUrl}/api/v1/books`);
  if (r.headers["x-release"] === release) return;
  const lines = [`agent ${agents.indexOf(a)}'s proxy answered HTTP ${r.status} ${r.body.slice(0, 300)} (x-release ${String(r.headers["x-release"])}), not ${release}`];
  for (const [i, b] of agents.entries()) {
    const proxy = await connectProxy(path.join(b.dir, ".turquoise")).catch(() => undefined);
    lines.push(`proxy ${i}: ${JSON.stringify(await proxy?.proxy.stats().catch((e: unknown) => String(e)))}`);
    lines.push(`agent ${i}:\n${logText(b).split("\n").slice(-15).join("\n")}`);
  }
  assert.fail(lines.join("\n"));
}

/**
 * Deploys through whichever agent leads, once one has taken over. On a loaded machine a 2 s lease
 * can still pass to another agent between finding the leader and its deploy (NOT_LEADER), or during
 * it (the next leader breaks the old term's lock: LOCK_LOST): the deploy then goes to the leader of
 * the moment, at most three times. Any other failure fails the test.
 */
async function deployThroughLeader(agents: Workspace[], askWith: Workspace, release: string): Promise<Workspace> {
  const moved: string[] = [];
  for (let attempt = 0; attempt < 3; attempt++) {
    const leader = await takenOver(agents, askWith, 60_000);
    const r = await leader.cli(["deploy", "books", "--release", release], { allowFail: true });
    if (r.code === 0) return leader;
    if (r.code !== EXIT_CODES.NOT_LEADER && r.code !== EXIT_CODES.LOCK_LOST) throw new Error(`the deploy of ${release} through the leader exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
    moved.push(r.stderr.trim());
  }
  throw new Error(`the lead moved during each of three deploys of ${release}:\n${moved.join("\n")}`);
}

function logText(ws: Workspace): string {
  return fs.readFileSync(path.join(ws.dir, ".turquoise", "agent.log"), "utf8");
}

describe("several agents on one etcd", () => {
  let etcd: TestEtcd;
  let cluster: AgentCluster;
  let agents: Workspace[];
  let raw: Etcd3;

  before(async () => {
    etcd = await startEtcdCluster();
    raw = new Etcd3({ hosts: etcd.endpoints });
    cluster = await createAgentCluster({
      count: 3, endpoints: etcd.endpoints, prefix: PREFIX, leaderTtl: `${LEADER_TTL_MS}ms`, replicas: 2,
      releases: { v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.good("v2"), v3: RELEASE_KINDS.slowStart("v3", 4_000) },
    });
    agents = cluster.agents;
    for (const a of agents) {
      await a.cli(["up", "--detach"]).catch((e) => {
        throw new Error(`${e}\n${logText(a)}`);
      });
    }
  });

  after(async () => {
    await cluster?.destroy();
    raw?.close();
    await etcd?.destroy();
  });

  it("elects one leader; any agent's status names it and the others; a follower refuses writes naming the leader's API", { timeout: 60_000 }, async () => {
    const [first, second, third] = agents as [Workspace, Workspace, Workspace];
    const seen = await clusterOf(third);
    assert.equal(seen.leader?.api, apiUrl(first), "the first agent up, alone on the store, leads");
    assert.equal(seen.isLeader, false);
    assert.deepEqual(seen.agents.map((a) => a.role).sort(), ["follower", "follower", "leader"]);
    const human = await third.cli(["status"]);
    assert.match(human.stdout, new RegExp(`leader: agent \\S+ at ${apiUrl(first)}`));
    assert.match(human.stdout, /follower agent \S+ \(this agent\)/);

    const refused = await second.cli(["deploy", "books", "--release", "v1"], { allowFail: true });
    assert.equal(refused.code, EXIT_CODES.NOT_LEADER, refused.stderr);
    assert.match(refused.stderr, new RegExp(`send the POST /v1/services/books/deploy to the leader, agent \\S+ at ${apiUrl(first)}`));
    const kv = await api(second, "/v1/kv/feature", { method: "PUT", body: "on" });
    assert.equal(kv.status, 421);
    assert.equal((JSON.parse(kv.body) as { error: { code: string; leader: { api: string } } }).error.leader.api, apiUrl(first));
    assert.equal((await api(first, "/v1/kv/feature")).status, 404, "the refused write changed nothing");

    await first.cli(["deploy", "books", "--release", "v1"]);
    // Every proxy follows the table the leader published, not only the leader's own.
    for (const a of agents) await waitFor(`v1 on ${a.proxyUrl}`, async () => (await releaseOn(a).catch(() => "")) === "v1", 30_000);
  });

  it("kill -9 of the leader: another leads within its lease, a follower's proxy never fails a request, and the new leader deploys", { timeout: 90_000 }, async () => {
    const old = (await leaderAmong(agents, agents[2]!))!;
    const watcher = agents.find((a) => a !== old)!;
    const load = new LoadGenerator({ baseUrl: watcher.proxyUrl, path: "/api/v1/books", concurrency: 4, maxRequests: 200_000, maxDurationMs: 60_000 }).start();
    const killedAt = Date.now();
    process.kill(agentPid(old)!, "SIGKILL");
    await waitFor("a new leader", () => leaderAmong(agents, watcher).then((l) => (l && l !== old ? l : undefined)), NEW_LEADER_BOUND_MS);
    const tookMs = Date.now() - killedAt;
    const leading = await takenOver(agents, watcher, 30_000);
    // Adopted: the new leader knows the instances the dead one started.
    const s = JSON.parse((await api(leading, "/v1/status")).body) as { services: Array<{ instances: unknown[] }> };
    assert.equal(s.services[0]!.instances.length, 2);
    await deployThroughLeader(agents, watcher, "v2");
    for (const a of agents.filter((x) => x !== old)) await waitFor(`v2 on ${a.proxyUrl}`, async () => (await releaseOn(a).catch(() => "")) === "v2", 30_000);
    const report = await load.stop();
    assert.ok(report.ok > 100, `load ran: ${JSON.stringify(report)}`);
    assert.equal(report.failed, 0, JSON.stringify(report.failures));
    assert.ok(tookMs < NEW_LEADER_BOUND_MS, `new leader after ${tookMs}ms`);
    // Back as a follower, as a process supervisor would restart it.
    await old.cli(["up", "--detach"]);
    assert.equal((await clusterOf(old)).isLeader, false);
  });

  it("a leader paused past its lease mid-deploy: the next leader undoes the flow through its journal and deploys; resumed, the old one writes nothing and logs each refusal", { timeout: 120_000 }, async () => {
    const paused = (await leaderAmong(agents, agents[0]!))!;
    const other = agents.find((a) => a !== paused)!;
    const deploying = paused.cli(["deploy", "books", "--release", "v3"], { allowFail: true });
    await waitFor("the slow deploy to start its instances", async () => {
      const s = JSON.parse((await api(paused, "/v1/status")).body) as { services: Array<{ slots: Record<string, { state: string } | null> }> };
      return Object.values(s.services[0]!.slots).some((r) => r?.state === "preview");
    }, 20_000);
    const pid = agentPid(paused)!;
    process.kill(pid, "SIGSTOP");
    try {
      const next = await waitFor("a new leader", () => leaderAmong(agents, other).then((l) => (l && l !== paused ? l : undefined)), NEW_LEADER_BOUND_MS);
      await waitFor("the half-done deploy to be undone", async () => {
        const [entry] = (JSON.parse((await api(next, "/v1/services/books/history?limit=1")).body) as { history: Array<{ release: string; outcome: string }> }).history;
        return entry?.release === "v3" && entry.outcome === "aborted";
      }, 30_000);
      await deployThroughLeader(agents, other, "v1");
    } finally {
      process.kill(pid, "SIGCONT");
    }
    const records = async () => (await raw.getAll().prefix(`${PREFIX}kv/_turquoise/`).strings()) as Record<string, string>;
    const decided = (all: Record<string, string>) => Object.fromEntries(Object.entries(all).filter(([k]) => /_turquoise\/(services|journal|instances)\//.test(k)));
    const historyBefore = await raw.getAll().prefix(`${PREFIX}history/`).strings();
    const before = decided(await records());
    const out = await deploying;
    assert.notEqual(out.code, 0, "the paused leader's deploy cannot succeed");
    await waitFor("the resumed agent to step down", () => /leader\.stepped-down/.test(logText(paused)), 20_000).catch((e) => {
      throw new Error(`${e}\n${logText(paused).split("\n").slice(-30).join("\n")}`);
    });
    assert.match(logText(paused), /write\.refused/, "each write it tried is refused and logged");
    assert.deepEqual(decided(await records()), before, "slots, colors, journals and instances are as the new leader left them");
    assert.deepEqual(await raw.getAll().prefix(`${PREFIX}history/`).strings(), historyBefore, "history too");
    for (const a of agents) await waitFor(`v1 on ${a.proxyUrl}`, async () => (await releaseOn(a).catch(() => "")) === "v1", 30_000);
    assert.equal((await clusterOf(paused)).isLeader, false);
  });

  it("etcd without quorum: no deploy is possible and the agents say why, every proxy serves its last table, and all resumes when etcd returns", { timeout: 120_000 }, async () => {
    const watcher = agents[0]!;
    const load = new LoadGenerator({ baseUrl: watcher.proxyUrl, path: "/api/v1/books", concurrency: 4, maxRequests: 200_000, maxDurationMs: 90_000 }).start();
    await etcd.stop(1);
    await etcd.stop(2);
    try {
      const leader = agents[1]!;
      const r = await leader.cli(["deploy", "books", "--release", "v2"], { allowFail: true });
      assert.ok(r.code === EXIT_CODES.STATE_UNAVAILABLE || r.code === EXIT_CODES.NOT_LEADER, `${r.code}: ${r.stderr}\n${logText(leader).split("\n").slice(-25).join("\n")}`);
      assert.match(r.stderr, /etcd/);
      for (const a of agents) await assertServes(agents, a, "v1");
    } finally {
      await etcd.start(1);
      await etcd.start(2);
    }
    await deployThroughLeader(agents, watcher, "v2");
    for (const a of agents) await waitFor(`v2 on ${a.proxyUrl}`, async () => (await releaseOn(a).catch(() => "")) === "v2", 30_000);
    const report = await load.stop();
    assert.equal(report.failed, 0, JSON.stringify(report.failures));
  });
});
