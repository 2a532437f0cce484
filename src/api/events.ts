// The agent's events over the API: a page of recorded ones, and a server-sent stream of new ones.
// The registry token sees only catalog and health changes, without their data.
import type http from "node:http";
import type { Agent } from "../agent.js";
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
export async function listEvents(agent: Agent, scope: Scope, query: URLSearchParams): Promise<{ events: EventRecord[]; next: number }> {
  const afterId = intParam(query, "after", 0, 0, Number.MAX_SAFE_INTEGER);
  const service = query.get("service");
  const page = await agent.store.listEvents({ afterId, limit: intParam(query, "limit", 100, 1, 10_000), ...(service ? { service } : {}) });
  return {
    events: page.flatMap((e) => visibleEvent(scope, e) ?? []),
    next: page.length ? page[page.length - 1]!.id : afterId,
  };
}

/** Server-sent events: every event the scope may see, as it happens, until the client goes away. */
export async function streamEvents(agent: Agent, scope: Scope, req: http.IncomingMessage, res: http.ServerResponse): Promise<undefined> {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store", connection: "keep-alive" });
  res.write(`: turquoise events, index ${agent.registry.current}\n\n`);
  const stop = agent.registry.onEvent((event) => {
    const e = visibleEvent(scope, event);
    if (e) res.write(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
  });
  const ping = setInterval(() => res.write(": ping\n\n"), 15_000);
  await new Promise<void>((resolve) => req.on("close", resolve));
  clearInterval(ping);
  stop();
  return undefined;
}
