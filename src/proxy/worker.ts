// A proxy worker: one process of the data plane, forked by the supervisor (supervisor.ts). It
// serves clients on the listening sockets it inherits (plain, and TLS when the proxy has a TLS
// listener), with the table and marks the supervisor gives it over IPC, answers the supervisor's
// ops, and reports the upstreams it takes out itself. It accepts new connections while the
// supervisor says so (spill.ts). Importing this file starts a worker.

import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";
import { errorMessage } from "../errors.js";
import { createLogger } from "../log/logger.js";
import { logSettings } from "../log/settings.js";
import { DataPlane } from "./data-plane.js";
import { DataServer, type ListenAt } from "./data-server.js";
import { mergeDelta } from "./table.js";
import { WORKER_LISTEN_FD, WORKER_PROTOCOL, WORKER_TLS_FD, type SupervisorMessage, type WorkerMessage, type WorkerOp, type WorkerResults } from "./worker-protocol.js";

/** Without its supervisor a worker stops accepting at once (so a new proxy can bind) and finishes what it has. */
const ORPHAN_GRACE_MS = 5_000;

// Its stderr is the supervisor's, proxy.log, and its environment too: the supervisor has checked the log settings in it.
const log = createLogger({ component: "proxy", settings: logSettings() });

// The supervisor passes its state dir, where ACME keeps the certificates it gets.
const { values: args } = parseArgs({ options: { "state-dir": { type: "string" } }, strict: false });
const stateDir = typeof args["state-dir"] === "string" ? args["state-dir"] : ".";

const plane = new DataPlane();
const data = new DataServer(plane);
const events = plane.router.events;
/** The last op applied, reported with each passive mark. */
let lastOp = 0;
/** Events up to this seq have been reported, or came from the supervisor and need no report. */
let reportedSeq = 0;
let retiring = false;
let initialized = false;
/** Set once this worker serves: at init, or when a spare is told to serve. */
let serving = false;
/** The listeners it accepts on now. */
const accepting = new Set<"plain" | "tls">();
/** The listeners whose inherited descriptor it has listened on (and closed since, if it paused). */
const inheritedUsed = new Set<"plain" | "tls">();
/** The supervisor handed over a TLS listening socket too. */
let tlsListen = false;
/** Certificates: ACME's live in the state dir; a handshake for an ACME host without one asks the supervisor. */
const storeOptions = { stateDir, log: (message: string) => log.info("tls.certificates", message), request: (host: string) => send({ type: "want-cert", host }) };

function send(message: WorkerMessage): void {
  // After a disconnect there is nobody to tell; the disconnect handler winds the worker down.
  if (process.connected) process.send!(message);
}

/** Reports the upstreams this worker took out of rotation since the last report. */
function reportPassiveMarks(): void {
  const batch = events.since(reportedSeq);
  reportedSeq = batch.seq;
  for (const e of batch.events) {
    if (e.type === "upstream.down") send({ type: "down", id: e.id, reason: e.reason, at: e.at, opSeen: lastOp });
  }
}

/** Applies a mark that came from the supervisor, without reporting it back. */
function applyRemoteMark(op: Extract<SupervisorMessage, { type: "mark" }>): boolean {
  reportPassiveMarks();
  const changed = op.healthy ? plane.router.markUp(op.id, op.at) : plane.router.markDown(op.id, op.reason, op.at);
  reportedSeq = events.seq;
  return changed;
}

async function run(op: WorkerOp): Promise<WorkerResults[WorkerOp["type"]]> {
  switch (op.type) {
    case "apply":
      return { applied: plane.apply(op.table), version: plane.router.current.version };
    case "apply-delta": {
      const current = plane.router.current.source;
      if (current.version !== op.delta.base) return { applied: false, stale: true, version: current.version };
      return { applied: plane.apply(mergeDelta(current, op.delta)), stale: false, version: plane.router.current.version };
    }
    case "mark":
      return { changed: applyRemoteMark(op) };
    case "drain":
      return plane.drain(op.poolId, op.timeoutMs);
    case "stats":
      return plane.stats();
    case "metrics":
      return plane.metrics();
    case "challenge": {
      const challenges = plane.edge?.challenges;
      if (op.keyAuthorization === undefined) challenges?.delete(op.token);
      else challenges?.set(op.token, { host: op.host, keyAuthorization: op.keyAuthorization });
      return { answering: challenges?.has(op.token) ?? false };
    }
    case "certs":
      await plane.edge?.store.reloadAll();
      return { reloaded: true };
    case "tls":
      return plane.edge?.store.status() ?? [];
  }
}

