// One journaled step of a flow: the progress it reports, how it fails, and the runner that
// journals it before and after it runs, so that an agent that restarts knows where a flow stood.
// Each step starts at a boundary where the flow makes sure it still holds its deploy lock.
import { errorMessage } from "../errors.js";
import type { Scrubber } from "../log/scrub.js";
import type { BackfillProgress } from "../migrate/contract.js";
import type { SchemaRange } from "../plan/planner.js";
import type { CanarySpec, ServiceSpec } from "../spec/types.js";
import type { StepTiming } from "../state/contract.js";
import type { ServiceDatabase } from "./database.js";
import type { DeployLock } from "./lock.js";
import type { Journal, Records } from "./records.js";

export type StepStatus = "started" | "done" | "failed" | "skipped";

export type Progress =
  | { type: "plan"; service: string; kind: "deploy" | "rollback"; release: string; via: string | null; from: string | null; steps: string[] }
  | { type: "step"; name: string; status: StepStatus; durationMs?: number; detail?: string }
  | { type: "info"; message: string }
  /** A running backfill, a few times a second: for a live progress bar. */
  | ({ type: "progress" } & Omit<BackfillProgress, "type">);

/** A step that failed for a reason an operator can act on; output holds what the step saw (logs, a check's answer). */
export class StepFailure extends Error {
  /** figures: what a judged step measured (a bake window's requests, failures and exits). */
  constructor(readonly step: string, message: string, readonly output?: string, readonly figures?: Record<string, unknown>) {
    super(message);
  }
}

/** One flow under way: its lock, its journal, its step timings, where it reports progress. */
export interface Flow {
  svc: ServiceSpec;
  kind: "deploy" | "rollback";
  lock: DeployLock;
  /** The records as this flow writes them: every write fenced by its lock. */
  records: Records;
  /** Passed right after each journal write, with the entry written: where an agent may die (deps.ts). */
  failpoint: (point: string) => void;
  journal: Journal;
  steps: StepTiming[];
  emit: (p: Progress) => void;
  db?: ServiceDatabase;
  schemas: Record<string, SchemaRange>;
  /** True once any flip of this flow happened: a later failure cannot simply be undone. */
  flipped: boolean;
  /** Whether the schema changes after a flip in this flow: then an old slot must not stay warm. */
  schemaChangesLater: (index: number) => boolean;
  /** The spec's secrets: what a step saw (an app's output, a check's answer) is scrubbed before it is shown or recorded. */
  scrubber: Scrubber;
  /** The canary steps this deploy goes through before its flip. */
  canary?: CanarySpec;
}

/**
 * Runs one journaled step: "started" is written before it runs, "done" after. A flow that lost
 * its lock stops here, before the step, and the journal stays as it was for recovery.
 */
export async function runStep<T>(flow: Flow, name: string, fn: () => Promise<T>): Promise<T> {
  const { journal, steps, emit, records } = flow;
  await flow.lock.check();
  const startedAt = Date.now();
  journal.steps.push(`${name}:started`);
  await records.writeJournal(journal);
  flow.failpoint(`${name}:started`);
  emit({ type: "step", name, status: "started" });
  try {
    const out = await fn();
    const durationMs = Date.now() - startedAt;
    journal.steps.push(`${name}:done`);
    await records.writeJournal(journal);
    flow.failpoint(`${name}:done`);
    const detail = typeof out === "string" ? out : undefined;
    steps.push({ name, startedAt, durationMs, ok: true, ...(detail ? { detail } : {}) });
    emit({ type: "step", name, status: "done", durationMs, ...(detail ? { detail } : {}) });
    return out;
  } catch (caught) {
    const durationMs = Date.now() - startedAt;
    // From here on it goes to the history, the events and the caller: apps print their secrets more often than one would like.
    const e = caught instanceof StepFailure ? new StepFailure(caught.step, flow.scrubber.text(caught.message), caught.output === undefined ? undefined : flow.scrubber.text(caught.output), caught.figures) : caught;
    const detail = e instanceof StepFailure && e.output ? `${e.message}\n${e.output}` : errorMessage(e);
    steps.push({ name, startedAt, durationMs, ok: false, detail });
    emit({ type: "step", name, status: "failed", durationMs, detail });
    throw e;
  }
}

export function skipStep(flow: Flow, name: string, why: string): void {
  flow.steps.push({ name, startedAt: Date.now(), durationMs: 0, ok: true, detail: `skipped: ${why}` });
  flow.emit({ type: "step", name, status: "skipped", durationMs: 0, detail: why });
}
