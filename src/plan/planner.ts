// The planner: from schema ranges, the database version and the migration steps to the ordered
// actions of a deploy or rollback (DESIGN.md, "Schema-compatibility planning"). Pure: no I/O, no
// clock, so `turquoise plan` prints exactly what a deploy would do and every rule is unit-tested.
//
// One invariant decides everything: at every moment, each release that serves traffic runs on the
// database's current schema version. A release R "covers" a migration v → w when v, w ∈ S(R);
// ranges are contiguous, so it then runs on every version in between. The paths, best first:
//   1. direct: the target T covers v → w. T starts on v; expand steps the live release L also runs
//      on go before the flip, the rest after it. With nothing live, migrate first, then start T.
//   2. via the live release: L covers v → w, so L itself is the turquoise release.
//   3. via --via R: R covers v → w. L → R, migrate, re-check R, R → T.
// Otherwise: refuse, naming which release lacks which version and what R must support.

import { TurquoiseError } from "../errors.js";

export interface SchemaRange {
  min: number;
  max: number;
}

export interface ReleaseInfo {
  name: string;
  schema: SchemaRange;
}

/** The part of a MigrationStep (src/migrate/contract.ts) that planning needs. */
export interface StepInfo {
  version: number;
  name: string;
  phase: "expand" | "contract";
  hasDown: boolean;
  irreversible: boolean;
}

export interface PlanInput {
  kind: "deploy" | "rollback";
  /** null: nothing live yet. */
  live: ReleaseInfo | null;
  target: ReleaseInfo;
  /** --via <turquoise release> */
  via?: ReleaseInfo;
  /** Database schema version now: the highest applied step; 0 for an empty database. */
  current: number;
  /** Every step known in the migrations dir (applied and pending). */
  steps: StepInfo[];
  /** Schema version the target wants; default: the highest known step version within target.schema (or current if none). */
  targetVersion?: number;
}

export type PlanAction =
  /** Start, health-check and smoke the release in the idle slot. */
  | { do: "start"; release: string }
  /** Includes verify, drain and retire of the old release. */
  | { do: "flip"; from: string | null; to: string }
  | { do: "migrate"; from: number; to: number; direction: "up" | "down"; steps: string[]; phase: "expand" | "contract" | "both" }
  /** Health and smoke of the live turquoise release again, after a migration under it. */
  | { do: "recheck"; release: string };

export type Plan =
  | { ok: true; shape: "flip-only" | "expand-flip-contract" | "via-turquoise"; actions: PlanAction[]; from: number; to: number; summary: string[] }
  | { ok: false; reasons: string[]; need?: SchemaRange };

type Direction = "up" | "down" | "none";

/** What every path builder needs, computed once. */
interface Ctx {
  input: PlanInput;
  v: number;
  w: number;
  direction: Direction;
  /** The steps that run, in the order they run (descending when down). */
  run: StepInfo[];
  /** The known steps, ascending. */
  steps: StepInfo[];
}

