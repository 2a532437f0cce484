// The in-memory twin of the Runtime contract, for in-process tests of the orchestrator and the
// healer that take seconds. A MemoryMachine is the computer: it runs apps (functions in this
// process) that serve on real 127.0.0.1 sockets, so health checks, smoke checks and the proxy
// reach them as they reach processes. A MemoryRuntime is one agent's view of it, as a
// ProcessRuntime is: a restarted agent makes a new one over the same machine and adopts or
// discovers what the old one left. Tests inject faults on the machine: a start that fails, an
// instance that never listens, that exits after N requests or after a delay, that answers a path
// with an error, that ignores SIGTERM; a stop that fails.

import http from "node:http";
import type net from "node:net";
import { TurquoiseError } from "../errors.js";
import { freePort } from "../util/net.js";
import { SLOTS, type AdoptResult, type ExitEvent, type InstanceInfo, type InstanceState, type ReleaseDescription, type RestartEvent, type Runtime, type Slot, type SlotRuntime, type StartRequest } from "./contract.js";
import { instanceEnv } from "./env.js";
import { AGENT_ENV, INSTANCE_ENV } from "./identity.js";
import { isDirectory, readDeclaredSchema } from "./manifest.js";
import { DEFAULT_LOG_TAIL_LINES, LOOPBACK } from "./process.js";

export const MEMORY_RUNTIME = "memory";
/** Output lines kept per instance; older ones are dropped, as a rotated log would. */
const MAX_LOG_LINES = 1_000;
/** Exited instances the machine keeps, for inspect() and logs(); older ones are forgotten. */
const REMEMBERED_EXITS = 200;
/** Signals a process ignores when it has no handler for them; every other one ends it. */
const IGNORED_BY_DEFAULT: ReadonlySet<string> = new Set(["SIGCHLD", "SIGCONT", "SIGURG", "SIGWINCH"]);

/** What an app gets instead of `process`: its environment, its output, its signals, its exit. */
export interface MemoryProcess {
  readonly id: string;
  /** The command's arguments after the app's name. */
  readonly argv: readonly string[];
  readonly cwd: string;
  /** What a process would get: PORT, HOST, the TURQUOISE_* facts and marks, the service's env (runtime/env.ts). */
  readonly env: Readonly<Record<string, string>>;
  /** A line of output (console.log). */
  log(line: string): void;
  /** A line of error output (console.error): the same log, as a process's 2>&1. */
  error(line: string): void;
  /** As process.on(signal): with a handler the app decides; without one the signal ends it (SIGKILL always does). */
  on(signal: NodeJS.Signals, handler: () => void): void;
  /**
   * Serves handler on HOST:PORT. Every request passes the injected faults first; the server and its
   * connections are cut when the instance ends, as a dying process's would be.
   */
  listen(handler: http.RequestListener): Promise<http.Server>;
  /** As process.exit(code): the instance ends now. */
  exit(code: number): void;
}

/** An app, found by the command's first word. A throw or a rejection ends the instance with code 1, as an uncaught error would. */
export type MemoryApp = (proc: MemoryProcess) => void | Promise<void>;

/** What a running instance can be made to do. */
export interface InstanceFaults {
  /** The instance runs but never listens: its port refuses connections. */
  neverListen?: boolean;
  /** Requests to this path (query ignored) are answered with this status instead of by the app. */
  answer?: { path: string; status: number };
  /** The instance exits once it has answered this many more requests (health checks count). */
  exitAfterRequests?: number;
  /** The instance exits this long after the fault takes effect. */
  exitAfterMs?: number;
  /** The exit code of the two exits above; 1 by default. */
  exitCode?: number;
  /** SIGTERM does nothing: stop() has to SIGKILL it. */
  ignoreSigterm?: boolean;
}

