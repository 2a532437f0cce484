// Migration files: reading and checking the directory, and the driver-independent decisions made
// from it (what is pending, what is wrong, what up and down would run). The drivers only execute.

import { createHash } from "node:crypto";
import { readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { TurquoiseError, errorMessage, type ErrorDetail } from "../errors.js";
import { parseBackfillOptions, splitBackfillSql, type BackfillSql } from "./backfill.js";
import type {
  AppliedMigration,
  BackfillSpec,
  MigrateOptions,
  MigrationEvent,
  MigrationPhase,
  MigrationProblem,
  MigrationRun,
  MigrationStatus,
  MigrationStep,
} from "./contract.js";

/** What a module step's up(db) and down(db) are given; the same for both drivers. */
export interface MigrationDb {
  /** Placeholders are $1, $2, ... for both drivers. */
  query(sql: string, params?: unknown[]): Promise<{ rows: Record<string, unknown>[] }>;
}

/** A loaded module step. */
export interface MigrationModule {
  up: (db: MigrationDb) => unknown;
  down?: (db: MigrationDb) => unknown;
}

/** How long a step may wait for a table lock held by live traffic before it backs off. */
export const DEFAULT_LOCK_TIMEOUT_MS = 2_000;
/** Retries after a lock timeout; with the first try, 5 tries in all. */
export const DEFAULT_LOCK_RETRIES = 4;
/** The first back-off after a lock timeout; it doubles on every retry. */
export const RETRY_BASE_DELAY_MS = 100;

const NAME_RE = /^(\d+)_([A-Za-z0-9][A-Za-z0-9_-]*)\.(up\.sql|down\.sql|mjs|js|ts|mts)$/;
const CANDIDATE_RE = /\.(sql|mjs|js|cjs|ts|mts|cts)$/;
const DIRECTIVE_RE = /^--\s*turquoise\s*:(.*)$/i;
const DIRECTIVES = ["expand", "contract", "no-transaction", "irreversible", "backfill"] as const;
const NAME_HINT = "expected NNNN_name.up.sql, NNNN_name.down.sql, or a module NNNN_name.mjs, .js, .ts or .mts (NNNN: a version above 0)";

interface Parsed {
  version: number;
  name: string;
  kind: "up" | "down" | "module";
  file: string;
  path: string;
}

/**
 * Reads a migrations directory into ordered steps. Every problem in it is reported at once, each
 * naming its file. Files starting with "." or "_" are left alone (helpers a module can import), and
 * so is anything that does not look like SQL or JavaScript.
 */
export async function readMigrations(dir: string): Promise<MigrationStep[]> {
  const root = resolve(dir);
  let names: string[];
  try {
    if (!(await stat(root)).isDirectory()) {
      throw new TurquoiseError("NOT_FOUND", `the migrations directory ${root} is not a directory`, { details: [{ file: root, message: "not a directory" }] });
    }
    names = await readdir(root);
  } catch (e) {
    if (e instanceof TurquoiseError) throw e;
    throw new TurquoiseError("NOT_FOUND", `the migrations directory ${root} does not exist`, { details: [{ file: root, message: errorMessage(e) }] });
  }

  const problems: ErrorDetail[] = [];
  const parsed: Parsed[] = [];
  for (const file of names.sort()) {
    if (file.startsWith(".") || file.startsWith("_")) continue;
    const path = join(root, file);
    try {
      if (!(await stat(path)).isFile()) continue;
    } catch (e) {
      problems.push({ file: path, message: `${file}: cannot be read: ${errorMessage(e)}` });
      continue;
    }
    const m = NAME_RE.exec(file);
    if (!m) {
      if (CANDIDATE_RE.test(file)) problems.push({ file: path, message: `${file}: bad migration file name; ${NAME_HINT}` });
      continue;
    }
    const version = Number(m[1]);
    if (!Number.isSafeInteger(version) || version < 1) {
      problems.push({ file: path, message: `${file}: bad migration file name: the version must be above 0; ${NAME_HINT}` });
      continue;
    }
    const kind = m[3] === "up.sql" ? "up" : m[3] === "down.sql" ? "down" : "module";
    parsed.push({ version, name: m[2]!, kind, file, path });
  }

  const ups = new Map<number, Parsed>();
  for (const p of parsed.filter((x) => x.kind !== "down")) {
    const other = ups.get(p.version);
    if (other) {
      problems.push({ file: p.path, message: `${p.file}: duplicate version ${p.version}: ${other.file} has it too` });
      continue;
    }
    ups.set(p.version, p);
  }
  const downs = new Map<number, Parsed>();
  for (const p of parsed.filter((x) => x.kind === "down")) {
    const up = ups.get(p.version);
    if (!up || up.name !== p.name || up.kind !== "up") {
      const why = !up
        ? `there is no ${versionText(p)}_${p.name}.up.sql`
        : up.kind === "module"
          ? `version ${p.version} is the module ${up.file}; export down(db) from it instead`
          : `version ${p.version}'s up file is ${up.file}; name both files alike`;
      problems.push({ file: p.path, message: `${p.file}: a down file without its up file: ${why}` });
      continue;
    }
    downs.set(p.version, p);
  }

  const steps: MigrationStep[] = [];
  for (const up of [...ups.values()].sort((a, b) => a.version - b.version)) {
    const down = downs.get(up.version);
    try {
      steps.push(up.kind === "module" ? await readModuleStep(up) : await readSqlStep(up, down));
    } catch (e) {
      if (e instanceof TurquoiseError && e.details.length > 0) problems.push(...e.details);
      else problems.push({ file: up.path, message: `${up.file}: ${errorMessage(e)}` });
    }
  }

  if (problems.length > 0) {
    const list = problems.map((p) => `  - ${p.message}${p.line === undefined ? "" : ` (line ${p.line})`}`).join("\n");
    throw new TurquoiseError(
      "SPEC_INVALID",
      `${problems.length === 1 ? "a problem" : `${problems.length} problems`} in the migrations directory ${root}:\n${list}`,
      { details: problems },
    );
  }
  return steps;
}

/** The version as the file spells it, zeros and all: "0003". */
function versionText(p: Parsed): string {
  return p.file.slice(0, p.file.indexOf("_"));
}

async function readSqlStep(up: Parsed, down: Parsed | undefined): Promise<MigrationStep> {
  const bytes = await readFile(up.path);
  const opts = parseDirectives(up.file, up.path, bytes.toString("utf8"));
  const downBytes = down ? await readFile(down.path) : undefined;
  const downOpts = down && downBytes ? parseDirectives(down.file, down.path, downBytes.toString("utf8"), up.file) : undefined;
  const backfill = { ...(opts.backfill ? { up: opts.backfill } : {}), ...(downOpts?.backfill ? { down: downOpts.backfill } : {}) };
  return {
    version: up.version,
    name: up.name,
    phase: opts.phase,
    transactional: opts.transactional,
    irreversible: opts.irreversible,
    upFile: up.path,
    ...(down ? { downFile: down.path } : {}),
    checksum: sha256(bytes),
    ...(downBytes ? { downChecksum: sha256(downBytes) } : {}),
    ...(opts.backfill || downOpts?.backfill ? { backfill } : {}),
  };
}

interface StepOptions {
  phase: MigrationPhase;
  transactional: boolean;
  irreversible: boolean;
  backfill?: BackfillSpec;
}

function leadingDirectives(text: string): Array<{ line: number; words: string[] }> {
  const found: Array<{ line: number; words: string[] }> = [];
  const lines = stripBom(text).split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "") continue;
    if (!line.startsWith("--")) break;
    const m = DIRECTIVE_RE.exec(line);
    if (m) found.push({ line: i + 1, words: m[1]!.split(/[\s,]+/).filter((w) => w !== "") });
  }
  return found;
}

