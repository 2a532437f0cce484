// The agent's events over the API: a page of recorded ones, and a server-sent stream of new ones.
// The registry token sees only catalog and health changes, without their data. The stream also
// carries, for the admin and read scopes, each running flow's steps and, when asked (?stats=1),
// the proxy's counters every few seconds: what the dashboard draws, without a polling loop.
import type http from "node:http";
import type { ApiHost } from "./host.js";
import { REGISTRY_EVENT_TYPES, tokenIdentity, type Scope } from "../auth/scopes.js";
import type { EventRecord } from "../state/contract.js";
import { errorBody, intParam, send } from "./http.js";
import { TurquoiseError, errorMessage } from "../errors.js";

/** What a scope may see of an event, or undefined when it sees none of it. */
export function visibleEvent(scope: Scope, e: EventRecord): EventRecord | undefined {
  if (scope.kind === "admin" || scope.kind === "read") return e;
  if (scope.kind === "registry" && REGISTRY_EVENT_TYPES.has(e.type)) return { ...e, data: {} };
  return undefined;
}

/** A page of events; next is the last id looked at, so a filtered page still moves the reader on. */
export async function listEvents(agent: ApiHost, scope: Scope, query: URLSearchParams): Promise<{ events: EventRecord[]; next: number }> {
  const afterId = intParam(query, "after", 0, 0, Number.MAX_SAFE_INTEGER);
  const service = query.get("service");
  const page = await agent.store.listEvents({ afterId, limit: intParam(query, "limit", 100, 1, 10_000), ...(service ? { service } : {}) });
  return {
    events: page.flatMap((e) => visibleEvent(scope, e) ?? []),
    next: page.length ? page[page.length - 1]!.id : afterId,
  };
}

/** Unread bytes the agent holds for one stream client before it drops the client. */
export const MAX_STREAM_BUFFER_BYTES = 1024 * 1024;
/** How long a dropped client has to read its last lines before its connection is cut. */
export const STREAM_DROP_GRACE_MS = 1_000;
const STREAM_PING_MS = 15_000;
/** setTimeout's longest delay: a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** At most one "changed" message per this long: a deploy writes many records in a burst, and the page reads status once per burst. */
export const STREAM_CHANGED_MS = 250;
/** How often a stream that asked for them (?stats=1) gets the proxy's counters: the dashboard's req/s and error rate. */
export const STREAM_STATS_MS = 2_000;

/**
 * Event streams one token holds open at once (a dashboard session counts under the token it
 * signed in with; not the registry token, which every instance shares: only MAX_STREAMS bounds it): a browser holds at most 6 connections to one host, so 20 is several browsers'
 * worth of dashboards, and one leaked or hostile token cannot take the agent's sockets.
 */
export const MAX_STREAMS_PER_TOKEN = 20;
/** Event streams the agent holds open in all: many read tokens cannot take its sockets either. */
export const MAX_STREAMS = 200;
/** What a refused stream is told: a place frees only when another stream closes, so sooner is no use. */
export const STREAM_RETRY_AFTER_S = 5;

/** The event streams open at once, per token and in all, up to their caps: past one, a stream is refused, not queued. */
export class StreamSlots {
  private readonly byToken = new Map<string, number>();
  private total = 0;

  constructor(readonly perToken = MAX_STREAMS_PER_TOKEN, readonly max = MAX_STREAMS) {}

  /** Open streams, of one token or in all. */
  open(token?: string): number {
    return token === undefined ? this.total : (this.byToken.get(token) ?? 0);
  }

  /** A place for one more stream of this token, and how to give it back (once); or which cap refuses it. */
  take(token: string): { ok: true; give: () => void } | { ok: false; message: string; limit: number; open: number } {
    const own = this.open(token);
    // Every instance holds the one registry token: capped per token, the 21st instance would be refused.
    if (own >= this.perToken && token !== "registry") return { ok: false, limit: this.perToken, open: own, message: `this token has ${own} event streams open, its limit is ${this.perToken}: close one, or retry later` };
    if (this.total >= this.max) return { ok: false, limit: this.max, open: this.total, message: `the agent has ${this.total} event streams open, its limit is ${this.max}: retry later` };
    this.byToken.set(token, own + 1);
    this.total++;
    let given = false;
    return {
      ok: true,
      give: () => {
        if (given) return;
        given = true;
        this.total--;
        const left = this.open(token) - 1;
        if (left > 0) this.byToken.set(token, left);
        else this.byToken.delete(token);
      },
    };
  }
}

