// Losing the control plane's leader, and etcd's quorum, under keep-alive load: three agents (each
// with its own API and proxy) share a three-member etcd cluster on loopback, and one follower's
// proxy takes the load. (a) kill -9 the leader at rest: time to a new leader, against the lease's
// TTL; (b) kill -9 it mid-deploy: the next leader undoes the flow; (c) SIGSTOP it mid-deploy past
// its lease, let another deploy, SIGCONT: it writes nothing; (d) one etcd member down, then two.
// Usage: node dist/bench/failover.js [--json] [--rounds 5]

import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { Etcd3 } from "etcd3";
import { agentPid, createAgentCluster, leaderAmong, statusOf, takenOver, type AgentCluster } from "../src/demo/cluster.js";
import { LoadProcess } from "../src/demo/load-process.js";
import type { Workspace } from "../src/demo/workspace.js";
import { parseDuration } from "../src/util/duration.js";
import { processesMarked } from "../src/util/proc.js";
import { DEFAULT_LEADER_TTL } from "../src/spec/schema.js";
import { RELEASE_KINDS } from "../test/e2e/helpers.js";
import { startEtcdCluster, type TestEtcd } from "../test/support/etcd.js";
import { formatMachine, machineInfo } from "./lib/machine.js";
import { formatTable } from "./lib/report.js";
import { median, ratio } from "./lib/stats.js";

const PREFIX = "/turquoise/bench-failover/";
const REPLICAS = 2;
/** Every wait is bounded: a failover that never happens ends the bench with that said. */
const WAIT_MS = 60_000;
const POLL_MS = 50;
const LOAD = { path: "/api/v1/books", concurrency: 4, maxRequests: 2_000_000, maxDurationMs: 5 * 60_000 };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = WAIT_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`gave up after ${timeoutMs} ms waiting for ${what}`);
    await sleep(POLL_MS);
  }
}

function logOf(ws: Workspace): string {
  return fs.readFileSync(path.join(ws.dir, ".turquoise", "agent.log"), "utf8");
}

interface Bench {
  etcd: TestEtcd;
  cluster: AgentCluster;
  agents: Workspace[];
  booksFile: string;
  say: (line: string) => void;
}

/** The leader, once it has taken over and takes writes. */
async function leader(b: Bench): Promise<Workspace> {
  return until("a leader", async () => {
    for (const a of b.agents) {
      const l = await leaderAmong(b.agents, a);
      if (l && (await statusOf(l)).agent.leader) return l;
    }
    return undefined;
  });
}

/** A new leader other than old, as `watcher` sees it; and how long since `since`. */
async function newLeader(b: Bench, old: Workspace, watcher: Workspace, since: number): Promise<{ next: Workspace; ms: number }> {
  const next = await until("a new leader", async () => {
    const l = await leaderAmong(b.agents, watcher);
    return l && l !== old ? l : undefined;
  });
  return { next, ms: Date.now() - since };
}

/** The one agent besides those named: its proxy takes the load. */
function other(b: Bench, ...not: Workspace[]): Workspace {
  return b.agents.find((a) => !not.includes(a))!;
}

async function restart(ws: Workspace): Promise<void> {
  await ws.cli(["up", "--detach"]);
}

async function deployStarted(ws: Workspace): Promise<void> {
  await until("the deploy to start its new slot", async () => {
    const s = await statusOf(ws);
    return Object.values(s.services[0]!.slots).some((r) => r?.state === "preview");
  });
}

/** One live slot, the instances running are exactly the live slot's replicas, and what the history says of the flow. */
async function settled(b: Bench, ws: Workspace): Promise<{ liveSlots: number; running: number; orphans: number; live: string | null }> {
  const s = await statusOf(ws);
  const svc = s.services[0]!;
  const liveSlots = Object.values(svc.slots).filter((r) => r?.state === "live").length;
  const running = processesMarked({ BOOKS_FILE: b.booksFile }).filter((p) => p.env.TURQUOISE_SERVICE === "books" && p.pgrp === p.pid);
  const orphans = running.filter((p) => p.env.TURQUOISE_SLOT !== svc.color || p.env.TURQUOISE_RELEASE !== svc.release).length;
  return { liveSlots, running: running.length, orphans, live: svc.release };
}

async function historyTop(ws: Workspace): Promise<{ release: string; outcome: string; error: string | null }> {
  const token = fs.readFileSync(path.join(ws.dir, ".turquoise", "token"), "utf8").trim();
  const res = await fetch(`http://127.0.0.1:${ws.agentPort}/v1/services/books/history?limit=1`, { headers: { authorization: `Bearer ${token}` } });
  return ((await res.json()) as { history: Array<{ release: string; outcome: string; error: string | null }> }).history[0]!;
}

