// Certificates over ACME (RFC 8555, HTTP-01), run by the proxy's supervisor: one account and one
// order per host for all the workers, which answer the challenge tokens the supervisor hands
// them and load the certificates it writes. A host gets its certificate as soon as the table
// names it (and a handshake for it waits meanwhile), is renewed at 2/3 of its lifetime, and
// backs off exponentially after a failure; an existing certificate serves all along.

import { mkdir, readFile } from "node:fs/promises";
import https from "node:https";
import path from "node:path";
import tls from "node:tls";
import { errorMessage } from "../errors.js";
import { writeFileAtomic } from "../util/fs.js";
import { buildCertificate, type CertificateInfo, certificateInfo, parseLeaf, splitPem } from "./certificates.js";
import type { AcmeSettings } from "./contract.js";
import { acmeBackoffMs, acmeCertFile, acmeDir, renewAt } from "./tls-settings.js";
import type { AcmeChallenge } from "./worker-protocol.js";

/** One order may take this long, every retry of the library included, before it counts as failed. */
export const ACME_ORDER_TIMEOUT_MS = 5 * 60_000;
/** Each HTTP request to the CA: a CA that hangs must not hold an order forever. */
export const ACME_REQUEST_TIMEOUT_MS = 30_000;
/** Timers beyond ~24.8 days overflow; a renewal further out is looked at again after a day. */
const MAX_TIMER_MS = 24 * 3_600_000;

type AcmeModule = typeof import("acme-client");
type AcmeClient = InstanceType<AcmeModule["Client"]>;

export interface AcmeHooks {
  /** Every worker answers this challenge from now on: resolves once they all do. */
  publish(challenge: AcmeChallenge): Promise<void>;
  /** Every worker stops answering it. */
  withdraw(challenge: AcmeChallenge): Promise<void>;
  /** Every worker serves the certificate now on disk for host: resolves once they all do. */
  installed(host: string): Promise<void>;
  /** warn: something failed (an order, telling the workers); info: the rest. */
  log(message: string, level?: "info" | "warn"): void;
}

export interface AcmeOptions {
  /** The first wait after a failure (ACME_BACKOFF_MS), doubled at each one in a row up to maxBackoffMs. */
  backoffMs?: number;
  maxBackoffMs?: number;
  orderTimeoutMs?: number;
}

/** One ACME host as GET /tls shows it. */
export interface AcmeHostStatus {
  host: string;
  /** valid: a certificate serves; issuing: an order runs; waiting: none yet, or the last order failed. */
  state: "valid" | "issuing" | "waiting";
  notAfter?: string;
  renewAt?: string;
  fingerprint?: string;
  /** Failed orders in a row. */
  failures: number;
  lastError?: string;
  nextAttemptAt?: string;
}

interface HostState {
  host: string;
  timer: NodeJS.Timeout | undefined;
  issuing: Promise<void> | undefined;
  info: CertificateInfo | undefined;
  failures: number;
  lastError: string | undefined;
  nextAttemptAt: number | undefined;
}

export class AcmeManager {
  private readonly stateDir: string;
  private readonly hooks: AcmeHooks;
  private readonly opts: AcmeOptions;
  private settings: AcmeSettings | undefined;
  private readonly hosts = new Map<string, HostState>();
  /** The account, registered once per settings. */
  private account: Promise<{ client: AcmeClient; acme: AcmeModule }> | undefined;
  private stopped = false;

  constructor(stateDir: string, hooks: AcmeHooks, opts: AcmeOptions = {}) {
    this.stateDir = stateDir;
    this.hooks = hooks;
    this.opts = opts;
  }

  /** The ACME settings and hosts of a new table: new hosts get a certificate, gone ones are no longer renewed. */
  configure(settings: AcmeSettings | undefined, hosts: ReadonlySet<string>): void {
    if (this.stopped) return;
    if (JSON.stringify(settings) !== JSON.stringify(this.settings)) {
      // Another CA, account or trust: everything starts over from that CA's directory.
      for (const s of this.hosts.values()) clearTimeout(s.timer);
      this.hosts.clear();
      this.account = undefined;
      this.settings = settings;
    }
    if (!settings) return;
    for (const [host, s] of this.hosts) {
      if (hosts.has(host)) continue;
      clearTimeout(s.timer);
      this.hosts.delete(host);
    }
    for (const host of hosts) {
      if (this.hosts.has(host)) continue;
      const s: HostState = { host, timer: undefined, issuing: undefined, info: undefined, failures: 0, lastError: undefined, nextAttemptAt: undefined };
      this.hosts.set(host, s);
      void this.check(s);
    }
  }

  /** A worker's handshake found no certificate for host: get one now, unless an order runs or backs off. */
  request(host: string): void {
    const s = this.hosts.get(host);
    if (!s || s.issuing) return;
    // The workers may have missed the file (written while one started): they read it again.
    if (s.info && Date.now() < s.info.notAfter) {
      void this.hooks.installed(host).catch((e: unknown) => this.hooks.log(`acme: ${host}: telling the workers: ${errorMessage(e)}`, "warn"));
      return;
    }
    if (s.nextAttemptAt !== undefined && Date.now() < s.nextAttemptAt) return;
    void this.issue(s);
  }