/** A fault for future starts (or stops) of the instances it matches. */
export interface MemoryFault extends InstanceFaults {
  /** Which instances: every field given must match; none given matches all. */
  service?: string;
  slot?: Slot;
  release?: string;
  /** How many starts (or stops) it applies to before it is used up; all of them by default. */
  times?: number;
  /** start() rejects with this reason, as a runtime that cannot start anything would. */
  failStart?: string;
  /** stop() rejects with this reason and the instance keeps running, as with an engine that does not answer. */
  failStop?: string;
}

interface Armed {
  fault: MemoryFault;
  left: number;
}

/** One instance on the machine: what a process table and a log file hold of a process. */
interface Instance {
  info: InstanceInfo;
  /** The marks it carries (TURQUOISE_AGENT): whose it is. */
  agentId: string;
  state: InstanceState;
  lines: string[];
  faults: InstanceFaults;
  /** Requests left before an injected exit; undefined when none is due. */
  requestsLeft?: number;
  handlers: Map<string, Array<() => void>>;
  servers: Set<http.Server>;
  timers: Set<NodeJS.Timeout>;
  exited: Promise<void>;
  markExited: () => void;
}

type MachineExit = (inst: Instance, exitCode: number | null, signal: string | null) => void;

const START_FAULTS = ["failStart", "neverListen", "answer", "exitAfterRequests", "exitAfterMs", "ignoreSigterm"] as const;

/** The computer the memory runtimes run instances on: its apps, its instances, its faults. */
export class MemoryMachine {
  private readonly apps: Record<string, MemoryApp>;
  /** By ref, as a process table is by pid. */
  private readonly instances = new Map<string, Instance>();
  private readonly exitedRefs: string[] = [];
  private readonly exitListeners = new Set<MachineExit>();
  private readonly armed = new Set<Armed>();
  private seq = 0;

  /** apps: by the name a service's command starts with, e.g. { app: releaseApp }. */
  constructor(opts: { apps: Record<string, MemoryApp> }) {
    this.apps = { ...opts.apps };
  }

  /** Arms a fault for the starts (and stops) it matches; returns the function that disarms it. */
  inject(fault: MemoryFault): () => void {
    const armed: Armed = { fault, left: fault.times ?? Number.POSITIVE_INFINITY };
    this.armed.add(armed);
    return () => this.armed.delete(armed);
  }

  /** Changes what a running instance does from now on: a health path that starts failing, an exit to come. */
  affect(instance: InstanceInfo, faults: InstanceFaults): void {
    const inst = this.instanceOf(instance);
    if (!inst?.state.running) throw new Error(`${instance.id} is not a running instance of this memory machine`);
    this.applyFaults(inst, faults);
  }

  /** The instance dies now, from outside (SIGKILL by default), as an OOM kill or a crash would end it. */
  crash(instance: InstanceInfo, how: { exitCode?: number; signal?: NodeJS.Signals } = { signal: "SIGKILL" }): void {
    const inst = this.instanceOf(instance);
    if (!inst) throw new Error(`${instance.id} never ran on this memory machine`);
    this.end(inst, how.exitCode ?? null, how.signal ?? null, `killed from outside (${how.signal ?? `exit code ${how.exitCode}`})`);
  }

  /** Every running instance, whoever started it, as ps would list them. */
  running(): InstanceInfo[] {
    return [...this.instances.values()].filter((i) => i.state.running).map((i) => ({ ...i.info }));
  }

  /** The instance a record names: the one at its ref, if it is the one the record says (same id). */
  instanceOf(record: InstanceInfo): Instance | undefined {
    const inst = this.instances.get(record.ref);
    return inst?.info.id === record.id ? inst : undefined;
  }

  /** Who is at a record's ref now: nothing, the record's instance, or another one (a reused ref). */
  identify(record: InstanceInfo): { verdict: "gone" } | { verdict: "ours"; inst: Instance } | { verdict: "refused"; reason: string } {
    const inst = this.instances.get(record.ref);
    if (!inst) return { verdict: "gone" };
    if (inst.info.id !== record.id) return { verdict: "refused", reason: `ref ${record.ref} is instance ${inst.info.id}, not ${record.id}` };
    return { verdict: "ours", inst };
  }

