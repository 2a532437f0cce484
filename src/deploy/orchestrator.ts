// The orchestrator runs the deploy flow of DESIGN.md: lock, plan, start the idle slot, wait until
// healthy, smoke, (expand), flip, verify, drain, retire the old slot, (contract), record.
// Every step is journaled before and after it runs, so an agent that restarts can finish or
// undo the flow (see recover()).
import fs from "node:fs";
import http from "node:http";
import { TurquoiseError, errorMessage } from "../errors.js";
import { waitHealthy } from "../health/checks.js";
import type { Proxy, Route, RouteTable } from "../proxy/contract.js";
import { otherSlot, type InstanceInfo, type Slot } from "../runtime/contract.js";
import type { Spec, ServiceSpec } from "../spec/types.js";
import type { HistoryEntry, StepTiming, Store } from "../state/contract.js";
import type { Fleet } from "./fleet.js";
import { keys, type Journal, type Records, type SlotRecord } from "./records.js";
import { runSmoke } from "./smoke.js";

export const LOCK_TTL_MS = 30_000;
const LOCK_RENEW_MS = 10_000;
const LOCK_POLL_MS = 250;
const LOG_TAIL_LINES = 20;

export type StepStatus = "started" | "done" | "failed" | "skipped";

export type Progress =
  | { type: "plan"; service: string; kind: "deploy" | "rollback"; release: string; from: string | null; steps: string[] }
  | { type: "step"; name: string; status: StepStatus; durationMs?: number; detail?: string }
  | { type: "info"; message: string };

export interface DeployRequest {
  service: string;
  release: string;
  actor: string;
  /** Queue behind a running deploy instead of failing at once. */
  wait?: boolean;
  onProgress?: (p: Progress) => void;
}

export interface DeployOutcome {
  history: HistoryEntry;
}

/** The steps of a deploy, in order; migrations are hook points until the database capability lands. */
export const DEPLOY_STEPS = ["lock", "plan", "start", "healthy", "smoke", "migrate-expand", "flip", "verify", "drain", "retire", "migrate-contract", "record"] as const;
const NO_DATABASE = "no database configured for this service: nothing to migrate";

class StepFailure extends Error {
  constructor(readonly step: string, message: string, readonly output?: string) {
    super(message);
  }
}

export interface OrchestratorDeps {
  spec: Spec;
  store: Store;
  records: Records;
  fleet: Fleet;
  proxy: Proxy;
  apiUrl: string;
  agentId: string;
  event: (service: string | null, type: string, message: string, data?: Record<string, unknown>) => void;
}

export class Orchestrator {
  private readonly warmTimers = new Map<string, NodeJS.Timeout>();

  constructor(private readonly d: OrchestratorDeps) {}

  service(name: string): ServiceSpec {
    const svc = this.d.spec.services[name];
    if (!svc) throw new TurquoiseError("NOT_FOUND", `no service named "${name}" in ${this.d.spec.file}; known: ${Object.keys(this.d.spec.services).join(", ") || "none"}`);
    return svc;
  }

  async deploy(req: DeployRequest): Promise<DeployOutcome> {
    return this.run("deploy", req);
  }

  /** Flips back to the previous release: instantly if its slot is still warm, else by deploying it again. */
  async rollback(req: Omit<DeployRequest, "release">): Promise<DeployOutcome> {
    const previous = await this.d.records.previous(req.service);
    this.service(req.service);
    if (!previous) throw new TurquoiseError("NOT_FOUND", `service "${req.service}" has no previous release to roll back to`);
    return this.run("rollback", { ...req, release: previous });
  }