/**
 * The open event streams by who holds them: a token (its tokenIdentity) and, for a dashboard's, its
 * session too. A revoked token or an ended session ends its streams here at once: a stream checks
 * its caller only when it opens, and would otherwise go on for as long as the client keeps it.
 */
export class OpenStreams {
  private readonly byHolder = new Map<string, Set<(reason: string) => void>>();

  /** Registers a stream under each of its holders; returns what unregisters it. */
  add(holders: string[], end: (reason: string) => void): () => void {
    for (const h of holders) {
      let set = this.byHolder.get(h);
      if (!set) this.byHolder.set(h, (set = new Set()));
      set.add(end);
    }
    return () => {
      for (const h of holders) {
        const set = this.byHolder.get(h);
        set?.delete(end);
        if (set?.size === 0) this.byHolder.delete(h);
      }
    };
  }

  /** Ends every stream of a holder with a last "revoked" message saying why; how many there were. */
  end(holder: string, reason: string): number {
    const ends = [...(this.byHolder.get(holder) ?? [])];
    for (const end of ends) end(reason);
    return ends.length;
  }
}

/** The holder an ended dashboard session's streams are found by in OpenStreams. */
export function sessionHolder(sessionId: string): string {
  return `session ${sessionId}`;
}

/** Where an agent keeps its event streams: their places under the caps, and who holds each. */
export interface EventStreams {
  slots: StreamSlots;
  open: OpenStreams;
}

/**
 * Server-sent events: every event the scope may see, as it happens, until the client goes away.
 * A client that does not read falls behind; once MAX_STREAM_BUFFER_BYTES wait for it, it is
 * dropped (a last "dropped" message, then the connection is cut), so it cannot grow the agent's memory.
 * A stream takes a place in slots while open: past a cap it is answered 429 with Retry-After.
 * It ends with a last "revoked" message when its token is revoked, or when the dashboard session
 * it came with (session) is signed out or expires.
 */
export async function streamEvents(agent: ApiHost, streams: EventStreams, scope: Scope, req: http.IncomingMessage, res: http.ServerResponse, query?: URLSearchParams, session?: { id: string; expiresAt: number }): Promise<undefined> {
  const token = tokenIdentity(scope);
  const slot = streams.slots.take(token);
  if (!slot.ok) {
    const refused = new TurquoiseError("LIMIT_REACHED", slot.message, { data: { limit: slot.limit, open: slot.open } });
    send(res, 429, { error: errorBody(refused) }, { "retry-after": String(STREAM_RETRY_AFTER_S) });
    return undefined;
  }
  try {
    return await stream(agent, streams.open, [token, ...(session === undefined ? [] : [sessionHolder(session.id)])], scope, req, res, query, session?.expiresAt);
  } finally {
    slot.give();
  }
}

