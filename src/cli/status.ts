import { TurquoiseError } from "../errors.js";
import { formatMs } from "../util/duration.js";
import { formatTime } from "../util/time.js";
import { connect } from "./client.js";
import { printJson, type Command } from "./command.js";

interface StatusBody {
  quarantined?: Array<{ key: string; service: string | null; reason: string; at: number }>;
  agent: { pid: number; api: string; leader?: boolean };
  cluster?: {
    self: string;
    leader: { id: string; api: string; proxy: string; since: number } | null;
    agents: Array<{ id: string; api: string; proxy: string; seenAt: number; role: string }>;
    problem: string | null;
  };
  proxy: { pid: number; address: string };
  services: Array<{
    name: string; route: { host?: string; pathPrefix: string }; color: string | null; release: string | null; previous: { release: string; via: string | null } | null;
    slots: Record<string, { release: string; state: string; warmUntil?: number } | null>;
    instances: Array<{ id: string; slot: string; release: string; address: string; ref: string; startedAt: number; health: { status: string; history: Array<{ output: string }> } }>;
    lock: { owner: string; since: number } | null;
    degraded: { since: number; reason: string } | null;
    preview?: { slot: string; release: string; held: boolean; url: string | null; heldSince?: number; heldBy?: string } | null;
    canary?: { slot: string; release: string | null; percent: number } | null;
  }>;
}

export const statusCommand: Command = {
  name: "status",
  summary: "services, live slot, release, instances and their health",
  help: `usage: turquoise status [<service>...] [--json]

Every service, or only those named (an unknown name is an error that lists the known ones).
When turquoise.yml is invalid, status still finds the agent through the spec it started with.
With state.driver: etcd, several agents may share the state: status names the leader (the one
agent that deploys, heals and runs watches) and every other agent, with its API and proxy; any
agent answers it. --json has them under .cluster.

examples:
  turquoise status
  turquoise status books
  turquoise status --json | jq '.services[] | {name, preview, canary}'
  turquoise status --json | jq '.services[] | {name, release}'
  turquoise status --json | jq '.cluster.leader.api'`,
  async run(ctx) {
    const { spec, client } = connect(ctx.specFile, { agentCopy: true, warn: ctx.err });
    const s = await client.get<StatusBody>("/v1/status");
    const wanted = ctx.positionals;
    const unknown = wanted.filter((name) => !s.services.some((svc) => svc.name === name));
    if (unknown.length) {
      const known = s.services.map((svc) => svc.name).join(", ") || "none";
      throw new TurquoiseError("NOT_FOUND", `no service named ${unknown.map((n) => JSON.stringify(n)).join(", ")} in ${spec.file}; known: ${known}`);
    }
    if (wanted.length) {
      s.services = s.services.filter((svc) => wanted.includes(svc.name));
      // The records set aside that belong to other services are theirs to show.
      if (s.quarantined) s.quarantined = s.quarantined.filter((q) => q.service === null || wanted.includes(q.service));
    }
    if (ctx.json) return printJson(ctx, s);
    ctx.out(`agent pid ${s.agent.pid} at ${s.agent.api}; proxy pid ${s.proxy.pid} on ${s.proxy.address}`);
    if (s.cluster) printCluster(ctx.out, s.cluster);
    const q = s.quarantined ?? [];
    if (q.length) {
      ctx.out(`SET ASIDE: ${q.length} invalid record(s); nothing acts on them, and the next successful deploy of their service clears them:`);
      for (const e of q) ctx.out(`  ${e.key}${e.service ? ` (${e.service})` : ""} at ${formatTime(e.at)}: ${e.reason}`);
    }
    for (const svc of s.services) {
      ctx.out(`\n${svc.name}  ${svc.route.host ?? "*"}${svc.route.pathPrefix}`);
      ctx.out(`  live: ${svc.color ? `${svc.release} on ${svc.color}` : "nothing deployed yet"}${svc.previous ? `   previous: ${svc.previous.release}${svc.previous.via ? ` (via ${svc.previous.via})` : ""}` : ""}`);
      for (const [slot, rec] of Object.entries(svc.slots)) {
        if (!rec) continue;
        const extra = rec.state === "warm" && rec.warmUntil ? ` (until ${formatTime(rec.warmUntil)})` : "";
        ctx.out(`  ${slot.padEnd(5)}  ${rec.state}${extra}  ${rec.release}`);
      }
      for (const i of svc.instances) {
        const last = i.health.history[i.health.history.length - 1]?.output ?? "";
        ctx.out(`    ${i.id.padEnd(28)} ${i.slot.padEnd(5)} ${i.release.padEnd(10)} ${i.address.padEnd(21)} ${i.health.status.padEnd(8)} up ${formatMs(Date.now() - i.startedAt)}  ${last}`);
      }
      if (svc.preview) {
        const where = svc.preview.url ? ` on ${svc.preview.url}` : "";
        if (svc.preview.held) ctx.out(`  HELD: ${svc.preview.release} in ${svc.preview.slot}${where} since ${formatTime(svc.preview.heldSince ?? 0)} (by ${svc.preview.heldBy ?? "?"}); turquoise promote ${svc.name} or turquoise abort ${svc.name}`);
        else if (where) ctx.out(`  preview: ${svc.preview.release} in ${svc.preview.slot}${where}`);
      }
      if (svc.canary) ctx.out(`  CANARY: ${svc.canary.release ?? "?"} in ${svc.canary.slot} takes ${svc.canary.percent} % of users`);
      if (svc.degraded) ctx.out(`  DEGRADED since ${formatTime(svc.degraded.since)}: ${svc.degraded.reason}; the next deploy resets it`);
      if (svc.lock) ctx.out(`  deploy lock held by ${svc.lock.owner} since ${formatTime(svc.lock.since)}`);
    }
  },
};

/** The leader and the other agents sharing the store. */
function printCluster(out: (line: string) => void, c: NonNullable<StatusBody["cluster"]>): void {
  const mark = (id: string) => (id === c.self ? " (this agent)" : "");
  out(c.leader
    ? `leader: agent ${c.leader.id}${mark(c.leader.id)} at ${c.leader.api}, proxy ${c.leader.proxy}, since ${formatTime(c.leader.since)}`
    : `leader: none${c.problem ? `: ${c.problem}` : " (an election is under way)"}; nothing can be deployed until one is elected, and every proxy serves its last table`);
  for (const a of c.agents) {
    if (a.role === "leader") continue;
    out(`  ${a.role.padEnd(8)} agent ${a.id}${mark(a.id)} at ${a.api}, proxy ${a.proxy}, seen ${formatMs(Math.max(0, Date.now() - a.seenAt))} ago`);
  }
}
