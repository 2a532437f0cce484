// A tiny keep-alive HTTP upstream for benchmarks, run as its own process so that it does not
// share an event loop with what is measured. As a script it listens and prints "listening PORT".
// In hang mode it accepts connections and never answers (bench:abuse's hostile upstream).

import { type ChildProcess, spawn } from "node:child_process";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";

/** About 100 bytes, like a small API answer. */
export const HELLO_BODY = Buffer.from(JSON.stringify({ service: "bench", message: "hello from the upstream", items: [1, 2, 3], ok: true, pad: "x".repeat(20) }));

export interface RunningUpstream {
  port: number;
  pid: number;
  stop(): Promise<void>;
}

/** Starts the upstream as a separate Node process on 127.0.0.1. */
export async function startUpstreamProcess(opts: { hang?: boolean; timeoutMs?: number } = {}): Promise<RunningUpstream> {
  const { port, child } = await startListeningScript(fileURLToPath(import.meta.url), ["0", ...(opts.hang ? ["hang"] : [])], "the upstream", opts.timeoutMs);
  return { port, pid: child.pid!, stop: () => stopChild(child) };
}

/**
 * Runs a bench script as its own Node process and resolves once it prints "listening PORT"; `what`
 * names it in the errors. Shared by the upstream and the pipe (bench/lib/pipe.ts).
 */
export function startListeningScript(script: string, args: string[], what: string, timeoutMs = 10_000): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(process.execPath, [script, ...args], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${what} did not start within ${timeoutMs} ms`));
    }, timeoutMs);
    let out = "";
    child.stdout!.setEncoding("utf8").on("data", (s: string) => {
      out += s;
      const m = /listening (\d+)/.exec(out);
      if (!m) return;
      clearTimeout(timer);
      resolve({ port: Number(m[1]), child });
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code} before listening`));
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

/** Accepts, reads nothing, answers nothing: every connection stays open until the peer gives up. */
function hang(port: number): void {
  const held = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    held.add(socket);
    socket.on("error", () => {});
    socket.on("close", () => held.delete(socket));
  });
  server.listen({ port, host: "127.0.0.1", backlog: 4096 }, () => process.stdout.write(`listening ${(server.address() as AddressInfo).port}\n`));
  process.on("SIGTERM", () => process.exit(0));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const port = Number(process.argv[2] ?? 0);
  if (process.argv[3] === "hang") hang(port);
  else serve(port);
}
