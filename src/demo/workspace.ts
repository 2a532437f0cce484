// A throwaway Turquoise workspace around examples/books-service: a temp dir with a spec, free
// ports and a detached agent. The demo, the tests and the benchmarks all start from here.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { freePort } from "../util/net.js";

export const REPO_ROOT = path.resolve(new URL("../../../", import.meta.url).pathname);
export const BOOKS_DIR = path.join(REPO_ROOT, "examples", "books-service");
export const BIN = path.join(REPO_ROOT, "bin", "turquoise.js");

export interface WorkspaceOptions {
  replicas?: number;
  keepPrevious?: string;
  drainTimeout?: string;
  deployTimeout?: string;
  healthInterval?: string;
  /** Extra YAML lines inside the service block (indented by the caller to 4 spaces). */
  extraServiceYaml?: string;
  /** Where releases live; defaults to the example's releases dir. */
  releasesDir?: string;
  /** A shared database with the example's migrations for that driver. url may be "${VAR}". */
  database?: { driver: "sqlite" | "postgres"; url: string; migrations?: string };
  /** Environment for every CLI run (and so for a detached agent). */
  env?: NodeJS.ProcessEnv;
  /**
   * Run the service as containers instead of local processes: image names each release's image
   * with {release} (src/demo/images.ts builds them). Without a database each container keeps its
   * own books file, inside the container.
   */
  runtime?: { kind: "docker"; image: string; network?: "bridge" | "host" } | SwarmWorkspaceRuntime;
  /** route.preview_host of the service. */
  previewHost?: string;
  /** The proxy driver: Turquoise's own (default) or nginx. */
  proxyDriver?: "builtin" | "nginx";
  /** A top-level state block, as YAML lines ("state:\n  driver: etcd\n..."); SQLite in the state dir without it. */
  stateYaml?: string;
  /** The books file the instances share; by default one in the workspace's dir. Several agents of one project share one. */
  booksFile?: string;
}

/** Run the service on a Swarm: the manager's socket, the nodes' sockets by address, placement constraints. */
export interface SwarmWorkspaceRuntime {
  kind: "swarm";
  image: string;
  manager: string;
  nodes?: Record<string, string>;
  placement?: string[];
}

/** BOOKS_FILE inside a container: a host path does not exist there. */
export const BOOKS_FILE_IN_CONTAINER = "/tmp/books.jsonl";

export interface Workspace {
  dir: string;
  specFile: string;
  proxyUrl: string;
  agentPort: number;
  booksFile: string;
  /** Runs the CLI against this workspace; rejects on a non-zero exit with its output. */
  cli(args: string[], opts?: { allowFail?: boolean; env?: NodeJS.ProcessEnv }): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Stops everything and removes the directory. */
  destroy(): Promise<void>;
}

const run = promisify(execFile);

export async function createWorkspace(opts: WorkspaceOptions = {}): Promise<Workspace> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "turquoise-"));
  const [agentPort, proxyPort] = [await freePort(), await freePort()];
  const booksFile = opts.booksFile ?? path.join(dir, "books.jsonl");
  const releases = opts.releasesDir ?? path.join(BOOKS_DIR, "releases");
  const specFile = path.join(dir, "turquoise.yml");
  fs.writeFileSync(specFile, `version: 1
agent: { listen: "127.0.0.1:${agentPort}" }
proxy: { listen: "127.0.0.1:${proxyPort}"${opts.proxyDriver === "nginx" ? ", driver: nginx" : ""} }
${opts.stateYaml ?? ""}${swarmBlock(opts.runtime)}services:
  books:
${runsAs(opts.runtime, releases, booksFile)}    replicas: ${opts.replicas ?? 2}
    route: { path: /${opts.previewHost ? `, preview_host: ${opts.previewHost}` : ""} }
    health: { http: /health, interval: ${opts.healthInterval ?? "1s"}, timeout: 1s, success_before_passing: 1, failures_before_critical: 2 }
    deploy_timeout: ${opts.deployTimeout ?? "20s"}
    drain_timeout: ${opts.drainTimeout ?? "5s"}
    stop_timeout: 5s
    keep_previous: ${opts.keepPrevious ?? "0s"}
${opts.database ? `    database:
      driver: ${opts.database.driver}
      url: ${JSON.stringify(opts.database.url)}
      migrations: ${JSON.stringify(opts.database.migrations ?? path.join(BOOKS_DIR, "migrations", opts.database.driver))}
` : ""}${opts.extraServiceYaml ?? ""}`);

  const cli: Workspace["cli"] = async (args, o = {}) => {
    try {
      const env = { ...process.env, ...opts.env, ...o.env };
      const { stdout, stderr } = await run(process.execPath, [BIN, ...args, "-f", specFile], { cwd: dir, env, maxBuffer: 64 * 1024 * 1024 });
      return { code: 0, stdout, stderr };
    } catch (e) {
      const err = e as { code?: number; stdout?: string; stderr?: string };
      const out = { code: typeof err.code === "number" ? err.code : 1, stdout: err.stdout ?? "", stderr: err.stderr ?? "" };
      if (o.allowFail) return out;
      throw new Error(`turquoise ${args.join(" ")} exited ${out.code}:\n${out.stdout}\n${out.stderr}`);
    }
  };

  return {
    dir, specFile, agentPort, booksFile, cli,
    proxyUrl: `http://127.0.0.1:${proxyPort}`,
    async destroy() {
      await cli(["down"], { allowFail: true });
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The top-level swarm block, for runtime swarm. */
function swarmBlock(runtime: WorkspaceOptions["runtime"]): string {
  if (runtime?.kind !== "swarm") return "";
  return `swarm:\n  manager: ${JSON.stringify(runtime.manager)}\n  nodes: ${JSON.stringify(runtime.nodes ?? {})}\n`;
}

/** The lines that say how instances run: a command in a release directory, or a container image. */
function runsAs(runtime: WorkspaceOptions["runtime"], releases: string, booksFile: string): string {
  if (runtime?.kind === "swarm") {
    return `    runtime: swarm
    image: ${JSON.stringify(runtime.image)}
    env: { BOOKS_FILE: ${JSON.stringify(BOOKS_FILE_IN_CONTAINER)} }
${runtime.placement ? `    placement: ${JSON.stringify(runtime.placement)}\n` : ""}`;
  }
  if (runtime?.kind === "docker") {
    return `    runtime: docker
    image: ${JSON.stringify(runtime.image)}
    network: ${runtime.network ?? "bridge"}
    env: { BOOKS_FILE: ${JSON.stringify(BOOKS_FILE_IN_CONTAINER)} }
`;
  }
  return `    command: [${JSON.stringify(process.execPath)}, "server.mjs"]
    cwd: ${JSON.stringify(path.join(releases, "{release}"))}
    env: { BOOKS_FILE: ${JSON.stringify(booksFile)} }
`;
}