/**
 * A down file may declare only its own backfill; every other option belongs in the up file, since
 * it applies to both directions.
 */
function parseDirectives(file: string, path: string, text: string, upFileOfDown?: string): StepOptions {
  const opts: StepOptions = { phase: "expand", transactional: true, irreversible: false };
  const phases = new Set<string>();
  const problems: ErrorDetail[] = [];
  let backfillLine: number | undefined;
  const backfillOptions = new Map<string, string>();
  for (const { line, words } of leadingDirectives(text)) {
    if (words.length === 0) problems.push({ file: path, line, message: `${file}: empty turquoise directive; known: ${DIRECTIVES.join(", ")}` });
    for (const word of words) {
      const w = word.toLowerCase();
      const eq = word.indexOf("=");
      if (upFileOfDown !== undefined && w !== "backfill" && eq < 0) {
        problems.push({ file: path, line, message: `${file}: step options belong in ${upFileOfDown}; they apply to both directions (a down file may declare only its own backfill)` });
      } else if (eq > 0) {
        const name = w.slice(0, eq);
        if (backfillOptions.has(name)) problems.push({ file: path, line, message: `${file}: backfill option ${name} given twice (line ${line})` });
        backfillOptions.set(name, word.slice(eq + 1));
      } else if (w === "expand" || w === "contract") {
        phases.add(w);
        opts.phase = w;
      } else if (w === "no-transaction") {
        opts.transactional = false;
      } else if (w === "irreversible") {
        opts.irreversible = true;
      } else if (w === "backfill") {
        backfillLine = line;
      } else {
        problems.push({ file: path, line, message: `${file}: unknown directive "${word}" on line ${line}; known: ${DIRECTIVES.join(", ")}` });
      }
    }
  }
  if (phases.size > 1) problems.push({ file: path, message: `${file}: declares both expand and contract; a step has one phase` });
  if (backfillLine === undefined && backfillOptions.size > 0) {
    problems.push({ file: path, message: `${file}: ${[...backfillOptions.keys()].map((k) => `${k}=`).join(", ")} without "backfill": options like these only go with a backfill directive` });
  }
  if (backfillLine !== undefined) {
    const parsed = parseBackfillOptions(backfillOptions);
    for (const message of parsed.problems) problems.push({ file: path, line: backfillLine, message: `${file}: ${message}` });
    if (!opts.transactional) problems.push({ file: path, line: backfillLine, message: `${file}: a backfill runs each batch in a transaction of its own; drop no-transaction` });
    try {
      splitBackfillSql(stripBom(text));
    } catch (e) {
      problems.push({ file: path, line: backfillLine, message: `${file}: ${errorMessage(e)}` });
    }
    if (parsed.spec) opts.backfill = parsed.spec;
  }
  if (problems.length > 0) throw new TurquoiseError("SPEC_INVALID", problems[0]!.message, { details: problems });
  return opts;
}