function init(message: Extract<SupervisorMessage, { type: "init" }>): void {
  plane.apply(message.table);
  if (message.tls) {
    // Before serving, so that a spare has the certificates loaded when it takes over.
    tlsListen = true;
    const edge = plane.enableTls(storeOptions);
    for (const c of message.challenges) edge.challenges.set(c.token, { host: c.host, keyAuthorization: c.keyAuthorization });
  }
  for (const d of message.down) plane.router.markDown(d.id, d.reason, d.since);
  reportedSeq = events.seq;
  lastOp = message.opId;
  initialized = true;
  if (message.serve) serve(message.accept);
  else {
    log.info("worker.standby", `standing by as a spare, table version ${plane.router.current.version}`, { data: { tableVersion: plane.router.current.version } });
    send({ type: "ready", tableVersion: plane.router.current.version, serving: false });
  }
}

/** Serves from now on: ready for the connections it is given, accepting on its sockets when `accept` says so. */
function serve(accept: boolean): void {
  if (retiring || !initialized || serving) return;
  serving = true;
  const listening = accept ? Promise.all([acceptOn("plain"), tlsListen ? acceptOn("tls") : undefined]) : Promise.resolve([undefined, undefined]);
  listening.then(
    ([address, tlsAddress]) => {
      const where = address ? `on ${address.address}:${address.port}${tlsAddress ? ` and TLS on ${tlsAddress.address}:${tlsAddress.port}` : ""}` : "(not accepting until told to)";
      log.info("worker.serving", `serving ${where}, table version ${plane.router.current.version}`, { data: { tableVersion: plane.router.current.version, accepting: accept } });
      send({ type: "ready", tableVersion: plane.router.current.version, serving: true });
    },
    cannotServe,
  );
}

/**
 * Accepts on a listener: its inherited descriptor the first time, else the socket the supervisor
 * handed over with the message (after a pause).
 */
function acceptOn(listener: "plain" | "tls", handle?: object): Promise<AddressInfo | undefined> {
  if (retiring || accepting.has(listener)) return Promise.resolve(undefined);
  let where: ListenAt;
  if (handle) where = { handle };
  else if (!inheritedUsed.has(listener)) where = { fd: listener === "plain" ? WORKER_LISTEN_FD : WORKER_TLS_FD };
  else return Promise.reject(new Error(`told to accept on the ${listener} listener again without its socket`));
  inheritedUsed.add(listener);
  accepting.add(listener);
  return listener === "plain" ? data.listen(where) : data.listenTls(where, storeOptions);
}

function pause(): void {
  if (accepting.size === 0) return;
  accepting.clear();
  data.pauseAccepting();
  log.info("worker.paused", "stopped accepting new connections; serving the open ones");
}

/** A worker that cannot accept where it is told to is of no use: the supervisor sees it exit and says why. */
function cannotServe(e: unknown): never {
  log.error("worker.failed", `cannot serve: ${errorMessage(e)}`);
  process.exit(1);
}

function retire(graceMs: number, idleGraceMs: number, why: string): void {
  if (retiring) return;
  retiring = true;
  log.info("worker.retiring", `${why}: stopped accepting; finishing in-flight requests (up to ${graceMs} ms)`, { data: { graceMs } });
  void data.close({ graceMs, idleGraceMs }).then(
    async () => {
      log.info("worker.stopped", "stopped");
      // Its counters go with it otherwise; exits once the message is out (or cannot be sent).
      const metrics = await plane.metrics();
      if (!process.connected) process.exit(0);
      process.send!({ type: "final", metrics } satisfies WorkerMessage, () => process.exit(0));
    },
    (e: unknown) => {
      log.error("worker.stop-failed", `shutdown failed: ${errorMessage(e)}`);
      process.exit(1);
    },
  );
}

function onMessage(message: SupervisorMessage, handle?: unknown): void {
  switch (message.type) {
    case "init":
      return init(message);
    case "serve":
      return serve(message.accept);
    case "accept":
      void acceptOn(message.listener, typeof handle === "object" && handle !== null ? handle : undefined).catch(cannotServe);
      return;
    case "pause":
      return pause();
    case "retire":
      return retire(message.graceMs, message.idleGraceMs, "retiring");
    default: {
      // Marks this worker made come before any reply, so the supervisor's merged list has them.
      reportPassiveMarks();
      const opId = message.opId;
      run(message).then(
        (result) => send({ type: "reply", opId, result }),
        (e: unknown) => send({ type: "reply", opId, error: errorMessage(e) }),
      );
      // An op takes effect synchronously, before its first await: seen from here on.
      lastOp = Math.max(lastOp, opId);
    }
  }
}

if (!process.send) {
  log.error("worker.failed", "started without a supervisor; run dist/src/proxy/main.js instead");
  process.exit(2);
}
events.subscribe(reportPassiveMarks);
process.on("message", onMessage);
process.on("disconnect", () => retire(ORPHAN_GRACE_MS, 0, "the supervisor is gone"));
// Ctrl-C reaches the whole process group: the supervisor decides when each worker goes.
process.on("SIGINT", () => undefined);
// A SIGTERM for this worker alone: the supervisor replaces it first, then retires it.
process.on("SIGTERM", () => send({ type: "leaving" }));
send({ type: "hello", protocol: WORKER_PROTOCOL });
