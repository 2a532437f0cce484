// A real Prometheus for tests: scripts/ensure-prometheus.sh installs Debian's package (so these
// tests never skip), and each caller runs its own server on loopback with a generated config.

import { execFileSync, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "../../src/util/net.js";

const ENSURE_PROMETHEUS = fileURLToPath(new URL("../../../scripts/ensure-prometheus.sh", import.meta.url));

export interface TestPrometheus {
  url: string;
  /** GET /api/v1/<path> with query parameters; throws on a non-success answer. */
  api<T = unknown>(apiPath: string, params?: Record<string, string>): Promise<T>;
  /** An instant query's vector, as [labels, value] pairs. */
  query(promql: string): Promise<Array<{ labels: Record<string, string>; value: number }>>;
  /** Polls until check() returns a value that is not undefined, or throws after timeoutMs naming what it saw last. */
  waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs?: number): Promise<T>;
  stop(): Promise<void>;
}

/** Installs Prometheus when it is missing. */
export function ensurePrometheus(): void {
  execFileSync("bash", [ENSURE_PROMETHEUS], { stdio: ["ignore", "ignore", "inherit"] });
}

/**
 * Starts Prometheus on 127.0.0.1 with `scrapeConfigs` (YAML list items, already indented under
 * scrape_configs) and a short global scrape interval, and waits until it is ready.
 */
export async function startPrometheus(scrapeConfigs: string, opts: { scrapeInterval?: string } = {}): Promise<TestPrometheus> {
  ensurePrometheus();
  const dir = await mkdtemp(path.join(os.tmpdir(), "turquoise-prom-"));
  const port = await freePort();
  const interval = opts.scrapeInterval ?? "1s";
  const config = `global:\n  scrape_interval: ${interval}\n  evaluation_interval: ${interval}\nscrape_configs:\n${scrapeConfigs}\n`;
  await writeFile(path.join(dir, "prometheus.yml"), config);
  const child = spawn(
    "prometheus",
    [
      `--config.file=${path.join(dir, "prometheus.yml")}`,
      `--storage.tsdb.path=${path.join(dir, "data")}`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--log.level=warn",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4_000)));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const url = `http://127.0.0.1:${port}`;

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(killer);
    }
    await rm(dir, { recursive: true, force: true });
  };

  const api = async <T>(apiPath: string, params: Record<string, string> = {}): Promise<T> => {
    const res = await fetch(`${url}/api/v1/${apiPath}?${new URLSearchParams(params)}`);
    const body = (await res.json()) as { status: string; data: T; error?: string };
    if (body.status !== "success") throw new Error(`prometheus ${apiPath}: ${body.error ?? res.status}`);
    return body.data;
  };

  const waitFor = async <T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    for (;;) {
      try {
        const v = await check();
        if (v !== undefined) return v;
      } catch (err) {
        last = err;
      }
      if (Date.now() > deadline) throw new Error(`prometheus: ${what} not seen within ${timeoutMs}ms${last ? ` (last error: ${String(last)})` : ""}\n${stderr}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  };

  try {
    await waitFor("readiness", async () => {
      if (child.exitCode !== null) throw new Error(`prometheus exited with ${child.exitCode}: ${stderr}`);
      const res = await fetch(`${url}/-/ready`).catch(() => undefined);
      return res?.ok ? true : undefined;
    });
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    url,
    api,
    async query(promql) {
      const data = await api<{ resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> }>("query", {
        query: promql,
      });
      return data.result.map((r) => ({ labels: r.metric, value: Number(r.value[1]) }));
    },
    waitFor,
    stop,
  };
}