async function readModuleStep(up: Parsed): Promise<MigrationStep> {
  const bytes = await readFile(up.path);
  const checksum = sha256(bytes);
  const exports = await importModule(up.path, checksum);
  const problems: string[] = [];
  if (typeof exports.up !== "function") problems.push("does not export an up(db) function");
  if (exports.down !== undefined && typeof exports.down !== "function") problems.push("exports down, but not as a function");
  if (exports.phase !== undefined && exports.phase !== "expand" && exports.phase !== "contract") {
    problems.push(`exports phase ${JSON.stringify(exports.phase)}; use "expand" or "contract"`);
  }
  if (exports.transaction !== undefined && typeof exports.transaction !== "boolean") problems.push("exports transaction, but not as a boolean");
  if (exports.irreversible !== undefined && typeof exports.irreversible !== "boolean") problems.push("exports irreversible, but not as a boolean");
  if (problems.length > 0) {
    throw new TurquoiseError("SPEC_INVALID", `${up.file}: ${problems[0]}`, {
      details: problems.map((message) => ({ file: up.path, message: `${up.file}: ${message}` })),
    });
  }
  return {
    version: up.version,
    name: up.name,
    phase: (exports.phase as MigrationPhase | undefined) ?? "expand",
    transactional: (exports.transaction as boolean | undefined) ?? true,
    irreversible: (exports.irreversible as boolean | undefined) ?? false,
    upFile: up.path,
    ...(typeof exports.down === "function" ? { downFile: up.path } : {}),
    checksum,
  };
}