  private async run(kind: "deploy" | "rollback", req: DeployRequest): Promise<DeployOutcome> {
    const svc = this.service(req.service);
    const { records, store } = this.d;
    const emit = req.onProgress ?? (() => {});
    const steps: StepTiming[] = [];
    // The nonce keeps two deploys by the same actor from sharing (and so re-taking) one lock.
    const owner = `${req.actor} (${kind} ${req.release}, agent ${this.d.agentId}, #${Math.random().toString(36).slice(2, 8)})`;

    const lockStarted = Date.now();
    emit({ type: "step", name: "lock", status: "started" });
    await this.takeLock(svc.name, owner, !!req.wait, emit);
    const renew = setInterval(() => void store.renewLock(keys.lock(svc.name), owner, LOCK_TTL_MS), LOCK_RENEW_MS);
    steps.push({ name: "lock", startedAt: lockStarted, durationMs: Date.now() - lockStarted, ok: true });
    emit({ type: "step", name: "lock", status: "done", durationMs: Date.now() - lockStarted });

    let history: HistoryEntry | undefined;
    try {
      const fromSlot = (await records.color(svc.name)) ?? null;
      const live = fromSlot ? await records.slot(svc.name, fromSlot) : undefined;
      const toSlot: Slot = fromSlot ? otherSlot(fromSlot) : "blue";
      const idle = await records.slot(svc.name, toSlot);
      const warmReuse = idle?.state === "warm" && idle.release === req.release && this.d.fleet.list(svc.name, toSlot).length > 0;
      const plan = this.describePlan(svc, live ?? null, req.release, toSlot, warmReuse);
      emit({ type: "plan", service: svc.name, kind, release: req.release, from: live?.release ?? null, steps: plan });

      history = await store.addHistory({
        service: svc.name, kind, release: req.release, previousRelease: live?.release ?? null, actor: req.actor,
        startedAt: lockStarted, finishedAt: null, outcome: "running", plan, steps, error: null,
      });
      const journal: Journal = {
        historyId: history.id, service: svc.name, kind, release: req.release, owner, fromSlot, toSlot,
        previousRelease: live?.release ?? null, flipped: false, steps: ["lock:done"], startedAt: lockStarted,
      };
      await records.writeJournal(journal);
      this.d.event(svc.name, `${kind}.started`, `${kind} of ${svc.name} ${req.release} started by ${req.actor}`, { release: req.release, historyId: history.id });

      const step = async <T>(name: string, fn: () => Promise<T | { skipped: string }>): Promise<T | undefined> => {
        const startedAt = Date.now();
        journal.steps.push(`${name}:started`);
        await records.writeJournal(journal);
        emit({ type: "step", name, status: "started" });
        try {
          const out = await fn();
          const durationMs = Date.now() - startedAt;
          journal.steps.push(`${name}:done`);
          await records.writeJournal(journal);
          crashPoint(name);
          if (out && typeof out === "object" && "skipped" in out) {
            steps.push({ name, startedAt, durationMs, ok: true, detail: `skipped: ${out.skipped}` });
            emit({ type: "step", name, status: "skipped", durationMs, detail: out.skipped });
            return undefined;
          }
          const detail = typeof out === "string" ? out : undefined;
          steps.push({ name, startedAt, durationMs, ok: true, ...(detail ? { detail } : {}) });
          emit({ type: "step", name, status: "done", durationMs, ...(detail ? { detail } : {}) });
          return out as T;
        } catch (e) {
          const durationMs = Date.now() - startedAt;
          const detail = e instanceof StepFailure && e.output ? `${e.message}\n${e.output}` : errorMessage(e);
          steps.push({ name, startedAt, durationMs, ok: false, detail });
          emit({ type: "step", name, status: "failed", durationMs, detail });
          throw e;
        }
      };

      await step("plan", async () => {
        const dir = this.d.fleet.releaseDir(svc, req.release);
        if (!warmReuse && !fs.existsSync(dir)) throw new TurquoiseError("NOT_FOUND", `release "${req.release}" of ${svc.name} not found: no directory ${dir} (cwd in ${this.d.spec.file})`);
        return `${live ? `${live.release} (${fromSlot})` : "nothing live"} → ${req.release} (${toSlot})`;
      });
      let fresh: InstanceInfo[] = [];
      let poolId: string;
      try {
        if (warmReuse) {
          poolId = idle!.poolId;
          fresh = this.d.fleet.list(svc.name, toSlot);
          await step("healthy", async () => this.waitHealthy(svc, fresh, "warm instances"));
        } else {
          const stale = this.d.fleet.list(svc.name, toSlot);
          if (stale.length) await this.d.fleet.stop(stale, svc.stopTimeoutMs);
          poolId = `${svc.name}/${toSlot}/${req.release}/${Date.now().toString(36)}`;
          await records.setSlot(svc.name, { slot: toSlot, release: req.release, poolId, state: "preview", startedAt: Date.now() });
          fresh = (await step("start", async () => {
            const started = await this.d.fleet.startSlot(svc, toSlot, req.release, this.d.apiUrl);
            return started;
          }))!;
          await step("healthy", async () => this.waitHealthy(svc, fresh, "new instances"));
          await step("smoke", async () => this.smoke(svc, fresh, req.release));
        }
        await step("migrate-expand", async () => ({ skipped: NO_DATABASE }));
      } catch (e) {
        await this.undoPreview(svc, toSlot, warmReuse);
        throw e;
      }

      await step("flip", async () => {
        await records.setSlot(svc.name, { slot: toSlot, release: req.release, poolId, state: "live", startedAt: idle?.startedAt ?? Date.now() });
        await this.applyRoutes({ [svc.name]: toSlot });
        await records.setColor(svc.name, toSlot);
        journal.flipped = true;
        return `traffic → ${toSlot} (${req.release})`;
      });

      try {
        await step("verify", async () => this.verify(svc));
      } catch (e) {
        await this.flipBack(svc, fromSlot, live, toSlot, poolId);
        throw e;
      }

      if (live && fromSlot) {
        await step("drain", async () => {
          const r = await this.d.proxy.drain(live.poolId, svc.drainTimeoutMs);
          if (r.cut > 0) this.d.event(svc.name, "drain.cut", `drain of ${live.release} cut ${r.cut} request(s) after ${svc.drainTimeoutMs}ms`, { ...r });
          return `${r.completed} in-flight request(s) finished${r.cut ? `, ${r.cut} cut after drain_timeout` : ""}`;
        });
        await step("retire", async () => this.retire(svc, fromSlot, live));
        await records.setPrevious(svc.name, live.release);
      } else {
        await step("drain", async () => ({ skipped: "nothing was live" }));
        await step("retire", async () => ({ skipped: "nothing was live" }));
      }
      await step("migrate-contract", async () => ({ skipped: NO_DATABASE }));

      const recordStarted = Date.now();
      steps.push({ name: "record", startedAt: recordStarted, durationMs: 0, ok: true });
      history = await store.updateHistory(history.id, { outcome: "succeeded", finishedAt: Date.now(), steps });
      await records.clearJournal(svc.name);
      emit({ type: "step", name: "record", status: "done", durationMs: Date.now() - recordStarted });
      this.d.event(svc.name, `${kind}.succeeded`, `${kind} of ${svc.name} ${req.release} succeeded`, { release: req.release, historyId: history.id });
      return { history };
    } catch (e) {
      if (history) {
        const flippedBack = e instanceof StepFailure && e.step === "verify";
        const error = e instanceof StepFailure && e.output ? `${e.message}\n${e.output}` : errorMessage(e);
        history = await store.updateHistory(history.id, { outcome: flippedBack ? "rolled-back" : "failed", finishedAt: Date.now(), steps, error });
        await records.clearJournal(svc.name);
        this.d.event(svc.name, `${kind}.failed`, `${kind} of ${svc.name} ${req.release} failed: ${e instanceof Error ? e.message : e}`, { release: req.release, historyId: history.id });
      }
      if (e instanceof StepFailure) {
        throw new TurquoiseError("DEPLOY_FAILED", `${kind} of ${svc.name} ${req.release} failed at ${e.step}: ${e.message}${e.step === "verify" ? " (traffic flipped back)" : "; the live release is untouched"}`, {
          data: { step: e.step, output: e.output ?? null, history: history ?? null },
        });
      }
      throw e;
    } finally {
      clearInterval(renew);
      await store.releaseLock(keys.lock(svc.name), owner);
    }
  }