async function stream(agent: ApiHost, open: OpenStreams, holders: string[], scope: Scope, req: http.IncomingMessage, res: http.ServerResponse, query?: URLSearchParams, expiresAt?: number): Promise<undefined> {
  const insider = scope.kind === "admin" || scope.kind === "read";
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store", connection: "keep-alive" });
  let ended = false;
  const write = (text: string): void => {
    if (ended || res.destroyed) return;
    res.write(text);
    if (res.writableLength > MAX_STREAM_BUFFER_BYTES) drop();
  };
  /** The agent ends the stream: a last message saying why, then the connection is cut if the client does not read it in time. */
  const finish = (last: string): void => {
    if (ended || res.destroyed) return;
    ended = true;
    unsubscribe();
    res.end(last);
    setTimeout(() => res.destroy(), STREAM_DROP_GRACE_MS).unref();
  };
  const drop = (): void => {
    const behind = res.writableLength;
    finish(`event: dropped\ndata: ${JSON.stringify({ reason: `fell behind: ${behind} bytes unread, the limit is ${MAX_STREAM_BUFFER_BYTES}` })}\n\n`);
    agent.event(null, "stream.dropped", `an event stream client (${scope.kind} token, ${req.socket.remoteAddress ?? "?"}:${req.socket.remotePort ?? "?"}) was dropped: ${behind} bytes unread`, { unreadBytes: behind });
  };
  const stop = agent.registry.onEvent((event) => {
    const e = visibleEvent(scope, event);
    if (e) write(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
  });
  // A flow's steps are not stored events: they carry no id, so a reconnecting client resumes from the last stored one.
  const stopProgress = insider ? agent.registry.onProgress((p) => write(`event: progress\ndata: ${JSON.stringify(p)}\n\n`)) : () => {};
  // Something a reader sees changed (a record, a health check): the dashboard reads status again.
  let changedTimer: NodeJS.Timeout | undefined;
  const stopChanged = insider ? agent.registry.onChange(() => {
    changedTimer ??= setTimeout(() => {
      changedTimer = undefined;
      write(`event: changed\ndata: ${JSON.stringify({ index: agent.registry.current })}\n\n`);
    }, STREAM_CHANGED_MS);
  }) : () => {};
  const ping = setInterval(() => write(": ping\n\n"), STREAM_PING_MS);
  const stopStats = insider && query?.get("stats") === "1" ? statsFeed(agent).subscribe((json) => write(`event: stats\ndata: ${json}\n\n`)) : () => {};
  // A revoked token or an ended session: the client is told why, so it does not reconnect in a loop.
  const revoked = (reason: string): void => finish(`event: revoked\ndata: ${JSON.stringify({ reason })}\n\n`);
  const unregister = open.add(holders, revoked);
  // A session's stream lasts no longer than the session: nothing else would sweep it out at its expiry.
  const expiry = expiresAt === undefined ? undefined : setTimeout(() => revoked("the dashboard session expired"), Math.min(Math.max(0, expiresAt - Date.now()), MAX_TIMER_MS));
  expiry?.unref();
  const unsubscribe = (): void => {
    clearTimeout(expiry);
    clearInterval(ping);
    stopStats();
    clearTimeout(changedTimer);
    stop();
    stopProgress();
    stopChanged();
    unregister();
  };
  // Events are published from a later tick, so this line still comes first.
  write(`: turquoise events, index ${agent.registry.current}\n\n`);
  // A client gone before this line (its close already emitted) must not hold its place for ever.
  if (!res.closed) await new Promise<void>((resolve) => res.once("close", resolve));
  unsubscribe();
  return undefined;
}

/**
 * The proxy's counters for every stream that asked for them: one sampler per agent, running while
 * anyone listens, so a thousand open dashboards cost the proxy one call every STREAM_STATS_MS, not a thousand.
 */
class StatsFeed {
  private readonly listeners = new Set<(json: string) => void>();
  private timer: NodeJS.Timeout | undefined;
  private busy = false;

  constructor(private readonly agent: Pick<ApiHost, "proxy">) {}

  subscribe(listener: (json: string) => void): () => void {
    this.listeners.add(listener);
    if (!this.timer) {
      this.timer = setInterval(() => this.sample(), STREAM_STATS_MS);
      setImmediate(() => this.sample());
    }
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
    };
  }

  private sample(): void {
    // One call at a time: a slow proxy skips a beat instead of piling calls up.
    if (this.busy || this.listeners.size === 0) return;
    this.busy = true;
    this.agent.proxy.stats().then(
      (s) => JSON.stringify({ at: Date.now(), pools: s.pools, requests: s.requests, upstreamErrors: s.upstreamErrors, down: s.down ?? [] }),
      (e: unknown) => JSON.stringify({ at: Date.now(), error: errorMessage(e) }),
    ).then((json) => {
      for (const l of this.listeners) l(json);
    }).finally(() => { this.busy = false; });
  }
}

const feeds = new WeakMap<object, StatsFeed>();
function statsFeed(agent: ApiHost): StatsFeed {
  let feed = feeds.get(agent);
  if (!feed) feeds.set(agent, (feed = new StatsFeed(agent)));
  return feed;
}