async function importModule(path: string, checksum: string): Promise<Record<string, unknown>> {
  let ns: Record<string, unknown>;
  const typescript = /\.m?ts$/.test(path);
  // Node 20 cannot import TypeScript: strip the types into a sibling file (so relative imports
  // still resolve; a leading dot keeps it out of the step list), import that, remove it.
  const target = typescript ? join(dirname(path), `.${basename(path).replace(/\.m?ts$/, "")}.${checksum.slice(0, 12)}.turquoise.mjs`) : path;
  try {
    if (typescript) {
      const { transform } = await import("sucrase");
      const source = await readFile(path, "utf8");
      await writeFile(target, transform(source, { transforms: ["typescript"], filePath: path }).code);
    }
    // The checksum in the URL makes an edited file load afresh instead of from the module cache.
    ns = (await import(`${pathToFileURL(target).href}?checksum=${checksum}`)) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`cannot be loaded: ${errorMessage(e)}`);
  } finally {
    if (typescript) await rm(target, { force: true });
  }
  // A CommonJS .js file: its exports arrive as the default export.
  if (ns.up === undefined && typeof ns.default === "object" && ns.default !== null) return ns.default as Record<string, unknown>;
  return ns;
}

/** Loads a module step for running, and checks it is still the file that was read. */
export async function loadModule(step: MigrationStep): Promise<MigrationModule> {
  await assertUnchanged(step);
  const exports = await importModule(step.upFile, step.checksum);
  return exports as unknown as MigrationModule;
}

/** The SQL to run for a step, read now; the file must still be the one whose checksum was read. */
export async function readStepSql(step: MigrationStep, direction: "up" | "down"): Promise<string> {
  if (direction === "up") return stripBom((await assertUnchanged(step)).toString("utf8"));
  if (!step.downFile) throw new TurquoiseError("CONFLICT", `${basename(step.upFile)} has no down file`);
  const bytes = await readFile(step.downFile);
  const now = sha256(bytes);
  if (step.downChecksum !== undefined && now !== step.downChecksum) {
    throw new TurquoiseError("CONFLICT", `${basename(step.downFile)} changed after it was read (checksum ${short(step.downChecksum)}, now ${short(now)}); read the migrations again`);
  }
  return stripBom(bytes.toString("utf8"));
}

/** A backfill step's file, read now and split into its setup and its batched statement. */
export async function readBackfillSql(step: MigrationStep, direction: "up" | "down"): Promise<{ text: string; sql: BackfillSql }> {
  const text = await readStepSql(step, direction);
  try {
    return { text, sql: splitBackfillSql(text) };
  } catch (e) {
    throw stepFailed(step, direction, errorMessage(e));
  }
}

async function assertUnchanged(step: MigrationStep): Promise<Buffer> {
  const bytes = await readFile(step.upFile);
  const now = sha256(bytes);
  if (now !== step.checksum) {
    throw new TurquoiseError("CONFLICT", `${basename(step.upFile)} changed after it was read (checksum ${short(step.checksum)}, now ${short(now)}); read the migrations again`);
  }
  return bytes;
}

export function isModuleStep(step: MigrationStep): boolean {
  return !step.upFile.endsWith(".sql");
}

/** The file a message about this step in this direction should name. */
export function stepFile(step: MigrationStep, direction: "up" | "down"): string {
  if (direction === "down" && step.downFile && !isModuleStep(step)) return basename(step.downFile);
  return basename(step.upFile);
}

export function sha256(bytes: Buffer | string): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function short(checksum: string): string {
  return checksum.slice(0, 12);
}

function stripBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

// ---- decisions shared by the drivers -------------------------------------------------------------

/**
 * Applied rows without a down checksum (written by an older Turquoise, or before the down file
 * existed) whose step now has a down file: the run records the file as it is now, from then on
 * a change to it is caught like a change to an up file.
 */
export function downChecksumsToRecord(steps: MigrationStep[], applied: AppliedMigration[]): Array<{ version: number; downChecksum: string }> {
  const byVersion = new Map(steps.map((s) => [s.version, s]));
  return applied.flatMap((a) => {
    const step = byVersion.get(a.version);
    // A changed up file is a problem of its own: nothing about that step is recorded until it is solved.
    if (a.downChecksum !== null || !step || step.checksum !== a.checksum || step.downChecksum === undefined) return [];
    return [{ version: a.version, downChecksum: step.downChecksum }];
  });
}

/** Checks the steps a caller passes: ordered by version, each version once. */
export function orderSteps(steps: MigrationStep[]): MigrationStep[] {
  const ordered = [...steps].sort((a, b) => a.version - b.version);
  for (let i = 1; i < ordered.length; i++) {
    if (ordered[i]!.version === ordered[i - 1]!.version) {
      throw new TurquoiseError("USAGE", `two steps have version ${ordered[i]!.version}: ${basename(ordered[i - 1]!.upFile)} and ${basename(ordered[i]!.upFile)}`);
    }
  }
  return ordered;
}