  /** Instances carrying these marks. */
  marked(agentId: string): Instance[] {
    return [...this.instances.values()].filter((i) => i.state.running && i.agentId === agentId);
  }

  onExit(listener: MachineExit): () => void {
    this.exitListeners.add(listener);
    return () => this.exitListeners.delete(listener);
  }

  async launch(req: StartRequest, agentId: string): Promise<Instance> {
    const [executable, ...args] = req.command;
    const prefix = `cannot start ${req.service} release ${req.release}`;
    if (!executable) throw new Error(`${prefix}: the command is empty`);
    if (!isDirectory(req.cwd)) {
      throw new TurquoiseError("NOT_FOUND", `${prefix}: working directory ${req.cwd} does not exist`, { data: { service: req.service, release: req.release, cwd: req.cwd } });
    }
    const app = this.apps[executable];
    if (!app) {
      const known = Object.keys(this.apps).join(", ") || "none";
      throw new TurquoiseError("NOT_FOUND", `${prefix}: command "${executable}" not found among the memory machine's apps (${known})`, {
        data: { service: req.service, release: req.release, command: executable },
      });
    }
    const faults = this.take("start", req);
    if (faults.failStart !== undefined) throw new Error(`${prefix}: ${faults.failStart} (injected)`);

    // As the process runtime does: a port free a moment ago, which the app binds once it runs.
    const port = await freePort(LOOPBACK);
    const ref = `memory-${++this.seq}`;
    const info: InstanceInfo = { id: req.id, service: req.service, slot: req.slot, release: req.release, host: LOOPBACK, port, ref, startedAt: Date.now() };
    let markExited!: () => void;
    const exited = new Promise<void>((resolve) => (markExited = resolve));
    const inst: Instance = { info, agentId, state: { running: true }, lines: [], faults: {}, handlers: new Map(), servers: new Set(), timers: new Set(), exited, markExited };
    this.instances.set(ref, inst);
    this.applyFaults(inst, faults);
    const env = instanceEnv(req, { port, host: LOOPBACK, hostBasics: false, agentId });
    // After start() has resolved, as a spawned process runs: the caller records the instance before it can exit.
    setImmediate(() => this.run(inst, app, { argv: args, cwd: req.cwd, env }));
    return inst;
  }

  /** SIGTERM, then SIGKILL after stopTimeoutMs; true when it had to be killed. */
  async stop(inst: Instance, stopTimeoutMs: number): Promise<boolean> {
    const fault = this.take("stop", inst.info);
    if (fault.failStop !== undefined) throw new Error(`cannot stop ${inst.info.id}: ${fault.failStop} (injected)`);
    if (!inst.state.running) return false;
    this.deliver(inst, "SIGTERM");
    if (await exitedWithin(inst, stopTimeoutMs)) return false;
    this.end(inst, null, "SIGKILL", `still running ${stopTimeoutMs}ms after SIGTERM: killed`);
    return true;
  }

  deliver(inst: Instance, signal: NodeJS.Signals): void {
    if (!inst.state.running) return;
    if (signal === "SIGKILL") return this.end(inst, null, "SIGKILL");
    // An app in this process cannot be paused: the twin does not model SIGSTOP.
    if (signal === "SIGSTOP") return this.note(inst, "SIGSTOP is not modelled by the memory runtime: ignored");
    if (signal === "SIGTERM" && inst.faults.ignoreSigterm) return this.note(inst, "SIGTERM ignored (injected)");
    const handlers = inst.handlers.get(signal);
    if (!handlers?.length) {
      if (!IGNORED_BY_DEFAULT.has(signal)) this.end(inst, null, signal);
      return;
    }
    for (const handler of handlers) {
      try {
        handler();
      } catch (e) {
        return this.uncaught(inst, e);
      }
    }
  }