  private describePlan(svc: ServiceSpec, live: SlotRecord | null, release: string, toSlot: Slot, warmReuse: boolean): string[] {
    const n = svc.replicas;
    return [
      `lock deploy/${svc.name}`,
      warmReuse
        ? `reuse warm ${toSlot} slot running ${release}`
        : `start ${n} instance${n > 1 ? "s" : ""} of ${release} in ${toSlot}`,
      `wait until healthy (deploy_timeout ${svc.deployTimeoutMs}ms)`,
      warmReuse ? "smoke checks: already passed when this release was deployed" : `smoke checks: ${svc.smoke.length ? svc.smoke.map((s) => s.name).join(", ") : "none defined"}`,
      `expand migrations: none (${NO_DATABASE})`,
      `flip ${svc.route.host ?? "*"}${svc.route.pathPrefix} → ${toSlot}`,
      "verify through the public route; flip back on failure",
      live ? `drain ${live.release} (${live.slot}) up to ${svc.drainTimeoutMs}ms` : "drain: nothing live",
      live ? (svc.keepPreviousMs > 0 ? `keep ${live.release} warm for ${svc.keepPreviousMs}ms` : `stop ${live.release} (${live.slot})`) : "retire: nothing live",
      `contract migrations: none (${NO_DATABASE})`,
      "record outcome and release the lock",
    ];
  }