/** Compares the directory with what the database recorded. */
export function computeStatus(steps: MigrationStep[], applied: AppliedMigration[]): MigrationStatus {
  const byVersion = new Map(steps.map((s) => [s.version, s]));
  const appliedVersions = new Set(applied.map((a) => a.version));
  const current = applied.reduce((max, a) => Math.max(max, a.version), 0);
  const problems: MigrationProblem[] = [];
  for (const a of applied) {
    const step = byVersion.get(a.version);
    if (!step) {
      problems.push({ version: a.version, message: `version ${a.version} (${a.name}) was applied, but its file is missing from the migrations directory` });
    } else if (step.checksum !== a.checksum) {
      problems.push({
        version: a.version,
        message: `${basename(step.upFile)} was changed after it was applied: checksum ${short(a.checksum)} when applied, ${short(step.checksum)} now; restore the file and add a new step instead`,
      });
    } else if (a.downChecksum !== null && !isModuleStep(step) && step.downChecksum !== a.downChecksum) {
      const downName = basename(step.upFile).replace(/\.up\.sql$/, ".down.sql");
      problems.push({
        version: a.version,
        message: step.downChecksum === undefined
          ? `${downName} was removed after its step was applied (checksum ${short(a.downChecksum)} when applied); restore it`
          : `${downName} was changed after its step was applied: checksum ${short(a.downChecksum)} when applied, ${short(step.downChecksum)} now; restore the file and add a new step instead`,
      });
    }
  }
  for (const s of steps) {
    if (s.version < current && !appliedVersions.has(s.version)) {
      problems.push({
        version: s.version,
        message: `${basename(s.upFile)} was never applied, but the later version ${current} was; give it a version above ${current}`,
      });
    }
  }
  return {
    current,
    applied: [...applied].sort((a, b) => a.version - b.version),
    pending: steps.filter((s) => s.version > current),
    problems: problems.sort((a, b) => a.version - b.version),
  };
}

function refuseProblems(status: MigrationStatus, direction: "up" | "down"): void {
  if (status.problems.length === 0) return;
  throw new TurquoiseError(
    "CONFLICT",
    `refusing to migrate ${direction}: ${status.problems.map((p) => p.message).join("; ")}`,
    { details: status.problems.map((p) => ({ message: p.message })), data: { problems: status.problems } },
  );
}

function checkTarget(to: number | undefined, direction: "up" | "down"): void {
  if (to === undefined && direction === "up") return;
  if (to === undefined || !Number.isSafeInteger(to) || to < 0) {
    throw new TurquoiseError("USAGE", `${direction} needs a target version that is a whole number 0 or above, not ${String(to)}`);
  }
}

/** The steps up would run, in order. Throws when anything blocks it. */
export function planUp(status: MigrationStatus, steps: MigrationStep[], to: number | undefined): MigrationStep[] {
  checkTarget(to, "up");
  refuseProblems(status, "up");
  if (to === undefined) return status.pending;
  if (to < status.current) throw new TurquoiseError("USAGE", `up to version ${to} is below the current version ${status.current}; use down`);
  if (to !== 0 && !steps.some((s) => s.version === to)) throw new TurquoiseError("USAGE", `up to version ${to}: no step has that version`);
  return status.pending.filter((s) => s.version <= to);
}

/** The steps down would revert, newest first. Throws, before anything runs, when one cannot be. */
export function planDown(status: MigrationStatus, steps: MigrationStep[], to: number): MigrationStep[] {
  checkTarget(to, "down");
  refuseProblems(status, "down");
  if (to > status.current) throw new TurquoiseError("USAGE", `down to version ${to} is above the current version ${status.current}; use up`);
  if (to !== 0 && !steps.some((s) => s.version === to)) throw new TurquoiseError("USAGE", `down to version ${to}: no step has that version`);
  const byVersion = new Map(steps.map((s) => [s.version, s]));
  const revert = status.applied
    .filter((a) => a.version > to)
    .sort((a, b) => b.version - a.version)
    .map((a) => byVersion.get(a.version)!);
  const blockers: string[] = [];
  for (const s of revert) {
    if (s.irreversible) blockers.push(`${basename(s.upFile)} is irreversible`);
    else if (!s.downFile) {
      blockers.push(isModuleStep(s) ? `${basename(s.upFile)} exports no down(db)` : `${basename(s.upFile)} has no down file (${basename(s.upFile).replace(/\.up\.sql$/, ".down.sql")})`);
    }
  }
  if (blockers.length > 0) {
    throw new TurquoiseError("CONFLICT", `cannot go down to version ${to}: ${blockers.join("; ")}`, {
      details: blockers.map((message) => ({ message })),
    });
  }
  return revert;
}

