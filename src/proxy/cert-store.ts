// A worker's certificates: one secure context per certificate file pair, picked by SNI, reloaded
// when its files change (fs.watch on their directories, and a periodic stat for where watching
// misses: network file systems, a directory created later). A file that fails to load keeps the
// certificate loaded before it serving, and the failure is logged and reported in the status.
// Connections already open keep the context they started with: a reload never drops one.

import { type FSWatcher, watch } from "node:fs";
import { stat } from "node:fs/promises";
import path from "node:path";
import type tls from "node:tls";
import { CertificateError, errorMessage } from "../errors.js";
import { type LoadedCertificate, readCertificate } from "./certificates.js";
import type { TlsCounts } from "./contract.js";
import { acmeCertFile, type TlsPolicy } from "./tls-settings.js";

/** How often every certificate file is stat'ed, for the changes fs.watch does not see. */
export const CERT_POLL_MS = 5_000;
/** Changes to a file pair within this long are one reload: a renewal rewrites both files. */
const RELOAD_DEBOUNCE_MS = 100;
/** A failed reload is tried again once after this long before it is reported: the other file may be on its way. */
const RELOAD_RETRY_MS = 1_000;

/** What GET /tls shows of one certificate. */
export interface CertificateStatus {
  hosts: string[];
  source: "file" | "acme";
  certFile: string;
  keyFile: string;
  /** Serving: a certificate is loaded (maybe an older one than the files hold, when error is set). */
  loaded: boolean;
  notBefore?: string;
  notAfter?: string;
  fingerprint?: string;
  /** The last load failed: why. The certificate loaded before it (if any) keeps serving. */
  error?: string;
}

interface Source {
  key: string;
  kind: "file" | "acme";
  hosts: string[];
  certFile: string;
  keyFile: string;
  loaded: LoadedCertificate | undefined;
  error: string | undefined;
  /** The files' identity (inode, size, mtime) when last read: the poll reloads when it moves. */
  signature: string;
  timer: NodeJS.Timeout | undefined;
  /** A load runs; another is wanted after it. */
  loading: Promise<void> | undefined;
  again: boolean;
  retried: boolean;
}

export interface CertStoreOptions {
  stateDir: string;
  log: (message: string) => void;
  /** A handshake names an ACME host that has no certificate yet: ask for one. */
  request?: (host: string) => void;
  pollMs?: number;
}

export class CertStore {
  /** Handshake figures, for the stats. */
  readonly counts: TlsCounts = { handshakes: 0, resumed: 0, failed: 0, timedOut: 0, noCertificate: 0 };
  private readonly opts: CertStoreOptions;
  private sources = new Map<string, Source>();
  private exact = new Map<string, Source>();
  /** "example.com" → the source of "*.example.com". */
  private wildcard = new Map<string, Source>();
  private readonly watchers = new Map<string, FSWatcher>();
  private readonly pollTimer: NodeJS.Timeout;
  /** Handshakes waiting for an ACME certificate, by host. */
  private readonly waiting = new Map<string, Set<() => void>>();
  /** How long a handshake waits for a certificate being issued: the table's clientHeaderMs. */
  waitMs = 10_000;
  private closed = false;

  constructor(opts: CertStoreOptions) {
    this.opts = opts;
    this.pollTimer = setInterval(() => void this.poll(), opts.pollMs ?? CERT_POLL_MS).unref();
  }

