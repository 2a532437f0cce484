// Consul-style watches: each one looks at a view of the registry (a service's instances, health
// checks, a key, a key prefix). When the view changes, its handler runs with the view as JSON:
// a command on stdin, or an HTTP request body. Handlers time out; every run is logged with its
// exit status. One run at a time per watch; a change during a run triggers one more run after it.
import type { Registry } from "../api/registry.js";
import { formatDuration } from "../util/duration.js";
import type { WatchSpec } from "../spec/types.js";
import { runCommand } from "../util/command.js";

function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return "(invalid url)";
  }
}

export type WatchView = (w: WatchSpec) => Promise<unknown>;
export type WatchLog = (type: string, message: string, data: Record<string, unknown>) => void;

/** How long one blocking wait on the registry lasts before the view is looked at again anyway. */
const WATCH_POLL_MS = 60_000;
/** Of a handler's output, what goes into the watch.handler event. */
const LOGGED_OUTPUT_CHARS = 500;

export class WatchRunner {
  private stopped = false;
  private readonly loops: Promise<void>[] = [];

  constructor(
    private readonly watches: WatchSpec[],
    private readonly registry: Registry,
    private readonly view: WatchView,
    private readonly cwd: string,
    private readonly log: WatchLog,
    /** Each handler run, and whether it succeeded (metrics). */
    private readonly onRun: (watch: string, ok: boolean) => void = () => {},
  ) {}

  /** Starts every watch; again after stop() too (an agent that leads again after it stepped down). */
  start(): void {
    this.stopped = false;
    this.loops.length = 0;
    for (const w of this.watches) this.loops.push(this.loop(w));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.registry.bump();
    await Promise.allSettled(this.loops);
  }

  private async loop(w: WatchSpec): Promise<void> {
    let index = 0;
    let last: string | undefined;
    while (!this.stopped) {
      index = await this.registry.waitFor(index, WATCH_POLL_MS);
      if (this.stopped) return;
      let json: string;
      try {
        json = JSON.stringify(await this.view(w));
      } catch (e) {
        this.log("watch.error", `watch ${w.name}: ${e instanceof Error ? e.message : e}`, { watch: w.name });
        continue;
      }
      if (json === last) continue;
      last = json;
      await this.run(w, json, index);
    }
  }

  private async run(w: WatchSpec, json: string, index: number): Promise<void> {
    const started = Date.now();
    if ("args" in w.handler) {
      const r = await runCommand(w.handler.args, { cwd: this.cwd, env: { TURQUOISE_WATCH: w.name, TURQUOISE_INDEX: String(index) }, timeoutMs: w.timeoutMs, stdin: json });
      const { status } = r;
      // The end of the output, where errors are.
      const output = r.output.length > LOGGED_OUTPUT_CHARS ? `…${r.output.slice(-LOGGED_OUTPUT_CHARS)}` : r.output;
      this.log("watch.handler", `watch ${w.name}: ${w.handler.args[0]} ${status} in ${Date.now() - started}ms`, { watch: w.name, index, ok: r.ok, status, output, durationMs: Date.now() - started });
      this.onRun(w.name, r.ok);
      return;
    }
    const { url, method, headers } = w.handler.http;
    let status: string;
    let ok = false;
    try {
      const res = await fetch(url, { method, body: json, headers: { "content-type": "application/json", "x-turquoise-index": String(index), "x-turquoise-watch": w.name, ...headers }, signal: AbortSignal.timeout(w.timeoutMs) });
      await res.arrayBuffer();
      ok = res.ok;
      status = `HTTP ${res.status}`;
    } catch (e) {
      status = (e as Error).name === "TimeoutError" ? `timed out after ${formatDuration(w.timeoutMs)}` : `failed: ${(e as Error).message}`;
    }
    // Webhook URLs often carry their secret in the query: log the origin and path only.
    const shown = safeUrl(url);
    this.log("watch.handler", `watch ${w.name}: ${method} ${shown} ${status} in ${Date.now() - started}ms`, { watch: w.name, index, ok, status, durationMs: Date.now() - started });
    this.onRun(w.name, ok);
  }
}
