// The nginx driver against the shared Proxy contract suite: real nginx (installed by
// scripts/ensure-nginx.sh, so this never skips), with its edge in front and without it, since the
// two render the client-facing settings into different tiers.

import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { NginxProxy } from "../../src/proxy/nginx.js";
import { freePort } from "../../src/util/net.js";
import { pidAlive } from "../../src/util/proc.js";
import { runProxyContract } from "./contract.test-suite.js";

const ENSURE_NGINX = fileURLToPath(new URL("../../../scripts/ensure-nginx.sh", import.meta.url));
let ensured = false;

/** nginx on a fresh state directory; close() stops it and kills whatever a failed test left. */
async function startNginx(edge: boolean) {
  if (!ensured) {
    execFileSync("bash", [ENSURE_NGINX], { stdio: ["ignore", "ignore", "inherit"], timeout: 600_000 });
    ensured = true;
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), "tq-nginx-contract-"));
  const proxy = new NginxProxy({ stateDir: dir, listenHost: "127.0.0.1", listenPort: await freePort(), edge });
  await proxy.start();
  return {
    proxy,
    baseUrl: `http://127.0.0.1:${proxy.listenPort}`,
    close: async () => {
      await proxy.stop(2_000).catch(() => undefined);
      for (const file of ["router.pid", "edge.pid"]) {
        const pid = Number((await readFile(path.join(dir, "nginx", file), "utf8").catch(() => "")).trim());
        if (pid > 0 && pidAlive(pid)) {
          const children = (await readFile(`/proc/${pid}/task/${pid}/children`, "utf8").catch(() => "")).trim();
          for (const child of children ? children.split(/\s+/).map(Number) : []) process.kill(child, "SIGKILL");
          process.kill(pid, "SIGKILL");
        }
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

runProxyContract({ name: "nginx", start: () => startNginx(true) });
runProxyContract({ name: "nginx without the edge", start: () => startNginx(false) });
