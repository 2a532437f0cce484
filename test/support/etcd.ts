// A real etcd cluster for tests: scripts/ensure-etcd.sh installs Debian's etcd-server (so these
// tests never skip), and each caller starts its own members on loopback ports, each with its own
// data dir in tmp. Never the system service, and no traffic off loopback.

import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "../../src/util/net.js";

const ENSURE_ETCD = fileURLToPath(new URL("../../../scripts/ensure-etcd.sh", import.meta.url));

/** Quick elections, so a stopped member's peers (or a restarted cluster) elect a leader within seconds. */
const HEARTBEAT_MS = 100;
const ELECTION_MS = 1_000;
const READY_TIMEOUT_MS = 30_000;
/** Linux's usual tmpfs. */
const SHM = "/dev/shm";

export interface EtcdMember {
  name: string;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
  /** The running process, or undefined while the member is stopped. */
  child: ChildProcess | undefined;
}

export interface TestEtcd {
  /** Every member's client URL, as a Store's endpoints list. */
  endpoints: string[];
  members: EtcdMember[];
  /** SIGTERM, and waits until the member has exited. */
  stop(i: number): Promise<void>;
  /** SIGKILL, and waits until the member has exited. */
  kill(i: number): Promise<void>;
  /** Starts a stopped member again on its data dir; waits until it answers healthy. */
  start(i: number): Promise<void>;
  /** SIGSTOP / SIGCONT: a member that holds its connections but answers nothing. */
  pause(i: number): void;
  resume(i: number): void;
  /** Waits until every running member reports a healthy cluster (it has a leader). */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** Kills every member and removes the data dirs. */
  destroy(): Promise<void>;
}

/** Installs etcd when it is missing. */
export function ensureEtcd(): void {
  execFileSync("bash", [ENSURE_ETCD], { stdio: ["ignore", "ignore", "inherit"] });
}

