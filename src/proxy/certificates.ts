// A certificate and its private key read from PEM and checked before they serve: the chain
// parses, the key is the certificate's own, the certificate names every host it is listed for.
// The spec's rules (turquoise validate), the proxy's workers and its ACME client all read them here.

import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import tls from "node:tls";
import { CertificateError, errorMessage } from "../errors.js";

/** A certificate chain and key fit in far less: a bigger file is a mistake, not a certificate. */
export const MAX_PEM_BYTES = 1_048_576;

/** The oldest TLS version the proxy speaks: 1.0 and 1.1 are broken and deprecated (RFC 8996). */
export const TLS_MIN_VERSION = "TLSv1.2";

export interface CertificateInfo {
  /** The leaf's DNS names (subjectAltName), as it states them. */
  names: string[];
  /** Epoch ms. */
  notBefore: number;
  notAfter: number;
  /** SHA-256 of the leaf, as openssl prints it: tells a renewed certificate from the one before. */
  fingerprint: string;
}

export interface LoadedCertificate extends CertificateInfo {
  context: tls.SecureContext;
}

interface PemBlocks {
  certificates: string[];
  keys: string[];
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n[\s\S]*?-----END \1-----/g;

/** Splits PEM text into its certificate blocks and its private key blocks; anything else is ignored. */
export function splitPem(text: string): PemBlocks {
  const out: PemBlocks = { certificates: [], keys: [] };
  for (const m of text.matchAll(PEM_BLOCK)) {
    const label = m[1]!;
    if (label === "CERTIFICATE") out.certificates.push(m[0]);
    else if (label.endsWith("PRIVATE KEY")) out.keys.push(m[0]);
  }
  return out;
}

/** The leaf of a chain in PEM, checked: the first certificate block, parsed. */
export function parseLeaf(chainPem: string, file: string): { leaf: X509Certificate; chain: string[] } {
  const chain = splitPem(chainPem).certificates;
  if (chain.length === 0) throw new CertificateError(file, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(chain[0]!);
  } catch (e) {
    throw new CertificateError(file, `its first certificate cannot be parsed: ${errorMessage(e)}`);
  }
  return { leaf, chain };
}

export function certificateInfo(leaf: X509Certificate): CertificateInfo {
  const names = (leaf.subjectAltName ?? "")
    .split(/,\s*/)
    .filter((n) => n.startsWith("DNS:"))
    .map((n) => n.slice(4).toLowerCase());
  return { names, notBefore: Date.parse(leaf.validFrom), notAfter: Date.parse(leaf.validTo), fingerprint: leaf.fingerprint256 };
}

/**
 * Checks a certificate chain and a key (PEM text read from certFile and keyFile, which may be the
 * same file) for the hosts they are listed for, and builds the secure context that serves them.
 */
export function buildCertificate(certPem: string, keyPem: string, files: { certFile: string; keyFile: string }, hosts: readonly string[]): LoadedCertificate {
  const { leaf, chain } = parseLeaf(certPem, files.certFile);
  const keyBlock = splitPem(keyPem).keys[0];
  if (keyBlock === undefined) throw new CertificateError(files.keyFile, "holds no PEM private key (-----BEGIN PRIVATE KEY-----)", "key");
  if (keyBlock.includes("ENCRYPTED")) throw new CertificateError(files.keyFile, "holds an encrypted private key: the proxy takes keys without a passphrase", "key");
  let key: KeyObject;
  try {
    key = createPrivateKey(keyBlock);
  } catch (e) {
    throw new CertificateError(files.keyFile, `its private key cannot be parsed: ${errorMessage(e)}`, "key");
  }
  if (!leaf.checkPrivateKey(key)) {
    throw new CertificateError(files.keyFile, `its private key does not belong to the certificate in ${files.certFile} (a key and a certificate from different pairs, or a renewal half-written)`, "key");
  }
  const info = certificateInfo(leaf);
  for (const host of hosts) {
    // A wildcard host is covered when any one label below it is.
    const probe = host.startsWith("*.") ? `turquoise-probe${host.slice(1)}` : host;
    if (leaf.checkHost(probe, { wildcards: true, partialWildcards: false }) === undefined) {
      throw new CertificateError(files.certFile, `the certificate does not name ${host} (it names ${info.names.join(", ") || leaf.subject.replace(/\n/g, ", ")})`);
    }
  }
  let context: tls.SecureContext;
  try {
    context = tls.createSecureContext({ cert: chain.join("\n"), key: keyBlock, minVersion: TLS_MIN_VERSION });
  } catch (e) {
    throw new CertificateError(files.certFile, `cannot serve: ${errorMessage(e)}`);
  }
  return { ...info, context };
}

/** Reads and checks a certificate and its key (see buildCertificate). */
export async function readCertificate(certFile: string, keyFile: string, hosts: readonly string[]): Promise<LoadedCertificate> {
  const certPem = await readPem(certFile, "certificate");
  const keyPem = keyFile === certFile ? certPem : await readPem(keyFile, "key");
  return buildCertificate(certPem, keyPem, { certFile, keyFile }, hosts);
}

/** The same, synchronously: for the spec's rules, which run before anything starts. */
export function readCertificateSync(certFile: string, keyFile: string, hosts: readonly string[]): LoadedCertificate {
  const read = (file: string, part: CertificateError["part"]): string => {
    let text: string;
    try {
      checkSize(file, statSync(file));
      text = readFileSync(file, "utf8");
    } catch (e) {
      throw unreadable(file, e, part);
    }
    return text;
  };
  const certPem = read(certFile, "certificate");
  return buildCertificate(certPem, keyFile === certFile ? certPem : read(keyFile, "key"), { certFile, keyFile }, hosts);
}

async function readPem(file: string, part: CertificateError["part"]): Promise<string> {
  try {
    checkSize(file, await stat(file));
    return await readFile(file, "utf8");
  } catch (e) {
    throw unreadable(file, e, part);
  }
}

/** Only a regular file of sane size is read: not a FIFO that blocks, nor a device that never ends. */
function checkSize(file: string, st: { isFile(): boolean; size: number }): void {
  if (!st.isFile()) throw new CertificateError(file, "is not a regular file");
  if (st.size > MAX_PEM_BYTES) throw new CertificateError(file, `is ${st.size} bytes: more than ${MAX_PEM_BYTES} is no certificate`);
}

function unreadable(file: string, e: unknown, part: CertificateError["part"]): CertificateError {
  if (e instanceof CertificateError) return new CertificateError(file, e.message.slice(file.length + 2), part);
  return new CertificateError(file, `cannot be read: ${(e as NodeJS.ErrnoException).code ?? errorMessage(e)}`, part);
}
