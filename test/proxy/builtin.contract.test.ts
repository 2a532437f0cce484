// The built-in proxy against the shared Proxy contract suite, as the agent runs it: a separate
// process (src/proxy/main.ts), spawned detached and driven over its loopback control API.

import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { spawnProxy, stopProxy } from "../../src/proxy/builtin.js";
import { runProxyContract } from "./contract.test-suite.js";

runProxyContract({
  name: "builtin",
  start: async () => {
    const stateDir = await mkdtemp(path.join(os.tmpdir(), "tq-builtin-contract-"));
    const running = await spawnProxy({ stateDir, listenHost: "127.0.0.1", listenPort: 0 });
    return {
      proxy: running.proxy,
      baseUrl: `http://127.0.0.1:${running.listenPort}`,
      close: async () => {
        // SIGTERM, then SIGKILL after 2 s: a test that left a request hanging does not hold the run.
        await stopProxy(stateDir, 2_000);
        await rm(stateDir, { recursive: true, force: true });
      },
    };
  },
});