  /** Orders a new certificate for host now, whatever the current one's age; resolves once every worker serves it. */
  async renew(host: string): Promise<AcmeHostStatus> {
    const s = this.hosts.get(host);
    if (!s) throw new Error(`${host} is not one of this proxy's ACME hosts (${[...this.hosts.keys()].join(", ") || "none"})`);
    await s.issuing;
    const before = s.info?.fingerprint;
    await this.issue(s, true);
    if (s.info?.fingerprint === before) throw new Error(`${host}: renewal failed: ${s.lastError ?? "no new certificate"}`);
    return this.statusOf(s);
  }

  status(): AcmeHostStatus[] {
    return [...this.hosts.values()].map((s) => this.statusOf(s));
  }

  stop(): void {
    this.stopped = true;
    for (const s of this.hosts.values()) clearTimeout(s.timer);
  }

  private statusOf(s: HostState): AcmeHostStatus {
    const valid = s.info !== undefined && Date.now() < s.info.notAfter;
    return {
      host: s.host,
      state: s.issuing ? "issuing" : valid ? "valid" : "waiting",
      ...(s.info
        ? { notAfter: new Date(s.info.notAfter).toISOString(), renewAt: new Date(renewAt(s.info.notBefore, s.info.notAfter)).toISOString(), fingerprint: s.info.fingerprint }
        : {}),
      failures: s.failures,
      ...(s.lastError !== undefined ? { lastError: s.lastError } : {}),
      ...(s.nextAttemptAt !== undefined ? { nextAttemptAt: new Date(s.nextAttemptAt).toISOString() } : {}),
    };
  }

  /** Reads the host's certificate on disk: orders one when there is none or it is due, else waits until it is. */
  private async check(s: HostState): Promise<void> {
    const settings = this.settings;
    if (!settings || this.hosts.get(s.host) !== s || this.stopped) return;
    s.info = await this.readInfo(settings, s.host);
    const due = s.info === undefined ? 0 : renewAt(s.info.notBefore, s.info.notAfter);
    if (Date.now() >= due) return this.issue(s);
    this.schedule(s, due);
  }

  private schedule(s: HostState, at: number): void {
    clearTimeout(s.timer);
    if (this.stopped) return;
    s.timer = setTimeout(() => {
      s.timer = undefined;
      if (s.nextAttemptAt !== undefined && Date.now() < s.nextAttemptAt) return this.schedule(s, s.nextAttemptAt);
      void this.check(s);
    }, Math.min(Math.max(0, at - Date.now()), MAX_TIMER_MS));
    s.timer.unref();
  }

  /** One order at a time per host; a failure backs off, a success is renewed at 2/3 of its lifetime. */
  private issue(s: HostState, force = false): Promise<void> {
    if (s.issuing) return s.issuing;
    if (!force && s.nextAttemptAt !== undefined && Date.now() < s.nextAttemptAt) {
      this.schedule(s, s.nextAttemptAt);
      return Promise.resolve();
    }
    const settings = this.settings!;
    const run = async (): Promise<void> => {
      const started = Date.now();
      try {
        const info = await withTimeout(this.order(settings, s.host), this.opts.orderTimeoutMs ?? ACME_ORDER_TIMEOUT_MS, `no certificate within ${this.opts.orderTimeoutMs ?? ACME_ORDER_TIMEOUT_MS} ms`);
        if (this.settings !== settings) return;
        await this.hooks.installed(s.host);
        s.info = info;
        s.failures = 0;
        s.lastError = undefined;
        s.nextAttemptAt = undefined;
        const due = renewAt(info.notBefore, info.notAfter);
        this.hooks.log(`acme: ${s.host}: certificate issued in ${Date.now() - started} ms, valid until ${new Date(info.notAfter).toISOString()}, renewal at ${new Date(due).toISOString()}`);
        this.schedule(s, due);
      } catch (e) {
        if (this.settings !== settings) return;
        s.failures++;
        s.lastError = orderError(e, settings);
        const waitMs = acmeBackoffMs(s.failures, this.opts.backoffMs, this.opts.maxBackoffMs);
        s.nextAttemptAt = Date.now() + waitMs;
        const serving = s.info && Date.now() < s.info.notAfter ? "the current certificate keeps serving" : "the host has no certificate meanwhile";
        this.hooks.log(`acme: ${s.host}: order failed (${s.failures} in a row): ${s.lastError}; next attempt in ${Math.round(waitMs / 1000)} s, ${serving}`, "warn");
        this.schedule(s, s.nextAttemptAt);
      }
    };
    s.issuing = run().finally(() => (s.issuing = undefined));
    return s.issuing;
  }