// Members left running by a test process that dies are killed with it.
const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** PEM files for a TLS cluster: a CA, a server certificate for 127.0.0.1, a client certificate. */
export interface TestCerts {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

/** Makes a throwaway CA and the certificates signed by it in dir, with openssl (P-256 keys, valid one day). */
export function makeCerts(dir: string): TestCerts {
  const file = (name: string) => path.join(dir, name);
  const openssl = (...args: string[]) => execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl("req", "-x509", ...ec, "-keyout", file("ca.key"), "-out", file("ca.pem"), "-days", "1", "-subj", "/CN=turquoise-test-ca");
  for (const [who, usage] of [["server", "serverAuth"], ["client", "clientAuth"]] as const) {
    writeFileSync(file(`${who}.ext`), `subjectAltName=IP:127.0.0.1\nextendedKeyUsage=${usage}\n`);
    openssl("req", ...ec, "-keyout", file(`${who}.key`), "-out", file(`${who}.csr`), "-subj", `/CN=turquoise-test-${who}`);
    openssl("x509", "-req", "-in", file(`${who}.csr`), "-CA", file("ca.pem"), "-CAkey", file("ca.key"), "-CAcreateserial", "-out", file(`${who}.pem`), "-days", "1", "-extfile", file(`${who}.ext`));
  }
  return { ca: file("ca.pem"), serverCert: file("server.pem"), serverKey: file("server.key"), clientCert: file("client.pem"), clientKey: file("client.key") };
}

/**
 * Starts a cluster of `members` (3 by default) on 127.0.0.1 and waits until it has a leader.
 * With certs, clients must speak TLS and show a certificate signed by the CA.
 */
export async function startEtcdCluster(opts: { members?: number; certs?: TestCerts } = {}): Promise<TestEtcd> {
  ensureEtcd();
  const count = opts.members ?? 3;
  const certs = opts.certs;
  const scheme = certs ? "https" : "http";
  // In memory when the machine has a tmpfs: etcd fsyncs every raft write, and on a loaded CI disk that
  // took long enough for leases to run out and leaders to flap. Still the real etcd, and a killed member keeps its data.
  const root = await mkdtemp(path.join(existsSync(SHM) ? SHM : os.tmpdir(), "turquoise-etcd-"));
  const token = `turquoise-test-${randomBytes(6).toString("hex")}`;
  const members: EtcdMember[] = [];
  for (let i = 0; i < count; i++) {
    members.push({
      name: `m${i}`,
      clientUrl: `${scheme}://127.0.0.1:${await freePort()}`,
      peerUrl: `http://127.0.0.1:${await freePort()}`,
      dataDir: path.join(root, `m${i}`),
      child: undefined,
    });
  }
  const initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(",");
  const logs = new Map<string, string>();

  const launch = (m: EtcdMember): void => {
    const child = spawn(
      "etcd",
      [
        `--name=${m.name}`,
        `--data-dir=${m.dataDir}`,
        `--listen-client-urls=${m.clientUrl}`,
        `--advertise-client-urls=${m.clientUrl}`,
        `--listen-peer-urls=${m.peerUrl}`,
        `--initial-advertise-peer-urls=${m.peerUrl}`,
        `--initial-cluster=${initialCluster}`,
        "--initial-cluster-state=new",
        `--initial-cluster-token=${token}`,
        `--heartbeat-interval=${HEARTBEAT_MS}`,
        `--election-timeout=${ELECTION_MS}`,
        "--logger=zap",
        "--log-outputs=stderr",
        "--log-level=warn",
        ...(certs ? [`--cert-file=${certs.serverCert}`, `--key-file=${certs.serverKey}`, `--trusted-ca-file=${certs.ca}`, "--client-cert-auth"] : []),
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    child.stderr!.on("data", (d: Buffer) => logs.set(m.name, ((logs.get(m.name) ?? "") + d.toString()).slice(-4_000)));
    running.add(child);
    child.once("exit", () => running.delete(child));
    m.child = child;
  };

  const exitOf = async (m: EtcdMember, signal: NodeJS.Signals): Promise<void> => {
    const child = m.child;
    if (!child) return;
    m.child = undefined;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    // A paused member ignores SIGTERM until it runs again.
    child.kill("SIGCONT");
    child.kill(signal);
    const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(killer);
  };

  const tlsOptions = certs && { ca: readFileSync(certs.ca), cert: readFileSync(certs.clientCert), key: readFileSync(certs.clientKey) };
  const healthy = (m: EtcdMember): Promise<boolean> =>
    new Promise((resolve) => {
      const get = certs ? https.get : http.get;
      // No SNI: the members are addressed by IP, which TLS server names may not be.
      const req = get(`${m.clientUrl}/health`, { timeout: 2_000, ...(tlsOptions ? { ...tlsOptions, servername: "" } : {}) }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve(res.statusCode === 200 && /"health":\s*"true"/.test(body)));
      });
      req.on("timeout", () => req.destroy());
      req.on("error", () => resolve(false));
    });

  const waitHealthy = async (timeoutMs = READY_TIMEOUT_MS): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const up = members.filter((m) => m.child);
      for (const m of up) {
        if (m.child!.exitCode !== null) throw new Error(`etcd member ${m.name} exited with ${m.child!.exitCode}: ${logs.get(m.name) ?? ""}`);
      }
      const answers = await Promise.all(up.map(healthy));
      if (answers.every(Boolean)) return;
      if (Date.now() > deadline) {
        throw new Error(`etcd cluster not healthy within ${timeoutMs}ms:\n${up.map((m) => `${m.name}: ${logs.get(m.name) ?? "(no output)"}`).join("\n")}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  // The whole cluster goes at once and its data with it: a graceful stop would only wait for peers that are going too.
  const destroy = async (): Promise<void> => {
    await Promise.all(members.map((m) => exitOf(m, "SIGKILL")));
    await rm(root, { recursive: true, force: true });
  };

  for (const m of members) launch(m);
  try {
    await waitHealthy();
  } catch (e) {
    await destroy();
    throw e;
  }

  return {
    endpoints: members.map((m) => m.clientUrl),
    members,
    stop: (i) => exitOf(members[i]!, "SIGTERM"),
    kill: (i) => exitOf(members[i]!, "SIGKILL"),
    async start(i) {
      const m = members[i]!;
      if (m.child) throw new Error(`etcd member ${m.name} is already running`);
      launch(m);
      await waitHealthy();
    },
    pause: (i) => void members[i]!.child?.kill("SIGSTOP"),
    resume: (i) => void members[i]!.child?.kill("SIGCONT"),
    waitHealthy,
    destroy,
  };
}

export interface TcpGate {
  /** A client URL that reaches the member through the gate. */
  url: string;
  /** Cuts every connection through the gate and refuses new ones, as a broken network would. */
  cut(): void;
  /** Lets connections through again. */
  open(): void;
  close(): Promise<void>;
}

/**
 * A loopback TCP relay in front of one member: a client that talks to the member through it loses
 * its connection when the test says so, while the member itself runs on and keeps up with the cluster.
 */
export async function gateTo(clientUrl: string): Promise<TcpGate> {
  const target = new URL(clientUrl);
  const sockets = new Set<net.Socket>();
  let isOpen = true;
  const server = net.createServer((client) => {
    if (!isOpen) return void client.destroy();
    const upstream = net.connect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => undefined);
    }
    client.pipe(upstream).pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    cut() {
      isOpen = false;
      for (const s of sockets) s.destroy();
    },
    open() {
      isOpen = true;
    },
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
