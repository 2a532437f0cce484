// The process runtime: each instance is a local OS process in its own process group, writing to
// its own log file. Instances outlive the agent; a restarted agent re-attaches with adopt(), and
// discover() finds by their marks (runtime/identity.ts) the ones it never recorded.

import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync, statSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { TurquoiseError } from "../errors.js";
import { freePort } from "../util/net.js";
import {
  identify, identifyMarked, listeningSockets, processesMarked, readProcStat, signalIfMarked, signalIfOurs, startedAtMs,
  type Identification, type MarkedProcess, type ProcessIdentity,
} from "../util/proc.js";
import { SLOTS, type AdoptResult, type ExitEvent, type InstanceInfo, type InstanceState, type ReleaseDescription, type Runtime, type Slot, type StartRequest } from "./contract.js";
import { instanceEnv } from "./env.js";
import { AGENT_ENV, INSTANCE_ENV } from "./identity.js";

export const LOOPBACK = "127.0.0.1";
/** Where a process release declares the schema versions it runs on: {"schema": {"min": 1, "max": 2}}. */
export const RELEASE_MANIFEST = "turquoise.json";
export const DEFAULT_LOG_TAIL_LINES = 100;
/** Adopted instances are not our children, so no 'exit' event comes: we poll. */
export const ADOPTED_POLL_INTERVAL_MS = 200;
const STOP_POLL_INTERVAL_MS = 25;
/** SIGKILL cannot be ignored; a process still there after this is stuck in the kernel. */
const SIGKILL_WAIT_MS = 10_000;
/** Exit states kept for inspect() after an instance is gone; older ones are forgotten. */
const REMEMBERED_EXITS = 200;

interface Tracked {
  info: InstanceInfo;
  /** The pid and start time recorded at start: every signal and liveness check goes through them. */
  identity: ProcessIdentity;
  /** No ChildProcess handle: liveness comes from polling the pid. */
  adopted: boolean;
  state: InstanceState;
  pollTimer?: NodeJS.Timeout;
}

export class ProcessRuntime implements Runtime {
  readonly name = "process";
  private readonly logDir: string;
  /** Written into every instance's environment (AGENT_ENV); discover() looks for it. */
  readonly agentId: string;
  private readonly tracked = new Map<string, Tracked>();
  private readonly exitedIds: string[] = [];
  private readonly listeners = new Set<(e: ExitEvent) => void>();

  constructor(opts: { logDir: string; agentId: string }) {
    this.logDir = opts.logDir;
    this.agentId = opts.agentId;
  }

  async start(req: StartRequest): Promise<InstanceInfo> {
    const [executable, ...args] = req.command;
    if (!executable) {
      throw new Error(`cannot start ${req.service} release ${req.release}: the command is empty`);
    }
    if (!isDirectory(req.cwd)) {
      throw new TurquoiseError(
        "NOT_FOUND",
        `cannot start ${req.service} release ${req.release}: working directory ${req.cwd} does not exist`,
        { data: { service: req.service, release: req.release, cwd: req.cwd } },
      );
    }

    // Another process may take the port between our close and the instance's listen: that instance
    // then fails to bind and exits, which onExit reports. The window is tiny.
    const port = await freePort(LOOPBACK);
    const id = req.id;
    const serviceLogDir = join(this.logDir, req.service);
    mkdirSync(serviceLogDir, { recursive: true });
    const logFile = join(serviceLogDir, `${id}.log`);

    // The child gets its own copy of the fd, so output keeps flowing to the file if the agent dies.
    const logFd = openSync(logFile, "a");
    let child: ChildProcess;
    let startTicks: number | undefined;
    try {
      child = spawn(executable, args, {
        cwd: req.cwd,
        env: instanceEnv(req, { port, host: LOOPBACK, hostBasics: true, agentId: this.agentId }),
        // Own process group: the instance survives an agent crash, and stop() signals the whole group.
        detached: true,
        stdio: ["ignore", logFd, logFd],
      });
      // Read before anything can reap it: even a child that has already exited is a zombie until then.
      startTicks = child.pid === undefined ? undefined : readProcStat(child.pid)?.startTicks;
      await new Promise<void>((resolve, reject) => {
        child.once("spawn", resolve);
        child.once("error", reject);
      });
    } catch (e) {
      throw spawnError(req, executable, e);
    } finally {
      closeSync(logFd);
    }
    const pid = child.pid!;
    child.unref();

    const info: InstanceInfo = {
      id,
      service: req.service,
      slot: req.slot,
      release: req.release,
      host: LOOPBACK,
      port,
      ref: String(pid),
      startedAt: Date.now(),
      logFile,
      ...(startTicks === undefined ? {} : { procStartTicks: startTicks }),
    };
    const t = this.track(info, false);
    child.once("exit", (code, signal) => this.markExited(t, code, signal));
    return { ...info };
  }