export function planPath(input: PlanInput): Plan {
  const steps = checkedSteps(input.steps);
  const v = input.current;
  if (!isVersion(v)) throw new TurquoiseError("INTERNAL", `planner: the database version must be a whole number from 0, got ${v}`);

  // Ranges and --to come from people (release manifests, flags): refuse, don't throw.
  const invalid = [
    ...rangeProblems(`target "${input.target.name}"`, input.target.schema),
    ...(input.live ? rangeProblems(`live "${input.live.name}"`, input.live.schema) : []),
    ...(input.via ? rangeProblems(`turquoise release "${input.via.name}"`, input.via.schema) : []),
  ];
  if (input.via && input.via.name === input.target.name) {
    invalid.push(`--via "${input.via.name}" is the target itself: a turquoise release must be another release`);
  }
  if (invalid.length > 0) return { ok: false, reasons: invalid };

  const wanted = targetVersion(input, steps);
  if (typeof wanted !== "number") return { ok: false, reasons: [wanted.reason] };
  const w = wanted;
  const direction: Direction = w > v ? "up" : w < v ? "down" : "none";
  const run =
    direction === "up" ? steps.filter((s) => s.version > v && s.version <= w)
    : direction === "down" ? steps.filter((s) => s.version > w && s.version <= v).reverse()
    : [];
  const ctx: Ctx = { input, v, w, direction, run, steps };

  // No release can fix these, so no turquoise release is suggested.
  const hard = hardProblems(ctx, input.targetVersion !== undefined);
  if (hard.length > 0) return { ok: false, reasons: hard };

  if (input.via) return viaPlan(ctx, input.via);
  if (!input.live) return freshPlan(ctx);
  if (covers(input.target.schema, v)) return directPlan(ctx, input.live);
  if (covers(input.live.schema, v) && covers(input.live.schema, w)) return liveCarriesPlan(ctx, input.live);
  return needsTurquoise(ctx, input.live);
}

/** Human lines: the summary and numbered actions, or the refusal with its reasons. */
export function describePlan(plan: Plan): string[] {
  if (!plan.ok) return ["refused:", ...plan.reasons.map((r) => `  - ${r}`)];
  const lines = [...plan.summary];
  // Tracks the schema version as the actions walk it, so a re-check can say which one it proves.
  let version = plan.from;
  for (const [i, a] of plan.actions.entries()) {
    const n = `  ${i + 1}. `;
    switch (a.do) {
      case "start":
        lines.push(`${n}start "${a.release}" in the idle slot: health, smoke`);
        break;
      case "flip":
        lines.push(a.from === null ? `${n}flip traffic to "${a.to}": verify` : `${n}flip "${a.from}" → "${a.to}": verify, drain, retire "${a.from}"`);
        break;
      case "migrate":
        lines.push(`${n}migrate ${a.direction} ${a.from} → ${a.to} (${a.phase}): ${a.steps.join(", ")}`);
        version = a.to;
        break;
      case "recheck":
        lines.push(`${n}recheck "${a.release}" on schema ${version}: health, smoke`);
        break;
    }
  }
  return lines;
}

// ---------------------------------------------------------------------------------------------
// Paths

/** T covers v and w. */
function directPlan(ctx: Ctx, live: ReleaseInfo): Plan {
  const { input, v, w, direction, run } = ctx;
  const t = input.target.name;
  const actions: PlanAction[] = [{ do: "start", release: t }];
  const pathLine = `"${t}" runs on schema ${fmt(input.target.schema)}, ${v === w ? `which covers ${v}` : `which covers ${v} and ${w}`}: no turquoise release needed`;
  if (direction === "up") {
    // Expand steps run before the flip while both releases run on them: a failure there leaves the
    // live release untouched. The first step L cannot run on (or the first contract step) waits
    // until T serves alone; T covers the rest, so this is safe even when L covers none of them.
    let split = 0;
    while (split < run.length && run[split]!.phase === "expand" && covers(live.schema, run[split]!.version)) split++;
    const pre = run.slice(0, split);
    const post = run.slice(split);
    const mid = pre.length > 0 ? pre[pre.length - 1]!.version : v;
    if (pre.length > 0) actions.push(migrate(v, mid, "up", pre));
    actions.push({ do: "flip", from: live.name, to: t });
    if (post.length > 0) actions.push(migrate(mid, w, "up", post));
  } else {
    // Down steps remove what the newer live release relies on, so they wait until T serves alone.
    actions.push({ do: "flip", from: live.name, to: t });
    if (direction === "down") actions.push(migrate(v, w, "down", run));
  }
  return ok(ctx, direction === "none" ? "flip-only" : "expand-flip-contract", actions, [pathLine]);
}

