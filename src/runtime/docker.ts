// The docker runtime: each instance is a container on the local Docker Engine, driven through its
// API (docker-api.ts). Containers outlive the agent; a restarted agent re-attaches with adopt(), and
// discover() (listManaged()) finds by their labels the containers it never recorded. Nothing is
// ever pulled: images must be local.

import { constants } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { parseSchemaRange } from "../plan/range.js";
import { TurquoiseError, errorMessage } from "../errors.js";
import { freePort } from "../util/net.js";
import type { AdoptResult, ExitEvent, InstanceInfo, InstanceState, ReleaseDescription, Runtime, Slot, StartRequest } from "./contract.js";
import { DockerApi, DockerApiError, isDockerNotFound, type ContainerCreateBody, type ContainerInspect, type ContainerState, type DockerEvent } from "./docker-api.js";
import { instanceEnv } from "./env.js";

export const LOOPBACK = "127.0.0.1";
/** The port the app listens on inside its container in bridge mode; the host side is an ephemeral port on loopback. */
export const CONTAINER_PORT = 8080;
export const DEFAULT_LOG_TAIL_LINES = 100;
/** What a container that dies at start shows of its output in the error. */
export const START_FAILURE_LOG_LINES = 20;
/** A removed container's last output is kept in memory, so logs() still answers after it is gone. */
const KEPT_LOG_LINES = 200;
/** Exit states kept for inspect() after an instance is gone; older ones are forgotten. */
const REMEMBERED_EXITS = 200;
const EVENTS_RECONNECT_MS = 1_000;

export const LABELS = {
  managed: "turquoise.managed",
  service: "turquoise.service",
  slot: "turquoise.slot",
  release: "turquoise.release",
  instance: "turquoise.instance",
  /** The agent (state dir) that started the container: runtime/identity.ts agentIdFor. */
  agent: "turquoise.agent",
  /** On images: the schema versions the release runs on, "2" or "1..3". */
  schema: "turquoise.schema",
} as const;

export interface DockerRuntimeOptions {
  /** The id of the agent (runtime/identity.ts): a label and an env variable on every container; listManaged() finds only its own. */
  agentId: string;
  /** The daemon's unix socket; default $DOCKER_HOST, else /var/run/docker.sock. */
  socketPath?: string;
  /** DOCKER_HOST syntax: unix:///path or tcp://127.0.0.1:PORT. */
  host?: string;
  /** Where bridge-mode ports are published. Only loopback: the proxy is the public face. */
  publishHost?: "127.0.0.1";
  /** Extra labels on every container this runtime creates (to tell test runs apart); listManaged() filters by them. */
  labels?: Record<string, string>;
  /**
   * How long start() watches a new container; one that dies within it fails start() with its exit code
   * and last output, and is removed. The default, 0, hands every container over at once and leaves all
   * deaths to onExit, as the process runtime does: the deploy's health wait reports them with their
   * output, and a window would delay every start.
   */
  startCheckMs?: number;
}

/** A container with Turquoise's labels, as the daemon reports it. */
export interface ManagedContainer {
  instance: InstanceInfo;
  state: InstanceState;
}

interface Exit {
  exitCode: number | null;
  signal: string | null;
  oom: boolean;
}

interface Tracked {
  info: InstanceInfo;
  containerId: string;
  state: InstanceState;
  /** start() or adopt() is still deciding about it; a die event meanwhile is held until it has. */
  settling: boolean;
  diedWhileSettling: boolean;
  died: () => void;
  diedSignal: Promise<void>;
  /** Inspect, keep the logs, remove the container, report the exit: once, whoever asks first. */
  finalizing?: Promise<Exit>;
  keptLogs?: string;
}

export class DockerRuntime implements Runtime {
  readonly name = "docker";
  readonly api: DockerApi;
  private readonly publishHost: string;
  private readonly extraLabels: Record<string, string>;
  readonly agentId: string;
  private readonly startCheckMs: number;
  private readonly tracked = new Map<string, Tracked>();
  private readonly exitedIds: string[] = [];
  private readonly listeners = new Set<(e: ExitEvent) => void>();
  private watching?: Promise<void>;
  private stopWatching?: () => void;
  private closed = false;