  async stop(instance: InstanceInfo, stopTimeoutMs: number): Promise<{ killed: boolean; refused?: string }> {
    // An instance this runtime has not seen yet (not adopted) is attached here, so its exit is heard.
    let t = this.tracked.get(instance.id);
    let refusedWhy: string | undefined;
    if (!t) {
      const who = this.attach(instance);
      if (who.verdict === "refused") refusedWhy = who.reason;
      t = this.tracked.get(instance.id);
      // Neither tracked nor proved ours by its record: whatever carries its marks is stopped instead
      // (a group whose leader is gone, found by discover()). Only here: a scan of /proc per stop
      // would cost every deploy, and a group proved ours is stopped whole below.
      if (!t || !t.state.running) {
        const strays = this.markedProcesses(instance.id);
        if (strays.length > 0) return { killed: await this.stopMarked(instance, strays, stopTimeoutMs) };
        return refusedWhy ? { killed: false, refused: refusedWhy } : { killed: false };
      }
    }
    if (!t.state.running) return { killed: false };

    signalIfOurs(t.identity, "SIGTERM", { group: true });
    if (await this.waitGone(t, Date.now() + stopTimeoutMs)) return { killed: false };

    signalIfOurs(t.identity, "SIGKILL", { group: true });
    if (!(await this.waitGone(t, Date.now() + SIGKILL_WAIT_MS))) {
      throw new Error(`instance ${t.info.id} (pid ${t.identity.pid}) is still there ${SIGKILL_WAIT_MS}ms after SIGKILL`);
    }
    return { killed: true };
  }

  async signal(instance: InstanceInfo, signal: NodeJS.Signals): Promise<void> {
    const t = this.tracked.get(instance.id);
    const notRunning = () => new TurquoiseError("NOT_FOUND", `cannot send ${signal} to ${instance.id}: it is not running`);
    if (t && !t.state.running) throw notRunning();
    // The leader only: it decides what its own children get (a reload is the app's business).
    const r = signalIfOurs(t?.identity ?? identityOf(instance), signal);
    if (r.verdict === "gone") throw notRunning();
    if (r.verdict === "refused") throw new TurquoiseError("CONFLICT", `not sending ${signal} to ${instance.id}: ${r.reason}`, { data: { instance: instance.id, ref: instance.ref } });
  }

  async inspect(instance: InstanceInfo): Promise<InstanceState> {
    const t = this.tracked.get(instance.id);
    if (t) return { ...t.state };
    return identify(identityOf(instance)).verdict === "ours"
      ? { running: true }
      : { running: false, exitCode: null, signal: null };
  }

  async list(service?: string): Promise<InstanceInfo[]> {
    return [...this.tracked.values()]
      .filter((t) => t.state.running && (service === undefined || t.info.service === service))
      .map((t) => ({ ...t.info }));
  }

  async logs(instance: InstanceInfo, opts: { tailLines?: number } = {}): Promise<string> {
    const file = instance.logFile ?? join(this.logDir, instance.service, `${instance.id}.log`);
    return tailFile(file, opts.tailLines ?? DEFAULT_LOG_TAIL_LINES);
  }

