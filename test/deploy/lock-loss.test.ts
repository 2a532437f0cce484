// A deploy flow that loses its lock: it stops at the next step boundary, writes nothing after it,
// leaves its successor's records intact, and recovery finishes or undoes what it did. In-process,
// over a memory store; instances are stand-ins that answer on one real loopback HTTP server.
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, beforeEach, afterEach, describe, it } from "node:test";
import { Fleet } from "../../src/deploy/fleet.js";
import { Orchestrator, type Progress } from "../../src/deploy/orchestrator.js";
import { keys, Records, type Journal, type SlotRecord } from "../../src/deploy/records.js";
import type { DrainResult, Proxy, ProxyCapabilities, ProxyStats, RouteTable } from "../../src/proxy/contract.js";
import type { AdoptResult, ExitEvent, InstanceInfo, InstanceState, ReleaseDescription, Runtime, StartRequest } from "../../src/runtime/contract.js";
import { loadSpecText } from "../../src/spec/loader.js";
import type { Spec } from "../../src/spec/types.js";
import type { HistoryEntry, KeyValue } from "../../src/state/contract.js";
import { MemoryStore } from "../../src/state/memory.js";

const LOCK = keys.lock("books");

/** A memory store that remembers who took each lock, so a test can take it from them at a chosen moment. */
class WatchedStore extends MemoryStore {
  readonly owners: string[] = [];
  override acquireLock(name: string, owner: string, ttlMs: number) {
    this.owners.push(owner);
    return super.acquireLock(name, owner, ttlMs);
  }
}