  constructor(opts: DockerRuntimeOptions) {
    this.api = new DockerApi({ socketPath: opts.socketPath, host: opts.host });
    this.publishHost = opts.publishHost ?? LOOPBACK;
    this.agentId = opts.agentId;
    this.extraLabels = { ...opts.labels, [LABELS.agent]: opts.agentId };
    this.startCheckMs = opts.startCheckMs ?? 0;
  }

  async start(req: StartRequest): Promise<InstanceInfo> {
    const what = `cannot start ${req.service} release ${req.release}`;
    const image = req.image;
    if (!image) throw new TurquoiseError("USAGE", `${what}: the docker runtime needs an image for it`);
    await this.watch();

    const hostNetwork = req.network === "host";
    // With host networking the app shares the host's ports, so it gets a free one, as a process would.
    const port = hostNetwork ? await freePort(LOOPBACK) : CONTAINER_PORT;
    const id = req.id;
    const body: ContainerCreateBody = {
      Image: image,
      Cmd: req.command.length > 0 ? req.command : undefined,
      // The image's own PATH, HOME and locale stay: none of the host's.
      Env: Object.entries(instanceEnv(req, { port, host: hostNetwork ? LOOPBACK : "0.0.0.0", hostBasics: false, agentId: this.agentId })).map(([k, v]) => `${k}=${v}`),
      Labels: {
        ...this.extraLabels,
        [LABELS.managed]: "true",
        [LABELS.service]: req.service,
        [LABELS.slot]: req.slot,
        [LABELS.release]: req.release,
        [LABELS.instance]: id,
      },
      ExposedPorts: hostNetwork ? undefined : { [`${CONTAINER_PORT}/tcp`]: {} },
      // Recorded on the container, so a `docker stop` or a daemon shutdown also grants the service's stop_timeout.
      StopTimeout: req.stopTimeoutMs === undefined ? undefined : Math.ceil(req.stopTimeoutMs / 1000),
      HostConfig: {
        NetworkMode: hostNetwork ? "host" : "bridge",
        PortBindings: hostNetwork ? undefined : { [`${CONTAINER_PORT}/tcp`]: [{ HostIp: this.publishHost, HostPort: "" }] },
        // No docker-init, even where daemon.json turns it on: behind it a missing command fails inside
        // the container after the start, where only a race would catch it; without it the daemon refuses
        // the start. The app is PID 1, so a SIGTERM it does not handle is ignored until the SIGKILL; the
        // app contract asks it to handle SIGTERM anyway.
        Init: false,
        // Turquoise replaces dead instances itself; a daemon-side restart would fight it.
        RestartPolicy: { Name: "no" },
        ...(req.volumes?.length ? { Mounts: req.volumes.map((v) => ({ Type: "bind" as const, Source: v.source, Target: v.target, ReadOnly: v.readOnly })) } : {}),
      },
    };

    let containerId: string;
    try {
      containerId = (await this.api.createContainer(`turquoise-${id}`, body)).Id;
    } catch (e) {
      throw startError(what, image, hostNetwork ? port : undefined, e);
    }
    // Bridge mode: the host port is the daemon's pick, known once the container runs.
    const info: InstanceInfo = { id, service: req.service, slot: req.slot, release: req.release, host: this.publishHost, port: hostNetwork ? port : 0, ref: containerId, startedAt: Date.now() };
    const t = this.track(info, containerId);
    try {
      try {
        await this.api.startContainer(containerId);
      } catch (e) {
        throw startError(what, image, hostNetwork ? port : undefined, e);
      }
      if (this.startCheckMs > 0) await Promise.race([sleep(this.startCheckMs), t.diedSignal]);
      const c = await this.api.inspectContainer(containerId);
      if (c.State.Running) {
        t.info = { ...info, port: hostPortOf(c), startedAt: parseTime(c.State.StartedAt) ?? info.startedAt };
        if (!t.info.port) throw new TurquoiseError("INTERNAL", `${what}: the daemon published no port for container ${containerId.slice(0, 12)}`);
      } else if (this.startCheckMs > 0) {
        throw await this.diedAtStart(what, c, hostNetwork ? port : undefined);
      }
      // Without a start check, an instance that is already dead is handed over all the same: whether it
      // died before or after this inspect is a race, and onExit reports it either way.
    } catch (e) {
      this.tracked.delete(id);
      await this.api.removeContainer(containerId, { force: true }).catch(() => undefined);
      throw e;
    }
    this.settle(t);
    return { ...t.info };
  }

