// Crash recovery: a journal left behind means an agent died mid-flow. The color key decides what
// the flow had done: a preview slot that never went live is stopped (undo); an old slot still
// marked live behind a finished flip is retired (finish); a turquoise path stopped at its
// turquoise release is resumed. Nothing is left with two live slots, orphans or a held lock.
import { errorMessage } from "../errors.js";
import { SLOTS } from "../runtime/contract.js";
import type { OrchestratorDeps } from "./deps.js";
import type { DeployFlow } from "./flow.js";
import { keys, type Journal } from "./records.js";
import type { RouteTables } from "./routes.js";
import type { WarmSlots } from "./warm.js";

export class Recovery {
  private readonly resumes = new Set<Promise<unknown>>();

  constructor(
    private readonly d: OrchestratorDeps,
    private readonly flow: DeployFlow,
    private readonly routes: RouteTables,
    private readonly warm: WarmSlots,
  ) {}

  /** Called when the agent starts, after it adopted the running instances: every journal left behind is finished or undone. */
  async recover(): Promise<string[]> {
    const notes: string[] = [];
    for (const j of await this.d.records.journals()) {
      const svc = this.d.spec.services[j.service];
      let note: string;
      if (!svc) {
        note = `journal for unknown service ${j.service} dropped`;
      } else {
        const color = await this.d.records.color(j.service);
        // The proxy may serve a slot whose flip never reached the Store: put it back on the stored color first.
        await this.routes.apply().catch(() => undefined);
        for (const slot of SLOTS) {
          const rec = await this.d.records.slot(j.service, slot);
          if (!rec || slot === color) continue;
          if (rec.state === "preview" || (rec.state === "live" && rec.release === j.release && rec.release !== j.previousRelease)) await this.flow.undoPreview(svc, slot);
          else if (rec.state === "live") {
            // The flip away from this slot happened: let its in-flight requests finish, then retire it.
            await this.d.proxy.drain(rec.poolId, svc.drainTimeoutMs).catch(() => undefined);
            await this.warm.retire(svc, slot, rec, j.via ? "a turquoise path was interrupted" : undefined);
          }
        }
        const liveRec = color ? await this.d.records.slot(j.service, color) : undefined;
        const nowLive = liveRec?.release ?? null;
        const during = lastStep(j);
        if (nowLive === j.release) {
          if (j.previousRelease && j.previousRelease !== j.release) await this.d.records.setPrevious(j.service, { release: j.previousRelease, via: j.via });
          await this.d.store.updateHistory(j.historyId, { outcome: "succeeded", finishedAt: Date.now(), error: `agent restarted during ${during}; the flow was finished on restart` });
          note = `${j.kind} of ${j.service} ${j.release} was interrupted after its last flip: finished`;
        } else if (j.via && nowLive === j.via) {
          await this.d.store.updateHistory(j.historyId, { outcome: "aborted", finishedAt: Date.now(), error: `agent restarted during ${during} with ${j.via} live; the path to ${j.release} resumes` });
          note = `${j.kind} of ${j.service} ${j.release} was interrupted at ${j.via}: resuming`;
          if (j.previousRelease && j.previousRelease !== j.via) await this.d.records.setPrevious(j.service, { release: j.previousRelease, via: j.via });
          this.resume(j);
        } else {
          await this.d.store.updateHistory(j.historyId, { outcome: "aborted", finishedAt: Date.now(), error: `agent restarted during ${during}; undone, ${nowLive ?? "nothing"} stays live` });
          note = `${j.kind} of ${j.service} ${j.release} was interrupted before its flip: undone, ${nowLive ?? "nothing"} stays live`;
        }
      }
      await this.d.store.releaseLock(keys.lock(j.service), j.owner);
      await this.d.records.clearJournal(j.service);
      this.d.event(j.service, "recovered", note);
      notes.push(note);
    }
    return notes;
  }

  /** Resumed paths still running; the agent waits for them when it closes. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.resumes]);
  }

  private resume(j: Journal): void {
    const p = this.flow.run(j.kind, { service: j.service, release: j.release, via: j.via!, actor: `${j.actor} (resumed by the agent)`, wait: true })
      .catch((e) => this.d.event(j.service, "resume.failed", `resuming the path to ${j.release} failed: ${errorMessage(e)}`))
      .finally(() => this.resumes.delete(p));
    this.resumes.add(p);
  }
}

function lastStep(j: Journal): string {
  return (j.steps[j.steps.length - 1] ?? "lock").replace(/:(started|done)$/, "");
}
