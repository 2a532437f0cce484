// The environment of an instance, for every runtime: the rules live here once. docs/spec.md
// ("What each instance gets") is the same table for users.
import type { StartRequest } from "./contract.js";
import { AGENT_ENV, INSTANCE_ENV } from "./identity.js";

/**
 * What a local process needs from the agent's environment to run at all: where programs are,
 * a home, the locale and the time zone. A container has its image's own instead.
 */
export const HOST_BASICS = ["PATH", "HOME", "LANG", "TZ"] as const;
const HOST_BASICS_PREFIX = "LC_";

/**
 * Later layers win:
 *  1. hostBasics (process runtime): PATH, HOME, LANG, LC_*, TZ from the agent's environment;
 *  2. the agent's variables that env_passthrough names (unset ones are skipped);
 *  3. req.env: the registry token, the service's env, its database URL (merged by the fleet);
 *  4. PORT, HOST and TURQUOISE_SERVICE/SLOT/RELEASE/API, which nothing overrides;
 *  5. the marks (runtime/identity.ts): TURQUOISE_INSTANCE and TURQUOISE_AGENT. Nothing overrides
 *     them either: a service env that could rename an instance could hide it from `down`.
 * Nothing else of the agent's environment gets in: not another service's database URL, not a
 * cloud credential the agent was started with, not the agent's own TURQUOISE_* settings.
 */
export function instanceEnv(
  req: StartRequest,
  at: { port: number; host: string; hostBasics: boolean; agentId: string },
  agentEnv: NodeJS.ProcessEnv = process.env,
): Record<string, string> {
  const env: Record<string, string> = {};
  if (at.hostBasics) {
    for (const [name, value] of Object.entries(agentEnv)) {
      if (value !== undefined && ((HOST_BASICS as readonly string[]).includes(name) || name.startsWith(HOST_BASICS_PREFIX))) env[name] = value;
    }
  }
  for (const name of req.envPassthrough ?? []) {
    const value = agentEnv[name];
    if (value !== undefined) env[name] = value;
  }
  return {
    ...env,
    ...req.env,
    PORT: String(at.port),
    HOST: at.host,
    TURQUOISE_SERVICE: req.service,
    TURQUOISE_SLOT: req.slot,
    TURQUOISE_RELEASE: req.release,
    TURQUOISE_API: req.apiUrl,
    [INSTANCE_ENV]: req.id,
    [AGENT_ENV]: at.agentId,
  };
}