  logs(inst: Instance, tailLines: number): string {
    const tail = tailLines <= 0 ? [] : inst.lines.slice(-tailLines);
    return tail.length ? `${tail.join("\n")}\n` : "";
  }

  /** Where the instance's servers listen. */
  listening(inst: Instance): Array<{ host: string; port: number }> {
    const out: Array<{ host: string; port: number }> = [];
    for (const server of inst.servers) {
      const a = server.address() as net.AddressInfo | null;
      if (a) out.push({ host: a.address, port: a.port });
    }
    return out;
  }

  /** The faults of every armed entry that matches, merged; each one used counts against its times. */
  private take(kind: "start" | "stop", who: { service: string; slot: Slot; release: string }): MemoryFault {
    const merged: MemoryFault = {};
    for (const armed of [...this.armed]) {
      const f = armed.fault;
      const relevant = kind === "stop" ? f.failStop !== undefined : START_FAULTS.some((k) => f[k] !== undefined);
      if (!relevant || (f.service !== undefined && f.service !== who.service) || (f.slot !== undefined && f.slot !== who.slot) || (f.release !== undefined && f.release !== who.release)) continue;
      if (--armed.left <= 0) this.armed.delete(armed);
      Object.assign(merged, f);
    }
    return merged;
  }

  private applyFaults(inst: Instance, faults: InstanceFaults): void {
    const { neverListen, answer, exitAfterRequests, exitAfterMs, exitCode, ignoreSigterm } = faults;
    Object.assign(inst.faults, {
      ...(neverListen !== undefined ? { neverListen } : {}),
      ...(answer !== undefined ? { answer } : {}),
      ...(exitCode !== undefined ? { exitCode } : {}),
      ...(ignoreSigterm !== undefined ? { ignoreSigterm } : {}),
    });
    if (exitAfterRequests !== undefined) inst.requestsLeft = exitAfterRequests;
    if (exitAfterMs !== undefined) {
      const timer = setTimeout(() => this.end(inst, inst.faults.exitCode ?? 1, null, `exiting ${exitAfterMs}ms after the fault was injected`), exitAfterMs);
      timer.unref();
      inst.timers.add(timer);
    }
  }

  private run(inst: Instance, app: MemoryApp, at: { argv: string[]; cwd: string; env: Record<string, string> }): void {
    if (!inst.state.running) return;
    if (inst.faults.neverListen) return this.note(inst, "never listens (injected)");
    const proc: MemoryProcess = {
      id: inst.info.id,
      argv: at.argv,
      cwd: at.cwd,
      env: at.env,
      log: (line) => this.write(inst, line),
      error: (line) => this.write(inst, line),
      on: (signal, handler) => {
        const list = inst.handlers.get(signal) ?? [];
        list.push(handler);
        inst.handlers.set(signal, list);
      },
      listen: (handler) => this.listen(inst, handler),
      exit: (code) => this.end(inst, code, null),
    };
    let ran: void | Promise<void>;
    try {
      ran = app(proc);
    } catch (e) {
      return this.uncaught(inst, e);
    }
    if (ran instanceof Promise) ran.catch((e: unknown) => this.uncaught(inst, e));
  }