  /** The certificates a table's TLS settings name; files already loaded keep their context. */
  configure(policy: TlsPolicy | undefined): void {
    const wanted = new Map<string, Source>();
    const add = (kind: Source["kind"], hosts: string[], certFile: string, keyFile: string): void => {
      const key = `${kind}\0${certFile}\0${keyFile}\0${hosts.join(",")}`;
      const kept = this.sources.get(key) ?? wanted.get(key);
      wanted.set(key, kept ?? { key, kind, hosts, certFile, keyFile, loaded: undefined, error: undefined, signature: "", timer: undefined, loading: undefined, again: false, retried: false });
    };
    if (policy) {
      for (const c of policy.settings.certificates) add("file", c.hosts, c.certFile, c.keyFile);
      const acme = policy.settings.acme;
      if (acme) for (const host of policy.acmeHosts) {
        const file = acmeCertFile(this.opts.stateDir, acme.directoryUrl, host);
        add("acme", [host], file, file);
      }
    }
    for (const [key, s] of this.sources) if (!wanted.has(key)) clearTimeout(s.timer);
    this.sources = wanted;
    const exact = new Map<string, Source>();
    const wildcard = new Map<string, Source>();
    // The first source that lists a host serves it, as the spec lists them: files before ACME.
    for (const s of wanted.values()) {
      for (const h of s.hosts) {
        if (h.startsWith("*.")) {
          if (!wildcard.has(h.slice(2))) wildcard.set(h.slice(2), s);
        } else if (!exact.has(h)) exact.set(h, s);
      }
    }
    this.exact = exact;
    this.wildcard = wildcard;
    this.watchDirectories();
    for (const s of wanted.values()) if (!s.loaded && !s.loading) void this.load(s);
  }

  /** Loads every certificate again now (the supervisor says an ACME certificate was written). */
  async reloadAll(): Promise<void> {
    await Promise.all([...this.sources.values()].map((s) => this.load(s)));
  }

  /** The tls.Server's SNICallback: the context of the host's certificate, or none (the handshake fails with an alert). */
  readonly sni = (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void): void => {
    const host = servername.toLowerCase().replace(/\.$/, "");
    const source = this.lookup(host);
    if (source?.loaded) return cb(null, source.loaded.context);
    if (source?.kind === "acme" && !this.closed) return this.waitFor(source, host, cb);
    this.counts.noCertificate++;
    cb(null, undefined);
  };

  /** Whether a handshake for host would get a certificate now (an ACME one not issued yet: no). */
  serves(host: string): boolean {
    return this.lookup(host)?.loaded !== undefined;
  }

  status(): CertificateStatus[] {
    return [...this.sources.values()].map((s) => ({
      hosts: [...s.hosts],
      source: s.kind,
      certFile: s.certFile,
      keyFile: s.keyFile,
      loaded: s.loaded !== undefined,
      ...(s.loaded
        ? { notBefore: new Date(s.loaded.notBefore).toISOString(), notAfter: new Date(s.loaded.notAfter).toISOString(), fingerprint: s.loaded.fingerprint }
        : {}),
      ...(s.error !== undefined ? { error: s.error } : {}),
    }));
  }

  close(): void {
    this.closed = true;
    clearInterval(this.pollTimer);
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    for (const s of this.sources.values()) clearTimeout(s.timer);
    for (const set of this.waiting.values()) for (const wake of set) wake();
    this.waiting.clear();
  }

  private lookup(host: string): Source | undefined {
    const own = this.exact.get(host);
    if (own) return own;
    const dot = host.indexOf(".");
    return dot === -1 ? undefined : this.wildcard.get(host.slice(dot + 1));
  }

  /** An ACME host with no certificate yet: the handshake waits for it, up to waitMs. */
  private waitFor(source: Source, host: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void): void {
    let set = this.waiting.get(host);
    if (!set) {
      this.waiting.set(host, (set = new Set()));
      this.opts.request?.(host);
    }
    const wake = (): void => {
      clearTimeout(timer);
      set.delete(wake);
      if (set.size === 0 && this.waiting.get(host) === set) this.waiting.delete(host);
      if (source.loaded) return cb(null, source.loaded.context);
      this.counts.noCertificate++;
      cb(null, undefined);
    };
    const timer = setTimeout(wake, this.waitMs);
    set.add(wake);
  }

  private wake(source: Source): void {
    for (const host of source.hosts) {
      const set = this.waiting.get(host);
      if (set) for (const wake of [...set]) wake();
    }
  }

  /** Reads the source's files; one load at a time per source, the last change always read. */
  private load(s: Source): Promise<void> {
    if (s.loading) {
      s.again = true;
      return s.loading;
    }
    const run = async (): Promise<void> => {
      do {
        s.again = false;
        await this.loadOnce(s);
      } while (s.again && !this.closed);
    };
    s.loading = run().finally(() => (s.loading = undefined));
    return s.loading;
  }

