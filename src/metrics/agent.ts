// The agent's Prometheus metrics (docs/metrics.md): one prom-client Registry of its own, the calls
// the deploy flow, the lock, healing, migrations and watches make where each thing happens, and the
// state read at each scrape (live releases, instance health, degraded services, the proxy's figures).
// Every label value passes a guard here, so no input can grow a metric's series without bound.

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { ProxyMetrics } from "../proxy/contract.js";
import type { StepTiming } from "../state/contract.js";
import { registerProxyMetrics, type ProxyRead } from "./proxy.js";

/** How a deploy or rollback ended: history's outcomes, plus stopped (its lock was lost) and refused (it changed nothing: lock held, plan refused). */
export const FLOW_OUTCOMES = ["succeeded", "failed", "reverted", "rolled-back", "aborted", "held", "stopped", "refused"] as const;
export type FlowOutcome = (typeof FLOW_OUTCOMES)[number];
/** An instance's health as the agent's checks see it; unknown: not checked by the monitor (yet), such as a deploy's new instances. */
export const HEALTH_STATES = ["passing", "warning", "critical", "unknown"] as const;
export type HealthState = (typeof HEALTH_STATES)[number];
/** What a label takes when its value is none of those it may take. */
export const OTHER = "_other";
/** Step names are the flow's own; should a new one appear, at most this many distinct ones are kept apart. */
const MAX_STEPS = 32;
/** A proxy that does not answer within this leaves its families out of the scrape (turquoise_proxy_up 0), not the whole scrape. */
export const PROXY_READ_TIMEOUT_MS = 3_000;