/** Nothing live: nobody can see a half-migrated schema, so T starts on the final one and is smoked there. */
function freshPlan(ctx: Ctx): Plan {
  const { input, v, w, direction, run } = ctx;
  const t = input.target.name;
  const actions: PlanAction[] = [];
  if (direction !== "none") actions.push(migrate(v, w, direction, run));
  actions.push({ do: "start", release: t }, { do: "flip", from: null, to: t });
  const line = direction === "none" ? `nothing is live: start "${t}" on schema ${w}` : `nothing is live: migrate first, then start "${t}" on schema ${w}`;
  return ok(ctx, direction === "none" ? "flip-only" : "expand-flip-contract", actions, [line]);
}

/** L covers v and w: it is already the turquoise release, so nothing extra starts. */
function liveCarriesPlan(ctx: Ctx, live: ReleaseInfo, notes: string[] = []): Plan {
  const { input, v, w, direction, run } = ctx;
  const t = input.target.name;
  const actions: PlanAction[] = [];
  if (direction !== "none") actions.push(migrate(v, w, direction, run, "both"), { do: "recheck", release: live.name });
  actions.push({ do: "start", release: t }, { do: "flip", from: live.name, to: t });
  const line = `live "${live.name}" runs on schema ${fmt(live.schema)}, which covers ${v} and ${w}: it carries the migration as the turquoise release`;
  return ok(ctx, "via-turquoise", actions, [line, ...notes]);
}

function viaPlan(ctx: Ctx, via: ReleaseInfo): Plan {
  const { input, v, w, direction, run } = ctx;
  const live = input.live;
  const lacks: string[] = [];
  if (!covers(via.schema, v)) lacks.push(`turquoise release "${via.name}" runs on schema ${fmt(via.schema)} but the database is at ${v}`);
  if (!covers(via.schema, w)) lacks.push(`turquoise release "${via.name}" runs on schema ${fmt(via.schema)} but the target "${input.target.name}" needs ${w}`);
  const withoutVia = noViaPath(ctx);
  if (lacks.length > 0) {
    if (withoutVia !== null) lacks.push(`without --via this ${input.kind} has a safe path`);
    return { ok: false, reasons: lacks };
  }

  // The user asked for this path: honour it, but say when it was not needed.
  const notes: string[] = [];
  if (withoutVia === "direct") notes.push(`note: a direct path existed; --via "${via.name}" was honoured as asked`);
  if (withoutVia === "live") notes.push(`note: live "${live!.name}" could have carried the migration without --via`);

  // Via the live release itself: it already serves, so there is nothing to start or flip to.
  if (live && live.name === via.name) return liveCarriesPlan(ctx, { name: live.name, schema: via.schema }, notes);

  const actions: PlanAction[] = [
    { do: "start", release: via.name },
    { do: "flip", from: live?.name ?? null, to: via.name },
  ];
  if (direction !== "none") actions.push(migrate(v, w, direction, run, "both"), { do: "recheck", release: via.name });
  actions.push({ do: "start", release: input.target.name }, { do: "flip", from: via.name, to: input.target.name });
  const line = `turquoise release "${via.name}" runs on schema ${fmt(via.schema)}, which covers ${v} and ${w}`;
  return ok(ctx, "via-turquoise", actions, [line, ...notes]);
}

function needsTurquoise(ctx: Ctx, live: ReleaseInfo): Plan {
  const { input, v, w } = ctx;
  const reasons = [`target "${input.target.name}" runs on schema ${fmt(input.target.schema)} but the database is at ${v}`];
  const gap = firstUncovered(ctx, live.schema);
  if (gap) reasons.push(`live "${live.name}" runs on schema ${fmt(live.schema)} ${gap}`);
  const need = { min: Math.min(v, w), max: Math.max(v, w) };
  const verb = input.kind === "deploy" ? "deploy" : "roll back";
  reasons.push(`a turquoise release supporting schema ${fmt(need)} would make this safe: ${verb} with --via <release>`);
  return { ok: false, reasons, need };
}

