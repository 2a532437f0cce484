// One validator per kind of record the agent keeps: each says what is wrong with a stored value,
// or nothing. Records are checked whenever they are read, so a corrupt or forged value is set
// aside instead of being acted on (a signal, a route, an orphan stop).
import { SLOTS, type Slot } from "../runtime/contract.js";
import { RELEASE_NAME } from "./release.js";

/** A problem with a value, in words an operator can act on; undefined when it is fine. */
export type Problem = string | undefined;

/** The value, shortened, as a problem message may quote it. */
export function quote(v: unknown): string {
  const text = typeof v === "string" ? JSON.stringify(v) : v === undefined ? "nothing" : JSON.stringify(v) ?? String(v);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Parses JSON and checks it is an object; the problem says which. */
export function parseObject(text: string): { ok: true; value: Record<string, unknown> } | { ok: false; problem: string } {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { ok: false, problem: `not JSON: ${quote(text)}` };
  }
  return isObject(v) ? { ok: true, value: v } : { ok: false, problem: `not a JSON object: ${quote(text)}` };
}

type FieldCheck = (v: unknown) => boolean;

const str: FieldCheck = (v) => typeof v === "string" && v.length > 0 && v.length <= 1_000;
const release: FieldCheck = (v) => typeof v === "string" && RELEASE_NAME.test(v);
const time: FieldCheck = (v) => typeof v === "number" && Number.isFinite(v) && v >= 0;
const slot: FieldCheck = (v) => typeof v === "string" && (SLOTS as readonly string[]).includes(v);
const int: FieldCheck = (v) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
const schema: FieldCheck = (v) => isObject(v) && int(v.min) && int(v.max) && (v.min as number) <= (v.max as number);
const optional = (check: FieldCheck): FieldCheck => (v) => v === undefined || check(v);
const nullable = (check: FieldCheck): FieldCheck => (v) => v === null || check(v);
const oneOf = (...values: string[]): FieldCheck => (v) => typeof v === "string" && values.includes(v);

/** The first field that fails its check, named with the value it holds. */
function fields(o: Record<string, unknown>, checks: Record<string, FieldCheck>): Problem {
  for (const [name, check] of Object.entries(checks)) {
    if (!check(o[name])) return `field ${name} is ${quote(o[name])}`;
  }
  return undefined;
}

export function colorProblem(value: string): Problem {
  return slot(value) ? undefined : `${quote(value)} is not a slot (blue or green)`;
}

export function isSlot(value: unknown): value is Slot {
  return slot(value);
}

export function slotProblem(o: Record<string, unknown>, expected: Slot): Problem {
  const p = fields(o, {
    slot, release, poolId: str, state: oneOf("preview", "held", "live", "warm"), startedAt: time, warmUntil: optional(time), schema: optional(schema),
    heldBy: optional((v) => isObject(v) && int(v.historyId) && time(v.since) && str(v.actor)),
  });
  if (p) return p;
  return o.slot === expected ? undefined : `it names slot ${quote(o.slot)}, but is stored as ${expected}`;
}

export function previousProblem(o: Record<string, unknown>): Problem {
  return fields(o, { release, via: nullable(release) });
}

export function degradedProblem(o: Record<string, unknown>): Problem {
  return fields(o, { since: time, slot, release, reason: str });
}

export function journalProblem(o: Record<string, unknown>, service: string): Problem {
  const p = fields(o, {
    historyId: int, service: str, kind: oneOf("deploy", "rollback"), release, via: nullable(release), actor: str, owner: str,
    previousRelease: nullable(release), startedAt: time,
    steps: (v) => Array.isArray(v) && v.length <= 1_000 && v.every((s) => typeof s === "string" && /^[a-z-]+:(started|done)$/.test(s)),
  });
  if (p) return p;
  return o.service === service ? undefined : `it names service ${quote(o.service)}, but is stored under ${service}`;
}

/** Runtimes an instance record (or intent) may name; memory is the in-process twin that tests run the agent's parts on. */
const RECORDED_RUNTIMES = ["process", "docker", "swarm", "memory"];

export function instanceProblem(o: Record<string, unknown>, service: string, id: string): Problem {
  if (o.state === "starting") return intentProblem(o, service, id);
  const p = fields(o, {
    id: str, service: str, slot, release, host: str, port: (v) => int(v) && (v as number) < 65_536,
    ref: str, startedAt: time, runtime: optional(oneOf(...RECORDED_RUNTIMES)), logFile: optional(str), procStartTicks: optional(int),
  });
  if (p) return p;
  if (o.service !== service || o.id !== id) return `it names ${quote(o.service)}/${quote(o.id)}, but is stored as ${service}/${id}`;
  // A process instance is a pid the agent will signal: never 0, 1 or a process group.
  if ((o.runtime ?? "process") === "process" && !/^[1-9][0-9]*$/.test(o.ref as string)) return `field ref is ${quote(o.ref)}, not a pid`;
  if ((o.runtime ?? "process") === "process" && Number(o.ref) <= 1) return `field ref is ${quote(o.ref)}, a pid the agent never signals`;
  return undefined;
}

/** An instance recorded before it was started: no address or ref yet, nothing to signal by it. */
function intentProblem(o: Record<string, unknown>, service: string, id: string): Problem {
  const p = fields(o, { id: str, service: str, slot, release, runtime: oneOf(...RECORDED_RUNTIMES), state: oneOf("starting"), recordedAt: time });
  if (p) return p;
  return o.service !== service || o.id !== id ? `it names ${quote(o.service)}/${quote(o.id)}, but is stored as ${service}/${id}` : undefined;
}

export function tableVersionProblem(value: string): Problem {
  return /^[0-9]{1,16}$/.test(value) ? undefined : `${quote(value)} is not a route table version`;
}