  onExit(listener: (e: ExitEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async describeRelease(req: { service: string; release: string; cwd: string }): Promise<ReleaseDescription> {
    if (!isDirectory(req.cwd)) return { exists: false, reason: `release "${req.release}" of ${req.service} not found: no directory ${req.cwd}`, schema: null };
    return { exists: true, schema: readDeclaredSchema(req.cwd) };
  }

  async adopt(instances: InstanceInfo[]): Promise<AdoptResult> {
    const result: AdoptResult = { alive: [], dead: [], refused: [] };
    for (const instance of instances) {
      const t = this.tracked.get(instance.id);
      const who: Identification = t ? { verdict: t.state.running ? "ours" : "gone" } : this.attach(instance);
      if (who.verdict === "ours") result.alive.push(instance);
      else if (who.verdict === "gone") result.dead.push(instance);
      else result.refused.push({ instance, reason: who.reason });
    }
    return result;
  }

  /**
   * Every instance carrying this agent's marks, one per instance id, whether any record names it
   * or not. Its ref is the process that leads the instance's group (the one the agent started),
   * else the oldest process left of it; procStartTicks is read now, so stop() can prove it.
   */
  async discover(): Promise<InstanceInfo[]> {
    const byInstance = new Map<string, MarkedProcess[]>();
    for (const p of processesMarked({ [AGENT_ENV]: this.agentId })) {
      const id = p.env[INSTANCE_ENV];
      if (!id) continue;
      byInstance.set(id, [...(byInstance.get(id) ?? []), p]);
    }
    const found: InstanceInfo[] = [];
    for (const [id, procs] of byInstance) {
      const main = [...procs].sort((a, b) => Number(b.pgrp === b.pid) - Number(a.pgrp === a.pid) || a.startTicks - b.startTicks)[0]!;
      const env = main.env;
      const service = env.TURQUOISE_SERVICE ?? "";
      const slot = env.TURQUOISE_SLOT as Slot;
      // Marks without the facts beside them were not written by an agent: nothing to stop by them.
      if (!service || !(SLOTS as readonly string[]).includes(slot)) continue;
      found.push({
        id, service, slot, release: env.TURQUOISE_RELEASE ?? "", host: env.HOST ?? LOOPBACK, port: Number(env.PORT ?? 0),
        ref: String(main.pid), startedAt: startedAtMs(main.startTicks) ?? 0, logFile: join(this.logDir, service, `${id}.log`),
        procStartTicks: main.startTicks,
      });
    }
    return found;
  }

  /** Where the instance's processes (every one carrying its marks) listen. */
  async listening(instance: InstanceInfo): Promise<Array<{ host: string; port: number }>> {
    const seen = new Set<string>();
    const out: Array<{ host: string; port: number }> = [];
    for (const p of this.markedProcesses(instance.id)) {
      for (const a of listeningSockets(p.pid)) {
        const key = `${a.host}:${a.port}`;
        if (!seen.has(key)) out.push(a);
        seen.add(key);
      }
    }
    return out;
  }

  private markedProcesses(instanceId: string): MarkedProcess[] {
    return processesMarked({ [AGENT_ENV]: this.agentId, [INSTANCE_ENV]: instanceId });
  }

  /** SIGTERM to each process found by the instance's marks, SIGKILL to what is left at the timeout; true when one had to be killed. */
  private async stopMarked(instance: InstanceInfo, procs: MarkedProcess[], stopTimeoutMs: number): Promise<boolean> {
    const marks = { [AGENT_ENV]: this.agentId, [INSTANCE_ENV]: instance.id };
    const targets = procs.map((p) => ({ pid: p.pid, startTicks: p.startTicks, marks }));
    const left = () => targets.filter((t) => identifyMarked(t).verdict === "ours");
    const waitLeft = async (deadline: number) => {
      for (;;) {
        const l = left();
        if (l.length === 0 || Date.now() >= deadline) return l;
        await sleep(Math.min(STOP_POLL_INTERVAL_MS, Math.max(1, deadline - Date.now())));
      }
    };
    for (const t of targets) signalIfMarked(t, "SIGTERM");
    let remaining = await waitLeft(Date.now() + stopTimeoutMs);
    if (remaining.length === 0) return false;
    for (const t of remaining) signalIfMarked(t, "SIGKILL");
    remaining = await waitLeft(Date.now() + SIGKILL_WAIT_MS);
    if (remaining.length > 0) {
      throw new Error(`instance ${instance.id}: pid ${remaining.map((t) => t.pid).join(", ")} still there ${SIGKILL_WAIT_MS}ms after SIGKILL`);
    }
    return true;
  }

  /** Starts watching an instance we have no handle for, if the record proves it is still our process. */
  private attach(instance: InstanceInfo): Identification {
    // Checked as stop() will signal it, as a whole process group; but alive means its leader runs.
    const who = identify(identityOf(instance), { group: true });
    if (who.verdict !== "ours") return who;
    if (identify(identityOf(instance)).verdict !== "ours") return { verdict: "gone" };
    const t = this.track({ ...instance }, true);
    t.pollTimer = setInterval(() => this.poll(t), ADOPTED_POLL_INTERVAL_MS);
    t.pollTimer.unref();
    return who;
  }

  private track(info: InstanceInfo, adopted: boolean): Tracked {
    const t: Tracked = { info, identity: identityOf(info), adopted, state: { running: true } };
    this.tracked.set(info.id, t);
    return t;
  }

  private poll(t: Tracked): void {
    // Not our child, so its exit code is not ours to know. Its pid in another process's hands means it is gone too.
    if (t.state.running && identify(t.identity).verdict !== "ours") this.markExited(t, null, null);
  }

  private markExited(t: Tracked, exitCode: number | null, signal: string | null): void {
    if (!t.state.running) return;
    t.state = { running: false, exitCode, signal };
    if (t.pollTimer) clearInterval(t.pollTimer);
    this.exitedIds.push(t.info.id);
    if (this.exitedIds.length > REMEMBERED_EXITS) this.tracked.delete(this.exitedIds.shift()!);
    const event: ExitEvent = { instance: { ...t.info }, exitCode, signal };
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch {
        // One broken listener must not keep the others from hearing about the exit.
      }
    }
  }

  /** Gone means the leader exited and nothing else in its process group is left running. */
  private async waitGone(t: Tracked, deadline: number): Promise<boolean> {
    for (;;) {
      if (t.adopted) this.poll(t);
      if (!t.state.running && identify(t.identity, { group: true }).verdict !== "ours") return true;
      if (Date.now() >= deadline) return false;
      await sleep(Math.min(STOP_POLL_INTERVAL_MS, Math.max(1, deadline - Date.now())));
    }
  }
}

function spawnError(req: StartRequest, executable: string, e: unknown): Error {
  const code = (e as NodeJS.ErrnoException).code;
  const prefix = `cannot start ${req.service} release ${req.release}`;
  const data = { service: req.service, release: req.release, command: executable };
  if (code === "ENOENT") {
    // execvp resolves a bare name through PATH and a name with a slash against the cwd.
    const where = executable.includes("/") ? `relative to ${req.cwd}` : "in PATH";
    return new TurquoiseError("NOT_FOUND", `${prefix}: command "${executable}" not found ${where}`, { data, cause: e });
  }
  if (code === "EACCES") return new Error(`${prefix}: command "${executable}" is not executable`, { cause: e });
  return new Error(`${prefix}: spawning "${executable}" failed: ${(e as Error).message}`, { cause: e });
}

/** The release's declared schema range, or null when it declares none. */
function readDeclaredSchema(releaseDir: string): ReleaseDescription["schema"] {
  const file = join(releaseDir, RELEASE_MANIFEST);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
  let manifest: unknown;
  try {
    manifest = JSON.parse(text);
  } catch (e) {
    throw new TurquoiseError("USAGE", `${file} is not valid JSON: ${(e as Error).message}`);
  }
  const schema = (manifest as { schema?: unknown })?.schema;
  if (schema === undefined) return null;
  const { min, max } = (schema ?? {}) as { min?: unknown; max?: unknown };
  if (!Number.isInteger(min) || !Number.isInteger(max) || (min as number) < 0 || (min as number) > (max as number)) {
    throw new TurquoiseError("USAGE", `${file}: "schema" must be {"min": <integer>, "max": <integer>} with min ≤ max, got ${JSON.stringify(schema)}`);
  }
  return { min: min as number, max: max as number };
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function identityOf(instance: InstanceInfo): ProcessIdentity {
  // Anything but a plain decimal pid is not one we wrote; identify() refuses the NaN.
  return { pid: /^\d+$/.test(instance.ref) ? Number(instance.ref) : Number.NaN, startTicks: instance.procStartTicks };
}

/** Reads from the end, so a long-running instance's big log costs only the lines asked for. */
async function tailFile(file: string, lines: number): Promise<string> {
  if (lines <= 0) return "";
  let fh: FileHandle;
  try {
    fh = await open(file, "r");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return "";
    throw e;
  }
  try {
    const { size } = await fh.stat();
    const chunks: Buffer[] = [];
    let newlines = 0;
    let pos = size;
    while (pos > 0 && newlines <= lines) {
      const length = Math.min(64 * 1024, pos);
      pos -= length;
      const chunk = Buffer.alloc(length);
      await fh.read(chunk, 0, length, pos);
      chunks.unshift(chunk);
      for (const byte of chunk) if (byte === 0x0a) newlines++;
    }
    const text = Buffer.concat(chunks).toString("utf8");
    const endsWithNewline = text.endsWith("\n");
    const all = (endsWithNewline ? text.slice(0, -1) : text).split("\n");
    return all.slice(-lines).join("\n") + (endsWithNewline ? "\n" : "");
  } finally {
    await fh.close();
  }
}