  async stop(instance: InstanceInfo, stopTimeoutMs: number): Promise<{ killed: boolean }> {
    const t = this.tracked.get(instance.id) ?? (await this.attach(instance));
    if (!t || !t.state.running) return { killed: false };
    // Docker's stop timeout is whole seconds, the service's is ms: the daemon gets the rounded-up
    // value, and our own SIGKILL keeps the exact one.
    const timeoutMs = Math.max(0, stopTimeoutMs);
    const kill = setTimeout(() => void this.api.killContainer(t.containerId, "SIGKILL").catch(() => undefined), timeoutMs);
    try {
      await this.api.stopContainer(t.containerId, { t: Math.ceil(timeoutMs / 1000) });
    } catch (e) {
      if (!isDockerNotFound(e)) throw e;
    } finally {
      clearTimeout(kill);
    }
    const exit = await this.finalize(t, true);
    return { killed: exit.signal === "SIGKILL" || exit.oom };
  }

  async signal(instance: InstanceInfo, signal: NodeJS.Signals): Promise<void> {
    const t = this.tracked.get(instance.id);
    const notRunning = () => new TurquoiseError("NOT_FOUND", `cannot send ${signal} to ${instance.id}: it is not running`);
    if (t && !t.state.running) throw notRunning();
    const c = await this.inspectOurs(t?.containerId ?? instance.ref, instance.id);
    if (!c?.State.Running) throw notRunning();
    try {
      await this.api.killContainer(c.Id, signal);
    } catch (e) {
      // 409: it stopped in between.
      if (e instanceof DockerApiError && (e.status === 404 || e.status === 409)) throw notRunning();
      throw e;
    }
  }

  async inspect(instance: InstanceInfo): Promise<InstanceState> {
    const t = this.tracked.get(instance.id);
    if (t && !t.state.running) return { ...t.state };
    const c = await this.inspectOurs(t?.containerId ?? instance.ref, instance.id);
    if (c?.State.Running) return runningState(c.State);
    if (t) {
      // Dead, and its die event not handled yet: settle it now rather than report a corpse as running.
      await this.finalize(t, true);
      return { ...t.state };
    }
    if (!c) return { running: false, exitCode: null, signal: null };
    const { exitCode, signal } = exitOf(c.State);
    return { running: false, exitCode, signal };
  }

  async list(service?: string): Promise<InstanceInfo[]> {
    const known = [...this.tracked.values()].filter((t) => !t.settling && t.state.running && (service === undefined || t.info.service === service));
    if (known.length === 0) return [];
    // The daemon is the truth about what runs; this runtime's own instances are what it lists.
    const labels = [`${LABELS.managed}=true`, ...(service === undefined ? [] : [`${LABELS.service}=${service}`])];
    const running = new Set((await this.api.listContainers({ labels })).map((c) => c.Id));
    return known.filter((t) => running.has(t.containerId)).map((t) => ({ ...t.info }));
  }

  async logs(instance: InstanceInfo, opts: { tailLines?: number } = {}): Promise<string> {
    const lines = opts.tailLines ?? DEFAULT_LOG_TAIL_LINES;
    const t = this.tracked.get(instance.id);
    if (t?.keptLogs !== undefined) return tailLines(t.keptLogs, lines);
    try {
      return await this.api.containerLogs(t?.containerId ?? instance.ref, { tail: lines });
    } catch (e) {
      if (!isDockerNotFound(e)) throw e;
      // Removed in between: finalize kept its output before removing it.
      return t?.keptLogs !== undefined ? tailLines(t.keptLogs, lines) : "";
    }
  }

