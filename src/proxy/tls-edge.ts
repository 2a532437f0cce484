// A worker's TLS edge: the TLS listener's server (TLS 1.2+, SNI from the certificate store, no
// renegotiation, the client header timeout bounding the handshake), which hands each connection
// to the data plane's HTTP server once its handshake is done; and what the plain listener answers
// itself before any routing: ACME HTTP-01 challenges, and the redirect of TLS hosts to https.

import { constants } from "node:crypto";
import type net from "node:net";
import tls from "node:tls";
import type { ClientRequest, ClientResponse, ClientServer } from "./client-server.js";
import { TLS_MIN_VERSION } from "./certificates.js";
import { CertStore, type CertStoreOptions } from "./cert-store.js";
import { endRaw } from "./http.js";
import { type CompiledTable, normalizeHost } from "./table.js";

export const ACME_CHALLENGE_PREFIX = "/.well-known/acme-challenge/";
/** RFC 8555 tokens are base64url; anything else is no token of ours. */
const TOKEN = /^[A-Za-z0-9_-]{1,256}$/;

/** What a connection that completed its handshake is handed to, and what is counted. */
export interface TlsEdgeHost {
  /** The data plane's client server: it serves the decrypted connection as any other. */
  readonly server: ClientServer;
  /** A connection refused at accept (maxConnections). */
  onDrop(): void;
}

export class TlsEdge {
  readonly store: CertStore;
  readonly server: tls.Server;
  /** ACME HTTP-01 tokens being validated: token → the host and the key authorization to answer. */
  readonly challenges = new Map<string, { host: string; keyAuthorization: string }>();
  /** The TLS listener's port once it listens: where the redirect points. */
  httpsPort = 0;
  private table: CompiledTable | undefined;
  /** Sockets accepted and still in their handshake: a shutdown cuts them. */
  private readonly handshaking = new Set<net.Socket>();
  private readonly handshakeTimeoutKey: symbol | undefined;

  constructor(host: TlsEdgeHost, storeOptions: CertStoreOptions) {
    this.store = new CertStore(storeOptions);
    const counts = this.store.counts;
    this.server = tls.createServer({
      SNICallback: this.store.sni,
      minVersion: TLS_MIN_VERSION,
      // Client-initiated renegotiation costs the server a handshake for every few bytes a client sends.
      secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
      honorCipherOrder: true,
      ALPNProtocols: ["http/1.1"],
      noDelay: true,
    });
    // The handshake timeout follows the table (clientHeaderMs), but Node reads it only from the
    // constructor's options into this symbol: set there on each table, or left as it started.
    this.handshakeTimeoutKey = Object.getOwnPropertySymbols(this.server).find((s) => s.description === "handshake-timeout");
    this.server.on("connection", (raw: net.Socket) => {
      this.handshaking.add(raw);
      raw.once("close", () => this.handshaking.delete(raw));
    });
    this.server.on("secureConnection", (socket: tls.TLSSocket) => {
      counts.handshakes++;
      if (socket.isSessionReused()) counts.resumed++;
      this.handshaking.delete((socket as unknown as { _parent?: net.Socket })._parent ?? socket);
      host.server.emit("connection", socket);
    });
    this.server.on("tlsClientError", (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
      counts.failed++;
      if (err.code === "ERR_TLS_HANDSHAKE_TIMEOUT") counts.timedOut++;
      socket.destroy();
    });
    this.server.on("drop", () => host.onDrop());
  }

  /** A new table: its certificates, its timeouts, its connection limit. */
  configure(table: CompiledTable): void {
    this.table = table;
    const { timeouts, limits } = table.settings;
    this.store.waitMs = timeouts.clientHeaderMs;
    this.server.maxConnections = limits.maxConnections;
    if (this.handshakeTimeoutKey) (this.server as unknown as Record<symbol, number>)[this.handshakeTimeoutKey] = timeouts.clientHeaderMs;
    this.store.configure(table.tls);
  }

