// The in-memory twin of the Proxy contract: the built-in proxy's own data plane, served in this
// process on a real loopback socket and driven by direct calls to the backend its control API
// drives, without the HTTP hop. Tests that run the orchestrator in-process use it, and inject
// faults: an apply that fails, a drain that hangs or fails.

import type net from "node:net";
import { TurquoiseError } from "../errors.js";
import { BUILTIN_CAPABILITIES } from "./builtin.js";
import type { DrainResult, Proxy, ProxyMetrics, ProxyStats, RouteTable, RouteTableDelta, UpstreamEventBatch } from "./contract.js";
import { MAX_EVENTS_WAIT_MS, PlaneBackend } from "./control.js";
import { DataPlane } from "./data-plane.js";
import { DataServer } from "./data-server.js";
import { mergeDelta, validateDelta, validateTable } from "./table.js";

export const MEMORY_PROXY = "memory";
const DEFAULT_CLOSE_GRACE_MS = 1_000;

/** A fault for the next calls it applies to. */
export interface MemoryProxyFault {
  /** How many calls it applies to before it is used up; all of them by default. */
  times?: number;
  /** apply() rejects with this reason; the table in use stays, as when the proxy cannot be reached. */
  failApply?: string;
  /**
   * drain() does not answer for this long, then rejects as the builtin driver's control call does
   * when the proxy does not answer; Infinity: it never settles (until close()). Nothing is drained.
   */
  hangDrain?: number;
  /** drain() rejects at once with this reason. */
  failDrain?: string;
}

interface Armed {
  fault: MemoryProxyFault;
  left: number;
}

export class MemoryProxy implements Proxy {
  readonly name = MEMORY_PROXY;
  /** The built-in proxy's data plane, so the built-in's capabilities. */
  readonly capabilities = BUILTIN_CAPABILITIES;
  readonly host: string;
  readonly port: number;
  private readonly armed = new Set<Armed>();
  /** Hung calls, ended by close() so nothing outlives the proxy. */
  private readonly hung = new Set<() => void>();
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly backend: PlaneBackend,
    private readonly server: DataServer,
    address: net.AddressInfo,
  ) {
    this.host = address.address;
    this.port = address.port;
  }

  /** Listens on 127.0.0.1 (port 0: any free one) with an empty table. */
  static async start(opts: { port?: number } = {}): Promise<MemoryProxy> {
    const plane = new DataPlane();
    const server = new DataServer(plane);
    const address = await server.listen({ host: "127.0.0.1", port: opts.port ?? 0 });
    return new MemoryProxy(new PlaneBackend(plane), server, address);
  }

  /** Where clients reach it. */
  get url(): string {
    return `http://${this.host}:${this.port}`;
  }

  /** Arms a fault for the next calls it applies to; returns the function that disarms it. */
  inject(fault: MemoryProxyFault): () => void {
    const armed: Armed = { fault, left: fault.times ?? Number.POSITIVE_INFINITY };
    this.armed.add(armed);
    return () => this.armed.delete(armed);
  }

  /** The table in use, as the builtin's GET /table answers it. */
  table(): RouteTable {
    return this.backend.table();
  }

  async apply(table: RouteTable): Promise<void> {
    const fault = this.take("failApply");
    if (fault?.failApply !== undefined) throw new TurquoiseError("INTERNAL", `proxy apply failed: ${fault.failApply} (injected)`);
    // As the control API does: a table it cannot use is refused whole, and the old one stays.
    const problem = validateTable(table);
    if (problem) throw new TurquoiseError("INTERNAL", `invalid route table: ${problem}`);
    // An older table is ignored, as the control API ignores it.
    if (table.version >= this.backend.table().version) await this.backend.apply(table);
  }

  /** As the control API's PATCH /table: only on top of the version the delta names. failApply fails it too. */
  async applyDelta(delta: RouteTableDelta): Promise<"applied" | "stale"> {
    const fault = this.take("failApply");
    if (fault?.failApply !== undefined) throw new TurquoiseError("INTERNAL", `proxy apply failed: ${fault.failApply} (injected)`);
    const shape = validateDelta(delta);
    if (shape) throw new TurquoiseError("INTERNAL", `invalid route table delta: ${shape}`);
    const current = this.backend.table();
    if (current.version !== delta.base) return "stale";
    const merged = mergeDelta(current, delta);
    const problem = validateTable(merged);
    if (problem) throw new TurquoiseError("INTERNAL", `invalid route table delta: the table it makes is invalid: ${problem}`);
    await this.backend.apply(merged);
    return "applied";
  }

  async drain(poolId: string, timeoutMs: number): Promise<DrainResult> {
    const fault = this.take("failDrain") ?? this.take("hangDrain");
    if (fault?.failDrain !== undefined) throw new TurquoiseError("INTERNAL", `proxy drain of ${poolId} failed: ${fault.failDrain} (injected)`);
    if (fault?.hangDrain !== undefined) await this.hang(fault.hangDrain, `proxy drain of ${poolId}: no answer within ${fault.hangDrain} ms (injected)`);
    return this.backend.drain(poolId, timeoutMs);
  }

  stats(): Promise<ProxyStats> {
    return this.backend.stats();
  }

  metrics(): Promise<ProxyMetrics> {
    return this.backend.metrics();
  }

  setUpstreamHealth(upstreamId: string, healthy: boolean): Promise<void> {
    return this.backend.setUpstreamHealth(upstreamId, healthy);
  }

  /** As GET /events: the events after `after` as soon as there is one, or none once waitMs ran out. */
  events(after: number, waitMs: number): Promise<UpstreamEventBatch> {
    const log = this.backend.events;
    const ready = log.since(after);
    const wait = Math.min(Math.max(0, waitMs), MAX_EVENTS_WAIT_MS);
    if (ready.events.length !== 0 || wait === 0 || this.closing) return Promise.resolve(ready);
    return new Promise((resolve) => {
      const answer = (): void => {
        clearTimeout(timer);
        unsubscribe();
        this.hung.delete(answer);
        resolve(log.since(after));
      };
      const timer = setTimeout(answer, wait);
      const unsubscribe = log.subscribe(answer);
      this.hung.add(answer);
    });
  }

  /** Stops accepting, lets in-flight requests finish for up to graceMs, then cuts the rest. */
  close(graceMs = DEFAULT_CLOSE_GRACE_MS): Promise<void> {
    this.closing ??= (async () => {
      for (const end of [...this.hung]) end();
      // Nobody takes this socket over: idle keep-alive connections are closed at once.
      await this.server.close({ graceMs, idleGraceMs: 0 });
    })();
    return this.closing;
  }

  /** The first armed fault that sets `field`, counted as used. */
  private take(field: keyof Omit<MemoryProxyFault, "times">): MemoryProxyFault | undefined {
    for (const armed of this.armed) {
      if (armed.fault[field] === undefined) continue;
      if (--armed.left <= 0) this.armed.delete(armed);
      return armed.fault;
    }
    return undefined;
  }

  /** Waits ms (forever for Infinity), then rejects with message; close() ends the wait early. */
  private hang(ms: number, message: string): Promise<never> {
    return new Promise((_resolve, reject) => {
      const end = (): void => {
        clearTimeout(timer);
        this.hung.delete(end);
        reject(new TurquoiseError("INTERNAL", message));
      };
      const timer = Number.isFinite(ms) ? setTimeout(end, ms) : undefined;
      this.hung.add(end);
    });
  }
}
