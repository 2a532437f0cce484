// after_flip hooks, in order, once the new release is live and the old slot retired: a signal to
// a service's live instances, or a command run in the spec's directory.
import type { ServiceSpec } from "../spec/types.js";
import { runCommand } from "../util/command.js";
import type { OrchestratorDeps } from "./deps.js";
import { signalService } from "./signal.js";
import { StepFailure } from "./step.js";

export async function runHooks(d: Pick<OrchestratorDeps, "spec" | "records" | "fleet" | "event">, svc: ServiceSpec, release: string): Promise<string> {
  const done: string[] = [];
  for (const hook of svc.hooks.afterFlip) {
    if ("signal" in hook) {
      const n = await signalService(d, hook.signal.service, hook.signal.signal);
      done.push(`${hook.signal.signal} → ${n} instance(s) of ${hook.signal.service}`);
    } else {
      const r = await runCommand(hook.command, { cwd: d.spec.dir, env: { TURQUOISE_SERVICE: svc.name, TURQUOISE_RELEASE: release }, timeoutMs: hook.timeoutMs });
      if (!r.ok) throw new StepFailure("hooks", `after_flip hook ${JSON.stringify(hook.command)} failed`, r.output);
      done.push(`${hook.command.join(" ")}: ${r.output.split("\n")[0]}`);
    }
  }
  return done.join("; ");
}
