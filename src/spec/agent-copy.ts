// The spec a running agent started with, kept in its state dir: `down` and `status` find and stop
// the stack from it while turquoise.yml is half-edited and invalid, or gone.
import fs from "node:fs";
import path from "node:path";
import { parseDocument } from "yaml";
import { TurquoiseError } from "../errors.js";
import { writeFileAtomic } from "../util/fs.js";
import { count } from "../util/words.js";
import { loadSpecOrThrow, loadSpecText } from "./loader.js";
import { DEFAULT_STATE_DIR } from "./schema.js";
import type { Spec } from "./types.js";

export const AGENT_SPEC_FILE = "agent-spec.json";

interface AgentSpecCopy {
  /** The spec file it was read from: another file's copy is never used. */
  file: string;
  text: string;
}

/** Keeps the text of spec.file, when it still loads to a valid spec (mode 0600: it may name a database). */
export async function writeAgentSpec(spec: Spec): Promise<void> {
  let text: string;
  try {
    text = fs.readFileSync(spec.file, "utf8");
  } catch {
    return;
  }
  // Edited since the agent loaded it, into something invalid: the copy it has is the better one.
  if (!loadSpecText(text, spec.file).spec) return;
  const copy: AgentSpecCopy = { file: spec.file, text };
  await writeFileAtomic(path.join(spec.stateDir, AGENT_SPEC_FILE), JSON.stringify(copy), 0o600);
}

export interface SpecForStack {
  spec: Spec;
  /** Set when the spec file is invalid and the agent's copy stands in: the caller says so. */
  invalid?: TurquoiseError;
  copyFile?: string;
}

/**
 * The spec, or, when it is invalid (or missing), the one the agent last started with for this
 * same file. With neither, the spec's own error.
 */
export function loadSpecOrAgentCopy(file: string): SpecForStack {
  try {
    return { spec: loadSpecOrThrow(file).spec };
  } catch (e) {
    if (!(e instanceof TurquoiseError) || e.code !== "SPEC_INVALID") throw e;
    const copyFile = path.join(stateDirOf(file), AGENT_SPEC_FILE);
    const spec = readAgentSpec(copyFile, path.resolve(file));
    if (!spec) throw e;
    return { spec, invalid: e, copyFile };
  }
}

/** The one-line warning a command prints when it runs on the agent's copy. */
export function agentCopyWarning(r: SpecForStack): string | undefined {
  if (!r.invalid) return undefined;
  const n = r.invalid.details.length;
  return `warning: ${r.spec.file} is invalid (${count(n, "error")}: see \`turquoise validate\`); using the spec the agent started with, kept in ${r.copyFile}`;
}

function readAgentSpec(copyFile: string, file: string): Spec | undefined {
  let copy: AgentSpecCopy;
  try {
    copy = JSON.parse(fs.readFileSync(copyFile, "utf8")) as AgentSpecCopy;
  } catch {
    return undefined;
  }
  if (copy?.file !== file || typeof copy.text !== "string") return undefined;
  return loadSpecText(copy.text, file).spec;
}

/**
 * Where the state dir of a spec that does not load is: its state_dir when the YAML still says it,
 * else the default beside the file.
 */
export function stateDirOf(file: string): string {
  const dir = path.dirname(path.resolve(file));
  let stateDir: unknown;
  try {
    const data = parseDocument(fs.readFileSync(file, "utf8")).toJS({ maxAliasCount: 10 }) as unknown;
    if (data && typeof data === "object") stateDir = (data as Record<string, unknown>).state_dir;
  } catch {
    // Unreadable, or not YAML at all: the default below.
  }
  return path.resolve(dir, typeof stateDir === "string" && stateDir ? stateDir : DEFAULT_STATE_DIR);
}
