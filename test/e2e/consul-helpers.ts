// Shared by the Consul API's end-to-end tests: a workspace with consul.listen set, and raw
// requests to that listener (so tests see Consul's status codes, headers and bodies as sent).
import fs from "node:fs";
import http from "node:http";
import type { Workspace } from "../../src/demo/workspace.js";
import { freePort } from "../../src/util/net.js";

/** Turns the Consul API on in a workspace's spec (before `up`); returns its port. */
export async function enableConsul(ws: Workspace, extra: Record<string, string | number> = {}, port?: number): Promise<number> {
  port ??= await freePort();
  const lines = Object.entries({ listen: `"127.0.0.1:${port}"`, ...extra }).map(([k, v]) => `  ${k}: ${v}`);
  fs.appendFileSync(ws.specFile, `consul:\n${lines.join("\n")}\n`);
  return port;
}

export interface ConsulAnswer {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
  /** X-Consul-Index, or 0 when the answer has none. */
  index: number;
}

/** One request to the Consul API, the path sent as written (no normalizing); the registry token unless told. */
export function consulRequest(port: number, path: string, opts: { method?: string; token?: string | null; headers?: Record<string, string>; body?: string } = {}): Promise<ConsulAnswer> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers["x-consul-token"] = opts.token;
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path, method: opts.method ?? "GET", agent: false, headers }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers, index: Number(res.headers["x-consul-index"] ?? 0) }));
    });
    req.on("error", reject);
    req.end(opts.body);
  });
}