  /**
   * Answers what the edge answers itself, before routing; false: route the request. Over TLS it
   * only adds HSTS. On the plain listener it answers ACME challenges for ACME hosts, and redirects
   * a TLS host's requests to https.
   */
  intercept(req: ClientRequest, res: ClientResponse, rawHost: string | undefined, url: string): boolean {
    const policy = this.table?.tls;
    if (policy === undefined) return false;
    if ((req.socket as tls.TLSSocket).encrypted === true) {
      if (policy.settings.hsts !== undefined) res.setHeader("Strict-Transport-Security", policy.settings.hsts);
      return false;
    }
    if (rawHost === undefined) return false;
    const host = normalizeHost(rawHost);
    if (url.startsWith(ACME_CHALLENGE_PREFIX) && policy.acmeHosts.has(host)) {
      this.answerChallenge(res, host, url.slice(ACME_CHALLENGE_PREFIX.length));
      return true;
    }
    const location = this.redirectTo(host, url);
    if (location === undefined) return false;
    const text = `${location}\n`;
    // A body the client sent is not read: its connection ends after the answer.
    if (req.headers["content-length"] !== undefined || req.headers["transfer-encoding"] !== undefined) res.shouldKeepAlive = false;
    try {
      res.writeHead(308, ["Location", location, "Content-Type", "text/plain", "Content-Length", String(Buffer.byteLength(text))]);
    } catch {
      // A request target the parser let through but a header may not carry: no redirect to it.
      res.shouldKeepAlive = false;
      res.writeHead(400, ["Content-Type", "text/plain", "Content-Length", "12"]);
      res.end("bad request\n");
      return true;
    }
    res.end(text);
    return true;
  }

  /** The same for an upgrade (a WebSocket) on the plain listener: a redirect, raw; false: route it. */
  interceptUpgrade(req: ClientRequest, client: net.Socket, rawHost: string | undefined, url: string): boolean {
    if (this.table?.tls === undefined || rawHost === undefined || (req.socket as tls.TLSSocket).encrypted === true) return false;
    const location = this.redirectTo(normalizeHost(rawHost), url);
    if (location === undefined) return false;
    endRaw(client, `HTTP/1.1 308 Permanent Redirect\r\nLocation: ${location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    return true;
  }

  /** Stops accepting TLS connections (closed when the last one ends). */
  stopAccepting(onClosed: () => void): void {
    this.server.close(() => onClosed());
  }

  /** Ends the handshakes still under way, and the certificate watching. */
  cutAll(): void {
    for (const raw of this.handshaking) raw.destroy();
    this.handshaking.clear();
    this.store.close();
  }

  connectionCount(): Promise<number> {
    return new Promise((resolve) => this.server.getConnections((err, n) => resolve(err ? 0 : n)));
  }

  private answerChallenge(res: ClientResponse, host: string, token: string): void {
    const challenge = TOKEN.test(token) ? this.challenges.get(token) : undefined;
    if (challenge === undefined || challenge.host !== host) {
      const text = "no such ACME challenge\n";
      res.writeHead(404, ["Content-Type", "text/plain", "Content-Length", String(text.length)]);
      res.end(text);
      return;
    }
    res.writeHead(200, ["Content-Type", "text/plain", "Content-Length", String(Buffer.byteLength(challenge.keyAuthorization))]);
    res.end(challenge.keyAuthorization);
  }

  /** The https:// URL for a TLS host's request, or undefined when it stays on plain HTTP. */
  private redirectTo(host: string, url: string): string | undefined {
    const policy = this.table?.tls;
    // Only where a handshake would succeed now: not to an ACME host still without its certificate.
    if (!policy?.settings.redirectHttp || this.httpsPort === 0 || !this.store.serves(host)) return undefined;
    const port = this.httpsPort === 443 ? "" : `:${this.httpsPort}`;
    return `https://${host}${port}${pathOf(url)}`;
  }
}

/** The path and query of a request target: an absolute-form one ("http://host/p?q") loses its origin. */
function pathOf(url: string): string {
  if (url.startsWith("/")) return url;
  try {
    const u = new URL(url);
    return `${u.pathname}${u.search}`;
  } catch {
    return "/";
  }
}
