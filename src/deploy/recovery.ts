// Recovery: a journal left behind means a flow stopped mid-way, because its agent died or because
// it lost its deploy lock. The color key decides what the flow had done: a preview slot that
// never went live is stopped (undo); an old slot still marked live behind a finished flip is
// retired (finish); a turquoise path stopped at its turquoise release is resumed. Nothing is left
// with two live slots, orphans or a held lock.
import { errorMessage, isTurquoiseError } from "../errors.js";
import { SLOTS } from "../runtime/contract.js";
import type { OrchestratorDeps } from "./deps.js";
import { undoPreview, type DeployOutcome, type DeployRequest, type Handover } from "./flow.js";
import { DeployLock } from "./lock.js";
import { closeOrphanHistory, releaseDeadOwners } from "./lock-owner.js";
import { keys, Records, type Journal } from "./records.js";
import type { RouteTables } from "./routes.js";
import type { WarmSlots } from "./warm.js";

const HANDOVER_POLL_MS = 250;

/** Why a flow stopped, in the words its history keeps. */
interface Cause {
  /** "agent restarted during <step>" */
  during: (step: string) => string;
  /** How a flow that had made its last flip was finished. */
  finished: string;
  /** Whether a turquoise path stopped at its turquoise release goes on to its target. */
  resume: boolean;
}

const AGENT_RESTARTED: Cause = { during: (s) => `agent restarted during ${s}`, finished: "the flow was finished on restart", resume: true };
/** Several agents: the leader that ran the flow died, hung or lost etcd, and another took over. */
const LEADER_CHANGED: Cause = { during: (s) => `the leader changed during ${s}`, finished: "the flow was finished by the new leader", resume: true };
const LOCK_LOST: Cause = { during: (s) => `the flow lost its deploy lock during ${s}`, finished: "the flow was finished by recovery", resume: true };
/** Recovered by the next flow that took the lock: that flow goes on from what is live, so nothing resumes. */
const LOCK_LOST_SUCCEEDED: Cause = { ...LOCK_LOST, resume: false };

export class Recovery implements Handover {
  private readonly pending = new Set<Promise<unknown>>();
  private stopping = false;

  constructor(
    private readonly d: OrchestratorDeps,
    private readonly routes: RouteTables,
    private readonly warm: WarmSlots,
    private readonly run: (kind: "deploy" | "rollback", req: DeployRequest) => Promise<DeployOutcome>,
  ) {}

  /** Called when the agent starts, after it adopted the running instances: every journal left behind is finished or undone. */
  async recover(by: "restart" | "takeover" = "restart"): Promise<string[]> {
    const cause = by === "takeover" ? LEADER_CHANGED : AGENT_RESTARTED;
    const notes: string[] = [];
    const services = Object.keys(this.d.spec.services);
    // Locks taken before their flow was journaled: their dead owner is the only trace.
    for (const s of await releaseDeadOwners(this.d.store, services, this.d.event)) notes.push(`released the deploy lock of ${s}: its agent is gone`);
    for (const j of await this.d.records.journals()) notes.push(await this.recoverJournal(j, this.d.records, cause));
    // Resumed paths hold their lock again, so their entries are left alone.
    const closed = await closeOrphanHistory(this.d.store, services, await this.d.records.journals(), this.d.event);
    if (closed) notes.push(`${closed} history entr${closed === 1 ? "y" : "ies"} left running by a dead agent marked aborted`);
    return notes;
  }

  async recoverLeftBehind(j: Journal, records: Records): Promise<void> {
    await this.recoverJournal(j, records, LOCK_LOST_SUCCEEDED);
  }

  lockLost(service: string, owner: string): void {
    this.track(this.takeOver(service, owner).catch((e) =>
      // An agent that no longer leads leaves the flow to the leader, whose takeover recovers it.
      isTurquoiseError(e) && e.code === "NOT_LEADER"
        ? this.d.event(service, "recovery.left-to-leader", `the flow of ${owner} lost its deploy lock; this agent no longer leads, so the leader recovers it`)
        : this.d.event(service, "recovery.failed", `recovering the flow of ${owner}, which lost its deploy lock, failed: ${errorMessage(e)}`)));
  }

  /** Recoveries and resumed paths still running; the agent waits for them when it closes. */
  async settled(): Promise<void> {
    this.stopping = true;
    await Promise.allSettled([...this.pending]);
  }

  /** Waits for the lock, then recovers the journal of the flow that lost it, unless a later flow already did. */
  private async takeOver(service: string, owner: string): Promise<void> {
    let lock: DeployLock | undefined;
    while (!(lock = await DeployLock.tryTake(this.d.store, this.d.event, service, `agent ${this.d.agentId} (recovery of ${owner})`))) {
      if (this.stopping) return;
      await new Promise((r) => setTimeout(r, HANDOVER_POLL_MS));
    }
    try {
      const records = new Records(lock.fencedStore(), this.d.event);
      const j = await records.journal(service);
      if (j?.owner === owner) await this.recoverJournal(j, records, LOCK_LOST);
    } finally {
      await lock.release();
    }
  }

