// The agent's events over the API: a page of recorded ones, and a server-sent stream of new ones.
// The registry token sees only catalog and health changes, without their data.
import type http from "node:http";
import type { ApiHost } from "./host.js";
import { REGISTRY_EVENT_TYPES, type Scope } from "../auth/scopes.js";
import type { EventRecord } from "../state/contract.js";
import { intParam } from "./http.js";

/** What a scope may see of an event, or undefined when it sees none of it. */
export function visibleEvent(scope: Scope, e: EventRecord): EventRecord | undefined {
  if (scope.kind === "admin") return e;
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

/**
 * Server-sent events: every event the scope may see, as it happens, until the client goes away.
 * A client that does not read falls behind; once MAX_STREAM_BUFFER_BYTES wait for it, it is
 * dropped (a last "dropped" message, then the connection is cut), so it cannot grow the agent's memory.
 */
export async function streamEvents(agent: ApiHost, scope: Scope, req: http.IncomingMessage, res: http.ServerResponse): Promise<undefined> {
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
  const ping = setInterval(() => write(": ping\n\n"), STREAM_PING_MS);
  // Events are published from a later tick, so this line still comes first.
  write(`: turquoise events, index ${agent.registry.current}\n\n`);
  await new Promise<void>((resolve) => res.on("close", resolve));
  clearInterval(ping);
  stop();
  return undefined;
}
