// Property: whatever keys and values go through the KV API, a restarted agent starts, touches no instance, and shows the same status.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import type { Workspace } from "../../src/demo/workspace.js";
import { MAX_BODY_BYTES } from "../../src/util/http-body.js";
import { INTERNAL_PREFIX } from "../../src/state/namespace.js";
import { pidAlive } from "../../src/util/proc.js";
import { RELEASE_KINDS, api, instancePids, readAgentPid, releaseServing, waitFor, workspaceWith } from "./helpers.js";

// Restarting a real agent takes 2-5 s on a shared machine, so each run is a batch of up to 30
// random operations followed by one restart, and there are few runs: the budget is ~30 s.
const RUNS = 5;
const OPS_PER_RUN = 30;

/** Keys near the agent's records and the API's edges, and plain random ones. */
const key = fc.oneof(
  fc.constantFrom(
    "_turquoise/services/books/color", "_turquoise/instances/books/evil", "_turquoise/journal/books", "_turquoise/", "_turquoise", "_TURQUOISE/x",
    "services/books/color", "services/books/slots/blue", "instances/books/evil", "journal/books", "journal/notes", "proxy/table-version",
    "..", ".", "../_turquoise/services/books/color", "a/../_turquoise/journal/books", "/", "//", "a//b", "%2e%2e", "", " ",
  ),
  fc.tuple(fc.constantFrom("_turquoise/", "services/books/", "instances/books/", "journal/", "", "../", "config/"), fc.string({ unit: "binary", maxLength: 40 })).map(([p, s]) => p + s),
  fc.string({ unit: "grapheme", maxLength: 60 }),
  fc.string({ unit: "binary-ascii", minLength: 2_000, maxLength: 20_000 }),
);

const value = fc.oneof(
  { weight: 5, arbitrary: fc.constantFrom("purple", "blue", "green", "not json", "", "{}", "[]", "null", JSON.stringify({ id: "evil", service: "books", slot: "blue", release: "v1", host: "127.0.0.1", port: 1, ref: "1", startedAt: 0 }), JSON.stringify({ historyId: 1, service: "books", kind: "deploy", release: "v9", via: null, actor: "x", owner: "x", previousRelease: null, steps: ["flip:done"], startedAt: 0 })) },
  { weight: 5, arbitrary: fc.string({ unit: "binary", maxLength: 200 }) },
  { weight: 1, arbitrary: fc.constant("x".repeat(MAX_BODY_BYTES + 1)) },
);

type Op = { method: "PUT"; key: string; value: string; cas0: boolean; encode: "whole" | "segments" } | { method: "DELETE" | "GET"; key: string; encode: "whole" | "segments" };

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ method: fc.constant("PUT" as const), key, value, cas0: fc.boolean(), encode: fc.constantFrom("whole" as const, "segments" as const) }) },
  { weight: 2, arbitrary: fc.record({ method: fc.constantFrom("DELETE" as const, "GET" as const), key, encode: fc.constantFrom("whole" as const, "segments" as const) }) },
);

/** The key the agent's router will see for a request path, or undefined when no KV key route matches. */
function effectiveKey(path: string): string | undefined {
  const m = /^\/v1\/kv\/(.+)$/.exec(new URL(path, "http://agent").pathname);
  if (!m) return undefined;
  try {
    return decodeURIComponent(m[1]!);
  } catch {
    return undefined;
  }
}

/** What a restart must leave as it was: the live slot, the slot records, the instances; no record set aside. */
async function snapshot(ws: Workspace): Promise<unknown> {
  const s = JSON.parse((await api(ws, "/v1/status")).body) as {
    quarantined: unknown[];
    services: Array<{ name: string; color: string; release: string; previous: unknown; slots: unknown; lock: unknown; degraded: unknown; instances: Array<{ id: string; slot: string; release: string; ref: string }> }>;
  };
  return {
    quarantined: s.quarantined,
    services: s.services.map((svc) => ({ ...svc, instances: svc.instances.map((i) => [i.id, i.slot, i.release, i.ref]).sort() })),
  };
}

async function restart(ws: Workspace): Promise<void> {
  const pid = readAgentPid(ws);
  await api(ws, "/v1/shutdown", { method: "POST", body: "{}" });
  await waitFor("the agent to exit", () => !pidAlive(pid) || undefined);
  await ws.cli(["up", "--detach"]);
}

describe("the KV API, under random writes", () => {
  let ws: Workspace;
  before(async () => {
    ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, { replicas: 2 });
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
  });
  after(async () => ws?.destroy());

  it("never reaches the agent's records: the restarted agent starts, changes no instance, and status is the same", { timeout: 120_000 }, async () => {
    const baseline = await snapshot(ws);
    const pids = instancePids(ws);
    // The user KV as the agent should hold it, kept across runs.
    const model = new Map<string, string>();
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: OPS_PER_RUN }), async (ops) => {
        for (const o of ops) {
          const encoded = o.encode === "whole" ? encodeURIComponent(o.key) : o.key.split("/").map(encodeURIComponent).join("/");
          const path = `/v1/kv/${encoded}${o.method === "PUT" && o.cas0 ? "?cas=0" : ""}`;
          const r = await api(ws, path, { method: o.method, ...(o.method === "PUT" ? { body: o.value } : {}) });
          assert.ok(r.status < 500, `${o.method} ${path.slice(0, 80)}: ${r.status} ${r.body.slice(0, 200)}`);
          const k = effectiveKey(path);
          if (k !== undefined && k.startsWith(INTERNAL_PREFIX) && r.status !== 431) assert.equal(r.status, 403, `${o.method} of the reserved ${k.slice(0, 60)}`);
          if (r.status !== 200 || k === undefined) continue;
          if (o.method === "PUT") model.set(k, o.value);
          if (o.method === "DELETE") model.delete(k);
        }
        await restart(ws);
        assert.deepEqual(await snapshot(ws), baseline);
        assert.deepEqual(instancePids(ws), pids, "no instance stopped or started");
        assert.equal(await releaseServing(ws), "v1");
        const items = (JSON.parse((await api(ws, "/v1/kv?prefix=")).body) as { items: Array<{ key: string; value: string }> }).items;
        assert.deepEqual(new Map(items.map((kv) => [kv.key, kv.value])), model, "the user KV holds exactly what was written, where it was written");
      }),
      { numRuns: RUNS, endOnFailure: true },
    );
  });
});
