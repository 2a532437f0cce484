// Which agent leads, when several share one store (state.driver: etcd): the leader holds the
// store's leader lock, on an etcd lease, renews it every third of its TTL, and steps down by its
// own clock once it can no longer prove it holds it. One agent on SQLite simply always leads.
import os from "node:os";
import { randomBytes } from "node:crypto";
import { TurquoiseError, errorMessage } from "../errors.js";
import type { Fence, LockInfo, Store } from "./contract.js";
import { internalKey } from "./namespace.js";

/** The lock the leader holds; its owner string names the leader's API and proxy. */
export const LEADER_LOCK = internalKey("leader");
/** Each agent's own record under it: where its API and proxy are, and when it was last seen. */
export const MEMBERS_PREFIX = internalKey("agents/");
/** A follower looks this often whether the leader lock is free. */
export const CAMPAIGN_POLL_MS = 250;
/** How often an agent says it is alive; three missed make it "gone" in status. */
export const HEARTBEAT_MS = 5_000;
/** A member gone this long is removed from the list by the leader. */
const FORGET_GONE_MS = 10 * 60_000;

/** Where an agent answers. */
export interface AgentAddress {
  /** host:pid, as deploy lock owners name agents. */
  id: string;
  api: string;
  proxy: string;
  startedAt: number;
}

export interface Member extends AgentAddress {
  seenAt: number;
}

export interface LeaderView {
  /** This agent's id. */
  self: string;
  isLeader: boolean;
  /** The agent holding the leader lock now, and since when; null while no agent leads. */
  leader: { id: string; api: string; proxy: string; since: number; expiresAt: number } | null;
  /** Every agent that said it is alive lately, the leader included. */
  agents: Array<Member & { role: "leader" | "follower" | "gone" }>;
  /** Why no agent leads, or why this one cannot campaign (etcd unavailable). */
  problem: string | null;
}

export interface LeadershipEvents {
  /** This agent became leader: it takes over (recovery, healing, watches). */
  elected(): Promise<void>;
  /** This agent no longer leads: it stops acting at once. */
  deposed(reason: string): void;
}

export interface Leadership {
  /** False for the single agent of an embedded store: it leads and nobody else can. */
  readonly shared: boolean;
  readonly isLeader: boolean;
  readonly self: AgentAddress;
  /** What a leader's writes carry; undefined while this agent does not lead. */
  readonly fence: Fence | undefined;
  /** A fresh read: does the store still name this agent as leader? */
  confirm(): Promise<boolean>;
  /** The error a write on a non-leader fails with: names the leader's API, or why there is none. */
  notLeader(action: string): Promise<TurquoiseError>;
  view(): Promise<LeaderView>;
  start(events: LeadershipEvents): Promise<void>;
  stop(): Promise<void>;
}

/** The one agent of an embedded store: it leads from the start, and nothing is elected or fenced. */
export class SoleLeadership implements Leadership {
  readonly shared = false;
  readonly isLeader = true;
  readonly fence = undefined;

  constructor(readonly self: AgentAddress) {}

  async confirm(): Promise<boolean> {
    return true;
  }

  async notLeader(action: string): Promise<TurquoiseError> {
    return new TurquoiseError("INTERNAL", `the ${action} was refused although this agent is the only one`);
  }

  async view(): Promise<LeaderView> {
    const { id, api, proxy, startedAt } = this.self;
    return { self: id, isLeader: true, leader: { id, api, proxy, since: startedAt, expiresAt: Number.MAX_SAFE_INTEGER }, agents: [{ ...this.self, seenAt: Date.now(), role: "leader" }], problem: null };
  }

  async start(): Promise<void> {}
  async stop(): Promise<void> {}
}

/** The agent an owner string of the leader lock names (see ownerOf). */
export function leaderOf(lock: LockInfo): { id: string; api: string; proxy: string } {
  const m = /^agent (\S+) api (\S+) proxy (\S+)/.exec(lock.owner);
  return m ? { id: m[1]!, api: m[2]!, proxy: m[3]! } : { id: lock.owner, api: "unknown", proxy: "unknown" };
}

/** "agent host:pid api http://... proxy host:port term <random>": unique to one term, readable in lock listings. */
function ownerOf(self: AgentAddress): string {
  return `agent ${self.id} api ${self.api} proxy ${self.proxy} term ${randomBytes(4).toString("hex")}`;
}

export function agentId(): string {
  return `${os.hostname()}:${process.pid}`;
}

export interface ElectionOptions {
  ttlMs: number;
  /** Where the election reports what it does: elected, deposed, etcd errors. */
  log: (level: "info" | "warn", type: string, message: string, data?: Record<string, unknown>) => void;
}

