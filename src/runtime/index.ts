// The one place that picks Runtime drivers, for the agent and for `turquoise down` alike, so
// callers depend on the contract and not on a driver.
import crypto from "node:crypto";
import path from "node:path";
import { TurquoiseError } from "../errors.js";
import type { Runtime } from "./contract.js";
import { DockerRuntime } from "./docker.js";
import { ProcessRuntime } from "./process.js";

/** The label that tells this agent's containers from another agent's on the same daemon. */
export const DOCKER_AGENT_LABEL = "turquoise.agent";

/**
 * The process runtime always (it is the default), and each other driver named. The Docker
 * daemon is asked once here, so that an unreachable one is a clear error now, not at the first
 * deploy.
 */
export async function openRuntimes(opts: { stateDir: string; drivers: Iterable<string> }): Promise<Record<string, Runtime>> {
  const runtimes: Record<string, Runtime> = { process: new ProcessRuntime({ logDir: path.join(opts.stateDir, "logs") }) };
  for (const driver of new Set(opts.drivers)) {
    switch (driver) {
      case "process":
        break;
      case "docker": {
        const agentLabel = crypto.createHash("sha256").update(opts.stateDir).digest("hex").slice(0, 12);
        const docker = new DockerRuntime({ labels: { [DOCKER_AGENT_LABEL]: agentLabel } });
        await docker.api.ping();
        runtimes.docker = docker;
        break;
      }
      default:
        // The driver comes from a spec file or a record; the type system cannot vouch for it.
        throw new TurquoiseError("USAGE", `unknown runtime "${String(driver)}": use process or docker`);
    }
  }
  return runtimes;
}

export type { Runtime } from "./contract.js";