  private uncaught(inst: Instance, e: unknown): void {
    if (!inst.state.running) return;
    this.write(inst, `Uncaught ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    this.end(inst, 1, null);
  }

  private listen(inst: Instance, handler: http.RequestListener): Promise<http.Server> {
    const server = http.createServer((req, res) => this.serve(inst, handler, req, res));
    inst.servers.add(server);
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(inst.info.port, inst.info.host, () => {
        server.off("error", reject);
        // The instance may have ended while the bind was under way: nothing of it may keep listening.
        if (!inst.state.running) cut(server);
        resolve(server);
      });
    });
  }

  private serve(inst: Instance, handler: http.RequestListener, req: http.IncomingMessage, res: http.ServerResponse): void {
    if (!inst.state.running) return void req.socket.destroy();
    res.once("finish", () => this.answered(inst));
    const answer = inst.faults.answer;
    if (answer && (req.url ?? "/").split("?")[0] === answer.path) {
      req.resume();
      res.writeHead(answer.status, { "content-type": "application/json" }).end(JSON.stringify({ error: "injected by the memory runtime", status: answer.status }));
      return;
    }
    try {
      handler(req, res);
    } catch (e) {
      this.uncaught(inst, e);
    }
  }

  private answered(inst: Instance): void {
    if (inst.requestsLeft === undefined || !inst.state.running) return;
    if (--inst.requestsLeft > 0) return;
    // Next turn: the response just finished is on its way before the connection is cut.
    setImmediate(() => this.end(inst, inst.faults.exitCode ?? 1, null, "exiting after its injected number of requests"));
  }

  /** The instance is gone: its sockets are cut and every runtime that watches it hears of it once. */
  private end(inst: Instance, exitCode: number | null, signal: string | null, why?: string): void {
    if (!inst.state.running) return;
    if (why) this.note(inst, why);
    inst.state = { running: false, exitCode, signal };
    for (const timer of inst.timers) clearTimeout(timer);
    inst.timers.clear();
    for (const server of inst.servers) cut(server);
    inst.markExited();
    this.exitedRefs.push(inst.info.ref);
    if (this.exitedRefs.length > REMEMBERED_EXITS) this.instances.delete(this.exitedRefs.shift()!);
    for (const listener of [...this.exitListeners]) listener(inst, exitCode, signal);
  }

  private write(inst: Instance, line: string): void {
    inst.lines.push(...line.split("\n"));
    if (inst.lines.length > MAX_LOG_LINES) inst.lines.splice(0, inst.lines.length - MAX_LOG_LINES);
  }

  /** The runtime's own word in an instance's log, told apart from the app's. */
  private note(inst: Instance, text: string): void {
    this.write(inst, `[memory runtime] ${text}`);
  }
}

/** One agent's runtime over a memory machine: what it started or adopted, and their exits. */
export class MemoryRuntime implements Runtime {
  readonly name = MEMORY_RUNTIME;
  readonly machine: MemoryMachine;
  /** Written into every instance's environment (AGENT_ENV); discover() looks for it. */
  readonly agentId: string;
  /** Instances this runtime started or adopted, by id: its exit events are about these. */
  private readonly tracked = new Map<string, InstanceInfo>();
  private readonly listeners = new Set<(e: ExitEvent) => void>();
  /** With restarts: the slot-level capability, as swarm has it (a twin of Swarm's restart policy). */
  readonly slots?: SlotRuntime;
  private readonly restartListeners = new Set<(e: RestartEvent) => void>();
  /** With restarts: each live instance's start request, to run it again under its id. */
  private readonly requests = new Map<string, StartRequest>();
  /** With restarts: instances whose run ended and that run again soon, as last seen. */
  private readonly betweenRuns = new Map<string, InstanceInfo>();
  /** Instances being stopped on purpose: never restarted. */
  private readonly stopping = new Set<string>();

  /**
   * machine: the one to share with other runtimes (a restarted agent's); a machine of its own with these apps otherwise.
   * restarts: the runtime restarts an instance that ends by itself, under its id, after delayMs, as Swarm does.
   */
  constructor(opts: { agentId: string; machine?: MemoryMachine; apps?: Record<string, MemoryApp>; restarts?: { delayMs: number } }) {
    this.agentId = opts.agentId;
    this.machine = opts.machine ?? new MemoryMachine({ apps: opts.apps ?? {} });
    this.machine.onExit((inst, exitCode, signal) => {
      if (this.tracked.get(inst.info.id)?.ref !== inst.info.ref) return;
      this.tracked.delete(inst.info.id);
      const req = this.requests.get(inst.info.id);
      const restarting = !!opts.restarts && !!req && !this.stopping.has(inst.info.id);
      if (!restarting) this.requests.delete(inst.info.id);
      else this.betweenRuns.set(inst.info.id, { ...inst.info });
      this.stopping.delete(inst.info.id);
      emit(this.listeners, { instance: { ...inst.info }, exitCode, signal, ...(restarting ? { restarting: true } : {}) });
      if (restarting) setTimeout(() => void this.runAgain(req!), opts.restarts!.delayMs).unref();
    });
    if (opts.restarts) {
      this.slots = {
        start: async (reqs) => {
          const started = await Promise.allSettled(reqs.map((r) => this.start(r)));
          const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
          if (!failed) return started.map((r) => (r as PromiseFulfilledResult<InstanceInfo>).value);
          await Promise.all(started.flatMap((r) => (r.status === "fulfilled" ? [this.stop(r.value, 0)] : [])));
          throw failed.reason;
        },
        stop: (instances, stopTimeoutMs) => Promise.allSettled(instances.map((i) => this.stop(i, stopTimeoutMs))),
        restart: async (instance, stopTimeoutMs) => {
          const who = this.machine.identify(this.tracked.get(instance.id) ?? instance);
          if (who.verdict !== "ours" || !who.inst.state.running) throw new TurquoiseError("NOT_FOUND", `cannot restart ${instance.id}: it is not running`);
          await this.machine.stop(who.inst, stopTimeoutMs);
        },
        onRestarted: (listener) => {
          this.restartListeners.add(listener);
          return () => this.restartListeners.delete(listener);
        },
      };
    }
  }

  async start(req: StartRequest): Promise<InstanceInfo> {
    const inst = await this.machine.launch(req, this.agentId);
    this.tracked.set(inst.info.id, { ...inst.info });
    if (this.slots) this.requests.set(req.id, req);
    return { ...inst.info };
  }

  async stop(instance: InstanceInfo, stopTimeoutMs: number): Promise<{ killed: boolean; refused?: string }> {
    // With restarts, an id names the instance across its runs: its current run is the one to stop.
    const current = this.slots ? (this.tracked.get(instance.id) ?? instance) : instance;
    const between = this.betweenRuns.delete(instance.id);
    this.stopping.add(instance.id);
    this.requests.delete(instance.id);
    if (between) {
      // Stopped between two runs: gone for good now, and said so once.
      emit(this.listeners, { instance: { ...instance }, exitCode: null, signal: null });
      return { killed: false };
    }
    const who = this.machine.identify(current);
    if (who.verdict === "refused") return { killed: false, refused: who.reason };
    if (who.verdict === "gone" || !who.inst.state.running) return { killed: false };
    // One this runtime has not seen yet (not adopted) is watched from here, so its exit is heard.
    this.tracked.set(instance.id, { ...who.inst.info });
    return { killed: await this.machine.stop(who.inst, stopTimeoutMs) };
  }

  /** No more restarts: what runs keeps running, what is between two runs stays down. */
  close(): void {
    this.requests.clear();
    this.betweenRuns.clear();
  }

  /** The next run of an instance that ended by itself; one that cannot start is gone for good. */
  private async runAgain(req: StartRequest): Promise<void> {
    if (this.stopping.has(req.id) || !this.requests.has(req.id)) return;
    try {
      const info = await this.start(req);
      this.betweenRuns.delete(req.id);
      emit(this.restartListeners, { instance: info });
    } catch {
      this.requests.delete(req.id);
      const last = this.betweenRuns.get(req.id);
      this.betweenRuns.delete(req.id);
      if (last) emit(this.listeners, { instance: last, exitCode: null, signal: null });
    }
  }

  async signal(instance: InstanceInfo, signal: NodeJS.Signals): Promise<void> {
    const who = this.machine.identify(instance);
    if (who.verdict === "refused") throw new TurquoiseError("CONFLICT", `not sending ${signal} to ${instance.id}: ${who.reason}`, { data: { instance: instance.id, ref: instance.ref } });
    if (who.verdict === "gone" || !who.inst.state.running) throw new TurquoiseError("NOT_FOUND", `cannot send ${signal} to ${instance.id}: it is not running`);
    this.machine.deliver(who.inst, signal);
  }

  async inspect(instance: InstanceInfo): Promise<InstanceState> {
    const inst = this.machine.instanceOf(instance);
    return inst ? { ...inst.state } : { running: false, exitCode: null, signal: null };
  }

  async list(service?: string): Promise<InstanceInfo[]> {
    return [...this.tracked.values(), ...this.betweenRuns.values()].filter((i) => service === undefined || i.service === service).map((i) => ({ ...i }));
  }

  async logs(instance: InstanceInfo, opts: { tailLines?: number } = {}): Promise<string> {
    const inst = this.machine.instanceOf(instance);
    return inst ? this.machine.logs(inst, opts.tailLines ?? DEFAULT_LOG_TAIL_LINES) : "";
  }

  onExit(listener: (e: ExitEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async adopt(instances: InstanceInfo[]): Promise<AdoptResult> {
    const result: AdoptResult = { alive: [], dead: [], refused: [] };
    for (const instance of instances) {
      const who = this.machine.identify(instance);
      if (who.verdict === "refused") result.refused.push({ instance, reason: who.reason });
      else if (who.verdict === "gone" || !who.inst.state.running) result.dead.push(instance);
      else {
        this.tracked.set(instance.id, { ...who.inst.info });
        result.alive.push(instance);
      }
    }
    return result;
  }

  /** Every running instance carrying this agent's marks, recorded anywhere or not. */
  async discover(): Promise<InstanceInfo[]> {
    return this.machine.marked(this.agentId)
      .filter((i) => (SLOTS as readonly string[]).includes(i.info.slot))
      .map((i) => ({ ...i.info }));
  }

  async listening(instance: InstanceInfo): Promise<Array<{ host: string; port: number }>> {
    const inst = this.machine.instanceOf(instance);
    return inst?.state.running ? this.machine.listening(inst) : [];
  }

  async describeRelease(req: { service: string; release: string; cwd: string }): Promise<ReleaseDescription> {
    if (!isDirectory(req.cwd)) return { exists: false, reason: `release "${req.release}" of ${req.service} not found: no directory ${req.cwd}`, schema: null };
    return { exists: true, schema: readDeclaredSchema(req.cwd) };
  }
}

/**
 * A stand-in for a release that keeps the app contract: every path answers 200 with who answered
 * (also in X-Release), and SIGTERM finishes in-flight requests, then exits 0.
 */
export const releaseApp: MemoryApp = async (proc) => {
  const who = { service: proc.env.TURQUOISE_SERVICE, slot: proc.env.TURQUOISE_SLOT, release: proc.env.TURQUOISE_RELEASE, instance: proc.env[INSTANCE_ENV], agent: proc.env[AGENT_ENV] };
  const server = await proc.listen((req, res) => {
    req.resume();
    res.writeHead(200, { "content-type": "application/json", "x-release": who.release ?? "" }).end(JSON.stringify(who));
  });
  proc.on("SIGTERM", () => {
    server.close(() => proc.exit(0));
    server.closeIdleConnections();
  });
};

function emit<E>(listeners: Set<(e: E) => void>, event: E): void {
  for (const listener of [...listeners]) {
    try {
      listener(event);
    } catch {
      // One broken listener must not keep the others from hearing about it.
    }
  }
}

function exitedWithin(inst: Instance, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    void inst.exited.then(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Stops listening and cuts every connection, as the end of a process does. */
function cut(server: http.Server): void {
  server.close();
  server.closeAllConnections();
}
