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
 * Server-sent events: every event the scope may see, as it happens, until the client goes away.
 * A client that does not read falls behind; once MAX_STREAM_BUFFER_BYTES wait for it, it is
 * dropped (a last "dropped" message, then the connection is cut), so it cannot grow the agent's memory.
 * A stream takes a place in slots while open: past a cap it is answered 429 with Retry-After.
 */
export async function streamEvents(agent: ApiHost, slots: StreamSlots, scope: Scope, req: http.IncomingMessage, res: http.ServerResponse, query?: URLSearchParams): Promise<undefined> {
  const slot = slots.take(tokenIdentity(scope));
  if (!slot.ok) {
    const refused = new TurquoiseError("LIMIT_REACHED", slot.message, { data: { limit: slot.limit, open: slot.open } });
    send(res, 429, { error: errorBody(refused) }, { "retry-after": String(STREAM_RETRY_AFTER_S) });
    return undefined;
  }
  try {
    return await stream(agent, scope, req, res, query);
  } finally {
    slot.give();
  }
}

async function stream(agent: ApiHost, scope: Scope, req: http.IncomingMessage, res: http.ServerResponse, query?: URLSearchParams): Promise<undefined> {
  const insider = scope.kind === "admin" || scope.kind === "read";
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store", connection: "keep-alive" });
  let dropped = false;
  const write = (text: string): void => {
    if (dropped || res.destroyed) return;
    res.write(text);
    if (res.writableLength > MAX_STREAM_BUFFER_BYTES) drop();
  };
  const drop = (): void => {
    dropped = true;
    stop();
    stopProgress();
    stopChanged();
    stopStats();
    clearTimeout(changedTimer);
    clearInterval(ping);
    const behind = res.writableLength;
    res.end(`event: dropped\ndata: ${JSON.stringify({ reason: `fell behind: ${behind} bytes unread, the limit is ${MAX_STREAM_BUFFER_BYTES}` })}\n\n`);
    setTimeout(() => res.destroy(), STREAM_DROP_GRACE_MS).unref();
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
  // Events are published from a later tick, so this line still comes first.
  write(`: turquoise events, index ${agent.registry.current}\n\n`);
  // A client gone before this line (its close already emitted) must not hold its place for ever.
  if (!res.closed) await new Promise<void>((resolve) => res.once("close", resolve));
  clearInterval(ping);
  stopStats();
  clearTimeout(changedTimer);
  stop();
  stopProgress();
  stopChanged();
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
