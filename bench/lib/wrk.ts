// Runs wrk (HTTP/1.1 keep-alive load) and parses its report.

import { spawn } from "node:child_process";
import { parseArgs } from "node:util";
import { resolveWorkers } from "../../src/proxy/builtin.js";

export interface WrkOptions {
  connections: number;
  threads: number;
  durationS: number;
  /** A Lua script path passed as --script. */
  script?: string;
  /** Per-request timeout; wrk counts slower requests as timeout errors. */
  timeoutS?: number;
}

export interface WrkResult {
  rps: number;
  /** Latency percentiles in milliseconds. */
  p50: number;
  p99: number;
  requests: number;
  /** Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses. */
  errors: number;
  /** The socket errors apart: connect ones are refusals, read and write ones resets. */
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  /** The slowest request, in milliseconds. */
  maxMs: number;
}

export function runWrk(url: string, opts: WrkOptions): Promise<WrkResult> {
  const args = [`-t${opts.threads}`, `-c${opts.connections}`, `-d${opts.durationS}s`, "--latency"];
  if (opts.timeoutS !== undefined) args.push("--timeout", `${opts.timeoutS}s`);
  if (opts.script !== undefined) args.push("--script", opts.script);
  args.push(url);
  return new Promise((resolve, reject) => {
    const child = spawn("wrk", args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => (out += s));
    child.stderr.setEncoding("utf8").on("data", (s: string) => (err += s));
    child.once("error", reject);
    child.once("close", (code) => {
      if (code !== 0) return reject(new Error(`wrk ${args.join(" ")} exited with ${code}: ${err || out}`));
      try {
        resolve(parseWrkOutput(out));
      } catch (e) {
        reject(e);
      }
    });
  });
}

const LATENCY_UNITS_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1_000, m: 60_000 };

function latencyMs(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text);
  if (!m) throw new Error(`unreadable wrk latency "${text}"`);
  return parseFloat(m[1]!) * LATENCY_UNITS_MS[m[2]!]!;
}

/** Parses the report printed by `wrk --latency`. */
export function parseWrkOutput(text: string): WrkResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(text);
  const requests = /(\d+) requests in/.exec(text);
  const p50 = /^\s+50%\s+(\S+)/m.exec(text);
  const p99 = /^\s+99%\s+(\S+)/m.exec(text);
  if (!rps || !requests || !p50 || !p99) throw new Error(`unreadable wrk output (was --latency passed?):\n${text}`);
  let errors = 0;
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const [connect, read, write, timeout] = socket ? socket.slice(1).map(Number) : [0, 0, 0, 0];
  const socketErrors = { connect: connect!, read: read!, write: write!, timeout: timeout! };
  errors += socketErrors.connect + socketErrors.read + socketErrors.write + socketErrors.timeout;
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  if (non2xx) errors += Number(non2xx[1]);
  const max = /^\s+Latency\s+\S+\s+\S+\s+(\S+)/m.exec(text);
  return { rps: parseFloat(rps[1]!), p50: latencyMs(p50[1]!), p99: latencyMs(p99[1]!), requests: Number(requests[1]), errors, socketErrors, maxMs: max ? latencyMs(max[1]!) : NaN };
}

export interface WrkBenchArgs {
  json: boolean;
  rounds: number;
  wrk: WrkOptions;
  /** --workers as given ("auto" or a count), and as a count for this machine. */
  workersArg: string;
  workers: number;
  /** Prints a progress or report line: to stderr under --json, which keeps stdout for the JSON. */
  say(line: string): void;
}

/** The options every wrk comparison takes: [--json] [--duration S] [--rounds N] [--connections N] [--threads N] [--workers 1|N|auto]. */
export function wrkBenchArgs(defaultDurationS: number): WrkBenchArgs {
  const { values } = parseArgs({
    options: {
      json: { type: "boolean", default: false },
      duration: { type: "string", default: String(defaultDurationS) },
      rounds: { type: "string", default: "3" },
      connections: { type: "string", default: "64" },
      threads: { type: "string", default: "2" },
      workers: { type: "string", default: "1" },
    },
  });
  const workersArg = values.workers!;
  if (workersArg !== "auto" && !/^[1-9]\d*$/.test(workersArg)) throw new Error(`--workers must be auto or a positive integer, got "${workersArg}"`);
  const json = values.json!;
  return {
    json,
    rounds: Number(values.rounds),
    wrk: { threads: Number(values.threads), connections: Number(values.connections), durationS: Number(values.duration) },
    workersArg,
    workers: resolveWorkers(workersArg === "auto" ? "auto" : Number(workersArg)),
    say: (line) => void (json ? process.stderr : process.stdout).write(line + "\n"),
  };
}
