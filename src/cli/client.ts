// The CLI's way to the agent: its HTTP API on loopback, with the token from the state dir.
import http from "node:http";
import os from "node:os";
import { TurquoiseError, type ErrorCode } from "../errors.js";
import { readAgentInfo } from "../agent.js";
import { readToken } from "../auth/token.js";
import { loadSpecOrThrow } from "../spec/loader.js";
import type { Spec } from "../spec/types.js";

export class AgentClient {
  constructor(readonly baseUrl: string, private readonly token: string) {}

  async get<T>(path: string): Promise<T> {
    return this.request<T>("GET", path);
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const { status, text } = await this.raw(method, path, body);
    const parsed = text ? (JSON.parse(text) as { error?: { code: ErrorCode; message: string } }) : {};
    if (status >= 400) {
      const e = parsed.error;
      throw new TurquoiseError(e?.code ?? "INTERNAL", e?.message ?? `agent answered ${status}`, { data: e as Record<string, unknown> });
    }
    return parsed as T;
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
            reject(new TurquoiseError(e?.code ?? "INTERNAL", e?.message ?? `agent answered ${res.statusCode}`));
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

export function connect(specFile: string): { spec: Spec; client: AgentClient } {
  const { spec } = loadSpecOrThrow(specFile);
  const info = readAgentInfo(spec.stateDir);
  const host = info?.api.host ?? spec.agent.host;
  const port = info?.api.port ?? spec.agent.port;
  return { spec, client: new AgentClient(`http://${host}:${port}`, readToken(spec.stateDir)) };
}

export function actor(): string {
  return process.env.TURQUOISE_ACTOR ?? `${os.userInfo().username}@${os.hostname()}`;
}
