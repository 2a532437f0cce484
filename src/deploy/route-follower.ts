// Each agent's proxy follows the route table the leader publishes in the store (several agents on
// one etcd), as consul-template follows Consul: every node routes the same way, and with no leader,
// or no etcd, each proxy keeps serving the last table it got.
import { errorMessage } from "../errors.js";
import type { RouteTable } from "../proxy/contract.js";
import { validateTable } from "../proxy/table.js";
import type { Store, WatchEvent } from "../state/contract.js";
import { keys } from "./records.js";

const RETRY_MS = 1_000;

export interface RouteFollowerDeps {
  store: Store;
  /** This agent's proxy, whichever process it is now. */
  apply(table: RouteTable): Promise<void>;
  /** The leader applies its own tables; a follower applies what the leader published. */
  following(): boolean;
  log: (level: "info" | "warn", type: string, message: string, data?: Record<string, unknown>) => void;
}

export class RouteFollower {
  private latest: RouteTable | undefined;
  private applied = 0;
  private running: Promise<void> | undefined;
  private unwatch: (() => void) | undefined;
  private retry: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly d: RouteFollowerDeps) {}

  /** Watches the published table from now on, and applies the one published before. */
  async start(): Promise<void> {
    this.unwatch = this.d.store.watch(keys.routeTable(), (e) => this.changed(e));
    try {
      const kv = await this.d.store.get(keys.routeTable());
      if (kv) this.take(kv.value);
    } catch (e) {
      // The watch catches up once etcd answers; meanwhile the proxy serves the table it restored.
      this.d.log("warn", "routes.follow-error", `reading the published route table failed: ${errorMessage(e)}; the proxy keeps its last table`);
    }
  }

  /** Applies the last published table again: the proxy restarted, or this agent stepped down. */
  reapply(): void {
    this.applied = 0;
    this.kick();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retry);
    this.unwatch?.();
  }

  private changed(e: WatchEvent): void {
    if (e.type === "put" && e.key === keys.routeTable()) this.take(e.value);
  }

  private take(text: string): void {
    let table: unknown;
    try {
      table = JSON.parse(text);
    } catch {
      table = undefined;
    }
    const problem = validateTable(table);
    if (problem) {
      this.d.log("warn", "routes.invalid", `the published route table is not valid (${problem}): the proxy keeps its last table`);
      return;
    }
    const t = table as RouteTable;
    if (this.latest && t.version <= this.latest.version) return;
    this.latest = t;
    this.kick();
  }

  /** One apply at a time, always of the newest table. */
  private kick(): void {
    if (this.running || this.stopped) return;
    this.running = this.loop().finally(() => (this.running = undefined));
  }

  private async loop(): Promise<void> {
    while (!this.stopped && this.latest && this.latest.version > this.applied && this.d.following()) {
      const table = this.latest;
      try {
        await this.d.apply(table);
        this.applied = table.version;
      } catch (e) {
        this.d.log("warn", "routes.follow-error", `applying published route table ${table.version} to this agent's proxy failed: ${errorMessage(e)}; trying again`);
        clearTimeout(this.retry);
        this.retry = setTimeout(() => this.kick(), RETRY_MS);
        this.retry.unref();
        return;
      }
    }
  }
}