  onExit(listener: (e: ExitEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async adopt(instances: InstanceInfo[]): Promise<AdoptResult> {
    const alive: InstanceInfo[] = [];
    const dead: InstanceInfo[] = [];
    for (const instance of instances) {
      const t = this.tracked.get(instance.id) ?? (await this.attach(instance));
      (t?.state.running ? alive : dead).push(instance);
    }
    // A container whose labels do not name this instance is never attached to: it counts as dead.
    return { alive, dead, refused: [] };
  }

  async describeRelease(req: { service: string; release: string; cwd: string; image?: string }): Promise<ReleaseDescription> {
    if (!req.image) return { exists: false, reason: `release ${req.release} of ${req.service} names no image`, schema: null };
    let labels: Record<string, string>;
    try {
      labels = (await this.api.inspectImage(req.image)).Config?.Labels ?? {};
    } catch (e) {
      if (isDockerNotFound(e)) return { exists: false, reason: missingImage(req.image), schema: null };
      throw e;
    }
    return { exists: true, schema: declaredSchema(req.image, labels) };
  }

  /** Every container carrying Turquoise's labels (and this runtime's extra ones), running or not: orphans included. */
  listManaged(service?: string): Promise<ManagedContainer[]> {
    return listManaged(this.api, [
      `${LABELS.managed}=true`,
      ...Object.entries(this.extraLabels).map(([k, v]) => `${k}=${v}`),
      ...(service === undefined ? [] : [`${LABELS.service}=${service}`]),
    ]);
  }

  /** This agent's containers by their labels, running or not (a dead one is still there to remove). */
  async discover(): Promise<InstanceInfo[]> {
    return (await this.listManaged()).map((c) => c.instance);
  }

  /** Stops watching the daemon's events. Containers keep running. */
  close(): void {
    this.closed = true;
    this.stopWatching?.();
    this.stopWatching = undefined;
  }

  private track(info: InstanceInfo, containerId: string): Tracked {
    let died!: () => void;
    const diedSignal = new Promise<void>((resolve) => (died = resolve));
    const t: Tracked = { info, containerId, state: { running: true }, settling: true, diedWhileSettling: false, died, diedSignal };
    this.tracked.set(info.id, t);
    return t;
  }

  private settle(t: Tracked): void {
    t.settling = false;
    if (t.diedWhileSettling) void this.finalize(t, true).catch(() => undefined);
  }

  /** Starts watching a container recorded by an earlier agent. A dead one is cleaned up and remembered, silently. */
  private async attach(instance: InstanceInfo): Promise<Tracked | undefined> {
    await this.watch();
    const t = this.track({ ...instance }, instance.ref);
    let c: ContainerInspect | undefined;
    try {
      c = await this.inspectOurs(instance.ref, instance.id);
    } catch (e) {
      this.tracked.delete(instance.id);
      throw e;
    }
    if (!c) {
      // Not ours (or gone): nothing to remove, and nothing to remember beyond "not running".
      this.tracked.delete(instance.id);
      return undefined;
    }
    if (!c.State.Running) {
      await this.finalize(t, false).catch((e: unknown) => {
        this.tracked.delete(instance.id);
        throw e;
      });
      return t;
    }
    this.settle(t);
    return t;
  }

  private onEvent(e: DockerEvent): void {
    if (e.Type !== "container" || e.Action !== "die") return;
    const t = this.tracked.get(e.Actor.Attributes[LABELS.instance] ?? "");
    if (!t || t.containerId !== e.Actor.ID || !t.state.running) return;
    if (t.settling) {
      t.diedWhileSettling = true;
      t.died();
      return;
    }
    // A failure here (daemon gone) is retried by the next inspect(), stop() or the reconnect's reconcile.
    void this.finalize(t, true).catch(() => undefined);
  }

  private finalize(t: Tracked, notify: boolean): Promise<Exit> {
    t.finalizing ??= this.collectExit(t, notify).catch((e: unknown) => {
      t.finalizing = undefined;
      throw e;
    });
    return t.finalizing;
  }

  private async collectExit(t: Tracked, notify: boolean): Promise<Exit> {
    let c: ContainerInspect | undefined;
    try {
      c = await this.api.inspectContainer(t.containerId);
    } catch (e) {
      if (!isDockerNotFound(e)) throw e;
    }
    // Only ever called for a dead container; force-removing a live one would kill it.
    if (c?.State.Running) throw new Error(`container ${t.containerId.slice(0, 12)} of ${t.info.id} is still running`);
    // Removed behind our back (docker rm -f): the exit code went with it.
    const exit = c ? exitOf(c.State) : { exitCode: null, signal: null, oom: false };
    if (c) {
      t.keptLogs = await this.api.containerLogs(t.containerId, { tail: KEPT_LOG_LINES }).catch(() => undefined);
      try {
        await this.api.removeContainer(t.containerId, { force: true });
      } catch (e) {
        // 409: someone else (another agent, or the operator) is removing it already.
        if (!isDockerNotFound(e) && !(e instanceof DockerApiError && e.status === 409)) throw e;
      }
    }
    this.markExited(t, exit, notify);
    return exit;
  }

  private markExited(t: Tracked, exit: Exit, notify: boolean): void {
    if (!t.state.running) return;
    t.state = { running: false, exitCode: exit.exitCode, signal: exit.signal };
    this.exitedIds.push(t.info.id);
    if (this.exitedIds.length > REMEMBERED_EXITS) this.tracked.delete(this.exitedIds.shift()!);
    if (!notify) return;
    const event: ExitEvent = { instance: { ...t.info }, exitCode: exit.exitCode, signal: exit.signal };
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch {
        // One broken listener must not keep the others from hearing about the exit.
      }
    }
  }

  /** The container, if it exists and carries this instance's label; a wrong ref must not touch someone else's. */
  private async inspectOurs(containerId: string, instanceId: string): Promise<ContainerInspect | undefined> {
    if (!containerId) return undefined;
    try {
      const c = await this.api.inspectContainer(containerId);
      return c.Config.Labels?.[LABELS.instance] === instanceId ? c : undefined;
    } catch (e) {
      if (isDockerNotFound(e)) return undefined;
      throw e;
    }
  }

  private async diedAtStart(what: string, c: ContainerInspect, hostPort: number | undefined): Promise<TurquoiseError> {
    const logs = (await this.api.containerLogs(c.Id, { tail: START_FAILURE_LOG_LINES }).catch(() => "")).trimEnd();
    const exit = exitOf(c.State);
    const how = exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.exitCode}`;
    const oom = exit.oom ? " (out of memory)" : "";
    const portHint = hostPort !== undefined && /EADDRINUSE|address already in use/i.test(logs) ? `; port ${hostPort} on ${LOOPBACK} is taken on the host (host networking)` : "";
    const output = logs ? `; its last output:\n  ${logs.split("\n").join("\n  ")}` : "; it wrote nothing";
    return new TurquoiseError("DEPLOY_FAILED", `${what}: its container ${how}${oom} right after it started${portHint}${output}`, {
      data: { exitCode: exit.exitCode, signal: exit.signal },
    });
  }

  /** Subscribes to die events once; resolves when the daemon has accepted the subscription. */
  private watch(): Promise<void> {
    this.closed = false;
    this.watching ??= this.api
      // Not filtered by the extra labels: an adopted container may have been started without them.
      .events({ labels: [`${LABELS.managed}=true`], type: ["container"], event: ["die"] }, (e) => this.onEvent(e), () => this.reconnectLater())
      .then(
        (stop) => {
          this.stopWatching = stop;
        },
        (e: unknown) => {
          this.watching = undefined;
          throw e;
        },
      );
    return this.watching;
  }

  private reconnectLater(): void {
    this.watching = undefined;
    this.stopWatching = undefined;
    if (this.closed) return;
    const timer = setTimeout(() => {
      if (this.closed) return;
      this.watch().then(
        () => this.reconcile(),
        () => this.reconnectLater(),
      );
    }, EVENTS_RECONNECT_MS);
    timer.unref();
  }

  /** Die events sent while the stream was down are lost: ask the daemon about each instance we think runs. */
  private async reconcile(): Promise<void> {
    for (const t of this.tracked.values()) {
      if (t.settling || !t.state.running) continue;
      const c = await this.api.inspectContainer(t.containerId).catch((e: unknown) => (isDockerNotFound(e) ? undefined : "unknown"));
      if (c !== "unknown" && !c?.State.Running) void this.finalize(t, true).catch(() => undefined);
    }
  }
}

/** The schema range an image declares in its label turquoise.schema; null when it declares none. */
export function declaredSchema(image: string, labels: Record<string, string>): ReleaseDescription["schema"] {
  const declared = labels[LABELS.schema];
  if (declared === undefined) return null;
  try {
    return parseSchemaRange(declared);
  } catch (e) {
    throw new TurquoiseError("USAGE", `image "${image}" has an invalid label ${LABELS.schema}: ${errorMessage(e)}`, { data: { image, label: LABELS.schema } });
  }
}

/** Containers with Turquoise's labels (all of the given "key=value" filters), running or not. */
export async function listManaged(api: DockerApi, labels: string[] = [`${LABELS.managed}=true`]): Promise<ManagedContainer[]> {
  const found: ManagedContainer[] = [];
  for (const summary of await api.listContainers({ all: true, labels })) {
    let c: ContainerInspect;
    try {
      c = await api.inspectContainer(summary.Id);
    } catch (e) {
      if (isDockerNotFound(e)) continue;
      throw e;
    }
    const instance = instanceFromContainer(c);
    if (!instance) continue;
    const state: InstanceState = c.State.Running ? runningState(c.State) : { running: false, exitCode: exitOf(c.State).exitCode, signal: exitOf(c.State).signal };
    found.push({ instance, state });
  }
  return found;
}

/** An InstanceInfo rebuilt from a container's labels and ports; undefined when the labels are incomplete. */
export function instanceFromContainer(c: ContainerInspect): InstanceInfo | undefined {
  const labels = c.Config.Labels ?? {};
  const id = labels[LABELS.instance];
  const service = labels[LABELS.service];
  const slot = labels[LABELS.slot];
  const release = labels[LABELS.release];
  if (!id || !service || (slot !== "blue" && slot !== "green") || release === undefined) return undefined;
  return {
    id,
    service,
    slot: slot as Slot,
    release,
    host: LOOPBACK,
    port: hostPortOf(c),
    ref: c.Id,
    startedAt: parseTime(c.State.StartedAt) ?? 0,
  };
}

/** Host networking: the PORT it was given; bridge: the loopback port the daemon picked for it. */
function hostPortOf(c: ContainerInspect): number {
  if (c.HostConfig.NetworkMode === "host") {
    const env = (c.Config.Env ?? []).find((e) => e.startsWith("PORT="));
    return Number(env?.slice("PORT=".length) ?? 0);
  }
  const bindings = c.NetworkSettings.Ports?.[`${CONTAINER_PORT}/tcp`] ?? [];
  const binding = bindings.find((b) => b.HostIp === LOOPBACK) ?? bindings[0];
  return Number(binding?.HostPort ?? 0);
}

function runningState(s: ContainerState): InstanceState {
  const health = s.Health?.Status;
  return health && health !== "none" ? { running: true, health } : { running: true };
}

export function exitOf(s: Pick<ContainerState, "ExitCode" | "OOMKilled">): Exit {
  // Docker reports a main process killed by signal n as 128+n, as a shell does (137: SIGKILL).
  const signal = s.ExitCode > 128 ? signalName(s.ExitCode - 128) : null;
  return signal ? { exitCode: null, signal, oom: s.OOMKilled } : { exitCode: s.ExitCode, signal: null, oom: s.OOMKilled };
}

function signalName(n: number): string | null {
  return Object.entries(constants.signals).find(([, v]) => v === n)?.[0] ?? null;
}

function parseTime(text: string): number | undefined {
  const ms = Date.parse(text);
  // A container that never started reports year 1.
  return Number.isFinite(ms) && ms > 0 ? ms : undefined;
}

function missingImage(image: string): string {
  return `image "${image}" is not present locally, and no registry is reachable from here: build or load it first (docker build / docker load)`;
}

/** The daemon's create/start errors, said in Turquoise's terms where we recognise them. */
function startError(what: string, image: string, hostPort: number | undefined, e: unknown): Error {
  if (!(e instanceof DockerApiError)) return e as Error;
  const msg = e.daemonMessage;
  const data = { image, daemonMessage: msg };
  if (e.status === 404 && /no such image/i.test(msg)) {
    return new TurquoiseError("NOT_FOUND", `${what}: ${missingImage(image)}`, { data, cause: e });
  }
  const exec = /exec: "([^"]*)": (?:executable file not found|stat [^:]*: no such file or directory)/.exec(msg) ?? /exec: "([^"]*)"/.exec(msg);
  if (exec && /not found|no such file/i.test(msg)) {
    return new TurquoiseError("NOT_FOUND", `${what}: command "${exec[1]}" not found in image "${image}" (neither in its PATH nor at that path)`, { data, cause: e });
  }
  if (/port is already allocated|address already in use/i.test(msg)) {
    const which = hostPort === undefined ? "its port" : `port ${hostPort}`;
    return new TurquoiseError("CONFLICT", `${what}: ${which} is already in use on the host: ${msg}`, { data, cause: e });
  }
  return new TurquoiseError(e.code, `${what} from image "${image}": ${msg}`, { data, cause: e });
}

export function tailLines(text: string, lines: number): string {
  if (lines <= 0) return "";
  const endsWithNewline = text.endsWith("\n");
  const all = (endsWithNewline ? text.slice(0, -1) : text).split("\n");
  return all.slice(-lines).join("\n") + (endsWithNewline ? "\n" : "");
}