/** Which path exists without --via, so a --via plan can say it was not needed. */
function noViaPath(ctx: Ctx): "direct" | "live" | null {
  const { input, v, w } = ctx;
  if (!input.live || covers(input.target.schema, v)) return "direct";
  if (covers(input.live.schema, v) && covers(input.live.schema, w)) return "live";
  return null;
}

// ---------------------------------------------------------------------------------------------
// Checks

/** The version the target wants, or why it is not one the migrations can reach. */
function targetVersion(input: PlanInput, steps: StepInfo[]): number | { reason: string } {
  const v = input.current;
  const highest = steps.length > 0 ? steps[steps.length - 1]!.version : 0;
  const w = input.targetVersion;
  if (w === undefined) {
    // The version is the highest applied step, so the database can only ever land on a step's
    // version (or 0): never aim for a version in a gap.
    const max = input.target.schema.max;
    const below = steps.filter((s) => s.version <= max);
    const top = below.length > 0 ? below[below.length - 1]!.version : 0;
    // A database ahead of the known steps but still in range stays where it is: never walk down unasked.
    return v <= max ? Math.max(v, top) : top;
  }
  if (!isVersion(w)) return { reason: `target version ${w} is not a schema version: versions are whole numbers from 0` };
  if (w === v || w === 0 || steps.some((s) => s.version === w)) return w;
  if (w > highest) {
    return { reason: `no migration step reaches version ${w} (${steps.length > 0 ? `the highest known step is ${highest}` : "no migration steps are known"})` };
  }
  const before = steps.filter((s) => s.version < w);
  const after = steps.find((s) => s.version > w)!;
  const lower = before.length > 0 ? before[before.length - 1]!.version : 0;
  return { reason: `no migration step has version ${w}: the database can be at ${lower} or ${after.version}, not in between` };
}

/** Problems no turquoise release can solve: T not running on w, steps that cannot be reverted. */
function hardProblems(ctx: Ctx, explicitTarget: boolean): string[] {
  const { input, v, w, direction, run, steps } = ctx;
  const t = input.target;
  const problems: string[] = [];
  if (!covers(t.schema, w)) {
    problems.push(
      explicitTarget
        ? `target "${t.name}" runs on schema ${fmt(t.schema)} but the target version is ${w}`
        : `target "${t.name}" runs on schema ${fmt(t.schema)} but no migration step has a version in ${fmt(t.schema)}`,
    );
  }
  if (direction === "down") {
    // The applied step v is missing from this migrations dir: there is no down file to run.
    if (!steps.some((s) => s.version === v)) problems.push(`the database is at ${v} but no migration step ${v} is known here, so it cannot be walked down`);
    for (const s of run) {
      if (s.irreversible) problems.push(`step ${label(s)} is irreversible: it destroyed what "${t.name}" needs`);
      else if (!s.hasDown) problems.push(`step ${label(s)} has no down migration`);
    }
  }
  return problems;
}

/** Why `schema` cannot carry the migration: the first version on the path it does not run on. */
function firstUncovered(ctx: Ctx, schema: SchemaRange): string | null {
  const { v, run, direction, steps } = ctx;
  if (!covers(schema, v)) return `but the database is at ${v}`;
  for (const s of run) {
    // Reverting a step lands on the highest known step below it; applying one lands on itself.
    const at = direction === "up" ? s.version : versionBelow(steps, s.version);
    if (covers(schema, at)) continue;
    return direction === "up"
      ? `and would have to run on ${at} during the ${s.phase} step ${label(s)}`
      : `and would have to run on ${at} after reverting step ${label(s)}`;
  }
  return null;
}

