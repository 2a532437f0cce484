// Step 4 of the flow: every new instance passes Turquoise's health checks, and the runtime's own
// verdict (a Docker HEALTHCHECK) where it has one, within deploy_timeout. A failure carries the
// failing instances' last output (runStep scrubs the secrets out of it).
import { waitHealthy, whyNotHealthy } from "../health/checks.js";
import type { InstanceInfo } from "../runtime/contract.js";
import type { ServiceSpec, Spec } from "../spec/types.js";
import type { Fleet } from "./fleet.js";
import { StepFailure } from "./step.js";
import { formatDuration, formatMs } from "../util/duration.js";
import { count } from "../util/words.js";

const LOG_TAIL_LINES = 20;

/** what: the instances' kind in the step's detail ("new", "warm", a release's name). */
export async function waitUntilHealthy(spec: Spec, fleet: Fleet, svc: ServiceSpec, instances: InstanceInfo[], what: string): Promise<string> {
  const started = Date.now();
  const byId = new Map(instances.map((i) => [i.id, i]));
  const r = await waitHealthy(instances.map((i) => ({ id: i.id, host: i.host, port: i.port })), svc.health, {
    deadline: started + svc.deployTimeoutMs,
    isAlive: (id) => fleet.isAlive(id),
    // An app that ignores its PORT fails the deploy as soon as that is clear, not at deploy_timeout.
    listeningElsewhere: async (id) => fleet.listeningElsewhere(byId.get(id)!),
  });
  if (r.ok) {
    await runtimeHealthy(fleet, svc, instances, started + svc.deployTimeoutMs);
    fleet.markReady(instances);
    return `${count(instances.length, `${what} instance`)} passing after ${formatMs(Date.now() - started)}`;
  }
  const lines: string[] = [];
  for (const f of r.failing) {
    const inst = byId.get(f.id);
    const log = inst ? (await fleet.logs(inst, LOG_TAIL_LINES).catch(() => "")).trim() : "";
    // How it exited, or where it listens instead of its PORT: what the check alone cannot say.
    const diagnosis = f.listening ?? (inst ? await fleet.diagnose(inst).catch(() => undefined) : undefined);
    lines.push(`${f.id}: ${f.status}: ${f.output}${diagnosis ? ` (${diagnosis})` : ""}${log ? `\n  last output:\n  ${log.split("\n").join("\n  ")}` : ""}`);
  }
  throw new StepFailure("healthy", whyNotHealthy(r, svc.health, svc.deployTimeoutMs), lines.join("\n"));
}

/** A runtime's own verdict (a Docker HEALTHCHECK) counts beside Turquoise's checks: wait while it starts, fail when it says unhealthy. */
async function runtimeHealthy(fleet: Fleet, svc: ServiceSpec, instances: InstanceInfo[], deadline: number): Promise<void> {
  for (;;) {
    const states = await Promise.all(instances.map((i) => fleet.runtime(i).inspect(i)));
    const bad = states.findIndex((s) => s.running && s.health === "unhealthy");
    if (bad >= 0) throw new StepFailure("healthy", `${instances[bad]!.id}: the image's HEALTHCHECK reports unhealthy`);
    if (!states.some((s) => s.running && s.health === "starting")) return;
    if (Date.now() > deadline) throw new StepFailure("healthy", `the image's HEALTHCHECK was still starting at deploy_timeout (${formatDuration(svc.deployTimeoutMs)})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
