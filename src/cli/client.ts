// The CLI's way to the agent: its HTTP API on loopback, with the token from the state dir.
import http from "node:http";
import os from "node:os";
import { TurquoiseError, type ErrorCode } from "../errors.js";
import { readAgentInfo } from "../agent.js";
import { readToken } from "../auth/token.js";
import { agentIdFor } from "../runtime/identity.js";
import { agentCopyWarning, loadSpecOrAgentCopy } from "../spec/agent-copy.js";
import { loadSpecOrThrow } from "../spec/loader.js";
import type { Spec } from "../spec/types.js";

/** The project a client's agent must serve: its agent id (agentIdFor the state dir) and spec file, for the error. */
export interface Project {
  agentId: string;
  specFile: string;
}

export class AgentClient {
  constructor(readonly baseUrl: string, private readonly token: string, private readonly project?: Project) {}

  async get<T>(path: string): Promise<T> {
    return this.request<T>("GET", path);
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const { status, text } = await this.raw(method, path, body);
    const parsed = text ? (JSON.parse(text) as { error?: { code: ErrorCode; message: string } }) : {};
    if (status >= 400) {
      if (status === 401) await this.refuseOtherAgent();
      const e = parsed.error;
      throw new TurquoiseError(e?.code ?? "INTERNAL", e?.message ?? `agent answered ${status}`, { data: e as Record<string, unknown> });
    }
    return parsed as T;
  }

  /**
   * A token refused may mean the agent on this port is another project's (its token is not ours):
   * its liveness probe names its project. An agent that names none is left to the 401's own words.
   */
  private async refuseOtherAgent(): Promise<void> {
    if (!this.project) return;
    const probe = await this.raw("GET", "/v1/health").catch(() => undefined);
    let theirs: unknown;
    try {
      theirs = (JSON.parse(probe?.text ?? "") as { agent?: unknown }).agent;
    } catch {
      return;
    }
    if (typeof theirs !== "string" || theirs === this.project.agentId) return;
    throw new TurquoiseError("CONFLICT", `the agent at ${this.baseUrl} is not this project's agent: it serves another project (agent id ${theirs}; ${this.project.specFile} is ${this.project.agentId}). Give this project an agent.listen port of its own in ${this.project.specFile}, then \`turquoise up --detach\``);
  }

  /** POSTs and calls onLine for each NDJSON line the agent streams back. */
  async stream(path: string, body: unknown, onLine: (o: Record<string, unknown>) => void): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const req = this.open("POST", path, (res) => {
        if ((res.statusCode ?? 0) >= 400) {
          let text = "";
          res.on("data", (c: Buffer) => (text += c));
          res.on("end", () => {
            const e = (JSON.parse(text || "{}") as { error?: { code: ErrorCode; message: string } }).error;
            const refused = new TurquoiseError(e?.code ?? "INTERNAL", e?.message ?? `agent answered ${res.statusCode}`);
            (res.statusCode === 401 ? this.refuseOtherAgent() : Promise.resolve()).then(() => reject(refused), reject);
          });
          return;
        }
        let buf = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          buf += c;
          let nl: number;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            if (line.trim()) onLine(JSON.parse(line) as Record<string, unknown>);
          }
        });
        res.on("end", resolve);
        res.on("error", reject);
      });
      req.on("error", (e) => reject(this.unreachable(e)));
      req.end(JSON.stringify(body));
    });
  }

  private raw(method: string, path: string, body?: unknown): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      const req = this.open(method, path, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (text += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
      });
      req.on("error", (e) => reject(this.unreachable(e)));
      req.end(body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body));
    });
  }

  private open(method: string, path: string, onResponse: (res: http.IncomingMessage) => void): http.ClientRequest {
    const url = new URL(path, this.baseUrl);
    return http.request(url, { method, agent: false, headers: { authorization: `Bearer ${this.token}`, "content-type": "application/json" } }, onResponse);
  }

  private unreachable(e: Error): TurquoiseError {
    return new TurquoiseError("AGENT_UNREACHABLE", `no agent answers at ${this.baseUrl} (${e.message}): start one with \`turquoise up --detach\``);
  }
}

/**
 * The agent of this spec, at the address its agent.json says (else the spec's agent.listen). With
 * agentCopy, an invalid spec file falls back on the spec the agent started with, and says so on
 * stderr: reading and stopping a running stack must not wait for the file to be fixed.
 */
export function connect(specFile: string, opts: { agentCopy?: boolean; warn?: (line: string) => void } = {}): { spec: Spec; client: AgentClient } {
  let spec: Spec;
  if (opts.agentCopy) {
    const found = loadSpecOrAgentCopy(specFile);
    const warning = agentCopyWarning(found);
    if (warning) opts.warn?.(warning);
    spec = found.spec;
  } else {
    spec = loadSpecOrThrow(specFile).spec;
  }
  return { spec, client: clientFor(spec) };
}

/** A client for spec's agent, which must prove to be this project's when it refuses the token. */
export function clientFor(spec: Spec, info = readAgentInfo(spec.stateDir)): AgentClient {
  const host = info?.api.host ?? spec.agent.host;
  const port = info?.api.port ?? spec.agent.port;
  return new AgentClient(`http://${host}:${port}`, readToken(spec.stateDir), { agentId: agentIdFor(spec.stateDir), specFile: spec.file });
}

export function actor(): string {
  return process.env.TURQUOISE_ACTOR ?? `${os.userInfo().username}@${os.hostname()}`;
}
