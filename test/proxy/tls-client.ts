// Clients for the TLS tests: an HTTPS request that reports the certificate it was served, and a
// hand-made ClientHello for what no TLS library sends (a server name of 60,000 bytes).

import { randomBytes } from "node:crypto";
import https from "node:https";
import type tls from "node:tls";

export interface HttpsReply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** The served leaf's SHA-256. */
  fingerprint: string;
  /** Whether the request went out on a connection an earlier request opened. */
  reused: boolean;
}

export interface HttpsOptions {
  port: number;
  /** The SNI name and the Host header; the connection goes to 127.0.0.1 whatever the name. */
  host: string;
  ca: string | string[];
  path?: string;
  method?: string;
  headers?: Record<string, string>;
  agent?: https.Agent | false;
  timeoutMs?: number;
  minVersion?: tls.SecureVersion;
  maxVersion?: tls.SecureVersion;
}

export function httpsRequest(opts: HttpsOptions): Promise<HttpsReply> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        port: opts.port,
        servername: opts.host,
        path: opts.path ?? "/",
        method: opts.method ?? "GET",
        headers: { host: opts.host, ...opts.headers },
        ca: opts.ca,
        agent: opts.agent ?? false,
        timeout: opts.timeoutMs ?? 10_000,
        ...(opts.minVersion ? { minVersion: opts.minVersion } : {}),
        ...(opts.maxVersion ? { maxVersion: opts.maxVersion } : {}),
      },
      (res) => {
        const fingerprint = (res.socket as tls.TLSSocket).getPeerCertificate().fingerprint256;
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(chunks).toString("utf8"), fingerprint, reused: req.reusedSocket }));
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer within ${opts.timeoutMs ?? 10_000} ms`)));
    req.on("error", reject);
    req.end();
  });
}

/** The error a handshake ends with, or "ok" when it completes. */
export async function handshakeOutcome(opts: HttpsOptions): Promise<string> {
  try {
    await httpsRequest(opts);
    return "ok";
  } catch (e) {
    return (e as Error).message;
  }
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function u24(n: number): Buffer {
  return Buffer.from([(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
}

/** A TLS 1.2 ClientHello naming `serverName` (any length), cut into records of at most 16 KiB. */
export function clientHello(serverName: string): Buffer {
  const name = Buffer.from(serverName, "latin1");
  const entry = Buffer.concat([Buffer.from([0]), u16(name.length), name]);
  const list = Buffer.concat([u16(entry.length), entry]);
  const sni = Buffer.concat([u16(0x0000), u16(list.length), list]);
  const body = Buffer.concat([
    Buffer.from([0x03, 0x03]),
    randomBytes(32),
    Buffer.from([0]),
    // ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256
    u16(4),
    Buffer.from([0xc0, 0x2b, 0xc0, 0x2f]),
    Buffer.from([1, 0]),
    u16(sni.length),
    sni,
  ]);
  const handshake = Buffer.concat([Buffer.from([1]), u24(body.length), body]);
  const records: Buffer[] = [];
  for (let at = 0; at < handshake.length; at += 16_384) {
    const fragment = handshake.subarray(at, at + 16_384);
    records.push(Buffer.from([0x16, 0x03, 0x01]), u16(fragment.length), fragment);
  }
  return Buffer.concat(records);
}

export interface HttpsLoadCounts {
  ok: number;
  failed: number;
  /** Answers on a connection an earlier request opened. */
  reused: number;
  /** The first few failures, as their messages (or "status N"). */
  errors: string[];
  /** Answers by X-Release header, when the app sets one. */
  releases: Record<string, number>;
}

/**
 * HTTPS GETs in loops until stop() (or 2 min): `keepAlive` loops share one keep-alive agent,
 * `fresh` loops open a connection (and a handshake) per request.
 */
export function startHttpsLoad(opts: { port: number; host: string; ca: string | string[]; path?: string; keepAlive: number; fresh?: number }): { counts: HttpsLoadCounts; stop(): Promise<HttpsLoadCounts> } {
  const agent = new https.Agent({ keepAlive: true, maxSockets: opts.keepAlive });
  const counts: HttpsLoadCounts = { ok: 0, failed: 0, reused: 0, errors: [], releases: {} };
  let stopped = false;
  const deadline = Date.now() + 120_000;
  const fail = (why: string): void => {
    counts.failed++;
    if (counts.errors.length < 5) counts.errors.push(why);
  };
  const loop = async (keepAlive: boolean): Promise<void> => {
    while (!stopped && Date.now() < deadline) {
      try {
        const r = await httpsRequest({ port: opts.port, host: opts.host, ca: opts.ca, path: opts.path ?? "/", agent: keepAlive ? agent : false });
        if (r.status !== 200) fail(`status ${r.status}`);
        else counts.ok++;
        if (r.reused) counts.reused++;
        const release = r.headers["x-release"];
        if (typeof release === "string") counts.releases[release] = (counts.releases[release] ?? 0) + 1;
      } catch (e) {
        fail((e as Error).message);
      }
    }
  };
  const loops = [...Array.from({ length: opts.keepAlive }, () => loop(true)), ...Array.from({ length: opts.fresh ?? 0 }, () => loop(false))];
  return {
    counts,
    stop: async () => {
      stopped = true;
      await Promise.all(loops);
      agent.destroy();
      return counts;
    },
  };
}

/**
 * Resolves once 6 new connections in a row were served the certificate with this fingerprint:
 * with several workers a new connection goes to whichever accepts, so one is not enough.
 */
export async function servedEverywhere(opts: Pick<HttpsOptions, "port" | "host" | "ca">, fingerprint: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let inARow = 0;
  let last = "";
  while (inARow < 6) {
    last = (await httpsRequest(opts)).fingerprint;
    inARow = last === fingerprint ? inARow + 1 : 0;
    if (Date.now() > deadline) throw new Error(`new connections still get ${last}, not ${fingerprint}, after ${timeoutMs} ms`);
  }
}
