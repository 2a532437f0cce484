// The proxy's TLS settings: their validation inside a route table, which hosts are served over TLS
// and from where (a certificate file, or ACME), where ACME keeps its files, and when it renews.

import { createHash } from "node:crypto";
import net from "node:net";
import path from "node:path";
import type { AcmeSettings, Route, TlsSettings } from "./contract.js";

/** A DNS name ACME can issue for and a file name can hold: letters, digits, dashes, at least one dot. */
const DNS_NAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** A certificate's host: a DNS name (one label will do, "localhost"), or "*." and a DNS name. */
const CERT_HOST = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** An HSTS value: max-age first, then includeSubDomains and preload, as browsers read it. */
export const HSTS_PATTERN = "^max-age=[0-9]{1,10}(; ?includeSubDomains)?(; ?preload)?$";

/** ACME renews a certificate once this share of its lifetime has passed: day 60 of Let's Encrypt's 90. */
export const ACME_RENEW_AT_FRACTION = 2 / 3;
/** After a failed order the next waits this long, doubled at each failure in a row, up to the cap. */
export const ACME_BACKOFF_MS = 60_000;
export const ACME_MAX_BACKOFF_MS = 6 * 3_600_000;

export function isCertificateHost(host: string): boolean {
  return host.length <= 253 && CERT_HOST.test(host) && net.isIP(host) === 0;
}

/**
 * A name a public CA can issue for over HTTP-01: a DNS name with a dot, not an IP address, not
 * under .localhost (RFC 6761: it never leaves the machine).
 */
export function isAcmeHost(host: string): boolean {
  return DNS_NAME.test(host) && net.isIP(host) === 0 && host !== "localhost" && !host.endsWith(".localhost");
}

/** What is wrong with a table's TLS settings, or undefined. */
export function validateTlsSettings(value: unknown, at: string): string | undefined {
  if (value === undefined) return undefined;
  if (!isObject(value)) return `${at} must be an object`;
  const t = value;
  if (!Array.isArray(t.certificates)) return `${at}.certificates must be an array`;
  for (let i = 0; i < t.certificates.length; i++) {
    const c = t.certificates[i] as unknown;
    const cat = `${at}.certificates[${i}]`;
    if (!isObject(c)) return `${cat} must be an object`;
    if (!Array.isArray(c.hosts) || c.hosts.length === 0) return `${cat}.hosts must be a non-empty array`;
    for (const h of c.hosts) if (typeof h !== "string" || !isCertificateHost(h)) return `${cat}.hosts: ${JSON.stringify(h)} is not a lower-case host name or *.domain`;
    for (const key of ["certFile", "keyFile"] as const) if (!isAbsolutePath(c[key])) return `${cat}.${key} must be an absolute path`;
  }
  if (typeof t.redirectHttp !== "boolean") return `${at}.redirectHttp must be a boolean`;
  if (t.hsts !== undefined && (typeof t.hsts !== "string" || !new RegExp(HSTS_PATTERN).test(t.hsts))) return `${at}.hsts must look like "max-age=31536000; includeSubDomains"`;
  if (t.acme !== undefined) {
    const a = t.acme;
    if (!isObject(a)) return `${at}.acme must be an object`;
    if (typeof a.directoryUrl !== "string" || !/^https?:\/\/[^\s/]+/.test(a.directoryUrl)) return `${at}.acme.directoryUrl must be an http(s) URL`;
    if (a.email !== undefined && (typeof a.email !== "string" || !/^[^\s@]+@[^\s@]+$/.test(a.email))) return `${at}.acme.email must be an e-mail address`;
    if (a.caFile !== undefined && !isAbsolutePath(a.caFile)) return `${at}.acme.caFile must be an absolute path`;
    if (a.hosts !== undefined) {
      if (!Array.isArray(a.hosts)) return `${at}.acme.hosts must be an array`;
      for (const h of a.hosts) if (typeof h !== "string" || !isAcmeHost(h)) return `${at}.acme.hosts: ${JSON.stringify(h)} is not a lower-case DNS name with a dot, outside .localhost (ACME issues no wildcard over HTTP-01)`;
    }
  }
  return undefined;
}

/** One table's TLS, compiled once per table: which host is served from where. */
export class TlsPolicy {
  readonly settings: TlsSettings;
  /** Hosts ACME gets certificates for. */
  readonly acmeHosts: ReadonlySet<string>;
  private readonly fileHosts = new Set<string>();
  /** "example.com" for "*.example.com". */
  private readonly wildcardParents = new Set<string>();

  constructor(settings: TlsSettings, routes: readonly Route[]) {
    this.settings = settings;
    for (const c of settings.certificates) {
      for (const h of c.hosts) {
        if (h.startsWith("*.")) this.wildcardParents.add(h.slice(2));
        else this.fileHosts.add(h);
      }
    }
    this.acmeHosts = new Set(settings.acme ? acmeHostsOf(settings.acme, routes, (h) => this.fromFile(h)) : []);
  }

  /** Whether a certificate file covers host (lower case, no port). */
  fromFile(host: string): boolean {
    if (this.fileHosts.has(host)) return true;
    const dot = host.indexOf(".");
    return dot !== -1 && this.wildcardParents.has(host.slice(dot + 1));
  }
}

/** acme.hosts when given; else every route host a CA could issue for that no certificate file covers. */
function acmeHostsOf(acme: AcmeSettings, routes: readonly Route[], fromFile: (host: string) => boolean): string[] {
  if (acme.hosts) return [...acme.hosts];
  const hosts = new Set<string>();
  for (const r of routes) {
    const h = r.host?.toLowerCase();
    if (h !== undefined && isAcmeHost(h) && !fromFile(h)) hosts.add(h);
  }
  return [...hosts];
}

/**
 * Where ACME keeps its account key and certificates: one directory per directory URL, so that a
 * move from a staging CA to a production one gets new certificates instead of reusing the old.
 */
export function acmeDir(stateDir: string, directoryUrl: string): string {
  const url = new URL(directoryUrl);
  const digest = createHash("sha256").update(directoryUrl).digest("hex").slice(0, 12);
  return path.join(stateDir, "acme", `${url.hostname.replace(/[^a-z0-9.-]/gi, "_")}-${digest}`);
}

/** The one file (private key, then the chain) ACME writes for host: its key and chain never disagree mid-write. */
export function acmeCertFile(stateDir: string, directoryUrl: string, host: string): string {
  return path.join(acmeDir(stateDir, directoryUrl), "certs", `${host}.pem`);
}

/** When a certificate valid from notBefore to notAfter is renewed (epoch ms). */
export function renewAt(notBefore: number, notAfter: number): number {
  return notBefore + Math.max(0, notAfter - notBefore) * ACME_RENEW_AT_FRACTION;
}

/** How long to wait after the n-th failure in a row (n ≥ 1). */
export function acmeBackoffMs(failures: number, baseMs = ACME_BACKOFF_MS, maxMs = ACME_MAX_BACKOFF_MS): number {
  return Math.min(baseMs * 2 ** Math.min(Math.max(0, failures - 1), 30), maxMs);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isAbsolutePath(v: unknown): boolean {
  return typeof v === "string" && v.length > 0 && path.isAbsolute(v) && !v.includes("\0");
}