  /** Finishes, undoes or resumes one flow; records: as the recovering side writes them. */
  private async recoverJournal(j: Journal, records: Records, cause: Cause): Promise<string> {
    const svc = this.d.spec.services[j.service];
    const history = records.store;
    let note: string;
    if (!svc) {
      note = `journal for unknown service ${j.service} dropped`;
    } else {
      const color = await records.color(j.service);
      // The proxy may serve a slot whose flip never reached the Store, or a canary share: every
      // user goes back to the stored color first.
      this.routes.forgetCanary(j.service);
      await this.routes.apply().catch((e) => this.d.event(j.service, "route.error", `recovery could not put every user back on the live slot yet: ${errorMessage(e)}`));
      let held: string | undefined;
      for (const slot of SLOTS) {
        const rec = await records.slot(j.service, slot);
        if (!rec || slot === color) continue;
        // deploy --hold had finished its part: the held release waits for promote or abort.
        if (rec.state === "held" && rec.heldBy?.historyId === j.historyId) held = `${rec.release} (${slot})`;
        else if (rec.state === "preview" || rec.state === "held" || (rec.state === "live" && rec.release === j.release && rec.release !== j.previousRelease)) await undoPreview(this.d, records, svc, slot);
        else if (rec.state === "live") {
          // The flip away from this slot happened: let its in-flight requests finish, then retire it.
          await this.d.proxy.drain(rec.poolId, svc.drainTimeoutMs).catch(() => undefined);
          await this.warm.retire(records, svc, slot, rec, j.via ? "a turquoise path was interrupted" : undefined);
        }
      }
      const liveRec = color ? await records.slot(j.service, color) : undefined;
      const nowLive = liveRec?.release ?? null;
      const during = cause.during(lastStep(j));
      if (held) {
        await history.updateHistory(j.historyId, { outcome: "held", finishedAt: Date.now(), error: `${during}; ${held} stays held` });
        note = `${j.kind} of ${j.service} ${j.release} was interrupted as it was held: ${held} stays held`;
      } else if (nowLive === j.release) {
        if (j.previousRelease && j.previousRelease !== j.release) await records.setPrevious(j.service, { release: j.previousRelease, via: j.via });
        await history.updateHistory(j.historyId, { outcome: "succeeded", finishedAt: Date.now(), error: `${during}; ${cause.finished}` });
        note = `${j.kind} of ${j.service} ${j.release} was interrupted after its last flip: finished`;
      } else if (j.via && nowLive === j.via && cause.resume) {
        await history.updateHistory(j.historyId, { outcome: "aborted", finishedAt: Date.now(), error: `${during} with ${j.via} live; the path to ${j.release} resumes` });
        note = `${j.kind} of ${j.service} ${j.release} was interrupted at ${j.via}: resuming`;
        if (j.previousRelease && j.previousRelease !== j.via) await records.setPrevious(j.service, { release: j.previousRelease, via: j.via });
        this.resume(j);
      } else if (j.via && nowLive === j.via) {
        await history.updateHistory(j.historyId, { outcome: "aborted", finishedAt: Date.now(), error: `${during} with ${j.via} live; the next flow goes on from there` });
        note = `${j.kind} of ${j.service} ${j.release} was interrupted at ${j.via}: ${j.via} stays live`;
        if (j.previousRelease && j.previousRelease !== j.via) await records.setPrevious(j.service, { release: j.previousRelease, via: j.via });
      } else {
        await history.updateHistory(j.historyId, { outcome: "aborted", finishedAt: Date.now(), error: `${during}; undone, ${nowLive ?? "nothing"} stays live` });
        note = `${j.kind} of ${j.service} ${j.release} was interrupted before its flip: undone, ${nowLive ?? "nothing"} stays live`;
      }
    }
    // A dead agent's flow still holds its lock until the TTL runs out; a flow that lost its lock holds none.
    await this.d.store.releaseLock(keys.lock(j.service), j.owner);
    await records.clearJournal(j.service);
    this.d.event(j.service, "recovered", note);
    return note;
  }

  private resume(j: Journal): void {
    this.track(
      this.run(j.kind, { service: j.service, release: j.release, via: j.via!, actor: `${j.actor} (resumed by the agent)`, wait: true })
        .catch((e) => this.d.event(j.service, "resume.failed", `resuming the path to ${j.release} failed: ${errorMessage(e)}`)),
    );
  }

  private track(p: Promise<unknown>): void {
    const tracked = p.finally(() => this.pending.delete(tracked));
    this.pending.add(tracked);
  }
}

function lastStep(j: Journal): string {
  return (j.steps[j.steps.length - 1] ?? "lock").replace(/:(started|done)$/, "");
}
