// API tokens: created once by `init` or `up`, kept in 0600 files, sent as Bearer tokens. Imported
// by the agent, the CLI and the proxy alike.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { TurquoiseError } from "../errors.js";

export const TOKEN_FILE = "token";
/** A read-only token for the registry (catalog, health, KV reads, events), pushed into every instance. */
export const REGISTRY_TOKEN_FILE = "registry-token";
/** 32 random bytes, hex: a token file holding anything shorter was truncated or forged. */
export const TOKEN_LENGTH = 64;
const TOKEN_PATTERN = /^[0-9a-f]+$/;

export function tokenPath(stateDir: string, name = TOKEN_FILE): string {
  return path.join(stateDir, name);
}

/** Why a token file's text cannot be a token we generated, or undefined when it can. */
export function tokenProblem(text: string): string | undefined {
  const token = text.trim();
  if (token === "") return "it is empty";
  if (token.length < TOKEN_LENGTH) return `it holds ${token.length} characters, fewer than the ${TOKEN_LENGTH} of a generated token`;
  if (!TOKEN_PATTERN.test(token)) return "it holds characters other than hex digits";
  return undefined;
}

/**
 * The token in `name`, created when missing. A file that is empty, truncated or otherwise not a
 * generated token is replaced by a new one, and `onReplaced` says why.
 */
export function ensureToken(stateDir: string, name = TOKEN_FILE, onReplaced?: (why: string) => void): string {
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const file = tokenPath(stateDir, name);
  let text: string | undefined;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  if (text !== undefined) {
    const problem = tokenProblem(text);
    if (problem === undefined) {
      restrictMode(file);
      return text.trim();
    }
    onReplaced?.(`${file} was not a valid token (${problem}); a new one was written`);
  }
  const token = crypto.randomBytes(TOKEN_LENGTH / 2).toString("hex");
  writeTokenAtomic(file, token);
  return token;
}

export function readToken(stateDir: string, name = TOKEN_FILE): string {
  const file = tokenPath(stateDir, name);
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    throw new TurquoiseError("UNAUTHORIZED", `no API token at ${file}: run \`turquoise init\` or \`turquoise up\` first`);
  }
  const problem = tokenProblem(text);
  if (problem !== undefined) {
    throw new TurquoiseError("UNAUTHORIZED", `the token file ${file} is not a valid token (${problem}): run \`turquoise up\` to replace it`);
  }
  restrictMode(file);
  return text.trim();
}

/** The credentials of an Authorization header's Bearer scheme ("" when none): the scheme's name is case-insensitive (RFC 9110 11.1). */
export function bearerToken(header: string | undefined): string {
  return header !== undefined && /^bearer /i.test(header) ? header.slice(7).trim() : "";
}

/**
 * Constant-time check of an Authorization header against a token; an empty token never matches.
 * Digests of equal length are compared, so the time says nothing of the token's length either.
 */
export function tokenMatches(expected: string, header: string | undefined): boolean {
  if (expected.length === 0) return false;
  const given = bearerToken(header);
  const digest = (text: string) => crypto.createHash("sha256").update(text).digest();
  return crypto.timingSafeEqual(digest(given), digest(expected));
}

/** A token chosen by the user (metrics.token_file): shorter than this is guessable. */
export const MIN_USER_TOKEN_LENGTH = 16;

/**
 * The token in a file the user wrote, for `key` of the spec: one word of at least
 * MIN_USER_TOKEN_LENGTH characters. The error names the file and the key, never the text.
 */
export function readUserToken(file: string, key: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new TurquoiseError("SPEC_INVALID", `${key}: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? "error"}): write the token there, e.g. openssl rand -hex 32 > ${file}`);
  }
  const token = text.trim();
  const problem = token === "" ? "it is empty" : /\s/.test(token) ? "it holds more than one word" : token.length < MIN_USER_TOKEN_LENGTH ? `it holds ${token.length} character${token.length === 1 ? "" : "s"}, fewer than ${MIN_USER_TOKEN_LENGTH}` : undefined;
  if (problem) throw new TurquoiseError("SPEC_INVALID", `${key}: ${file} is not a usable token (${problem}): e.g. openssl rand -hex 32 > ${file}`);
  return token;
}

/** Temporary file, fsync, rename: a crash leaves the old file or the new one, never a torn one. */
function writeTokenAtomic(file: string, token: string): void {
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString("hex")}.tmp`;
  const fd = fs.openSync(tmp, "wx", 0o600);
  try {
    fs.writeSync(fd, token + "\n");
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  const dir = fs.openSync(path.dirname(file), "r");
  try {
    fs.fsyncSync(dir);
  } finally {
    fs.closeSync(dir);
  }
}

function restrictMode(file: string): void {
  if (fs.statSync(file).mode & 0o077) fs.chmodSync(file, 0o600);
}
