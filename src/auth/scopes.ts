// Who may call what: the admin token (every route), the registry token (catalog, health, user KV
// and catalog events: what every instance is given), deploy tokens (deploy, rollback and status of
// the services they name; for CI and webhooks) and read tokens (status, history and events of every
// service, changing nothing: the dashboard's read-only view). Tokens are compared in constant time.
import { tokenMatches } from "./token.js";
import type { DeployTokenInfo, DeployTokens } from "./deploy-tokens.js";

export type Scope =
  | { kind: "admin" }
  | { kind: "registry" }
  | { kind: "deploy"; id: string; name: string | null; services: string[] }
  | { kind: "read"; id: string; name: string | null };

export interface Credentials {
  adminToken: string;
  registryToken: string;
  deployTokens: DeployTokens;
}

/** The scope of the bearer token in an Authorization header, or undefined for none or a wrong one. */
export function authenticate(header: string | undefined, creds: Credentials): Scope | undefined {
  // Every check runs whatever the earlier ones found, so the time taken does not say which token kind matched.
  const admin = tokenMatches(creds.adminToken, header);
  const registry = tokenMatches(creds.registryToken, header);
  const deploy = creds.deployTokens.match(header);
  if (admin) return { kind: "admin" };
  if (registry) return { kind: "registry" };
  return deploy ? storedTokenScope(deploy) : undefined;
}

/** The scope a stored read or deploy token grants. */
export function storedTokenScope(t: Pick<DeployTokenInfo, "id" | "name" | "scope" | "services">): Extract<Scope, { kind: "read" | "deploy" }> {
  return t.scope === "read" ? { kind: "read", id: t.id, name: t.name } : { kind: "deploy", id: t.id, name: t.name, services: [...t.services] };
}

/** Which token a scope stands for: the admin or registry token, or one read or deploy token by its id. A cap per token counts by it. */
export function tokenIdentity(scope: Scope): string {
  return scope.kind === "read" || scope.kind === "deploy" ? `${scope.kind} ${scope.id}` : scope.kind;
}

/** What a scope may do, in words for a 403. */
export function describeScope(scope: Scope): string {
  switch (scope.kind) {
    case "admin":
      return "the API token may call every route";
    case "registry":
      return "the registry token reads the catalog, health checks, the user KV and catalog events only";
    case "deploy":
      return `deploy token ${scope.id}${scope.name ? ` (${scope.name})` : ""} may deploy, roll back and read the status of ${scope.services.join(", ")} only`;
    case "read":
      return `read token ${scope.id}${scope.name ? ` (${scope.name})` : ""} reads status, history and events only`;
  }
}

/**
 * Event types a registry token sees: changes to the catalog and to health. Deploy, migration,
 * watch and recovery events carry internal details (actors, step output, handler output).
 */
export const REGISTRY_EVENT_TYPES: ReadonlySet<string> = new Set([
  "check.changed", "check.back", "instance.exited", "instance.replaced", "service.degraded", "deploy.succeeded", "rollback.succeeded",
]);
