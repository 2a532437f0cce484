// The three-node Swarm lab (scripts/swarm-lab.sh) for the swarm runtime's tests and benchmarks: brings
// it up when it is not, and knows its addresses and sockets.
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { DockerApi } from "../../src/runtime/docker-api.js";

export const SWARM_LAB = fileURLToPath(new URL("../../../scripts/swarm-lab.sh", import.meta.url));
export const LAB_NODES = ["node1", "node2", "node3"] as const;
export type LabNode = (typeof LAB_NODES)[number];
/** Where the host reaches the lab: the bridge's address, where an agent or a database listens for containers. */
export const LAB_HOST_ADDR = "198.18.100.1";

export function labSocket(node: LabNode): string {
  return `/run/turquoise-lab/${node}/docker.sock`;
}

export function labAddr(node: LabNode): string {
  return `198.18.100.1${node.slice(-1)}`;
}

/** Node address → socket, as SwarmRuntimeOptions.nodeSockets takes it. */
export function labNodeSockets(): Record<string, string> {
  return Object.fromEntries(LAB_NODES.map((n) => [labAddr(n), labSocket(n)]));
}

/** Starts the lab unless it answers already; prints its set-up time when it starts it. */
export function ensureSwarmLab(): void {
  execFileSync("bash", [SWARM_LAB, "ensure"], { stdio: ["ignore", "inherit", "inherit"], timeout: 300_000 });
}

export function labApi(node: LabNode): DockerApi {
  return new DockerApi({ socketPath: labSocket(node) });
}
