// Deploy tokens (`turquoise token create --deploy <services>`) and read tokens (`--read`): shown
// once, kept only as a sha256 in the agent's reserved namespace with their scope. A revoked token is
// gone at once, on every agent sharing the store: each follows the tokens' keys (follow()).
import crypto from "node:crypto";
import { TurquoiseError } from "../errors.js";
import type { Store, WatchEvent } from "../state/contract.js";
import { internalKey } from "../state/namespace.js";
import { TOKEN_LENGTH, bearerToken } from "./token.js";

export interface DeployTokenRecord {
  id: string;
  name: string | null;
  /** What the token may do: deploy its services (the default, and what older records mean), or read everything. */
  scope?: "deploy" | "read";
  /** The services a deploy token may deploy; empty for a read token. */
  services: string[];
  createdAt: number;
  /** sha256 of the token, hex: the token itself is never stored. */
  sha256: string;
}

export type DeployTokenInfo = Omit<DeployTokenRecord, "sha256">;

const PREFIX = internalKey("tokens/");
const ID = /^[0-9a-f]{16}$/;
const HASH = /^[0-9a-f]{64}$/;
const SERVICE = /^[a-z][a-z0-9-]{0,62}$/;
export const MAX_TOKEN_NAME = 100;

function sha256(text: string): Buffer {
  return crypto.createHash("sha256").update(text).digest();
}

/** What is wrong with a stored token record; undefined when nothing is. */
export function deployTokenProblem(v: unknown, id: string): string | undefined {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return "not a JSON object";
  const o = v as Record<string, unknown>;
  if (o.id !== id || !ID.test(id)) return `its id ${JSON.stringify(o.id)} does not match its key`;
  if (o.name !== null && (typeof o.name !== "string" || o.name.length > MAX_TOKEN_NAME)) return "field name is not a short string or null";
  if (o.scope !== undefined && o.scope !== "deploy" && o.scope !== "read") return "field scope is neither deploy nor read";
  if (o.scope === "read" ? !Array.isArray(o.services) || o.services.length !== 0 : !Array.isArray(o.services) || o.services.length === 0 || !o.services.every((s) => typeof s === "string" && SERVICE.test(s))) return "field services is not a list of service names (empty for a read token)";
  if (typeof o.createdAt !== "number" || !Number.isFinite(o.createdAt)) return "field createdAt is not a time";
  if (typeof o.sha256 !== "string" || !HASH.test(o.sha256)) return "field sha256 is not a sha256";
  return undefined;
}

export class DeployTokens {
  private records = new Map<string, DeployTokenRecord>();
  private readonly revokedListeners = new Set<(revoked: DeployTokenInfo) => void>();
  private unwatch: (() => void) | undefined;

  constructor(private readonly store: Store, private readonly onInvalid: (id: string, problem: string) => void = () => {}) {}

  /**
   * Loads the stored tokens, then follows them: one created or revoked by another agent sharing
   * the store (the leader takes every token write) grants or ends here too. The watch replays what
   * changed since the revision read before the list, so nothing written meanwhile is missed.
   */
  async start(): Promise<void> {
    const revision = await this.store.revision();
    await this.load();
    this.unwatch?.();
    this.unwatch = this.store.watch(PREFIX, (e) => this.changed(e), { fromRevision: revision });
  }

  stop(): void {
    this.unwatch?.();
    this.unwatch = undefined;
  }

  /** Called with each token revoked, here or by another agent: what it granted ends with it (open event streams). */
  onRevoked(listener: (revoked: DeployTokenInfo) => void): () => void {
    this.revokedListeners.add(listener);
    return () => this.revokedListeners.delete(listener);
  }

  /** Loads the stored tokens; a record that does not validate grants nothing. */
  async load(): Promise<void> {
    const next = new Map<string, DeployTokenRecord>();
    for (const kv of await this.store.list(PREFIX)) {
      const id = kv.key.slice(PREFIX.length);
      const rec = this.parse(id, kv.value);
      if (rec) next.set(id, rec);
    }
    this.records = next;
  }

  /** A deploy token for `services`, or, with services "read", a read token. */
  async create(services: string[] | "read", name: string | null): Promise<{ token: string; info: DeployTokenInfo }> {
    if (services !== "read" && services.length === 0) throw new TurquoiseError("USAGE", "a deploy token needs at least one service");
    if (name !== null && name.length > MAX_TOKEN_NAME) throw new TurquoiseError("USAGE", `a token name holds at most ${MAX_TOKEN_NAME} characters`);
    const token = crypto.randomBytes(TOKEN_LENGTH / 2).toString("hex");
    const rec: DeployTokenRecord = {
      id: crypto.randomBytes(8).toString("hex"), name, ...(services === "read" ? { scope: "read" as const, services: [] } : { services: [...new Set(services)].sort() }),
      createdAt: Date.now(), sha256: sha256(token).toString("hex"),
    };
    const r = await this.store.put(PREFIX + rec.id, JSON.stringify(rec), { prevRevision: 0 });
    if (!r.ok) throw new TurquoiseError("CONFLICT", "a token with the same id exists; try again");
    this.records.set(rec.id, rec);
    return { token, info: info(rec) };
  }

  list(): DeployTokenInfo[] {
    return [...this.records.values()].sort((a, b) => a.createdAt - b.createdAt).map(info);
  }

  /** Whether a token with this id is still there: a session made from a revoked one ends with it. */
  has(id: string): boolean {
    return this.records.has(id);
  }

  async revoke(id: string): Promise<DeployTokenInfo> {
    const rec = this.records.get(id);
    if (!rec) throw new TurquoiseError("NOT_FOUND", `no deploy token with id "${id.slice(0, 40)}"; \`turquoise token list\` shows them`);
    this.forget(id);
    await this.store.delete(PREFIX + id);
    return info(rec);
  }

  private changed(e: WatchEvent): void {
    const id = e.key.slice(PREFIX.length);
    if (e.type === "delete") return this.forget(id);
    const rec = this.parse(id, e.value);
    if (rec) this.records.set(id, rec);
    // Rewritten into something that grants nothing: as good as revoked.
    else this.forget(id);
  }

  /** A stored token record, or undefined (reported through onInvalid) when it does not validate. */
  private parse(id: string, text: string): DeployTokenRecord | undefined {
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch {
      v = undefined;
    }
    const problem = deployTokenProblem(v, id);
    if (!problem) return v as DeployTokenRecord;
    this.onInvalid(id, problem);
    return undefined;
  }

  /** Drops a token and tells the listeners, once: a revoke here is also seen again by this agent's own watch. */
  private forget(id: string): void {
    const rec = this.records.get(id);
    if (!rec) return;
    this.records.delete(id);
    for (const l of this.revokedListeners) l(info(rec));
  }

  /** The token an Authorization header carries, compared in constant time against every stored hash. */
  match(header: string | undefined): DeployTokenRecord | undefined {
    const given = bearerToken(header);
    const hash = sha256(given);
    let found: DeployTokenRecord | undefined;
    for (const rec of this.records.values()) {
      if (crypto.timingSafeEqual(hash, Buffer.from(rec.sha256, "hex")) && given.length > 0) found = rec;
    }
    return found;
  }
}

function info(rec: DeployTokenRecord): DeployTokenInfo {
  return { id: rec.id, name: rec.name, ...(rec.scope === "read" ? { scope: "read" as const } : {}), services: rec.services, createdAt: rec.createdAt };
}
