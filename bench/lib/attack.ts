// A bounded connection flood for bench:abuse, run as its own process: N raw sockets to the proxy,
// each sends one GET and waits for its answer, then the process prints what each one got as JSON.
// As a script: node attack.js '{"port":8080,"host":"hang.localhost","connections":10000,"maxWaitMs":20000}'

import { type ChildProcess, fork } from "node:child_process";
import net from "node:net";
import { fileURLToPath } from "node:url";

export interface AttackOptions {
  port: number;
  /** Host header of the attacked route. */
  host: string;
  connections: number;
  /** The flood ends at this bound, whatever is still waiting. */
  maxWaitMs: number;
}

/** How many connections ended each way: "status 503", "closed before an answer", "still waiting at the bound", ... */
export interface AttackReport {
  outcomes: Record<string, number>;
  /** Connections that had opened (connected) before ending. */
  connected: number;
  durationMs: number;
}

export interface RunningAttack {
  pid: number;
  report: Promise<AttackReport>;
}

export function startAttack(opts: AttackOptions): RunningAttack {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), [JSON.stringify(opts)], { stdio: ["ignore", "pipe", "inherit", "ipc"] });
  const report = new Promise<AttackReport>((resolve, reject) => {
    let out = "";
    child.stdout!.setEncoding("utf8").on("data", (s: string) => (out += s));
    child.once("exit", (code) => {
      try {
        resolve(JSON.parse(out) as AttackReport);
      } catch {
        reject(new Error(`the attack process exited with ${code} and no report`));
      }
    });
  });
  return { pid: child.pid!, report };
}

function attack(opts: AttackOptions): void {
  const started = performance.now();
  const outcomes: Record<string, number> = {};
  let open = opts.connections;
  let connected = 0;
  const count = (what: string): void => {
    outcomes[what] = (outcomes[what] ?? 0) + 1;
  };
  const sockets = new Set<net.Socket>();
  const finish = (): void => {
    for (const s of sockets) {
      count("still waiting at the bound");
      s.destroy();
    }
    sockets.clear();
    process.stdout.write(JSON.stringify({ outcomes, connected, durationMs: Math.round(performance.now() - started) } satisfies AttackReport));
    process.exit(0);
  };
  const bound = setTimeout(finish, opts.maxWaitMs);
  const request = `GET / HTTP/1.1\r\nHost: ${opts.host}\r\nConnection: close\r\n\r\n`;
  const one = (): void => {
    const s = net.connect({ host: "127.0.0.1", port: opts.port });
    sockets.add(s);
    let first = "";
    let ended = false;
    const end = (what: string): void => {
      if (ended) return;
      ended = true;
      sockets.delete(s);
      count(what);
      s.destroy();
      if (--open === 0) {
        clearTimeout(bound);
        finish();
      }
    };
    s.once("connect", () => {
      connected++;
      s.write(request);
    });
    s.on("data", (chunk: Buffer) => {
      first += chunk.toString("latin1");
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(first);
      if (m) end(`status ${m[1]}`);
      else if (first.length > 64) end("garbage");
    });
    s.on("error", (e: NodeJS.ErrnoException) => end(`error ${e.code ?? e.message}`));
    s.on("close", () => end("closed before an answer"));
  };
  // In batches, so that the flood is a flood of established connections, not of SYN retries.
  let started_ = 0;
  const batch = (): void => {
    for (let i = 0; i < 500 && started_ < opts.connections; i++, started_++) one();
    if (started_ < opts.connections) setImmediate(batch);
  };
  batch();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) attack(JSON.parse(process.argv[2]!) as AttackOptions);
