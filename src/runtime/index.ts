// The one place that picks Runtime drivers, for the agent and for `turquoise down` alike, so
// callers depend on the contract and not on a driver.
import path from "node:path";
import { TurquoiseError } from "../errors.js";
import type { Runtime } from "./contract.js";
import { DockerRuntime } from "./docker.js";
import { markIdFor } from "./identity.js";
import { ProcessRuntime } from "./process.js";
import { SwarmRuntime } from "./swarm.js";
import type { StateSpec, SwarmSpec } from "../spec/types.js";

/**
 * The process runtime always (it is the default), and each other driver named. The Docker
 * daemon is asked once here, so that an unreachable one is a clear error now, not at the first
 * deploy.
 */
export async function openRuntimes(opts: { stateDir: string; drivers: Iterable<string>; state?: StateSpec; swarm?: SwarmSpec }): Promise<Record<string, Runtime>> {
  // One id per state dir (or per shared etcd store): it tells this project's instances from another's on the same machine or daemon.
  const agentId = markIdFor(opts.stateDir, opts.state);
  const runtimes: Record<string, Runtime> = { process: new ProcessRuntime({ logDir: path.join(opts.stateDir, "logs"), agentId }) };
  for (const driver of new Set(opts.drivers)) {
    switch (driver) {
      case "process":
        break;
      case "docker": {
        const docker = new DockerRuntime({ agentId });
        await docker.api.ping();
        runtimes.docker = docker;
        break;
      }
      case "swarm": {
        if (!opts.swarm) throw new TurquoiseError("USAGE", "runtime swarm needs the spec's swarm block (swarm: { manager: /var/run/docker.sock })");
        const swarm = new SwarmRuntime({ agentId, socketPath: opts.swarm.manager, nodeSockets: opts.swarm.nodes });
        await swarm.ping();
        runtimes.swarm = swarm;
        break;
      }
      default:
        // The driver comes from a spec file or a record; the type system cannot vouch for it.
        throw new TurquoiseError("USAGE", `unknown runtime "${String(driver)}": use process, docker or swarm`);
    }
  }
  return runtimes;
}

export type { Runtime } from "./contract.js";
