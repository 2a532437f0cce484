// The messages between the proxy's supervisor and its workers, over the IPC channel of fork().
// A worker inherits the listening sockets as file descriptors; one told to accept again after it
// stopped gets them with an "accept" message, one socket per message (IPC carries one handle).

import type { CertificateStatus } from "./cert-store.js";
import type { DrainResult, ProxyMetrics, ProxyStats, RouteTable, RouteTableDelta, UpstreamDown, UpstreamDownReason } from "./contract.js";

/**
 * Bumped whenever a message changes meaning. A worker of another version (an upgrade to code
 * whose protocol moved on) is refused: the supervisor itself must be restarted then.
 */
export const WORKER_PROTOCOL = 3;

/** The file descriptor number at which a worker finds the listening socket. */
export const WORKER_LISTEN_FD = 3;
/** Where a worker finds the TLS listening socket, when init says there is one. */
export const WORKER_TLS_FD = 4;

/** An ACME HTTP-01 challenge every worker answers while the CA validates it. */
export interface AcmeChallenge {
  token: string;
  host: string;
  keyAuthorization: string;
}

/** Supervisor → worker. Ops with an `opId` get a reply; ids grow, so a worker can say which it has seen. */
export type SupervisorMessage =
  /**
   * The state to serve: sent once, in answer to hello. The worker serves only after applying it,
   * and only when `serve` says so; a spare keeps up with every op and waits for "serve". A serving
   * worker accepts on its inherited sockets when `accept` says so, else waits for "accept".
   */
  | { type: "init"; opId: number; table: RouteTable; down: UpstreamDown[]; serve: boolean; accept: boolean; tls: boolean; challenges: AcmeChallenge[] }
  /** A spare takes a dead worker's place: serve, and accept when `accept` says so. */
  | { type: "serve"; accept: boolean }
  /**
   * Accept on this listener: its inherited socket, the first time; after a "pause", the socket
   * handed over with this message.
   */
  | { type: "accept"; listener: "plain" | "tls" }
  /** Stop accepting (the sockets stay the supervisor's) and go on serving the connections open now. */
  | { type: "pause" }
  | { type: "apply"; opId: number; table: RouteTable }
  /**
   * Some services' routes on top of the table at delta.base. A worker at another version answers
   * stale and changes nothing; the supervisor then sends it the whole table. (A supervisor of an
   * earlier version never sends it, so the protocol number stays.)
   */
  | { type: "apply-delta"; opId: number; delta: RouteTableDelta }
  /** healthy: true clears any mark; false marks it down with reason (and since, for a mark another worker made). */
  | { type: "mark"; opId: number; id: string; healthy: boolean; reason: UpstreamDownReason; at: number }
  | { type: "drain"; opId: number; poolId: string; timeoutMs: number }
  | { type: "stats"; opId: number }
  | { type: "metrics"; opId: number }
  /** Answer this challenge from now on; without keyAuthorization: stop answering it. */
  | { type: "challenge"; opId: number; token: string; host: string; keyAuthorization?: string }
  /** Read the certificate files again now: ACME wrote one. */
  | { type: "certs"; opId: number }
  /** The certificates as this worker serves them. */
  | { type: "tls"; opId: number }
  /** Stop accepting, finish in-flight requests, exit. No reply: its exit is the answer. */
  | { type: "retire"; graceMs: number; idleGraceMs: number };

export type WorkerOp = Extract<SupervisorMessage, { type: "apply" | "apply-delta" | "mark" | "drain" | "stats" | "metrics" | "challenge" | "certs" | "tls" }>;

/** What each op answers. */
export interface WorkerResults {
  apply: { applied: boolean; version: number };
  "apply-delta": { applied: boolean; stale: boolean; version: number };
  mark: { changed: boolean };
  drain: DrainResult;
  stats: ProxyStats;
  metrics: ProxyMetrics;
  challenge: { answering: boolean };
  certs: { reloaded: true };
  tls: CertificateStatus[];
}

/** Worker → supervisor. */
export type WorkerMessage =
  /** Loaded and waiting for init. */
  | { type: "hello"; protocol: number }
  /** The table of init (and every op after it) applied; serving: ready for connections (else a spare). */
  | { type: "ready"; tableVersion: number; serving: boolean }
  | { type: "reply"; opId: number; result?: unknown; error?: string }
  /**
   * The worker took an upstream out of rotation by itself (passive detection). opSeen is the
   * last op it had applied, so that the supervisor can tell a mark made before the agent's
   * "healthy" reached the worker from one made after.
   */
  | { type: "down"; id: string; reason: UpstreamDownReason; at: number; opSeen: number }
  /** The worker got SIGTERM: replace it, then retire it. */
  | { type: "leaving" }
  /** A retiring worker's counters as it exits, so that the proxy's totals keep what it counted since the last look. */
  | { type: "final"; metrics: ProxyMetrics }
  /** A handshake named an ACME host that has no certificate yet: get one. */
  | { type: "want-cert"; host: string };