/** Instances that are only records: each "runs" as the shared test server. */
class StandInRuntime implements Runtime {
  readonly name = "process";
  private readonly running = new Map<string, InstanceInfo>();
  private readonly listeners = new Set<(e: ExitEvent) => void>();
  private n = 0;
  constructor(private readonly port: number) {}
  async start(req: StartRequest): Promise<InstanceInfo> {
    const inst: InstanceInfo = { id: req.id, service: req.service, slot: req.slot, release: req.release, host: "127.0.0.1", port: this.port, ref: String(1000 + ++this.n), startedAt: Date.now() };
    this.running.set(inst.id, inst);
    return inst;
  }
  async stop(instance: InstanceInfo): Promise<{ killed: boolean }> {
    if (this.running.delete(instance.id)) for (const l of this.listeners) l({ instance, exitCode: 0, signal: null });
    return { killed: false };
  }
  async signal(): Promise<void> {}
  async inspect(instance: InstanceInfo): Promise<InstanceState> {
    return this.running.has(instance.id) ? { running: true } : { running: false, exitCode: 0, signal: null };
  }
  async list(service?: string): Promise<InstanceInfo[]> {
    return [...this.running.values()].filter((i) => !service || i.service === service);
  }
  async logs(): Promise<string> {
    return "";
  }
  onExit(listener: (e: ExitEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  async adopt(): Promise<AdoptResult> {
    return { alive: [], dead: [], refused: [] };
  }
  async describeRelease(): Promise<ReleaseDescription> {
    return { exists: true, schema: null };
  }
  /** What runs, as slot/release. */
  runs(): string[] {
    return [...this.running.values()].map((i) => `${i.slot}/${i.release}`).sort();
  }
}

/** The data plane as a list of applied tables: the public route itself is the test server. */
class TableProxy implements Proxy {
  readonly name = "tables";
  readonly capabilities = {} as ProxyCapabilities;
  readonly tables: RouteTable[] = [];
  async apply(table: RouteTable): Promise<void> {
    this.tables.push(table);
  }
  async drain(poolId: string): Promise<DrainResult> {
    return { poolId, completed: 0, cut: 0, durationMs: 0 };
  }
  async stats(): Promise<ProxyStats> {
    return { tableVersion: this.tables.at(-1)?.version ?? 0, pools: [], requests: 0, upstreamErrors: 0, retries: 0 };
  }
  async setUpstreamHealth(): Promise<void> {}
}

/**
 * Everything the agent keeps in the Store: its KV and its history. The memory store reads at the
 * call, so a snapshot taken inside a progress callback is the state at that very moment.
 */
async function snapshot(store: MemoryStore): Promise<{ kv: KeyValue[]; history: HistoryEntry[]; revision: number }> {
  const [kv, history, revision] = await Promise.all([store.list(""), store.listHistory("books"), store.revision()]);
  return { kv, history, revision };
}

let server: http.Server;
let port: number;
before(async () => {
  // Health checks, and verify through "the public route", all answer 200.
  server = http.createServer((_req, res) => res.end("ok"));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as AddressInfo).port;
});
after(() => new Promise<void>((r) => server.close(() => r())));

describe("a deploy flow that loses its lock", () => {
  let store: WatchedStore;
  let runtime: StandInRuntime;
  let orchestrator: Orchestrator;
  let events: Array<{ type: string; message: string }>;

  beforeEach(async () => {
    const { spec, errors } = loadSpecText(`version: 1
proxy: { listen: "127.0.0.1:${port}" }
services:
  books:
    command: [node, server.mjs]
    cwd: releases/{release}
    replicas: 1
    route: { path: / }
    health: { http: /health, interval: 100ms, timeout: 1s, success_before_passing: 1, failures_before_critical: 2 }
    deploy_timeout: 5s
    keep_previous: 0s
    bake: 200ms
`, "/tmp/turquoise-lock-loss/turquoise.yml");
    assert.deepEqual(errors, []);
    store = new WatchedStore();
    runtime = new StandInRuntime(port);
    events = [];
    const event = (_s: string | null, type: string, message: string) => void events.push({ type, message });
    const records = new Records(store, event);
    const fleet = new Fleet({ process: runtime }, records, "/tmp/turquoise-lock-loss");
    orchestrator = new Orchestrator({ spec: spec as Spec, store, records, fleet, proxy: new TableProxy(), apiUrl: "http://127.0.0.1:0", agentId: "test", event });
    await orchestrator.deploy({ service: "books", release: "v1", actor: "t" });
  });

  afterEach(() => orchestrator.stopTimers());

  /** Deploys v2 and, when the named step is done, runs `at` synchronously (the memory store's writes happen at the call). */
  function deployV2(step: string, at: (flowOwner: string) => void): Promise<unknown> {
    const onProgress = (p: Progress) => {
      if (p.type === "step" && p.name === step && p.status === "done") at(store.owners.at(-1)!);
    };
    return orchestrator.deploy({ service: "books", release: "v2", actor: "t", onProgress }).then(() => assert.fail("the deploy should have stopped"), (e: unknown) => e);
  }

  for (const step of ["start", "healthy", "flip", "verify", "bake"]) {
    it(`stolen after ${step}: stops at the next boundary, writes nothing after, and the successor's records are intact`, async () => {
      let stolen: Awaited<ReturnType<typeof snapshot>> | undefined;
      const successorJournal: Journal = {
        historyId: 999, service: "books", kind: "deploy", release: "v9", via: null, actor: "successor", owner: "successor", previousRelease: null, steps: ["lock:done"], startedAt: 1,
      };
      const successorSlot: SlotRecord = { slot: "green", release: "v9", poolId: "books/green/v9/x", state: "preview", startedAt: 1 };
      const error = await deployV2(step, (flowOwner) => {
        // Another flow takes the lock and writes its own records, as a successor would.
        void store.releaseLock(LOCK, flowOwner);
        void store.acquireLock(LOCK, "successor", 60_000);
        void store.put(keys.journal("books"), JSON.stringify(successorJournal));
        void store.put(keys.slot("books", "green"), JSON.stringify(successorSlot));
        void store.put(keys.previous("books"), JSON.stringify({ release: "v0", via: null }));
        void snapshot(store).then((s) => (stolen = s));
      });
      assert.ok(stolen);
      assert.equal((error as { code?: string }).code, "LOCK_LOST");
      assert.match((error as Error).message, new RegExp(`deploy of books v2 stopped at ${step} \\(done\\): the deploy lock of books was lost \\(successor holds it`));
      assert.deepEqual(await snapshot(store), stolen, "nothing written after the lock was lost");
      assert.deepEqual(JSON.parse((await store.get(keys.journal("books")))!.value), successorJournal);
      assert.deepEqual(JSON.parse((await store.get(keys.slot("books", "green")))!.value), successorSlot);
      assert.equal((await store.getLock(LOCK))?.owner, "successor");
      assert.deepEqual(events.filter((e) => e.type === "lock.lost" || e.type === "deploy.stopped").map((e) => e.type), ["lock.lost", "deploy.stopped"]);
    });
  }

  it("a fenced write stops the flow between boundaries too: the history entry of v2 is refused", async () => {
    const error = await deployV2("plan", (flowOwner) => {
      void store.releaseLock(LOCK, flowOwner);
      void store.acquireLock(LOCK, "successor", 60_000);
    });
    assert.equal((error as { code?: string }).code, "LOCK_LOST");
    assert.match((error as Error).message, /stopped at plan/);
    assert.equal((await store.listHistory("books")).length, 1, "the history entry of v2 was refused");
  });

  it("with no successor, recovery takes the lock over and undoes the flow: the preview stops, v1 stays live", async () => {
    const error = await deployV2("healthy", (flowOwner) => void store.releaseLock(LOCK, flowOwner));
    assert.match((error as Error).message, /stopped at healthy \(done\): the deploy lock of books was lost \(it expired before it was renewed\)/);
    await waitFor(async () => !(await store.get(keys.journal("books"))));
    const [v2, v1] = await store.listHistory("books");
    assert.equal(v2?.outcome, "aborted");
    assert.equal(v2?.error, "the flow lost its deploy lock during healthy; undone, v1 stays live");
    assert.equal(v1?.outcome, "succeeded");
    assert.equal(await new Records(store).color("books"), "blue");
    assert.equal(await new Records(store).slot("books", "green"), undefined);
    assert.deepEqual(runtime.runs(), ["blue/v1"], "the preview instance of v2 was stopped");
    assert.equal(await store.getLock(LOCK), undefined, "recovery let go of the lock");
    assert.ok(events.some((e) => e.type === "recovered"));
  });

  it("after its flip, recovery finishes the flow: v2 stays live and is recorded as succeeded", async () => {
    const error = await deployV2("verify", (flowOwner) => void store.releaseLock(LOCK, flowOwner));
    assert.match((error as Error).message, /stopped at verify \(done\)/);
    await waitFor(async () => !(await store.get(keys.journal("books"))));
    const [v2] = await store.listHistory("books");
    assert.equal(v2?.outcome, "succeeded");
    assert.equal(v2?.error, "the flow lost its deploy lock during verify; the flow was finished by recovery");
    assert.equal(await new Records(store).color("books"), "green");
    assert.deepEqual(await new Records(store).previous("books"), { release: "v1", via: null });
    assert.deepEqual(runtime.runs(), ["green/v2"], "the old slot was retired");
  });

  it("the next deploy recovers the journal left behind before it writes its own", async () => {
    await deployV2("healthy", (flowOwner) => {
      void store.releaseLock(LOCK, flowOwner);
      void store.acquireLock(LOCK, "successor", 60_000);
    });
    await store.releaseLock(LOCK, "successor");
    const out = await orchestrator.deploy({ service: "books", release: "v3", actor: "t" });
    assert.equal(out.history.outcome, "succeeded");
    const [v3, v2] = await store.listHistory("books");
    assert.equal(v3?.release, "v3");
    assert.equal(v2?.outcome, "aborted");
    assert.match(v2?.error ?? "", /^the flow lost its deploy lock during healthy; undone, v1 stays live$/);
    assert.equal((await new Records(store).slot("books", "green"))?.release, "v3");
    assert.equal(await store.get(keys.journal("books")), undefined);
  });
});

/** Polls until check holds; the bound only ends a wait for what never comes (20 s: a loaded machine). */
async function waitFor(check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs}ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
