// A demo workspace brought up with books v1 live, and the handles a benchmark watches it through:
// the agent's status (its instances) and the proxy's control API.
import path from "node:path";
import { readToken } from "../../src/auth/token.js";
import { AgentClient } from "../../src/cli/client.js";
import type { Workspace } from "../../src/demo/workspace.js";
import { connectProxy } from "../../src/proxy/builtin.js";
import type { Proxy } from "../../src/proxy/contract.js";

export interface BooksLive<I> {
  /** The books service's instances as /v1/status has them now. */
  instances(): Promise<I[]>;
  proxy: Proxy;
}

export async function booksLive<I>(ws: Workspace): Promise<BooksLive<I>> {
  await ws.cli(["up", "--detach"]);
  await ws.cli(["deploy", "books", "--release", "v1"]);
  const stateDir = path.join(ws.dir, ".turquoise");
  const client = new AgentClient(`http://127.0.0.1:${ws.agentPort}`, readToken(stateDir));
  const running = await connectProxy(stateDir);
  if (!running) throw new Error(`no proxy answers for ${stateDir} after turquoise up`);
  return {
    instances: async () => (await client.get<{ services: Array<{ instances: I[] }> }>("/v1/status")).services[0]!.instances,
    proxy: running.proxy,
  };
}
