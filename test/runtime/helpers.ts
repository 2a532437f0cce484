// Small helpers shared by the runtime tests: real HTTP requests and polling with a deadline.

import { get } from "node:http";
import { fileURLToPath } from "node:url";

/** The echo app lives in the source tree; this file runs from dist/test/runtime/. */
export const ECHO_APP = fileURLToPath(new URL("../../../test/fixtures/echo-app.mjs", import.meta.url));

export interface EchoReply {
  pid: number;
  cwd: string;
  env: Record<string, string>;
}

export function getJson(host: string, port: number, path = "/"): Promise<EchoReply> {
  return new Promise((resolve, reject) => {
    // A fresh connection each time, so a stopped instance cannot answer through a pooled socket.
    const req = get({ host, port, path, agent: false, timeout: 2_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => {
        try {
          resolve(JSON.parse(body) as EchoReply);
        } catch (e) {
          reject(e);
        }
      });
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
  });
}

/** The instance's whole environment (the echo app's GET /env). */
export async function getEnv(instance: { host: string; port: number }): Promise<Record<string, string>> {
  await waitReachable(instance);
  return (await getJson(instance.host, instance.port, "/env")) as unknown as Record<string, string>;
}

/** Polls until probe gives a value; the bound only ends a wait for what never comes, so a loaded machine gets 20 s. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ""}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export function waitReachable(instance: { host: string; port: number }): Promise<EchoReply> {
  return waitFor(`${instance.host}:${instance.port} to answer`, () => getJson(instance.host, instance.port));
}