  private async takeLock(service: string, owner: string, wait: boolean, emit: (p: Progress) => void): Promise<void> {
    let told = false;
    for (;;) {
      const r = await this.d.store.acquireLock(keys.lock(service), owner, LOCK_TTL_MS);
      if (r.ok) return;
      const since = new Date(r.holder.since).toISOString();
      if (!wait) {
        throw new TurquoiseError("LOCKED", `a deploy of ${service} is already running: lock held by ${r.holder.owner} since ${since} (${Math.round((Date.now() - r.holder.since) / 1000)}s ago); use --wait to queue behind it`, { data: { holder: r.holder } });
      }
      if (!told) emit({ type: "info", message: `waiting for the deploy lock, held by ${r.holder.owner} since ${since}` });
      told = true;
      await new Promise((res) => setTimeout(res, LOCK_POLL_MS));
    }
  }

  private async waitHealthy(svc: ServiceSpec, instances: InstanceInfo[], what: string): Promise<string> {
    const started = Date.now();
    const r = await waitHealthy(instances.map((i) => ({ id: i.id, host: i.host, port: i.port })), svc.health, {
      deadline: started + svc.deployTimeoutMs,
      isAlive: (id) => this.d.fleet.isAlive(id),
    });
    if (r.ok) return `${instances.length} ${what} passing after ${Date.now() - started}ms`;
    const byId = new Map(instances.map((i) => [i.id, i]));
    const lines: string[] = [];
    for (const f of r.failing) {
      const inst = byId.get(f.id);
      const log = inst ? (await this.d.fleet.runtime.logs(inst, { tailLines: LOG_TAIL_LINES }).catch(() => "")).trim() : "";
      lines.push(`${f.id}: ${f.status}: ${f.output}${log ? `\n  last output:\n  ${log.split("\n").join("\n  ")}` : ""}`);
    }
    const why = r.reason === "exited" ? "an instance exited before it was healthy" : r.reason === "timeout" ? `not healthy within deploy_timeout (${svc.deployTimeoutMs}ms)` : "aborted";
    throw new StepFailure("healthy", why, lines.join("\n"));
  }

  private async smoke(svc: ServiceSpec, instances: InstanceInfo[], release: string): Promise<string | { skipped: string }> {
    if (svc.smoke.length === 0) return { skipped: "no smoke checks defined" };
    const cwd = this.d.fleet.releaseDir(svc, release);
    for (const check of svc.smoke) {
      for (const inst of instances) {
        const r = await runSmoke(check, inst, cwd);
        if (!r.ok) throw new StepFailure("smoke", `smoke check "${check.name}" failed against ${inst.host}:${inst.port}`, r.output);
      }
    }
    return `${svc.smoke.length} check(s) passed on ${instances.length} instance(s)`;
  }

