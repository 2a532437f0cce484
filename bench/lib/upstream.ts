// A tiny keep-alive HTTP upstream for benchmarks, run as its own process so that it does not
// share an event loop with what is measured. As a script it listens and prints "listening PORT".

import { type ChildProcess, spawn } from "node:child_process";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";

/** About 100 bytes, like a small API answer. */
export const HELLO_BODY = Buffer.from(JSON.stringify({ service: "bench", message: "hello from the upstream", items: [1, 2, 3], ok: true, pad: "x".repeat(20) }));

export interface RunningUpstream {
  port: number;
  pid: number;
  stop(): Promise<void>;
}

/** Starts the upstream as a separate Node process on 127.0.0.1. */
export function startUpstreamProcess(timeoutMs = 10_000): Promise<RunningUpstream> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), "0"], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the upstream did not start within ${timeoutMs} ms`));
    }, timeoutMs);
    let out = "";
    child.stdout!.setEncoding("utf8").on("data", (s: string) => {
      out += s;
      const m = /listening (\d+)/.exec(out);
      if (!m) return;
      clearTimeout(timer);
      resolve({ port: Number(m[1]), pid: child.pid!, stop: () => stopChild(child) });
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the upstream exited with ${code} before listening`));
    });
  });
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
  });
}

function serve(port: number): void {
  const length = String(HELLO_BODY.length);
  const server = http.createServer({ noDelay: true }, (req, res) => {
    if (req.method === "POST") {
      req.resume();
      req.on("end", () => res.writeHead(200, ["Content-Type", "application/json", "Content-Length", length]).end(HELLO_BODY));
      return;
    }
    res.writeHead(200, ["Content-Type", "application/json", "Content-Length", length]);
    res.end(HELLO_BODY);
  });
  // Longer than any keep-alive client idles during a run, so every scenario reuses its connections.
  server.keepAliveTimeout = 60_000;
  server.listen(port, "127.0.0.1", () => process.stdout.write(`listening ${(server.address() as AddressInfo).port}\n`));
  process.on("SIGTERM", () => process.exit(0));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) serve(Number(process.argv[2] ?? 0));