function checkedSteps(steps: StepInfo[]): StepInfo[] {
  const sorted = [...steps].sort((a, b) => a.version - b.version);
  for (const [i, s] of sorted.entries()) {
    // The loader guarantees these; a violation is a bug upstream, not bad user input.
    if (!isVersion(s.version) || s.version === 0) throw new TurquoiseError("INTERNAL", `planner: step "${s.name}" has version ${s.version}; versions are whole numbers from 1`);
    if (i > 0 && sorted[i - 1]!.version === s.version) {
      throw new TurquoiseError("INTERNAL", `planner: two steps have version ${s.version} ("${sorted[i - 1]!.name}" and "${s.name}")`);
    }
  }
  return sorted;
}

function rangeProblems(who: string, r: SchemaRange): string[] {
  if (!isVersion(r.min) || !isVersion(r.max)) return [`${who} has an invalid schema range ${fmt(r)}: versions are whole numbers from 0`];
  if (r.min > r.max) return [`${who} has an invalid schema range ${fmt(r)}: min is above max`];
  return [];
}

// ---------------------------------------------------------------------------------------------
// Small helpers

function ok(ctx: Ctx, shape: "flip-only" | "expand-flip-contract" | "via-turquoise", actions: PlanAction[], lines: string[]): Plan {
  return { ok: true, shape, actions, from: ctx.v, to: ctx.w, summary: [heading(ctx), ...lines] };
}

function heading(ctx: Ctx): string {
  const { input, v, w } = ctx;
  const t = input.target.name;
  const live = input.live;
  const schema = v === w ? `schema stays at ${v}` : `schema ${v} → ${w}`;
  if (input.kind === "rollback") return `roll back to "${t}" ${live ? `from "${live.name}"` : "with nothing live"}, ${schema}`;
  if (live && live.name === t) return `redeploy "${t}", ${schema}`;
  return `deploy "${t}" ${live ? `over "${live.name}"` : "with nothing live"}, ${schema}`;
}

function migrate(from: number, to: number, direction: "up" | "down", steps: StepInfo[], phase?: "both"): PlanAction {
  return { do: "migrate", from, to, direction, steps: steps.map(label), phase: phase ?? phaseOf(steps) };
}

function phaseOf(steps: StepInfo[]): "expand" | "contract" | "both" {
  if (steps.every((s) => s.phase === "expand")) return "expand";
  if (steps.every((s) => s.phase === "contract")) return "contract";
  return "both";
}

/** The database version once every step at or above `version` is reverted. */
function versionBelow(steps: StepInfo[], version: number): number {
  let below = 0;
  for (const s of steps) if (s.version < version) below = s.version;
  return below;
}

/** Like the migration file names, so an operator can find the file: 0003_drop_name. */
function label(s: StepInfo): string {
  return `${String(s.version).padStart(4, "0")}_${s.name}`;
}

function covers(r: SchemaRange, version: number): boolean {
  return r.min <= version && version <= r.max;
}

function isVersion(n: number): boolean {
  return Number.isInteger(n) && n >= 0;
}

function fmt(r: SchemaRange): string {
  return `${r.min}..${r.max}`;
}

/**
 * Why a plan cannot go out in canary steps, or undefined when it can: both releases must run on
 * the schema the database has now, since both take traffic at once for the whole canary.
 */
export function canaryRefusal(actions: readonly PlanAction[], live: ReleaseInfo | null, target: ReleaseInfo, current: number | null): string | undefined {
  const starts = actions.filter((a) => a.do === "start");
  if (starts.length > 1) return `a canary needs both releases on the current schema, and this plan walks through a turquoise release (${starts.map((a) => (a as { release: string }).release).join(" → ")})`;
  const m = actions.find((a): a is Extract<PlanAction, { do: "migrate" }> => a.do === "migrate");
  if (m && m.phase !== "contract") return `a canary needs both releases on the current schema, and this plan migrates ${m.direction} from version ${m.from} to ${m.to} before its flip`;
  if (current !== null) {
    for (const r of [live, target]) {
      if (r && (current < r.schema.min || current > r.schema.max)) return `a canary needs both releases on the current schema ${current}, and ${r.name} runs on ${r.schema.min}..${r.schema.max}`;
    }
  }
  return undefined;
}
