// The built-in proxy (its server in this process, driven over its control API) against the shared Proxy contract suite.

import { runProxyContract } from "./contract.test-suite.js";
import { startTestProxy } from "./helpers.js";

runProxyContract({
  name: "builtin",
  start: async () => {
    const p = await startTestProxy();
    return { proxy: p.proxy, baseUrl: p.base, close: () => p.close() };
  },
});