  private async loadOnce(s: Source): Promise<void> {
    const signature = await fileSignature(s);
    try {
      const loaded = await readCertificate(s.certFile, s.keyFile, s.hosts);
      s.signature = signature;
      const before = s.loaded;
      s.loaded = loaded;
      s.error = undefined;
      s.retried = false;
      if (before?.fingerprint !== loaded.fingerprint) {
        this.opts.log(`tls: ${before ? "reloaded" : "loaded"} the certificate for ${s.hosts.join(", ")} (valid until ${new Date(loaded.notAfter).toISOString()}, sha256 ${loaded.fingerprint.slice(0, 23)})`);
      }
      this.wake(s);
    } catch (e) {
      s.signature = signature;
      // An ACME certificate not issued yet is no failure: it is on its way.
      if (s.kind === "acme" && signature.startsWith("ENOENT|")) return;
      const why = e instanceof CertificateError ? e.message : errorMessage(e);
      // Half a renewal (the certificate written, its key not yet) heals itself within moments.
      if (!s.retried) {
        s.retried = true;
        this.schedule(s, RELOAD_RETRY_MS);
        return;
      }
      if (why !== s.error) this.opts.log(`tls: cannot load the certificate for ${s.hosts.join(", ")}: ${why}; ${s.loaded ? "the one loaded before keeps serving" : "its hosts get no TLS until it loads"}`);
      s.error = why;
    }
  }

  private schedule(s: Source, delayMs: number): void {
    clearTimeout(s.timer);
    s.timer = setTimeout(() => {
      s.timer = undefined;
      if (!this.closed && this.sources.get(s.key) === s) void this.load(s);
    }, delayMs);
  }

  /** Watches each directory that holds a certificate file, so a replacement (even by rename) is seen at once. */
  private watchDirectories(): void {
    const dirs = new Set<string>();
    for (const s of this.sources.values()) {
      dirs.add(path.dirname(s.certFile));
      dirs.add(path.dirname(s.keyFile));
    }
    for (const [dir, w] of this.watchers) {
      if (dirs.has(dir)) continue;
      w.close();
      this.watchers.delete(dir);
    }
    for (const dir of dirs) {
      if (this.watchers.has(dir)) continue;
      try {
        const w = watch(dir, { persistent: false }, (_event, name) => this.changed(dir, name === null ? undefined : String(name)));
        // A watch that breaks (the directory removed) leaves the poll to notice.
        w.on("error", () => {
          w.close();
          if (this.watchers.get(dir) === w) this.watchers.delete(dir);
        });
        this.watchers.set(dir, w);
      } catch {
        // The directory does not exist yet (an ACME one): the poll covers it, and watches it once it does.
      }
    }
  }

  private changed(dir: string, name: string | undefined): void {
    for (const s of this.sources.values()) {
      const hit = [s.certFile, s.keyFile].some((f) => path.dirname(f) === dir && (name === undefined || path.basename(f) === name));
      if (!hit) continue;
      s.retried = false;
      this.schedule(s, RELOAD_DEBOUNCE_MS);
    }
  }

  private async poll(): Promise<void> {
    if (this.closed) return;
    if (this.watchers.size < this.directoryCount()) this.watchDirectories();
    for (const s of this.sources.values()) {
      if (s.loading || s.timer) continue;
      const now = await fileSignature(s);
      if (now !== s.signature) {
        s.retried = false;
        void this.load(s);
      }
    }
  }

  private directoryCount(): number {
    const dirs = new Set<string>();
    for (const s of this.sources.values()) {
      dirs.add(path.dirname(s.certFile));
      dirs.add(path.dirname(s.keyFile));
    }
    return dirs.size;
  }
}

/** Inode, size and mtime of both files: a rename over a file changes its inode, an edit its mtime. */
async function fileSignature(s: Source): Promise<string> {
  const one = async (file: string): Promise<string> => {
    try {
      const st = await stat(file);
      return `${st.ino}:${st.size}:${st.mtimeMs}`;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code ?? "error";
    }
  };
  return `${await one(s.certFile)}|${await one(s.keyFile)}`;
}
