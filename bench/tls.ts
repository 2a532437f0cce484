// What does TLS cost at Turquoise's proxy, against nginx terminating TLS with the same certificate?
// wrk in the same run, rounds interleaved, medians: keep-alive HTTPS (the ratio the issue targets),
// new connections over HTTPS (one handshake per request: handshakes per second), and plain HTTP
// keep-alive beside them as the reference for what TLS adds. A Node pipe (bench/lib/pipe.ts, over
// TLS and plain) runs the keep-alive loads too: the floor of any proxy on Node's sockets, and
// what Node's own TLS adds to it. Before measuring, every HTTPS server must negotiate the same
// version, cipher suite and key exchange group.
// Usage: node dist/bench/tls.js [--json] [--duration 8] [--rounds 3] [--connections 64] [--threads 2] [--workers 1|N|auto]

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { spawnProxy, stopProxy } from "../src/proxy/builtin.js";
import { freePort } from "../src/util/net.js";
import { createTestCa, type TestCa } from "./lib/certs.js";
import { formatMachine, machineInfo } from "./lib/machine.js";
import { nginxProxyConf, type RunningNginx, startNginx } from "./lib/nginx.js";
import { formatNumber, formatTable } from "./lib/report.js";
import { childPids, clockTicksPerSecond, ticksOf } from "./lib/procfs.js";
import { type RunningPipe, startPipeProcess } from "./lib/pipe.js";
import { median, pairedRatio, ratio } from "./lib/stats.js";
import { assertSameTls, formatNegotiated, type NegotiatedTls, negotiatedTls } from "./lib/tls-probe.js";
import { ensureCommand } from "./lib/tools.js";
import { type RunningUpstream, startUpstreamProcess } from "./lib/upstream.js";
import { runWrk, type WrkResult, wrkBenchArgs } from "./lib/wrk.js";

const WARMUP_S = 2;
/** The name wrk sends as SNI and Host: /etc/hosts resolves it to 127.0.0.1, and both servers hold its certificate. */
const HOST = "localhost";

type Load = "https keep-alive" | "https new connection" | "http keep-alive";
const LOADS: Load[] = ["https keep-alive", "https new connection", "http keep-alive"];
type Server = "turquoise" | "nginx" | "node pipe";
const SERVERS: Server[] = ["turquoise", "nginx", "node pipe"];
/** The pipe runs the keep-alive loads only: the floor is wanted for the ratio the issue targets, and handshakes per second already meet theirs. */
const runs = (server: Server, load: Load): boolean => server !== "node pipe" || load !== "https new connection";

interface Cell {
  server: Server;
  load: Load;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  /** CPU time of every process of the server (master or supervisor, and its children) per request, µs. */
  cpuUsPerRequest: number;
  rounds: Measured[];
}

interface Measured extends WrkResult {
  cpuUsPerRequest: number;
}