/** Several agents, one store: a campaign on the store's leader lock. */
export class Election implements Leadership {
  readonly shared = true;
  private owner: string;
  private leading = false;
  /** By this agent's clock, when its hold on the lock ends unless renewed. */
  private holdsUntil = 0;
  private timer: NodeJS.Timeout | undefined;
  private expiry: NodeJS.Timeout | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private events: LeadershipEvents | undefined;
  private stopped = false;
  private problem: string | null = null;
  /** Transitions run one at a time: a takeover finishes before a step-down is acted on. */
  private transitions: Promise<void> = Promise.resolve();

  constructor(private readonly store: Store, readonly self: AgentAddress, private readonly opts: ElectionOptions) {
    this.owner = ownerOf(self);
  }


  get isLeader(): boolean {
    return this.leading && Date.now() < this.holdsUntil;
  }

  get fence(): Fence | undefined {
    return this.isLeader ? { lock: LEADER_LOCK, owner: this.owner } : undefined;
  }

  async confirm(): Promise<boolean> {
    if (!this.isLeader) return false;
    const lock = await this.store.getLock(LEADER_LOCK);
    return lock?.owner === this.owner;
  }

  async notLeader(action: string): Promise<TurquoiseError> {
    let lock: LockInfo | undefined;
    let problem = this.problem;
    try {
      lock = await this.store.getLock(LEADER_LOCK);
    } catch (e) {
      problem = errorMessage(e);
    }
    if (problem) return new TurquoiseError("STATE_UNAVAILABLE", `no agent can lead while etcd does not answer, so the ${action} was refused and nothing changed: ${problem}`, { data: { leader: null } });
    if (lock && leaderOf(lock).id === this.self.id) {
      // The lock still names this agent's last term: it stepped down by its own clock first, as it must.
      return new TurquoiseError("NOT_LEADER", `this agent (${this.self.id}) stopped leading: its lease ran out before etcd confirmed a renewal (etcd did not answer in time, or the process was paused); the ${action} was refused and nothing changed; an agent leads again once etcd lets one renew or take the lock`, { data: { leader: null } });
    }
    if (lock && lock.owner === this.owner) {
      return new TurquoiseError("NOT_LEADER", `this agent (${this.self.id}) was just elected and is taking over (finishing or undoing the flows left half done): the ${action} was refused; try again in a moment`, { data: { leader: leaderOf(lock) } });
    }
    if (lock) {
      const leader = leaderOf(lock);
      return new TurquoiseError("NOT_LEADER", `this agent (${this.self.id}, ${this.self.api}) does not lead: send the ${action} to the leader, agent ${leader.id} at ${leader.api}`, { data: { leader } });
    }
    return new TurquoiseError("NOT_LEADER", `no agent leads right now (an election is under way, within ${Math.ceil(this.opts.ttlMs / 1000)}s of the last leader's end): the ${action} was refused; try again in a moment`, { data: { leader: null } });
  }

  async view(): Promise<LeaderView> {
    const now = Date.now();
    let lock: LockInfo | undefined;
    let problem = this.problem;
    const agents: LeaderView["agents"] = [];
    try {
      lock = await this.store.getLock(LEADER_LOCK);
      const leaderId = lock ? leaderOf(lock).id : undefined;
      for (const kv of await this.store.list(MEMBERS_PREFIX)) {
        const m = parseMember(kv.value);
        if (!m) continue;
        agents.push({ ...m, role: m.id === leaderId ? "leader" : now - m.seenAt > 3 * HEARTBEAT_MS ? "gone" : "follower" });
      }
    } catch (e) {
      problem = errorMessage(e);
    }
    const leader = lock ? { ...leaderOf(lock), since: lock.since, expiresAt: lock.expiresAt } : null;
    return { self: this.self.id, isLeader: this.isLeader, leader, agents, problem: leader ? null : problem };
  }

