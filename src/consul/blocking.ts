// Consul's blocking-query parameters as Consul reads them: ?index= from an earlier X-Consul-Index,
// ?wait= as a Go duration ("30s", "2m0s", "120000ms"), capped at 10 minutes; and the cap on how
// many blocking queries the Consul API holds at once.
import { TurquoiseError } from "../errors.js";
import { DEFAULT_BLOCKING_WAIT_MS, MAX_BLOCKING_WAIT_MS } from "../api/registry.js";

const GO_UNIT_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, "µs": 1e-3, "μs": 1e-3, ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
// Go's time.ParseDuration grammar: a sign, then one or more number-unit pairs ("1h2m3.5s").
const GO_DURATION = /^[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$/;
const GO_PART = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g;
/** Longer than any duration a client means; refused before the regex sees it. */
const MAX_DURATION_TEXT = 64;
/** An index is a uint64 in Consul; ours stays far below 2^53, and a longer number is not one we gave. */
const INDEX_PATTERN = /^\d{1,15}$/;
/** Consul spreads the wake-ups of queries that time out together by up to 1/16 of their wait. */
const JITTER_FRACTION = 16;

/** A Go duration in milliseconds (Infinity when it overflows); a usage error naming the text when it is not one. */
export function parseGoDuration(text: string): number {
  if (text === "0" || text === "+0" || text === "-0") return 0;
  if (text.length > MAX_DURATION_TEXT || !GO_DURATION.test(text)) {
    throw new TurquoiseError("USAGE", `Invalid wait time "${text.slice(0, MAX_DURATION_TEXT)}": write a duration with a unit, as Go does: "30s", "5m", "120000ms"`);
  }
  let ms = 0;
  for (const [, n, unit] of text.matchAll(GO_PART)) ms += Number(n) * GO_UNIT_MS[unit!]!;
  return text.startsWith("-") ? -ms : ms;
}

export interface BlockingQuery {
  /** Answer once the registry's index is past this one. */
  index: number;
  /** ...or once this runs out: the wait capped at 10 minutes, less up to 1/16 of jitter. */
  waitMs: number;
}

/**
 * ?index= and ?wait=, checked as Consul checks them: a bad one is a 400 even when the query
 * would not block. Undefined when it does not block (no ?index=, or 0). A wait of 0 or less means
 * the default (5 minutes), as in Consul. The jitter comes off the wait rather than on top, so the
 * 10-minute cap holds; a shorter wait than asked is always safe for a client.
 */
export function blockingQuery(query: URLSearchParams, random: () => number = Math.random): BlockingQuery | undefined {
  const wait = query.get("wait");
  let waitMs = DEFAULT_BLOCKING_WAIT_MS;
  if (wait !== null) {
    const asked = parseGoDuration(wait);
    if (asked > 0) waitMs = Math.min(asked, MAX_BLOCKING_WAIT_MS);
  }
  const index = query.get("index");
  if (index === null) return undefined;
  if (!INDEX_PATTERN.test(index)) throw new TurquoiseError("USAGE", `Invalid index "${index.slice(0, 40)}": send the X-Consul-Index of an earlier answer`);
  if (Number(index) === 0) return undefined;
  return { index: Number(index), waitMs: Math.max(1, Math.round(waitMs - (random() * waitMs) / JITTER_FRACTION)) };
}

/** How many blocking queries are held at once, up to a cap: past it, a query is refused, not queued. */
export class BlockingSlots {
  private held = 0;

  constructor(readonly max: number) {}

  get inUse(): number {
    return this.held;
  }

  /** Takes a slot; false when all are held. */
  take(): boolean {
    if (this.held >= this.max) return false;
    this.held++;
    return true;
  }

  give(): void {
    this.held = Math.max(0, this.held - 1);
  }
}