async function main(): Promise<void> {
  const { json, rounds, wrk, workers, say } = wrkBenchArgs(8);

  ensureCommand("wrk");
  ensureCommand("nginx");
  ensureCommand("openssl");
  const machine = machineInfo();
  const loadBefore = os.loadavg();
  say(formatMachine(machine));
  say(`loadavg ${loadBefore.map((l) => l.toFixed(2)).join(" ")} (1, 5, 15 min) before the run`);
  say(`load    wrk ${wrk.threads} threads, ${wrk.connections} connections, ${wrk.durationS} s × ${rounds} rounds (medians), GET ~100-byte JSON`);
  say(`proxies turquoise with ${workers} worker(s), nginx with worker_processes ${workers}; the Node pipe (TLS and plain) as the floor`);

  const stateDir = await mkdtemp(path.join(os.tmpdir(), "turquoise-bench-tls-"));
  let ca: TestCa | undefined;
  let upstream: RunningUpstream | undefined;
  let nginx: RunningNginx | undefined;
  const pipes: RunningPipe[] = [];
  let proxySpawned = false;
  const cleanup = async (): Promise<void> => {
    for (const p of pipes) p.stop();
    await nginx?.stop().catch(() => {});
    if (proxySpawned) await stopProxy(stateDir).catch(() => {});
    await upstream?.stop().catch(() => {});
    await ca?.close().catch(() => {});
    await rm(stateDir, { recursive: true, force: true });
  };
  process.once("SIGINT", () => void cleanup().then(() => process.exit(130)));

  try {
    ca = await createTestCa();
    const cert = await ca.issue("bench", [HOST]);
    upstream = await startUpstreamProcess();
    const target = { host: "127.0.0.1", port: upstream.port };
    const spawned = await spawnProxy({ stateDir, listenHost: "127.0.0.1", listenPort: 0, tlsListen: { host: "127.0.0.1", port: 0 }, workers });
    proxySpawned = true;
    await spawned.proxy.apply({
      version: 1,
      routes: [{ service: "bench", host: HOST, pathPrefix: "/", poolId: "bench:blue:1", upstreams: [{ id: "bench-1", ...target }] }],
      settings: {
        timeouts: { clientHeaderMs: 10_000, clientIdleMs: 60_000, upstreamConnectMs: 5_000, upstreamResponseMs: 30_000, upstreamIdleMs: 60_000, tunnelIdleMs: 600_000 },
        limits: { maxConnections: 8_192, maxUpstreamConnections: 512, upstreamQueueMs: 1_000, maxHeaderBytes: 16_384, maxBodyBytes: 104_857_600 },
        trustedProxies: [],
        tls: { certificates: [{ hosts: [HOST], certFile: cert.certFile, keyFile: cert.keyFile }], redirectHttp: false },
      },
    });
    const tlsPort = spawned.tlsListen!.port;
    // The first handshake proves the certificate loaded before anything is measured.
    await waitForHttps(`https://${HOST}:${tlsPort}/`, ca.pem);
    const nginxTlsPort = await freePort();
    nginx = await startNginx(nginxProxyConf([target], { workerProcesses: workers, tls: { port: nginxTlsPort, serverName: HOST, certFile: cert.certFile, keyFile: cert.keyFile } }));

    const tlsPipe = await startPipeProcess(upstream.port, { tls: cert });
    pipes.push(tlsPipe);
    const plainPipe = await startPipeProcess(upstream.port);
    pipes.push(plainPipe);
    const httpsPorts: Record<Server, number> = { turquoise: tlsPort, nginx: nginxTlsPort, "node pipe": tlsPipe.port };
    const negotiated = {} as Record<Server, NegotiatedTls>;
    for (const server of SERVERS) negotiated[server] = await negotiatedTls(httpsPorts[server], HOST, ca.pem);
    assertSameTls(negotiated);
    say(`tls     one P-256 ECDSA certificate for all; each negotiated ${formatNegotiated(negotiated.turquoise)}\n`);

    const urls: Record<Server, { https: string; http: string }> = {
      turquoise: { https: `https://${HOST}:${tlsPort}/`, http: `http://${HOST}:${spawned.listenPort}/` },
      nginx: { https: `https://${HOST}:${nginxTlsPort}/`, http: `http://${HOST}:${nginx.port}/` },
      "node pipe": { https: `https://${HOST}:${tlsPipe.port}/`, http: `http://${HOST}:${plainPipe.port}/` },
    };
    const closeScript = path.join(stateDir, "close.lua");
    // wrk opens a new connection after every "Connection: close" answer: one handshake per request.
    await writeFile(closeScript, 'wrk.headers["Connection"] = "close"\n');
    const hz = clockTicksPerSecond();
    const mains = { turquoise: spawned.pid, nginx: nginx.pid };
    const pidsOf = (server: Server, load: Load): number[] => {
      if (server === "node pipe") return [load === "http keep-alive" ? plainPipe.pid : tlsPipe.pid];
      return [mains[server], ...childPids(mains[server])];
    };
    const run = async (server: Server, load: Load, durationS: number): Promise<Measured> => {
      const url = load === "http keep-alive" ? urls[server].http : urls[server].https;
      const pids = pidsOf(server, load);
      const before = ticksOf(pids);
      const res = await runWrk(url, { ...wrk, durationS, ...(load === "https new connection" ? { script: closeScript } : {}) });
      const after = ticksOf(pids);
      let ticks = 0;
      for (const [pid, t] of after) ticks += t - (before.get(pid) ?? t);
      return { ...res, cpuUsPerRequest: res.requests > 0 ? ((ticks / hz) * 1e6) / res.requests : NaN };
    };
    for (const server of SERVERS) for (const load of LOADS) if (runs(server, load)) await run(server, load, WARMUP_S);
    const results = new Map<string, Measured[]>();
    for (let r = 1; r <= rounds; r++) {
      for (const load of LOADS) {
        // Alternating who goes first, so that drift within a round hits both alike.
        const order = r % 2 === 1 ? SERVERS : [...SERVERS].reverse();
        for (const server of order) {
          if (!runs(server, load)) continue;
          const res = await run(server, load, wrk.durationS);
          const key = `${server}|${load}`;
          results.set(key, [...(results.get(key) ?? []), res]);
          say(`round ${r}/${rounds}  ${load.padEnd(20)}  ${server.padEnd(9)}  ${formatNumber(res.rps).padStart(8)} req/s  p99 ${res.p99.toFixed(2)} ms  ${res.cpuUsPerRequest.toFixed(0)} µs CPU/req${res.errors ? `  ${res.errors} errors` : ""}`);
        }
      }
    }
    const cells: Cell[] = [];
    for (const load of LOADS) {
      for (const server of SERVERS) {
        if (!runs(server, load)) continue;
        const measured = results.get(`${server}|${load}`)!;
        cells.push({
          server,
          load,
          rps: Math.round(median(measured.map((x) => x.rps))),
          p50Ms: median(measured.map((x) => x.p50)),
          p99Ms: median(measured.map((x) => x.p99)),
          errors: measured.reduce((sum, x) => sum + x.errors, 0),
          cpuUsPerRequest: median(measured.map((x) => x.cpuUsPerRequest)),
          rounds: measured,
        });
      }
    }
    const cell = (server: Cell["server"], load: Load): Cell => cells.find((c) => c.server === server && c.load === load)!;
    // Turquoise / nginx by load: the median of each round's ratio (a round's pair ran back to back).
    const paired = Object.fromEntries(LOADS.map((load) => [load, pairedRatio(cell("turquoise", load).rounds.map((x) => x.rps), cell("nginx", load).rounds.map((x) => x.rps))])) as Record<Load, ReturnType<typeof pairedRatio>>;
    const ratios = Object.fromEntries(LOADS.map((load) => [load, paired[load].median])) as Record<Load, number>;
    // The floor: what a Node proxy that parses nothing reaches against nginx, with TLS and without.
    const floor = {
      httpsKeepAlive: ratio(cell("node pipe", "https keep-alive").rps, cell("nginx", "https keep-alive").rps),
      httpKeepAlive: ratio(cell("node pipe", "http keep-alive").rps, cell("nginx", "http keep-alive").rps),
      cpuNginxToFloorHttps: ratio(cell("nginx", "https keep-alive").cpuUsPerRequest, cell("node pipe", "https keep-alive").cpuUsPerRequest),
    };
    // What TLS adds to a kept-alive request, each server against itself in the same run.
    const tlsAddsUs = Object.fromEntries(SERVERS.map((s) => [s, Math.round(cell(s, "https keep-alive").cpuUsPerRequest - cell(s, "http keep-alive").cpuUsPerRequest)])) as Record<Server, number>;
    const stats = await spawned.proxy.stats();
    const loadAfter = os.loadavg();

    if (json) {
      process.stdout.write(JSON.stringify({ machine, loadavg: { before: loadBefore, after: loadAfter }, load: { ...wrk, rounds }, workers, negotiated, results: cells, ratios, pairedRatios: paired, floor, tlsAddsUs, proxyTls: stats.tls }, null, 2) + "\n");
    } else {
      say("");
      say(formatTable(
        ["load", "server", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "errors"],
        cells.map((c) => [c.load, c.server, formatNumber(c.rps), c.p50Ms.toFixed(2), c.p99Ms.toFixed(2), c.cpuUsPerRequest.toFixed(0), String(c.errors)]),
      ));
      say("");
      for (const load of LOADS) say(`turquoise/nginx  ${load.padEnd(20)}  ${ratios[load].toFixed(2)}${load === "https keep-alive" ? "   (target ≥ 0.8)" : ""}  (rounds ${paired[load].rounds.map((x) => x.toFixed(2)).join(", ")}; ratio of medians ${paired[load].ofMedians.toFixed(2)})`);
      say(`node pipe/nginx  https keep-alive      ${floor.httpsKeepAlive.toFixed(2)}   (the floor; CPU per request, nginx's / the pipe's: ${floor.cpuNginxToFloorHttps.toFixed(2)}); http keep-alive ${floor.httpKeepAlive.toFixed(2)}`);
      say(`TLS adds         ${SERVERS.map((s) => `${s} ${tlsAddsUs[s]} µs`).join(", ")} of CPU to a kept-alive request (https − http)`);
      say(`handshakes/s     turquoise ${formatNumber(cell("turquoise", "https new connection").rps)}, nginx ${formatNumber(cell("nginx", "https new connection").rps)}`);
      say(`proxy counted    ${stats.tls?.handshakes ?? 0} handshakes, ${stats.tls?.resumed ?? 0} of them resumed, ${stats.tls?.failed ?? 0} failed`);
      say(`loadavg          ${loadAfter.map((l) => l.toFixed(2)).join(" ")} after the run`);
    }
  } finally {
    await cleanup();
  }
}

async function waitForHttps(url: string, ca: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      https.get(url, { ca, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      }).on("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${url} did not answer over TLS within 10 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:tls failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
