// A throwaway workspace of many identical services, each running one shared tiny Node HTTP app
// under the process runtime, for bench:scale. Built like src/demo/workspace.ts (temp dir, free
// ports, a detached agent driven by the CLI), which holds the one books service instead.
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { BIN } from "../../src/demo/workspace.js";
import { freePort } from "../../src/util/net.js";
import { pidsWithArg } from "./procfs.js";

/**
 * The app: answers 200 with a few bytes on every path (health checks, verify and the route
 * alike) and exits on SIGTERM. Nothing else is loaded, so an instance costs what Node itself does.
 */
export const TINY_APP = `// bench:scale's tiny app: 200 on every path; exits on SIGTERM.
import { createServer } from "node:http";
const body = JSON.stringify({ service: process.env.TURQUOISE_SERVICE, release: process.env.TURQUOISE_RELEASE });
const server = createServer((req, res) => {
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
});
server.listen(Number(process.env.PORT), process.env.HOST);
process.on("SIGTERM", () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), 2000).unref();
});
`;

export const RELEASES = ["v1", "v2"] as const;

export interface TinyApp {
  /** The directory this run owns: the script and one (empty) directory per release. */
  dir: string;
  script: string;
  releasesDir: string;
}

/** Writes the app once; every service of every workspace in the run starts this one file. */
export function writeTinyApp(): TinyApp {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "turquoise-scale-app-"));
  const script = path.join(dir, "tiny-app.mjs");
  fs.writeFileSync(script, TINY_APP);
  const releasesDir = path.join(dir, "releases");
  for (const r of RELEASES) fs.mkdirSync(path.join(releasesDir, r), { recursive: true });
  return { dir, script, releasesDir };
}

export interface ScaleWorkspaceOptions {
  services: number;
  replicas: number;
  healthInterval: string;
  app: TinyApp;
  /** Node flags for every instance (before the script). */
  nodeFlags?: readonly string[];
}

export interface ScaleWorkspace {
  dir: string;
  specFile: string;
  stateDir: string;
  agentPort: number;
  proxyUrl: string;
  services: string[];
  /** Runs the CLI against this workspace; rejects on a non-zero exit with its output. */
  cli(args: string[], opts?: { allowFail?: boolean; env?: NodeJS.ProcessEnv }): Promise<{ code: number; stdout: string; stderr: string }>;
  /** `turquoise down`, then SIGKILL for anything of this workspace still running, then removes the directory. */
  destroy(): Promise<void>;
}

const run = promisify(execFile);

/** svc-000, svc-001, ...: sorted as numbered, and each its own route prefix. */
export function serviceName(i: number): string {
  return `svc-${String(i).padStart(3, "0")}`;
}

export async function createScaleWorkspace(opts: ScaleWorkspaceOptions): Promise<ScaleWorkspace> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "turquoise-scale-"));
  const [agentPort, proxyPort] = [await freePort(), await freePort()];
  const specFile = path.join(dir, "turquoise.yml");
  const services = Array.from({ length: opts.services }, (_, i) => serviceName(i));
  const command = JSON.stringify([process.execPath, ...(opts.nodeFlags ?? []), opts.app.script]);
  const cwd = JSON.stringify(path.join(opts.app.releasesDir, "{release}"));
  fs.writeFileSync(specFile, `version: 1
agent: { listen: "127.0.0.1:${agentPort}" }
proxy: { listen: "127.0.0.1:${proxyPort}" }
services:
${services.map((name) => `  ${name}:
    command: ${command}
    cwd: ${cwd}
    replicas: ${opts.replicas}
    route: { path: /${name} }
    health: { http: /health, interval: ${opts.healthInterval}, timeout: 1s, success_before_passing: 1, failures_before_critical: 2 }
    deploy_timeout: 120s
    drain_timeout: 5s
    stop_timeout: 5s
    keep_previous: 0s
`).join("")}`);

  const cli: ScaleWorkspace["cli"] = async (args, o = {}) => {
    try {
      const { stdout, stderr } = await run(process.execPath, [BIN, ...args, "-f", specFile], { cwd: dir, env: { ...process.env, ...o.env }, maxBuffer: 64 * 1024 * 1024 });
      return { code: 0, stdout, stderr };
    } catch (e) {
      const err = e as { code?: number; stdout?: string; stderr?: string };
      const out = { code: typeof err.code === "number" ? err.code : 1, stdout: err.stdout ?? "", stderr: err.stderr ?? "" };
      if (o.allowFail) return out;
      throw new Error(`turquoise ${args.join(" ")} exited ${out.code}:\n${out.stdout}\n${out.stderr}`);
    }
  };

  return {
    dir, specFile, stateDir: path.join(dir, ".turquoise"), agentPort, proxyUrl: `http://127.0.0.1:${proxyPort}`, services, cli,
    async destroy() {
      await cli(["down"], { allowFail: true });
      // A run cut short (or an agent that died) must not leave hundreds of processes behind: the
      // agent and the proxy name this directory on their command line, and nothing else does.
      for (const pid of pidsWithArg(dir)) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // Already gone.
        }
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
