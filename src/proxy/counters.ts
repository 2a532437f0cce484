// The data plane's request counters for Prometheus: one series per service and slot, plain numbers
// and a fixed-bucket duration histogram, counted on the hot path without allocating. The agent
// turns a snapshot of them into the text format (src/metrics/proxy.ts).

import type { RequestSeriesCounts } from "./contract.js";

/** The status classes a response is counted under, by index: no response at all (the client left, or it was cut), then 1xx to 5xx. */
export const STATUS_CLASSES = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"] as const;

/** Prometheus' default buckets (seconds): a proxied request takes from a millisecond to the upstream timeout. */
export const DURATION_BUCKETS_S: readonly number[] = Object.freeze([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]);

/**
 * Series beyond this many go to one series labelled OVERFLOW_SERVICE. Services come from the
 * agent's table, not from clients, so only a table with thousands of services gets there.
 */
export const MAX_SERIES = 1_000;
export const OVERFLOW_SERVICE = "_other";

export class RequestSeries {
  readonly service: string;
  readonly slot: string;
  /** Indexed as STATUS_CLASSES. */
  readonly statuses = [0, 0, 0, 0, 0, 0];
  /** Per bucket of DURATION_BUCKETS_S, not cumulative, +Inf last. */
  readonly durations: number[] = new Array<number>(DURATION_BUCKETS_S.length + 1).fill(0);
  durationSum = 0;
  upstreamErrors = 0;
  retries = 0;

  constructor(service: string, slot: string) {
    this.service = service;
    this.slot = slot;
  }

  /** One answered request: status 0 when nothing was answered; ms since it arrived (performance.now()). */
  record(status: number, ms: number): void {
    // A status above 599 is no standard one: an upstream that sends it is counted as failing.
    const c = (status / 100) | 0;
    this.statuses[c > 5 ? 5 : c]!++;
    const s = ms / 1000;
    this.durationSum += s;
    const buckets = DURATION_BUCKETS_S;
    let i = 0;
    while (i < buckets.length && s > buckets[i]!) i++;
    this.durations[i]!++;
  }

  snapshot(): RequestSeriesCounts {
    return {
      service: this.service,
      slot: this.slot,
      statuses: [...this.statuses],
      durations: [...this.durations],
      durationSum: this.durationSum,
      upstreamErrors: this.upstreamErrors,
      retries: this.retries,
    };
  }
}

/** Every series this data plane counted, kept for its life: a counter must not vanish with its pool. */
export class SeriesSet {
  /** Requests answered before any route took them (no route, no or several Host headers). */
  readonly unrouted = new RequestSeries("", "");
  private readonly byKey = new Map<string, RequestSeries>();
  private overflow: RequestSeries | undefined;

  /** The series of a service and slot, made on first use (never per request: pools keep theirs). */
  get(service: string, slot = ""): RequestSeries {
    const key = `${service}\n${slot}`;
    let s = this.byKey.get(key);
    if (!s) {
      if (this.byKey.size >= MAX_SERIES) return (this.overflow ??= new RequestSeries(OVERFLOW_SERVICE, ""));
      this.byKey.set(key, (s = new RequestSeries(service, slot)));
    }
    return s;
  }

  /** The series of routes (not the unrouted one). */
  routed(): RequestSeries[] {
    return this.overflow ? [...this.byKey.values(), this.overflow] : [...this.byKey.values()];
  }

  snapshot(): RequestSeriesCounts[] {
    return [this.unrouted, ...this.routed()].map((s) => s.snapshot());
  }
}
