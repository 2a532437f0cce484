import { formatMs } from "../util/duration.js";
import { connect } from "./client.js";
import { printJson, type Command } from "./command.js";

interface StatusBody {
  quarantined?: Array<{ key: string; service: string | null; reason: string; at: number }>;
  agent: { pid: number; api: string };
  proxy: { pid: number; address: string };
  services: Array<{
    name: string; route: { host?: string; pathPrefix: string }; color: string | null; release: string | null; previous: { release: string; via: string | null } | null;
    slots: Record<string, { release: string; state: string; warmUntil?: number } | null>;
    instances: Array<{ id: string; slot: string; release: string; address: string; ref: string; startedAt: number; health: { status: string; history: Array<{ output: string }> } }>;
    lock: { owner: string; since: number } | null;
    degraded: { since: number; reason: string } | null;
  }>;
}

export const statusCommand: Command = {
  name: "status",
  summary: "services, live slot, release, instances and their health",
  help: `usage: turquoise status [--json]

examples:
  turquoise status
  turquoise status --json | jq '.services[] | {name, release}'`,
  async run(ctx) {
    const { client } = connect(ctx.specFile);
    const s = await client.get<StatusBody>("/v1/status");
    if (ctx.json) return printJson(ctx, s);
    ctx.out(`agent pid ${s.agent.pid} at ${s.agent.api}; proxy pid ${s.proxy.pid} on ${s.proxy.address}`);
    const q = s.quarantined ?? [];
    if (q.length) {
      ctx.out(`SET ASIDE: ${q.length} invalid record(s); nothing acts on them, and the next successful deploy of their service clears them:`);
      for (const e of q) ctx.out(`  ${e.key}${e.service ? ` (${e.service})` : ""} at ${new Date(e.at).toISOString()}: ${e.reason}`);
    }
    for (const svc of s.services) {
      ctx.out(`\n${svc.name}  ${svc.route.host ?? "*"}${svc.route.pathPrefix}`);
      ctx.out(`  live: ${svc.color ? `${svc.release} on ${svc.color}` : "nothing deployed yet"}${svc.previous ? `   previous: ${svc.previous.release}${svc.previous.via ? ` (via ${svc.previous.via})` : ""}` : ""}`);
      for (const [slot, rec] of Object.entries(svc.slots)) {
        if (!rec) continue;
        const extra = rec.state === "warm" && rec.warmUntil ? ` (until ${new Date(rec.warmUntil).toLocaleTimeString()})` : "";
        ctx.out(`  ${slot.padEnd(5)}  ${rec.state}${extra}  ${rec.release}`);
      }
      for (const i of svc.instances) {
        const last = i.health.history[i.health.history.length - 1]?.output ?? "";
        ctx.out(`    ${i.id.padEnd(28)} ${i.slot.padEnd(5)} ${i.release.padEnd(10)} ${i.address.padEnd(21)} ${i.health.status.padEnd(8)} up ${formatMs(Date.now() - i.startedAt)}  ${last}`);
      }
      if (svc.degraded) ctx.out(`  DEGRADED since ${new Date(svc.degraded.since).toISOString()}: ${svc.degraded.reason}; the next deploy resets it`);
      if (svc.lock) ctx.out(`  deploy lock held by ${svc.lock.owner} since ${new Date(svc.lock.since).toISOString()}`);
    }
  },
};