  /** Orders a certificate for host, checks it and writes it (key and chain in one file, 0600). */
  private async order(settings: AcmeSettings, host: string): Promise<CertificateInfo> {
    const { client, acme } = await this.registered(settings);
    const [key, csr] = await acme.crypto.createCsr({ commonName: host, altNames: [host] }, await acme.crypto.createPrivateEcdsaKey("P-256"));
    const chain = await client.auto({
      csr,
      ...(settings.email !== undefined ? { email: settings.email } : {}),
      termsOfServiceAgreed: true,
      // The library's own check fetches http://<host>/ through the system's resolver: the CA's fetch is the one that counts.
      skipChallengeVerification: true,
      challengePriority: ["http-01"],
      challengeCreateFn: async (authz, challenge, keyAuthorization) => {
        if (challenge.type !== "http-01") throw new Error(`the CA offers no http-01 challenge for ${authz.identifier.value}`);
        await this.hooks.publish({ token: challenge.token, host: authz.identifier.value, keyAuthorization });
      },
      challengeRemoveFn: async (authz, challenge, keyAuthorization) => {
        await this.hooks.withdraw({ token: challenge.token, host: authz.identifier.value, keyAuthorization });
      },
    });
    const file = acmeCertFile(this.stateDir, settings.directoryUrl, host);
    const pem = `${key.toString().trim()}\n${chain.trim()}\n`;
    // What the CA sent must serve before it replaces anything.
    const loaded = buildCertificate(pem, pem, { certFile: file, keyFile: file }, [host]);
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    await writeFileAtomic(file, pem, 0o600);
    return { names: loaded.names, notBefore: loaded.notBefore, notAfter: loaded.notAfter, fingerprint: loaded.fingerprint };
  }

  /** The ACME account for these settings: its key made once (0600) and kept; registered once per process. */
  private registered(settings: AcmeSettings): Promise<{ client: AcmeClient; acme: AcmeModule }> {
    const run = async (): Promise<{ client: AcmeClient; acme: AcmeModule }> => {
      const acme = (await import("acme-client")).default as unknown as AcmeModule;
      // The library's own HTTP client: bounded, and trusting the configured CA besides the system's
      // (for this process's ACME requests only; nothing else's verification changes).
      acme.axios.defaults.timeout = ACME_REQUEST_TIMEOUT_MS;
      // Its retries of a 5xx, a 429 or a refused connection: 2, after 1 s and 2 s (or the CA's
      // Retry-After), not 5 from 5 s on: the order's own backoff takes over from there.
      const defaults = acme.axios.defaults as unknown as { acmeSettings: Record<string, number> };
      defaults.acmeSettings = { ...defaults.acmeSettings, retryMaxAttempts: 2, retryDefaultDelay: 1 };
      if (settings.caFile !== undefined) {
        const ca = await readFile(settings.caFile, "utf8");
        if (splitPem(ca).certificates.length === 0) throw new Error(`${settings.caFile}: holds no PEM certificate`);
        acme.axios.defaults.httpsAgent = new https.Agent({ ca: [...tls.rootCertificates, ca] });
      } else {
        acme.axios.defaults.httpsAgent = undefined;
      }
      const dir = acmeDir(this.stateDir, settings.directoryUrl);
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const keyFile = path.join(dir, "account.key");
      let accountKey: string;
      try {
        accountKey = await readFile(keyFile, "utf8");
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
        accountKey = (await acme.crypto.createPrivateEcdsaKey("P-256")).toString();
        await writeFileAtomic(keyFile, accountKey, 0o600);
      }
      // Polls for a challenge's and an order's status from 250 ms on, doubling, up to 10 s.
      const client = new acme.Client({ directoryUrl: settings.directoryUrl, accountKey, backoffAttempts: 10, backoffMin: 250, backoffMax: 10_000 });
      await client.createAccount({ termsOfServiceAgreed: true, ...(settings.email !== undefined ? { contact: [`mailto:${settings.email}`] } : {}) });
      return { client, acme };
    };
    if (!this.account) {
      this.account = run();
      // A failed registration is tried again at the next order.
      this.account.catch(() => (this.account = undefined));
    }
    return this.account;
  }

  /** The certificate on disk for host, or undefined (none, or not one that serves). */
  private async readInfo(settings: AcmeSettings, host: string): Promise<CertificateInfo | undefined> {
    const file = acmeCertFile(this.stateDir, settings.directoryUrl, host);
    try {
      const pem = await readFile(file, "utf8");
      return certificateInfo(parseLeaf(pem, file).leaf);
    } catch {
      return undefined;
    }
  }
}

/**
 * What went wrong, in words an operator can act on. acme-client loses a network error once its
 * retries are spent (it reads the missing response's config): that TypeError means the CA never
 * answered.
 */
function orderError(e: unknown, settings: AcmeSettings): string {
  if (e instanceof TypeError && /reading 'config'/.test(e.message)) return `no answer from the ACME directory ${settings.directoryUrl} (connection refused, reset or timed out)`;
  return errorMessage(e);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(what)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
