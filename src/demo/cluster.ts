// Several agents of one project on one machine, sharing one etcd cluster (each with its own API,
// proxy and state dir, as they would have on their own machines): what the failover tests and
// bench:failover start from.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { readAgentInfo } from "../agent.js";
import { pidAlive, processesMarked } from "../util/proc.js";
import { createWorkspace, type Workspace, type WorkspaceOptions } from "./workspace.js";

/** How long a SIGKILLed agent may take to be gone. */
const KILL_WAIT_MS = 10_000;

export interface AgentCluster {
  agents: Workspace[];
  /** Where every agent's instances find their releases. */
  releasesDir: string;
  /** Stops every agent and instance, and removes the directories. */
  destroy(): Promise<void>;
}

export interface AgentClusterOptions extends Omit<WorkspaceOptions, "stateYaml" | "releasesDir" | "booksFile"> {
  count: number;
  endpoints: string[];
  /** One per project: the agents share it. */
  prefix: string;
  leaderTtl?: string;
  /** Release name → server.mjs source. */
  releases: Record<string, string>;
}

export async function createAgentCluster(opts: AgentClusterOptions): Promise<AgentCluster> {
  const { count, endpoints, prefix, leaderTtl, releases, ...rest } = opts;
  const releasesDir = fs.mkdtempSync(path.join(os.tmpdir(), "turquoise-releases-"));
  for (const [name, source] of Object.entries(releases)) {
    fs.mkdirSync(path.join(releasesDir, name));
    fs.writeFileSync(path.join(releasesDir, name, "server.mjs"), source);
  }
  const booksFile = path.join(releasesDir, "books.jsonl");
  const stateYaml = `state:
  driver: etcd
  etcd:
    endpoints: ${JSON.stringify(endpoints)}
    prefix: ${prefix}
${leaderTtl ? `    leader_ttl: ${leaderTtl}\n` : ""}`;
  const agents: Workspace[] = [];
  for (let i = 0; i < count; i++) agents.push(await createWorkspace({ ...rest, stateYaml, releasesDir, booksFile }));
  return {
    agents,
    releasesDir,
    async destroy() {
      // Every agent at once first: one stopped alone hands its lead to the next, which would restore the instances.
      const killed: number[] = [];
      for (const a of agents) {
        const pid = agentPid(a);
        if (pid) {
          process.kill(pid, "SIGKILL");
          killed.push(pid);
        }
      }
      // `down` asks a live agent to stop everything: it must find them gone, or its call fails and leaves the proxy.
      const deadline = Date.now() + KILL_WAIT_MS;
      while (killed.some(pidAlive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      for (const a of agents) await a.destroy();
      // What the agents adopted from each other is stopped by no `down`: the shared books file marks it.
      for (const p of processesMarked({ BOOKS_FILE: booksFile })) process.kill(p.pid, "SIGKILL");
      fs.rmSync(releasesDir, { recursive: true, force: true });
    },
  };
}

/** The pid of a workspace's running agent, from its agent.json; undefined when none runs. */
export function agentPid(ws: Pick<Workspace, "dir">): number | undefined {
  const info = readAgentInfo(path.join(ws.dir, ".turquoise"));
  return info && pidAlive(info.pid) ? info.pid : undefined;
}

/** What /v1/status says of the agents sharing the store. */
export interface ClusterView {
  self: string;
  isLeader: boolean;
  leader: { id: string; api: string } | null;
  agents: Array<{ id: string; api: string; role: string }>;
  problem: string | null;
}

/** An agent's /v1/status, with the admin token from its state dir; throws when it does not answer 200. */
export async function statusOf<T = { agent: { leader: boolean }; cluster: ClusterView; services: Array<{ color: string | null; release: string | null; slots: Record<string, { state: string; release: string } | null>; instances: Array<{ id: string; release: string; slot: string }> }> }>(ws: Workspace): Promise<T> {
  const token = fs.readFileSync(path.join(ws.dir, ".turquoise", "token"), "utf8").trim();
  const res = await fetch(`http://127.0.0.1:${ws.agentPort}/v1/status`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) });
  const body = await res.text();
  if (res.status !== 200) throw new Error(`status of ${ws.dir}: HTTP ${res.status} ${body.slice(0, 300)}`);
  return JSON.parse(body) as T;
}

/** The agent the cluster names as leader, as one agent sees it; undefined while none leads (or that agent does not answer). */
export async function leaderAmong(agents: Workspace[], askWith: Workspace): Promise<Workspace | undefined> {
  const c = await statusOf(askWith).then((s) => s.cluster, () => undefined);
  return c?.leader ? agents.find((a) => `http://127.0.0.1:${a.agentPort}` === c.leader!.api) : undefined;
}

/** Waits until the agent the cluster names as leader has taken over (recovered what was left) and takes writes. */
export async function takenOver(agents: Workspace[], askWith: Workspace, timeoutMs: number): Promise<Workspace> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const l = await leaderAmong(agents, askWith);
    if (l && (await statusOf(l).then((s) => s.agent.leader, () => false))) return l;
    if (Date.now() > deadline) throw new Error(`no agent took over as leader within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