  /** Tries once at once (so an agent alone on the store leads before it serves), then keeps campaigning. */
  async start(events: LeadershipEvents): Promise<void> {
    this.events = events;
    // Made now: the proxy's address is known only once the agent opened it.
    this.owner = ownerOf(this.self);
    await this.beat();
    await this.tick();
    // Elected at once: the takeover is done before the agent's API answers.
    await this.transitions;
    this.heartbeat = setInterval(() => void this.beat(), HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  /** Stops campaigning; a leader lets go of the lock, so another takes over at once rather than after the TTL. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.expiry);
    clearInterval(this.heartbeat);
    await this.transitions;
    const was = this.leading;
    this.leading = false;
    await this.store.delete(MEMBERS_PREFIX + this.self.id).catch(() => undefined);
    if (was) await this.store.releaseLock(LEADER_LOCK, this.owner).catch(() => undefined);
  }

  /**
   * A leader renews a third of its TTL after its last renewal began, not after it ended: on a loaded
   * machine where a renewal takes a while, counting from its end left less than one renewal's time
   * before the hold ran out (a 2 s TTL flapped whenever renewals took over 0.7 s).
   */
  private schedule(lastAsked = Date.now()): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    const delayMs = this.leading ? Math.max(0, lastAsked + Math.max(100, Math.floor(this.opts.ttlMs / 3)) - Date.now()) : CAMPAIGN_POLL_MS;
    this.timer = setTimeout(() => void this.tick(), delayMs);
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    const asked = Date.now();
    try {
      if (this.leading) {
        if (await this.store.renewLock(LEADER_LOCK, this.owner, this.opts.ttlMs)) this.held(asked);
        else this.depose("another agent holds the leader lock: this one's lease ran out before it renewed it");
      } else {
        // A cheap read first: followers poll, and a held lock needs no write to find out.
        const holder = await this.store.getLock(LEADER_LOCK);
        if (!holder) {
          const r = await this.store.acquireLock(LEADER_LOCK, this.owner, this.opts.ttlMs);
          if (r.ok) this.elect(asked);
        }
      }
      if (this.problem) this.opts.log("info", "leader.store-back", "etcd answers again: campaigning as usual");
      this.problem = null;
    } catch (e) {
      if (this.problem === null) this.opts.log("warn", "leader.store-unavailable", `the leader election cannot reach etcd: ${errorMessage(e)}`);
      this.problem = errorMessage(e);
    }
    this.schedule(asked);
  }

  /** The store took the lock or its renewal asked for at `asked`: it holds until asked + TTL by this clock. */
  private held(asked: number): void {
    this.holdsUntil = asked + this.opts.ttlMs;
    clearTimeout(this.expiry);
    // Without a renewal by then, another agent may lead: stop acting before it can.
    this.expiry = setTimeout(() => this.depose("its lease ran out before it could renew it (the process was paused, or etcd did not answer)"), Math.max(0, this.holdsUntil - Date.now()));
  }

  private elect(asked: number): void {
    this.leading = true;
    this.held(asked);
    this.opts.log("info", "leader.elected", `agent ${this.self.id} (${this.self.api}) leads`, { agent: this.self.id, api: this.self.api });
    const events = this.events;
    this.transitions = this.transitions.then(() => events?.elected()).catch((e) => {
      this.opts.log("warn", "leader.takeover-failed", `taking over as leader failed: ${errorMessage(e)}; stepping down`);
      this.depose(`taking over failed: ${errorMessage(e)}`);
    });
  }

  private depose(reason: string): void {
    if (!this.leading) return;
    this.leading = false;
    this.holdsUntil = 0;
    clearTimeout(this.expiry);
    // A new term: an owner string never held twice, so nothing of the last term can pass for this one.
    this.owner = ownerOf(this.self);
    this.opts.log("warn", "leader.lost", `agent ${this.self.id} no longer leads: ${reason}`, { agent: this.self.id, reason });
    const events = this.events;
    this.transitions = this.transitions.then(() => events?.deposed(reason));
    this.schedule();
  }

  private async beat(): Promise<void> {
    const member: Member = { ...this.self, seenAt: Date.now() };
    try {
      await this.store.put(MEMBERS_PREFIX + this.self.id, JSON.stringify(member));
      if (!this.isLeader) return;
      for (const kv of await this.store.list(MEMBERS_PREFIX)) {
        const m = parseMember(kv.value);
        if (!m || Date.now() - m.seenAt > FORGET_GONE_MS) await this.store.delete(kv.key, { prevRevision: kv.modRevision, ...(this.fence ? { fence: this.fence } : {}) });
      }
    } catch {
      // The election reports etcd's state; a missed heartbeat only ages this agent's record.
    }
  }
}

function parseMember(text: string): Member | undefined {
  try {
    const v = JSON.parse(text) as Partial<Member>;
    if (typeof v.id === "string" && typeof v.api === "string" && typeof v.proxy === "string" && typeof v.seenAt === "number" && typeof v.startedAt === "number") {
      return { id: v.id, api: v.api, proxy: v.proxy, startedAt: v.startedAt, seenAt: v.seenAt };
    }
  } catch { /* not a member record: skipped */ }
  return undefined;
}