async function scenarioA(b: Bench, rounds: number, ttlMs: number): Promise<{ times: number[]; failed: number; requests: number }> {
  const times: number[] = [];
  let failed = 0;
  let requests = 0;
  for (let i = 0; i < rounds; i++) {
    const old = await leader(b);
    const watcher = other(b, old);
    const load = await LoadProcess.start({ baseUrl: watcher.proxyUrl, ...LOAD });
    await sleep(1_000);
    const at = Date.now();
    process.kill(agentPid(old)!, "SIGKILL");
    const { ms } = await newLeader(b, old, watcher, at);
    await sleep(1_000);
    const r = await load.stop();
    times.push(ms);
    failed += r.failed;
    requests += r.total;
    b.say(`  (a) round ${i + 1}: new leader after ${(ms / 1000).toFixed(2)} s (${ratio(ms, ttlMs)}× the TTL); ${r.total} requests, ${r.failed} failed`);
    await restart(old);
  }
  return { times, failed, requests };
}

async function scenarioB(b: Bench): Promise<Record<string, unknown>> {
  const old = await leader(b);
  const watcher = other(b, old);
  const load = await LoadProcess.start({ baseUrl: watcher.proxyUrl, ...LOAD });
  const deploying = old.cli(["deploy", "books", "--release", "v3"], { allowFail: true });
  await deployStarted(old);
  const at = Date.now();
  process.kill(agentPid(old)!, "SIGKILL");
  await deploying;
  const { next, ms } = await newLeader(b, old, watcher, at);
  const top = await until("the flow to be finished or undone", async () => {
    const h = await historyTop(next);
    return h.release === "v3" && h.outcome !== "running" ? h : undefined;
  });
  const recoveredMs = Date.now() - at;
  await sleep(1_000);
  const r = await load.stop();
  const state = await settled(b, next);
  b.say(`  (b) new leader after ${(ms / 1000).toFixed(2)} s; the deploy of v3 ended ${top.outcome} ${(recoveredMs / 1000).toFixed(2)} s after the kill ("${top.error}")`);
  b.say(`      live ${state.live}, ${state.liveSlots} live slot, ${state.running} instances running, ${state.orphans} orphans; ${r.total} requests, ${r.failed} failed`);
  await restart(old);
  return { newLeaderMs: ms, recoveredMs, outcome: top.outcome, ...state, requests: r.total, failed: r.failed };
}

