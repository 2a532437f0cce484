// The secrets a spec and the agent's environment hold, for the scrubber (log/scrub.ts) to keep out
// of logs, events and history: the values of secret-named variables, database URLs and their
// passwords, the headers of watches and smoke checks, credentials in a watch's URL.
import { secretsOf } from "../migrate/redact.js";
import type { Spec } from "../spec/types.js";
import { isSecretName } from "../log/scrub.js";
import { resolveDatabaseUrl } from "./database.js";

const URL_START = /^[a-z][a-z0-9+.-]*:\/\//i;

/** A URL's password and its query (webhooks carry their secret there); the rest of it stays readable. */
function urlSecrets(value: string): string[] {
  if (!URL_START.test(value)) return [];
  const found = secretsOf(value).filter((s) => s !== value);
  try {
    const u = new URL(value);
    if (u.search.length > 1) found.push(u.search.slice(1), ...u.searchParams.values());
  } catch {
    // secretsOf has read what it could of an unparseable URL
  }
  return found;
}

/**
 * The spec's own env: a URL's password and query in any variable, the whole value of a
 * secret-named one that is not a URL (a URL keeps its host readable).
 */
function specEnvSecrets(env: Record<string, string>): string[] {
  return Object.entries(env).flatMap(([name, value]) => (isSecretName(name) && !URL_START.test(value) ? [value] : urlSecrets(value)));
}

/**
 * The agent's environment: only what its names mark as secret. Any other variable can hold a URL
 * whose password is an ordinary word (a test database's "turquoise"), which would be blanked
 * wherever the word appears; the spec's database URLs are read from here by name below.
 */
function agentEnvSecrets(env: NodeJS.ProcessEnv): string[] {
  return Object.entries(env).flatMap(([name, value]) => (!value || !isSecretName(name) ? [] : URL_START.test(value) ? urlSecrets(value) : [value]));
}

export function specSecrets(spec: Spec, env: NodeJS.ProcessEnv = process.env): string[] {
  const found = agentEnvSecrets(env);
  const etcdPassword = spec.state.etcd?.passwordEnv;
  if (etcdPassword) found.push(env[etcdPassword] ?? "");
  for (const svc of Object.values(spec.services)) {
    found.push(...specEnvSecrets(svc.env));
    for (const check of svc.smoke) if ("http" in check) found.push(...Object.values(check.http.headers));
    if (svc.webhook?.secretEnv) found.push(env[svc.webhook.secretEnv] ?? "");
    if (svc.database) {
      try {
        found.push(...urlSecrets(resolveDatabaseUrl(svc.database, spec.dir, env)));
      } catch {
        // Its variable is unset: the deploy says so, and there is no value to hide.
      }
    }
  }
  for (const w of spec.watches) {
    if ("http" in w.handler) found.push(...Object.values(w.handler.http.headers), ...urlSecrets(w.handler.http.url));
  }
  return found;
}
