// The API token: created once by `init` or `up`, kept in a 0600 file, sent as a Bearer token.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { TurquoiseError } from "../errors.js";

export const TOKEN_FILE = "token";
/** A read-only token for the registry (catalog, health, KV reads, events), pushed into every instance. */
export const REGISTRY_TOKEN_FILE = "registry-token";

export function tokenPath(stateDir: string, name = TOKEN_FILE): string {
  return path.join(stateDir, name);
}

export function ensureToken(stateDir: string, name = TOKEN_FILE): string {
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const file = tokenPath(stateDir, name);
  try {
    return readToken(stateDir, name);
  } catch {
    const token = crypto.randomBytes(32).toString("hex");
    fs.writeFileSync(file, token + "\n", { mode: 0o600, flag: "wx" });
    return token;
  }
}

export function readToken(stateDir: string, name = TOKEN_FILE): string {
  const file = tokenPath(stateDir, name);
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    throw new TurquoiseError("UNAUTHORIZED", `no API token at ${file}: run \`turquoise init\` or \`turquoise up\` first`);
  }
  const mode = fs.statSync(file).mode & 0o777;
  if (mode & 0o077) fs.chmodSync(file, 0o600);
  return text.trim();
}

export function tokenMatches(expected: string, header: string | undefined): boolean {
  const given = header?.startsWith("Bearer ") ? header.slice(7).trim() : "";
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}