/** What a dry run reports: the plan, with nothing run. */
export function dryRunResult(status: MigrationStatus, plan: MigrationStep[], direction: "up" | "down", to: number): {
  from: number;
  to: number;
  steps: Array<{ version: number; name: string; direction: "up" | "down"; durationMs: number }>;
  dryRun: true;
} {
  return {
    from: status.current,
    to: direction === "up" ? (plan.length > 0 ? plan[plan.length - 1]!.version : status.current) : versionAfterDown(status, to),
    steps: plan.map((s) => ({ version: s.version, name: s.name, direction, durationMs: 0 })),
    dryRun: true,
  };
}

export function versionAfterDown(status: MigrationStatus, to: number): number {
  return status.applied.filter((a) => a.version <= to).reduce((max, a) => Math.max(max, a.version), 0);
}

/** Listeners must not be able to break a migration half-way. */
export function emitter(opts: MigrateOptions | undefined): (e: MigrationEvent) => void {
  const listener = opts?.onEvent;
  return (e) => {
    try {
      listener?.(e);
    } catch {
      // A listener's bug is not the migration's failure.
    }
  };
}

export function backoffMs(failedAttempt: number): number {
  return RETRY_BASE_DELAY_MS * 2 ** (failedAttempt - 1);
}

/** The error for a step that failed: it names the file and quotes the database. */
export function stepFailed(
  step: MigrationStep,
  direction: "up" | "down",
  reason: string,
  extra: { line?: number; data?: Record<string, unknown> } = {},
): TurquoiseError {
  const file = stepFile(step, direction);
  const label = isModuleStep(step) ? `${file} ${direction}()` : file;
  const path = direction === "down" && step.downFile ? step.downFile : step.upFile;
  return new TurquoiseError("MIGRATION_FAILED", `${label} failed: ${reason}`, {
    details: [{ file: path, ...(extra.line === undefined ? {} : { line: extra.line }), message: reason }],
    data: { version: step.version, direction, ...extra.data },
  });
}

/** Adds how far a failed run got, so a caller can report it and plan what comes next. */
export function withProgress(e: unknown, from: number, reached: number, done: Array<{ version: number }>): unknown {
  if (e instanceof TurquoiseError) Object.assign(e.data, { from, reached, completed: done.map((s) => s.version) });
  return e;
}

/**
 * Runs a plan's steps in order, one runStep each, with the events and the bookkeeping both drivers
 * need: where the database stands after each step, and on failure how far it got.
 */
export async function runSteps(
  status: MigrationStatus,
  plan: MigrationStep[],
  direction: "up" | "down",
  to: number | undefined,
  emit: (e: MigrationEvent) => void,
  runStep: (step: MigrationStep) => Promise<void>,
): Promise<MigrationRun> {
  const done: MigrationRun["steps"] = [];
  let at = status.current;
  for (const step of plan) {
    emit({ type: "step-started", version: step.version, name: step.name, direction });
    const started = performance.now();
    try {
      await runStep(step);
    } catch (e) {
      throw withProgress(e, status.current, at, done);
    }
    const durationMs = Math.round(performance.now() - started);
    done.push({ version: step.version, name: step.name, direction, durationMs });
    at = direction === "up" ? step.version : status.applied.filter((a) => a.version < step.version).reduce((max, a) => Math.max(max, a.version), 0);
    emit({ type: "step-done", version: step.version, name: step.name, direction, durationMs });
  }
  const final = direction === "up" ? at : plan.length > 0 ? versionAfterDown(status, to!) : status.current;
  return { from: status.current, to: final, steps: done, dryRun: false };
}