async function scenarioC(b: Bench, raw: Etcd3): Promise<Record<string, unknown>> {
  const paused = await leader(b);
  const watcher = other(b, paused);
  const load = await LoadProcess.start({ baseUrl: watcher.proxyUrl, ...LOAD });
  const deploying = paused.cli(["deploy", "books", "--release", "v3"], { allowFail: true });
  await deployStarted(paused);
  const pid = agentPid(paused)!;
  const logBefore = logOf(paused).length;
  const at = Date.now();
  process.kill(pid, "SIGSTOP");
  let next: Workspace;
  let ms: number;
  try {
    ({ next, ms } = await newLeader(b, paused, watcher, at));
    await until("the paused leader's flow to be undone", async () => {
      const h = await historyTop(next);
      return h.release === "v3" && h.outcome !== "running";
    });
    await (await takenOver(b.agents, watcher, WAIT_MS)).cli(["deploy", "books", "--release", "v2"]);
  } finally {
    process.kill(pid, "SIGCONT");
  }
  const snapshot = async () => {
    const kv = (await raw.getAll().prefix(`${PREFIX}kv/_turquoise/`).strings()) as Record<string, string>;
    const decided = Object.entries(kv).filter(([k]) => /_turquoise\/(services|journal|instances)\//.test(k));
    return JSON.stringify([decided, await raw.getAll().prefix(`${PREFIX}history/`).strings()]);
  };
  const before = await snapshot();
  const out = await deploying;
  await until("the resumed agent to step down", async () => /leader\.stepped-down/.test(logOf(paused).slice(logBefore)));
  await sleep(2_000);
  const unchanged = before === (await snapshot());
  const r = await load.stop();
  const refused = logOf(paused).slice(logBefore).split("\n").filter((l) => l.includes('"write.refused"')).map((l) => (JSON.parse(l) as { message: string }).message);
  b.say(`  (c) new leader after ${(ms / 1000).toFixed(2)} s; it deployed v2; the resumed agent's deploy exited ${out.code}; records unchanged since: ${unchanged}; ${r.total} requests, ${r.failed} failed`);
  b.say(`      its refused writes (${refused.length}), from its log:`);
  for (const line of refused.slice(0, 12)) b.say(`        ${line}`);
  return { newLeaderMs: ms, resumedExit: out.code, unchanged, refused, requests: r.total, failed: r.failed };
}

async function scenarioD(b: Bench): Promise<Record<string, unknown>> {
  const watcher = b.agents[0]!;
  const load = await LoadProcess.start({ baseUrl: watcher.proxyUrl, ...LOAD });
  const before = await leader(b);
  await b.etcd.stop(2);
  const t1 = Date.now();
  const one = await before.cli(["deploy", "books", "--release", "v1"], { allowFail: true });
  const oneMs = Date.now() - t1;
  const sameLeader = (await leader(b)) === before;
  await b.etcd.stop(1);
  const t2 = Date.now();
  const two = await before.cli(["deploy", "books", "--release", "v2"], { allowFail: true });
  const refusedMs = Date.now() - t2;
  const message = two.stderr.trim().split("\n").pop() ?? "";
  await sleep(3_000);
  const served = await fetch(`${watcher.proxyUrl}/api/v1/books`).then((r) => r.headers.get("x-release"), () => null);
  const back = Date.now();
  await b.etcd.start(1);
  await b.etcd.start(2);
  const l = await leader(b);
  const againMs = Date.now() - back;
  const three = await l.cli(["deploy", "books", "--release", "v2"], { allowFail: true });
  const r = await load.stop();
  b.say(`  (d) one member down: deploy exited ${one.code} in ${(oneMs / 1000).toFixed(2)} s, same leader: ${sameLeader}`);
  b.say(`      two down: deploy exited ${two.code} after ${(refusedMs / 1000).toFixed(2)} s: ${message}`);
  b.say(`      proxies kept serving ${served}; members back: a leader ${(againMs / 1000).toFixed(2)} s later, its deploy exited ${three.code}; ${r.total} requests, ${r.failed} failed`);
  return { oneDownExit: one.code, sameLeader, twoDownExit: two.code, refusedMs, message, served, leaderAgainMs: againMs, resumedExit: three.code, requests: r.total, failed: r.failed };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { json: { type: "boolean", default: false }, rounds: { type: "string", default: "5" } } });
  const json = values.json!;
  const rounds = Number(values.rounds);
  const say = (line: string): void => void (json ? process.stderr : process.stdout).write(line + "\n");
  const ttlMs = parseDuration(DEFAULT_LEADER_TTL);
  say(formatMachine(machineInfo()));
  say(`three agents and a three-member etcd on loopback, leader_ttl ${DEFAULT_LEADER_TTL} (the default), ${REPLICAS} replicas; load: ${LOAD.concurrency} keep-alive GET loops on a follower's proxy\n`);

  const etcd = await startEtcdCluster();
  const raw = new Etcd3({ hosts: etcd.endpoints });
  const cluster = await createAgentCluster({
    count: 3, endpoints: etcd.endpoints, prefix: PREFIX, replicas: REPLICAS,
    releases: { v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.good("v2"), v3: RELEASE_KINDS.slowStart("v3", 3_000) },
  });
  const b: Bench = { etcd, cluster, agents: cluster.agents, booksFile: path.join(cluster.releasesDir, "books.jsonl"), say };
  try {
    for (const a of b.agents) await a.cli(["up", "--detach"]);
    await (await leader(b)).cli(["deploy", "books", "--release", "v1"]);
    const a = await scenarioA(b, rounds, ttlMs);
    const bb = await scenarioB(b);
    const c = await scenarioC(b, raw);
    const d = await scenarioD(b);
    const med = median(a.times);
    say("");
    say(formatTable(["scenario", "figure", "target"], [
      ["(a) kill -9 leader at rest", `new leader in ${(med / 1000).toFixed(2)} s median of ${rounds} (${ratio(med, ttlMs)}× TTL), max ${(Math.max(...a.times) / 1000).toFixed(2)} s; ${a.failed} of ${a.requests} failed`, "≤ 3 s, < 5 s; 0 failed"],
      ["(b) kill -9 mid-deploy", `${bb.outcome}, ${bb.liveSlots} live slot, ${bb.orphans} orphans; ${bb.failed} failed`, "done or undone, 1 slot, 0 orphans, 0 failed"],
      ["(c) SIGSTOP past lease", `records unchanged: ${c.unchanged}; ${(c.refused as string[]).length} writes refused and logged; ${c.failed} failed`, "writes nothing"],
      ["(d) 1 then 2 etcd members down", `1 down: exit ${d.oneDownExit}; 2 down: exit ${d.twoDownExit}, served ${d.served}; back: exit ${d.resumedExit}; ${d.failed} failed`, "0, refused, served, 0"],
    ]));
    if (json) process.stdout.write(JSON.stringify({ ttlMs, a: { ...a, medianMs: med }, b: bb, c, d }, null, 2) + "\n");
  } finally {
    await cluster.destroy();
    raw.close();
    await etcd.destroy();
  }
}

await main();