  /** One request through the proxy's public address, on the new route, must not fail. */
  private async verify(svc: ServiceSpec): Promise<string> {
    const { host, port } = this.d.spec.proxy;
    const prefix = svc.route.pathPrefix;
    const healthPath = svc.health.http;
    const path = healthPath && (prefix === "/" || healthPath.startsWith(prefix)) ? healthPath : prefix;
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.get({ host: host === "0.0.0.0" ? "127.0.0.1" : host, port, path, agent: false, headers: { host: svc.route.host ?? "localhost", "user-agent": "turquoise-verify" }, timeout: svc.health.timeoutMs }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      });
      req.on("timeout", () => req.destroy(new Error(`no answer within ${svc.health.timeoutMs}ms`)));
      req.on("error", reject);
    }).catch((e: Error) => {
      throw new StepFailure("verify", `request through the public route failed: ${e.message}`);
    });
    if (status >= 500) throw new StepFailure("verify", `GET ${path} through the public route answered ${status}`);
    return `GET ${path} through the proxy → ${status}`;
  }

  private async flipBack(svc: ServiceSpec, fromSlot: Slot | null, live: SlotRecord | undefined, toSlot: Slot, poolId: string): Promise<void> {
    if (fromSlot) await this.d.records.setColor(svc.name, fromSlot);
    else await this.d.records.clearColor(svc.name);
    await this.applyRoutes();
    await this.d.proxy.drain(poolId, svc.drainTimeoutMs).catch(() => undefined);
    await this.undoPreview(svc, toSlot, false);
    this.d.event(svc.name, "flip.reverted", `verification failed; traffic back on ${live ? `${live.release} (${fromSlot})` : "nothing"}`);
  }

  /** Stops what a failed deploy started; the live slot is never touched. */
  private async undoPreview(svc: ServiceSpec, slot: Slot, keepWarm: boolean): Promise<void> {
    if (keepWarm) return;
    await this.d.fleet.stop(this.d.fleet.list(svc.name, slot), svc.stopTimeoutMs);
    await this.d.records.clearSlot(svc.name, slot);
  }

  private async retire(svc: ServiceSpec, slot: Slot, rec: SlotRecord): Promise<string> {
    if (svc.keepPreviousMs > 0) {
      const warmUntil = Date.now() + svc.keepPreviousMs;
      await this.d.records.setSlot(svc.name, { ...rec, state: "warm", warmUntil });
      this.scheduleWarmExpiry(svc, slot, warmUntil);
      return `${rec.release} kept warm in ${slot} until ${new Date(warmUntil).toISOString()}`;
    }
    const instances = this.d.fleet.list(svc.name, slot);
    const { killed } = await this.d.fleet.stop(instances, svc.stopTimeoutMs);
    await this.d.records.clearSlot(svc.name, slot);
    return `stopped ${instances.length} instance(s) of ${rec.release}${killed ? `, ${killed} killed after stop_timeout` : ""}`;
  }

  /** Stops a warm slot when keep_previous runs out, unless it went live again meanwhile. */
  scheduleWarmExpiry(svc: ServiceSpec, slot: Slot, warmUntil: number): void {
    const key = `${svc.name}/${slot}`;
    clearTimeout(this.warmTimers.get(key));
    const timer = setTimeout(async () => {
      this.warmTimers.delete(key);
      const owner = `agent ${this.d.agentId} (warm expiry)`;
      const lock = await this.d.store.acquireLock(keys.lock(svc.name), owner, LOCK_TTL_MS);
      if (!lock.ok) return this.scheduleWarmExpiry(svc, slot, Date.now() + 1_000);
      try {
        const rec = await this.d.records.slot(svc.name, slot);
        if (rec?.state !== "warm" || (rec.warmUntil ?? 0) > Date.now()) return;
        await this.d.fleet.stop(this.d.fleet.list(svc.name, slot), svc.stopTimeoutMs);
        await this.d.records.clearSlot(svc.name, slot);
        this.d.event(svc.name, "warm.expired", `stopped warm ${rec.release} (${slot}) after keep_previous`);
      } finally {
        await this.d.store.releaseLock(keys.lock(svc.name), owner);
      }
    }, Math.max(0, warmUntil - Date.now()));
    timer.unref();
    this.warmTimers.set(key, timer);
  }

  stopTimers(): void {
    for (const t of this.warmTimers.values()) clearTimeout(t);
    this.warmTimers.clear();
  }

  /** Builds the route table from the Store's live colors and applies it; resolves once the proxy uses it. */
  async applyRoutes(override: Record<string, Slot> = {}): Promise<RouteTable> {
    const routes: Route[] = [];
    for (const svc of Object.values(this.d.spec.services)) {
      const slot = override[svc.name] ?? (await this.d.records.color(svc.name));
      if (!slot) continue;
      const rec = await this.d.records.slot(svc.name, slot);
      if (!rec) continue;
      routes.push({
        service: svc.name,
        ...(svc.route.host ? { host: svc.route.host } : {}),
        pathPrefix: svc.route.pathPrefix,
        poolId: rec.poolId,
        upstreams: this.d.fleet.list(svc.name, slot).map((i) => ({ id: i.id, host: i.host, port: i.port })),
      });
    }
    const table: RouteTable = { version: await this.d.records.nextTableVersion(), routes };
    await this.d.proxy.apply(table);
    return table;
  }

  /**
   * Called when the agent starts. A journal left behind means an agent died mid-flow: before the
   * flip the new slot is stopped (undo); after it the flow is finished (retire the old slot).
   */
  async recover(): Promise<string[]> {
    const notes: string[] = [];
    for (const j of await this.d.records.journals()) {
      const svc = this.d.spec.services[j.service];
      const color = await this.d.records.color(j.service);
      const flipped = color === j.toSlot && j.steps.includes("flip:done");
      if (!svc) {
        notes.push(`journal for unknown service ${j.service} dropped`);
      } else if (!flipped) {
        if (color !== j.fromSlot) {
          if (j.fromSlot) await this.d.records.setColor(j.service, j.fromSlot);
          else await this.d.records.clearColor(j.service);
        }
        await this.undoPreview(svc, j.toSlot, false);
        await this.d.store.updateHistory(j.historyId, { outcome: "aborted", finishedAt: Date.now(), error: `agent restarted during ${lastStep(j)}; the new slot was stopped and ${j.previousRelease ?? "nothing"} stays live` });
        notes.push(`${j.kind} of ${j.service} ${j.release} was interrupted before the flip: undone, ${j.previousRelease ?? "nothing"} stays live`);
      } else {
        const old = j.fromSlot ? await this.d.records.slot(j.service, j.fromSlot) : undefined;
        if (old && j.fromSlot && old.state === "live") {
          await this.retire(svc, j.fromSlot, old);
          await this.d.records.setPrevious(j.service, old.release);
        }
        await this.d.store.updateHistory(j.historyId, { outcome: "succeeded", finishedAt: Date.now(), error: `agent restarted during ${lastStep(j)}; the flow was finished on restart` });
        notes.push(`${j.kind} of ${j.service} ${j.release} was interrupted after the flip: finished`);
      }
      await this.d.store.releaseLock(keys.lock(j.service), j.owner);
      await this.d.records.clearJournal(j.service);
      this.d.event(j.service, "recovered", notes[notes.length - 1]!);
    }
    return notes;
  }
}

/**
 * A real crash at a chosen point, for the crash-recovery tests: with TURQUOISE_CRASH_AFTER=<step>
 * the agent SIGKILLs itself right after journaling that step as done.
 */
function crashPoint(step: string): void {
  if (process.env.TURQUOISE_CRASH_AFTER === step) process.kill(process.pid, "SIGKILL");
}

function lastStep(j: Journal): string {
  return (j.steps[j.steps.length - 1] ?? "lock").replace(/:(started|done)$/, "");
}