// Deploys take from under a second to the deploy timeout and beyond; a step from milliseconds up.
const DEPLOY_BUCKETS_S = [0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
const STEP_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const LOCK_WAIT_BUCKETS_S = [0.25, 1, 5, 10, 30, 60, 300, 600];

/** What the agent shows at each scrape: read then, so it is never stale. */
export interface MetricsSource {
  liveReleases(): Promise<Array<{ service: string; slot: string; release: string }>>;
  degraded(): Promise<string[]>;
  instances(): Array<{ service: string; state: HealthState }>;
  /** undefined: a proxy without metrics (nginx). Rejects when the proxy does not answer. */
  proxyMetrics(): Promise<ProxyMetrics | undefined>;
}

export interface AgentMetricsOptions {
  /** The spec's services and watches: the only values those labels take. */
  services: readonly string[];
  watches: readonly string[];
  version: string;
  /** The process metrics every Node exporter has (process_*, nodejs_*); true unless told. */
  processMetrics?: boolean;
}

/** A label's values: those known up front, else OTHER; or, with no list, the first `max` seen. */
class LabelGuard {
  private readonly known: Set<string>;
  constructor(known: Iterable<string>, private readonly max = 0) {
    this.known = new Set(known);
  }

  of(value: string): string {
    if (this.known.has(value)) return value;
    if (this.known.size < this.max) {
      this.known.add(value);
      return value;
    }
    return OTHER;
  }
}

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly service: LabelGuard;
  private readonly watch: LabelGuard;
  private readonly step = new LabelGuard([], MAX_STEPS);
  private readonly deploys: Counter<"service" | "outcome">;
  private readonly rollbacks: Counter<"service" | "outcome">;
  private readonly deployDuration: Histogram<"service" | "kind" | "outcome">;
  private readonly stepDuration: Histogram<"service" | "step">;
  private readonly lockWaits: Counter<"service" | "outcome">;
  private readonly lockWaitDuration: Histogram<"service">;
  private readonly healRestarts: Counter<"service" | "outcome">;
  private readonly migrations: Counter<"service" | "direction">;
  private readonly backfillRows: Gauge<"service">;
  private readonly backfillRowsEstimated: Gauge<"service">;
  private readonly watchRuns: Counter<"watch">;
  private readonly watchFailures: Counter<"watch">;
  private source: MetricsSource | undefined;
  /** The proxy as this scrape read it; undefined outside a scrape or for a proxy without metrics. */
  private proxyRead: ProxyRead | undefined;
  private rendering: Promise<string> | undefined;

  constructor(opts: AgentMetricsOptions) {
    const registers = [this.registry];
    this.service = new LabelGuard(opts.services);
    this.watch = new LabelGuard(opts.watches);
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
    new Gauge({ name: "turquoise_build_info", help: "Always 1: the Turquoise version the agent runs, and Node's.", labelNames: ["version", "node_version"], registers }).set({ version: opts.version, node_version: process.version }, 1);
    this.deploys = new Counter({ name: "turquoise_deploys_total", help: "Deploys by how they ended.", labelNames: ["service", "outcome"], registers });
    this.rollbacks = new Counter({ name: "turquoise_rollbacks_total", help: "Rollbacks (asked for, or the healer's way out of a crash loop) by how they ended.", labelNames: ["service", "outcome"], registers });
    this.deployDuration = new Histogram({ name: "turquoise_deploy_duration_seconds", help: "A deploy or rollback from its lock to its record.", labelNames: ["service", "kind", "outcome"], buckets: DEPLOY_BUCKETS_S, registers });
    this.stepDuration = new Histogram({ name: "turquoise_deploy_step_duration_seconds", help: "Each step of deploys and rollbacks (lock, plan, start, healthy, smoke, flip, verify, bake, drain, retire, migrate...), skipped ones left out.", labelNames: ["service", "step"], buckets: STEP_BUCKETS_S, registers });
    this.lockWaits = new Counter({ name: "turquoise_deploy_lock_waits_total", help: "Deploys that queued for a service's deploy lock (--wait), by whether they got it or gave up.", labelNames: ["service", "outcome"], registers });
    this.lockWaitDuration = new Histogram({ name: "turquoise_deploy_lock_wait_seconds", help: "How long queued deploys waited for the deploy lock.", labelNames: ["service"], buckets: LOCK_WAIT_BUCKETS_S, registers });
    this.healRestarts = new Counter({ name: "turquoise_heal_restarts_total", help: "Instances the healer started to replace dead or critical ones, by whether they turned healthy.", labelNames: ["service", "outcome"], registers });
    this.migrations = new Counter({ name: "turquoise_migrations_applied_total", help: "Migration steps applied, by direction.", labelNames: ["service", "direction"], registers });
    this.backfillRows = new Gauge({ name: "turquoise_migration_backfill_rows", help: "Rows the running (or last) batched backfill of a service has done.", labelNames: ["service"], registers });
    this.backfillRowsEstimated = new Gauge({ name: "turquoise_migration_backfill_rows_estimated", help: "Rows the running (or last) batched backfill of a service expects to do.", labelNames: ["service"], registers });
    this.watchRuns = new Counter({ name: "turquoise_watch_handler_runs_total", help: "Watch handler runs.", labelNames: ["watch"], registers });
    this.watchFailures = new Counter({ name: "turquoise_watch_handler_failures_total", help: "Watch handler runs that failed (exit status not 0, HTTP status not 2xx, timed out).", labelNames: ["watch"], registers });

    const metrics = this;
    new Gauge({
      name: "turquoise_service_release_info", help: "Always 1: the release each service serves, and its slot.", labelNames: ["service", "slot", "release"], registers,
      async collect() {
        this.reset();
        for (const r of (await metrics.source?.liveReleases()) ?? []) this.set({ service: metrics.service.of(r.service), slot: r.slot, release: r.release }, 1);
      },
    });
    new Gauge({
      name: "turquoise_instances", help: "Instances by health state (unknown: not checked yet, such as a deploy's new ones).", labelNames: ["service", "state"], registers,
      collect() {
        this.reset();
        if (!metrics.source) return;
        for (const s of opts.services) for (const state of HEALTH_STATES) this.set({ service: s, state }, 0);
        for (const i of metrics.source.instances()) this.inc({ service: metrics.service.of(i.service), state: HEALTH_STATES.includes(i.state) ? i.state : "unknown" });
      },
    });
    new Gauge({
      name: "turquoise_service_degraded", help: "1 while the healer has given up restarting a service's crash-looping instances (until its next deploy).", labelNames: ["service"], registers,
      async collect() {
        this.reset();
        if (!metrics.source) return;
        const degraded = new Set(await metrics.source.degraded());
        for (const s of opts.services) this.set({ service: s }, degraded.has(s) ? 1 : 0);
      },
    });
    registerProxyMetrics(this.registry, () => this.proxyRead);
  }

  /** What the scrape-time metrics read: set once the agent is put together. */
  attach(source: MetricsSource): void {
    this.source = source;
  }

  /** A deploy or rollback ended: its outcome, its duration, and each step that ran. */
  flowFinished(kind: "deploy" | "rollback", service: string, outcome: FlowOutcome, durationMs: number, steps: readonly StepTiming[]): void {
    const s = this.service.of(service);
    (kind === "deploy" ? this.deploys : this.rollbacks).inc({ service: s, outcome });
    this.deployDuration.observe({ service: s, kind, outcome }, durationMs / 1000);
    for (const step of steps) {
      if (step.detail?.startsWith("skipped:")) continue;
      this.stepDuration.observe({ service: s, step: this.step.of(step.name) }, step.durationMs / 1000);
    }
  }

  /** A deploy queued for the lock: it got it, or gave up (its client left, or --wait-timeout ran out). */
  lockWaited(service: string, outcome: "acquired" | "gave-up", waitedMs: number): void {
    const s = this.service.of(service);
    this.lockWaits.inc({ service: s, outcome });
    this.lockWaitDuration.observe({ service: s }, waitedMs / 1000);
  }

  healed(service: string, outcome: "replaced" | "failed", instances: number): void {
    this.healRestarts.inc({ service: this.service.of(service), outcome }, instances);
  }

  migrationApplied(service: string, direction: "up" | "down"): void {
    this.migrations.inc({ service: this.service.of(service), direction });
  }

  /** Every batch of a batched backfill: where it stands, for a progress panel beside the deploy's. */
  backfill(service: string, p: { rowsDone: number; rowsEstimated: number }): void {
    const s = this.service.of(service);
    this.backfillRows.set({ service: s }, p.rowsDone);
    this.backfillRowsEstimated.set({ service: s }, p.rowsEstimated);
  }

  watchRan(watch: string, ok: boolean): void {
    const w = this.watch.of(watch);
    this.watchRuns.inc({ watch: w });
    if (!ok) this.watchFailures.inc({ watch: w });
  }

  /** The text format of every metric, the proxy's read now. Scrapes that overlap share one rendering. */
  render(): Promise<string> {
    this.rendering ??= this.collect().finally(() => (this.rendering = undefined));
    return this.rendering;
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private async collect(): Promise<string> {
    this.proxyRead = await this.readProxy();
    try {
      return await this.registry.metrics();
    } finally {
      this.proxyRead = undefined;
    }
  }

  private async readProxy(): Promise<ProxyRead | undefined> {
    if (!this.source) return undefined;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), PROXY_READ_TIMEOUT_MS)));
    try {
      const r = await Promise.race([this.source.proxyMetrics(), timeout]);
      if (r === "timeout") return { snapshot: undefined };
      return r ? { snapshot: r } : undefined;
    } catch {
      return { snapshot: undefined };
    } finally {
      clearTimeout(timer);
    }
  }
}
