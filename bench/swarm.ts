// npm run bench:swarm — node loss on the three-node Swarm lab (scripts/swarm-lab.sh): books-service
// with 2 replicas on the two workers under keep-alive GET load through Turquoise's proxy; one worker
// crashes (its dockerd, containerd and every container killed at once). Printed beside each other:
// the time until the proxy stops sending to that node's task, the failed GETs, the time until Swarm
// marks the node down, and the time until Swarm's replacement task (the same instance, restarted in
// its slot on a node that is up) passes its checks and serves. The lab is rebuilt afterwards
// (swarm-lab.sh up), since a crashed node does not rejoin by itself.
import { execFileSync } from "node:child_process";
import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { ensureBooksImages } from "../src/demo/images.js";
import { LoadProcess } from "../src/demo/load-process.js";
import { createWorkspace } from "../src/demo/workspace.js";
import { DockerApi } from "../src/runtime/docker-api.js";
import { copyImageToNodes } from "../src/runtime/swarm-images.js";
import { booksLive } from "./lib/books-live.js";
import { formatMachine, machineInfo } from "./lib/machine.js";
import { sleep, timeUntil as waitUntil } from "./lib/wait.js";
import { formatNumber, formatTable } from "./lib/report.js";

const { values: args } = parseArgs({ options: { json: { type: "boolean" } } });
const LAB = fileURLToPath(new URL("../../scripts/swarm-lab.sh", import.meta.url));
const BOOKS_REPO = "turquoise-bench-swarm-books";
const NODES = { node1: "198.18.100.11", node2: "198.18.100.12", node3: "198.18.100.13" } as const;
const sock = (node: string) => `/run/turquoise-lab/${node}/docker.sock`;
/** Swarm's own defaults, as the issue quotes them: a node is down ~15 s after its last heartbeat. */
const SWARM_NODE_DOWN_MS = 15_000;
const MAX_WAIT_MS = 120_000;
const POLL_MS = 5;

interface Instance { id: string; address: string; health: { status: string } }

async function main(): Promise<void> {
  const machine = machineInfo();
  if (!args.json) console.log(formatMachine(machine));
  execFileSync("bash", [LAB, "up"], { stdio: ["ignore", args.json ? "ignore" : "inherit", "inherit"] });
  const manager = new DockerApi({ socketPath: sock("node1") });
  const images = await ensureBooksImages({ prefix: BOOKS_REPO, api: manager });
  await copyImageToNodes(images.v1!, manager, [new DockerApi({ socketPath: sock("node2") }), new DockerApi({ socketPath: sock("node3") })]);
  const ws = await createWorkspace({
    replicas: 2,
    healthInterval: "500ms",
    deployTimeout: "60s",
    runtime: { kind: "swarm", image: `${BOOKS_REPO}:{release}`, manager: sock("node1"), nodes: { [NODES.node2]: sock("node2"), [NODES.node3]: sock("node3") }, placement: ["node.role==worker"] },
  });
  try {
    const { instances, proxy } = await booksLive<Instance>(ws);
    const before = await instances();
    const victim = before[0]!;
    const victimAddr = victim.address.split(":")[0]!;
    const victimNode = Object.entries(NODES).find(([, a]) => a === victimAddr)![0];
    const victimNodeId = (await manager.listNodes()).find((n) => n.Status.Addr === victimAddr)!.ID;

    const load = await LoadProcess.start({ baseUrl: ws.proxyUrl, concurrency: 8, postEvery: 0, maxDurationMs: 5 * 60_000 });
    await sleep(1_000);
    const loadBefore = loadavg()[0]!;
    const t0 = performance.now();
    execFileSync("bash", [LAB, "crash", victimNode], { stdio: "ignore" });
    const proxyOutMs = await timeUntil(t0, async () => {
      const stats = await proxy.stats();
      const table = await (proxy as unknown as { table(): Promise<{ routes: Array<{ upstreams: Array<{ id: string }> }> }> }).table();
      return (stats.down ?? []).some((d) => d.id === victim.id) || !table.routes.some((r) => r.upstreams.some((u) => u.id === victim.id));
    });
    const [swarmDownMs, replacementMs] = await Promise.all([
      timeUntil(t0, async () => (await manager.listNodes()).find((n) => n.ID === victimNodeId)?.Status.State === "down").catch(() => NaN),
      timeUntil(t0, async () => {
        const now = await instances();
        return now.length === 2 && now.every((i) => !i.address.startsWith(`${victimAddr}:`) && i.health.status === "passing");
      }).catch(() => NaN),
    ]);
    const report = await load.stop();
    const summary = { machine, loadBefore, loadAfter: loadavg()[0], victimNode, proxyOutMs, swarmDownMs, replacementMs, requests: report.total, failedGets: report.failed, failures: report.failures };
    if (args.json) return void console.log(JSON.stringify(summary, null, 2));
    console.log(`\nload: 8 keep-alive GET clients; 2 replicas on node2 and node3; ${victimNode} crashed (dockerd, containerd, containers killed)\n`);
    console.log(formatTable(["figure", "ms", "vs Swarm marking the node down"], [
      ["proxy stops sending to the node's task", proxyOutMs.toFixed(1), `${formatNumber(swarmDownMs / Math.max(proxyOutMs, 0.1), 0)}× sooner`],
      ["Swarm marks the node down", swarmDownMs.toFixed(0), `(Swarm's default: ~${SWARM_NODE_DOWN_MS} ms)`],
      ["Swarm's replacement task rejoins the pool on a live node", replacementMs.toFixed(0), ""],
    ]));
    console.log(`\nGET requests: ${formatNumber(report.total)}, failed: ${report.failed}${report.failed ? ` ${JSON.stringify(report.failures)}` : ""} (target 0)`);
    console.log(`load average (1 min): ${loadBefore.toFixed(1)} before the crash, ${loadavg()[0]!.toFixed(1)} at the end`);
    if (report.failed > 0 || proxyOutMs >= 1_000) process.exitCode = 1;
  } finally {
    await ws.destroy();
    // The crashed node does not rejoin by itself: a whole new cluster for whoever comes next.
    execFileSync("bash", [LAB, "up"], { stdio: "ignore" });
  }
}



const timeUntil = (t0: number, done: () => Promise<boolean>) => waitUntil(t0, done, { maxWaitMs: MAX_WAIT_MS, pollMs: POLL_MS });

await main();
