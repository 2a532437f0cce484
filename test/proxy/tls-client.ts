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
