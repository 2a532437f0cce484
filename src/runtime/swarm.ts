// The swarm runtime: each instance is a one-replica Swarm service, driven through the Engine API of
// a manager (docker-api.ts). Its task publishes its port in host mode, so the proxy reaches it at its
// node's address, never through the routing mesh. Swarm places the task; the agent follows task
// state by polling the manager's task list, and replaces a dead instance itself, as with docker.

import { setTimeout as sleep } from "node:timers/promises";
import { TurquoiseError, errorMessage } from "../errors.js";
import type { AdoptResult, ExitEvent, InstanceInfo, InstanceState, ReleaseDescription, Runtime, StartRequest } from "./contract.js";
import { DockerApi, DockerApiError, isDockerNotFound, type ServiceSpec, type SwarmNode, type SwarmService, type SwarmTask } from "./docker-api.js";
import { CONTAINER_PORT, LABELS, declaredSchema, exitOf, tailLines } from "./docker.js";
import { instanceEnv } from "./env.js";

/** How often the manager's task list is read while instances run: a task's death is seen within it. */
export const DEFAULT_POLL_MS = 250;
/** How long start() waits for Swarm to place and start the task (pulling nothing: images are on the nodes). */
export const DEFAULT_SWARM_START_TIMEOUT_MS = 60_000;
/** Swarm's own default grace before SIGKILL, when the service sets no stop_timeout. */
export const DEFAULT_STOP_GRACE_MS = 10_000;
const KEPT_LOG_LINES = 200;
/** On each service: the image as the release names it (the task runs it by id). */
export const IMAGE_LABEL = "turquoise.image";
const REMEMBERED_EXITS = 200;
/** Task states after which a task never runs again. */
const TERMINAL = new Set(["complete", "shutdown", "failed", "rejected", "orphaned", "remove"]);

export interface SwarmRuntimeOptions {
  /** The id of the agent (runtime/identity.ts): a label on every service; discover() finds only its own. */
  agentId: string;
  /** The manager's unix socket; default $DOCKER_HOST, else /var/run/docker.sock. */
  socketPath?: string;
  /** DOCKER_HOST syntax, for the manager. */
  host?: string;
  /**
   * The Docker socket of each node, by the node's address as Swarm reports it (198.18.100.12).
   * Swarm's API cannot signal a task or kill it before its grace period ends; with a node's socket
   * the runtime does both on that node's daemon. Without it, signal() is refused with why, and a
   * stop waits out the stop_timeout recorded when the instance started.
   */
  nodeSockets?: Record<string, string>;
  /** Extra labels on every service (to tell test runs apart); discover() filters by them. */
  labels?: Record<string, string>;
  pollMs?: number;
  startTimeoutMs?: number;
}

interface Exit {
  exitCode: number | null;
  signal: string | null;
}

interface Tracked {
  info: InstanceInfo;
  serviceId: string;
  task?: SwarmTask;
  state: InstanceState;
  /** start() is still deciding; the poller leaves it alone. */
  settling: boolean;
  /** stop() is scaling it down: its end is stop()'s to report. */
  stopping?: boolean;
  finalizing?: Promise<Exit>;
  keptLogs?: string;
}

export class SwarmRuntime implements Runtime {
  readonly name = "swarm";
  readonly api: DockerApi;
  readonly agentId: string;
  private readonly nodeApis = new Map<string, DockerApi>();
  private readonly extraLabels: Record<string, string>;
  private readonly pollMs: number;
  private readonly startTimeoutMs: number;
  private readonly tracked = new Map<string, Tracked>();
  private readonly exitedIds: string[] = [];
  private readonly listeners = new Set<(e: ExitEvent) => void>();
  private nodes = new Map<string, SwarmNode>();
  private poller?: NodeJS.Timeout;
  private polling = false;

  constructor(opts: SwarmRuntimeOptions) {
    this.api = new DockerApi({ socketPath: opts.socketPath, host: opts.host });
    this.agentId = opts.agentId;
    this.extraLabels = { ...opts.labels, [LABELS.agent]: opts.agentId };
    for (const [addr, socketPath] of Object.entries(opts.nodeSockets ?? {})) this.nodeApis.set(addr, new DockerApi({ socketPath }));
    this.pollMs = opts.pollMs ?? DEFAULT_POLL_MS;
    this.startTimeoutMs = opts.startTimeoutMs ?? DEFAULT_SWARM_START_TIMEOUT_MS;
  }

  /** Refuses a daemon that is not a Swarm manager, with what to do about it. */
  async ping(): Promise<void> {
    const info = await this.api.info();
    if (info.Swarm.LocalNodeState !== "active" || !info.Swarm.ControlAvailable) {
      throw new TurquoiseError(
        "RUNTIME_UNAVAILABLE",
        `the Docker daemon at ${this.api.address} is not a Swarm manager (swarm state "${info.Swarm.LocalNodeState}"): point runtime swarm at a manager's socket`,
      );
    }
  }

  async start(req: StartRequest): Promise<InstanceInfo> {
    const what = `cannot start ${req.service} release ${req.release}`;
    const image = req.image;
    if (!image) throw new TurquoiseError("USAGE", `${what}: the swarm runtime needs an image for it`);
    // By id, not by tag: a task whose image is named by id is never pulled, where a tag makes each
    // node try a registry first (and wait out its timeouts) even when the image is there.
    let imageId: string;
    try {
      imageId = (await this.api.inspectImage(image)).Id;
    } catch (e) {
      if (isDockerNotFound(e)) {
        throw new TurquoiseError("NOT_FOUND", `${what}: image "${image}" is not present locally on the Swarm manager ${this.api.address}, and nothing is pulled: load it onto every node first (docs/swarm.md)`, { data: { image } });
      }
      throw e;
    }
    const spec = this.serviceSpec(req, imageId);
    let serviceId: string;
    try {
      serviceId = (await this.api.createService(spec)).ID;
    } catch (e) {
      throw new TurquoiseError(e instanceof DockerApiError ? e.code : "RUNTIME_UNAVAILABLE", `${what}: ${errorMessage(e)}`, { cause: e });
    }
    const info: InstanceInfo = { id: req.id, service: req.service, slot: req.slot, release: req.release, host: "", port: 0, ref: serviceId, startedAt: Date.now() };
    const t: Tracked = { info, serviceId, state: { running: true }, settling: true };
    this.tracked.set(req.id, t);
    try {
      const task = await this.waitStarted(serviceId, what, image);
      t.task = task;
      t.info = { ...info, ...(await this.addressOf(task)), startedAt: Date.parse(task.Status.Timestamp) || info.startedAt };
    } catch (e) {
      this.tracked.delete(req.id);
      await this.api.removeService(serviceId).catch(() => undefined);
      throw e;
    }
    t.settling = false;
    this.schedulePoll();
    return { ...t.info };
  }

  async stop(instance: InstanceInfo, stopTimeoutMs: number): Promise<{ killed: boolean }> {
    const t = this.tracked.get(instance.id) ?? (await this.attach(instance));
    if (!t || !t.state.running) return { killed: false };
    let service: SwarmService;
    try {
      service = await this.api.inspectService(t.serviceId);
    } catch (e) {
      if (!isDockerNotFound(e)) throw e;
      await this.finalize(t);
      return { killed: false };
    }
    t.stopping = true;
    const task = t.task;
    const node = task?.NodeID ? this.nodeApi(task.NodeID) : undefined;
    const containerId = task?.Status.ContainerStatus?.ContainerID;
    // With the node's socket, the grace period is this stop's, as on docker: SIGTERM now, SIGKILL at
    // its end. Swarm's own stop would wait the StopGracePeriod recorded at start.
    if (node && containerId) await node.killContainer(containerId, "SIGTERM").catch(() => undefined);
    // Scaled to zero, not removed: the task's exit code stays readable until the service goes. The
    // poller may have removed it already, having seen the task end on the SIGTERM.
    await this.api.updateService(service.ID, service.Version.Index, { ...service.Spec, Mode: { Replicated: { Replicas: 0 } } }).catch((e: unknown) => {
      if (!isDockerNotFound(e)) throw e;
    });
    const kill = node && containerId ? setTimeout(() => void node.killContainer(containerId, "SIGKILL").catch(() => undefined), Math.max(0, stopTimeoutMs)) : undefined;
    try {
      await this.waitStopped(t.serviceId, stopTimeoutMs + DEFAULT_STOP_GRACE_MS + this.startTimeoutMs);
    } finally {
      clearTimeout(kill);
    }
    const exit = await this.finalize(t);
    return { killed: exit.signal === "SIGKILL" };
  }

  async signal(instance: InstanceInfo, signal: NodeJS.Signals): Promise<void> {
    const notRunning = () => new TurquoiseError("NOT_FOUND", `cannot send ${signal} to ${instance.id}: it is not running`);
    const t = this.tracked.get(instance.id) ?? (await this.attach(instance));
    if (!t || !t.state.running) throw notRunning();
    const task = (await this.currentTask(t.serviceId)) ?? t.task;
    if (!task || task.Status.State !== "running") throw notRunning();
    const node = task.NodeID ? this.nodeApi(task.NodeID) : undefined;
    const containerId = task.Status.ContainerStatus?.ContainerID;
    if (!node || !containerId) {
      throw new TurquoiseError("USAGE", `cannot send ${signal} to ${instance.id}: Swarm's API cannot signal a task, and the agent has no socket for its node ${t.info.host} (swarm.nodes in turquoise.yml)`);
    }
    try {
      await node.killContainer(containerId, signal);
    } catch (e) {
      if (e instanceof DockerApiError && (e.status === 404 || e.status === 409)) throw notRunning();
      throw e;
    }
  }

  async inspect(instance: InstanceInfo): Promise<InstanceState> {
    const t = this.tracked.get(instance.id);
    if (t && !t.state.running) return { ...t.state };
    const serviceId = t?.serviceId ?? instance.ref;
    if (!(await this.serviceOf(serviceId, instance.id))) return t ? { ...(await this.finalize(t).then(() => t.state)) } : { running: false, exitCode: null, signal: null };
    const task = await this.currentTask(serviceId);
    if (task && !TERMINAL.has(task.Status.State)) return task.Status.State === "starting" ? { running: true, health: "starting" } : { running: true };
    if (t) {
      await this.finalize(t);
      return { ...t.state };
    }
    const exit = task ? taskExit(task) : { exitCode: null, signal: null };
    return { running: false, ...exit };
  }

  async list(service?: string): Promise<InstanceInfo[]> {
    const known = [...this.tracked.values()].filter((t) => !t.settling && t.state.running && (service === undefined || t.info.service === service));
    if (known.length === 0) return [];
    const existing = new Set((await this.api.listServices({ labels: [`${LABELS.managed}=true`] })).map((s) => s.ID));
    return known.filter((t) => existing.has(t.serviceId)).map((t) => ({ ...t.info }));
  }

  async logs(instance: InstanceInfo, opts: { tailLines?: number } = {}): Promise<string> {
    const lines = opts.tailLines ?? 100;
    const t = this.tracked.get(instance.id);
    if (t?.keptLogs !== undefined) return tailLines(t.keptLogs, lines);
    try {
      return await this.api.serviceLogs(t?.serviceId ?? instance.ref, { tail: lines });
    } catch (e) {
      if (!isDockerNotFound(e)) throw e;
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
    return { alive, dead, refused: [] };
  }

  /** The image must be on the manager and on every node whose socket the agent has: nothing is pulled. */
  async describeRelease(req: { service: string; release: string; cwd: string; image?: string }): Promise<ReleaseDescription> {
    if (!req.image) return { exists: false, reason: `release ${req.release} of ${req.service} names no image`, schema: null };
    let labels: Record<string, string> = {};
    for (const [where, api] of [["the manager", this.api] as const, ...[...this.nodeApis].map(([addr, api]) => [`node ${addr}`, api] as const)]) {
      try {
        labels = (await api.inspectImage(req.image)).Config?.Labels ?? {};
      } catch (e) {
        if (isDockerNotFound(e)) return { exists: false, reason: `image "${req.image}" is not present on ${where}, and nothing is pulled: load it onto every node first (turquoise pushes nothing; see docs/swarm.md)`, schema: null };
        throw e;
      }
    }
    return { exists: true, schema: declaredSchema(req.image, labels) };
  }

  /** This agent's services by their labels, running or not. */
  async discover(): Promise<InstanceInfo[]> {
    const labels = [`${LABELS.managed}=true`, ...Object.entries(this.extraLabels).map(([k, v]) => `${k}=${v}`)];
    const found: InstanceInfo[] = [];
    for (const s of await this.api.listServices({ labels })) {
      const l = s.Spec.Labels;
      const slot = l[LABELS.slot];
      if (!l[LABELS.instance] || !l[LABELS.service] || (slot !== "blue" && slot !== "green")) continue;
      const task = await this.currentTask(s.ID);
      const at = task ? await this.addressOf(task) : { host: "", port: 0 };
      found.push({ id: l[LABELS.instance]!, service: l[LABELS.service]!, slot, release: l[LABELS.release] ?? "", ...at, ref: s.ID, startedAt: task ? Date.parse(task.Status.Timestamp) || 0 : 0 });
    }
    return found;
  }

  close(): void {
    clearTimeout(this.poller);
    this.poller = undefined;
  }

  private serviceSpec(req: StartRequest, imageId: string): ServiceSpec {
    const labels = {
      ...this.extraLabels,
      [LABELS.managed]: "true",
      [LABELS.service]: req.service,
      [LABELS.slot]: req.slot,
      [LABELS.release]: req.release,
      [LABELS.instance]: req.id,
      [IMAGE_LABEL]: req.image ?? imageId,
    };
    const limits = req.resources ?? {};
    return {
      Name: `turquoise-${req.id}`,
      Labels: labels,
      TaskTemplate: {
        ContainerSpec: {
          Image: imageId,
          Args: req.command.length > 0 ? req.command : undefined,
          Env: Object.entries(instanceEnv(req, { port: CONTAINER_PORT, host: "0.0.0.0", hostBasics: false, agentId: this.agentId })).map(([k, v]) => `${k}=${v}`),
          Labels: labels,
          StopGracePeriod: (req.stopTimeoutMs ?? DEFAULT_STOP_GRACE_MS) * 1_000_000,
          Init: false,
          ...(req.volumes?.length ? { Mounts: req.volumes.map((v) => ({ Type: "bind" as const, Source: v.source, Target: v.target, ReadOnly: v.readOnly })) } : {}),
        },
        // Turquoise replaces dead instances itself, on whichever node Swarm then picks; a Swarm
        // restart would bring one back at a new address behind the agent's back.
        RestartPolicy: { Condition: "none" },
        ...(req.placement?.length ? { Placement: { Constraints: [...req.placement] } } : {}),
        ...(limits.cpus !== undefined || limits.memoryBytes !== undefined
          ? { Resources: { Limits: { ...(limits.cpus !== undefined ? { NanoCPUs: Math.round(limits.cpus * 1e9) } : {}), ...(limits.memoryBytes !== undefined ? { MemoryBytes: limits.memoryBytes } : {}) } } }
          : {}),
      },
      Mode: { Replicated: { Replicas: 1 } },
      // Host mode, no published port: the node picks a free one, and the proxy dials node:port.
      EndpointSpec: { Mode: "dnsrr", Ports: [{ Protocol: "tcp", TargetPort: CONTAINER_PORT, PublishMode: "host" }] },
    };
  }

  /** The task once its container runs; a task Swarm rejects (no image, no command) is an error saying why. */
  private async waitStarted(serviceId: string, what: string, image: string): Promise<SwarmTask> {
    // Running, or starting (a HEALTHCHECK not passed yet) once its port is known, or over.
    const started = (tk: SwarmTask | undefined): tk is SwarmTask => !!tk && (tk.Status.State === "running" || TERMINAL.has(tk.Status.State) || (tk.Status.State === "starting" && !!tk.Status.PortStatus?.Ports?.length));
    const task = (await this.waitTask(serviceId, started, this.startTimeoutMs).catch(async (e: unknown) => {
      const last = await this.currentTask(serviceId).catch(() => undefined);
      const why = last ? `its task is still "${last.Status.State}"${last.Status.Err ? `: ${last.Status.Err}` : ""}` : "no task was created";
      throw new TurquoiseError("DEPLOY_FAILED", `${what}: Swarm did not start it within ${this.startTimeoutMs}ms; ${why}`, { cause: e });
    })) as SwarmTask;
    const state = task.Status.State;
    const err = task.Status.Err ?? "";
    if (state === "rejected" || (state === "failed" && (task.Status.ContainerStatus?.ExitCode === undefined || /^starting container failed|no such image/i.test(err)))) throw rejection(what, image, task.Status.Err ?? task.Status.Message ?? state);
    return task;
  }

  /**
   * Until the service's task has ended, or its node is down: a node Swarm declared down never
   * reports its task's end, and waiting for it would hold up the instance's replacement.
   */
  private async waitStopped(serviceId: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const task = await this.currentTask(serviceId);
      if (!task || TERMINAL.has(task.Status.State)) return;
      if (task.NodeID) {
        this.nodes = new Map((await this.api.listNodes()).map((n) => [n.ID, n]));
        if (this.nodes.get(task.NodeID)?.Status.State === "down") return;
      }
      if (Date.now() > deadline) throw new TurquoiseError("RUNTIME_UNAVAILABLE", `Swarm did not report the end of service ${serviceId}'s task within ${timeoutMs}ms`);
      await sleep(Math.min(this.pollMs, 100));
    }
  }

  /** Polls the service's newest task until done says so; done gets undefined when the service has no task (or is gone). */
  private async waitTask(serviceId: string, done: (t: SwarmTask | undefined) => boolean, timeoutMs: number): Promise<SwarmTask | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const task = await this.currentTask(serviceId);
      if (done(task)) return task;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms`);
      await sleep(Math.min(this.pollMs, 100));
    }
  }

  /** The service's newest task. */
  private async currentTask(serviceId: string): Promise<SwarmTask | undefined> {
    let tasks: SwarmTask[];
    try {
      tasks = await this.api.listTasks({ service: [serviceId] });
    } catch (e) {
      // The manager refuses a task filter naming a service that is gone: so are its tasks.
      if (isDockerNotFound(e)) return undefined;
      throw e;
    }
    return tasks.sort((a, b) => Date.parse(b.CreatedAt) - Date.parse(a.CreatedAt))[0];
  }

  private async addressOf(task: SwarmTask): Promise<{ host: string; port: number }> {
    const port = task.Status.PortStatus?.Ports?.find((p) => p.TargetPort === CONTAINER_PORT)?.PublishedPort ?? 0;
    const node = task.NodeID ? await this.node(task.NodeID) : undefined;
    return { host: node?.Status.Addr ?? "", port };
  }

  private async node(id: string): Promise<SwarmNode | undefined> {
    if (!this.nodes.has(id)) this.nodes = new Map((await this.api.listNodes()).map((n) => [n.ID, n]));
    return this.nodes.get(id);
  }

  private nodeApi(nodeId: string): DockerApi | undefined {
    const addr = this.nodes.get(nodeId)?.Status.Addr;
    return addr ? this.nodeApis.get(addr) : undefined;
  }

  /** The service, when it exists and carries this instance's label: a wrong ref must not touch someone else's. */
  private async serviceOf(serviceId: string, instanceId: string): Promise<SwarmService | undefined> {
    if (!serviceId) return undefined;
    try {
      const s = await this.api.inspectService(serviceId);
      return s.Spec.Labels[LABELS.instance] === instanceId ? s : undefined;
    } catch (e) {
      if (isDockerNotFound(e)) return undefined;
      throw e;
    }
  }

  private async attach(instance: InstanceInfo): Promise<Tracked | undefined> {
    const s = await this.serviceOf(instance.ref, instance.id);
    if (!s) return undefined;
    const t: Tracked = { info: { ...instance }, serviceId: s.ID, state: { running: true }, settling: false };
    t.task = await this.currentTask(s.ID);
    if (t.task?.NodeID) await this.node(t.task.NodeID);
    this.tracked.set(instance.id, t);
    if (!t.task || TERMINAL.has(t.task.Status.State)) await this.finalize(t, false);
    else this.schedulePoll();
    return t;
  }

  private finalize(t: Tracked, notify = true): Promise<Exit> {
    t.finalizing ??= this.collectExit(t, notify).catch((e: unknown) => {
      t.finalizing = undefined;
      throw e;
    });
    return t.finalizing;
  }

  private async collectExit(t: Tracked, notify: boolean): Promise<Exit> {
    const task = await this.currentTask(t.serviceId).catch((e: unknown) => {
      if (isDockerNotFound(e)) return undefined;
      throw e;
    });
    const exit = task ? taskExit(task) : { exitCode: null, signal: null };
    t.keptLogs = await this.api.serviceLogs(t.serviceId, { tail: KEPT_LOG_LINES }).catch(() => undefined);
    try {
      await this.api.removeService(t.serviceId);
    } catch (e) {
      if (!isDockerNotFound(e)) throw e;
    }
    if (!t.state.running) return exit;
    t.state = { running: false, ...exit };
    this.exitedIds.push(t.info.id);
    if (this.exitedIds.length > REMEMBERED_EXITS) this.tracked.delete(this.exitedIds.shift()!);
    if (notify) {
      const event: ExitEvent = { instance: { ...t.info }, ...exit };
      for (const listener of this.listeners) {
        try {
          listener(event);
        } catch {
          // One broken listener must not keep the others from hearing about the exit.
        }
      }
    }
    return exit;
  }

  private schedulePoll(): void {
    if (this.poller) return;
    this.poller = setTimeout(() => {
      this.poller = undefined;
      void this.poll().finally(() => {
        if ([...this.tracked.values()].some((t) => t.state.running)) this.schedulePoll();
      });
    }, this.pollMs);
    this.poller.unref();
  }

  /** One read of the manager's task list for every instance we think runs; a finished task is an exit. */
  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      const running = [...this.tracked.values()].filter((t) => !t.settling && t.state.running && !t.finalizing);
      if (running.length === 0) return;
      const services = new Set((await this.api.listServices({ labels: [`${LABELS.managed}=true`] })).map((sv) => sv.ID));
      const alive = running.filter((t) => services.has(t.serviceId)).map((t) => t.serviceId);
      // The manager refuses a filter naming a service that is gone; those are finalized below.
      const tasks = alive.length > 0 ? await this.api.listTasks({ service: alive }) : [];
      for (const t of running) {
        // Removed behind the agent's back (docker service rm): its task went with it.
        if (!services.has(t.serviceId)) {
          void this.finalize(t).catch(() => undefined);
          continue;
        }
        const task = tasks.filter((tk) => tk.ServiceID === t.serviceId).sort((a, b) => Date.parse(b.CreatedAt) - Date.parse(a.CreatedAt))[0];
        if (!task || t.stopping) continue;
        // Over, or given up by Swarm: a task on a node declared down keeps its last state
        // ("running") but is set to shut down, and with restart policy none nothing replaces it.
        if (TERMINAL.has(task.Status.State) || task.DesiredState !== "running") void this.finalize(t).catch(() => undefined);
        else t.task = task;
      }
    } catch {
      // The manager is unreachable for now; the next round asks again.
    } finally {
      this.polling = false;
    }
  }
}

/** A task's exit code, or the signal that killed it (Docker reports signal n as 128+n). */
function taskExit(task: SwarmTask): Exit {
  const code = task.Status.ContainerStatus?.ExitCode;
  if (code === undefined) return { exitCode: null, signal: null };
  const { exitCode, signal } = exitOf({ ExitCode: code, OOMKilled: false });
  return { exitCode, signal };
}

/** Why Swarm refused to start a task, in Turquoise's terms where we recognise it. */
function rejection(what: string, image: string, err: string): TurquoiseError {
  const data = { image, daemonMessage: err };
  if (/no such image|not found.*image|image.*not found/i.test(err) && !/exec/.test(err)) {
    return new TurquoiseError("NOT_FOUND", `${what}: image "${image}" is not present on the node Swarm picked, and nothing is pulled: load it onto every node first (${err})`, { data });
  }
  const exec = /exec: "([^"]*)"/.exec(err);
  if (exec && /not found|no such file/i.test(err)) {
    return new TurquoiseError("NOT_FOUND", `${what}: command "${exec[1]}" not found in image "${image}" (neither in its PATH nor at that path)`, { data });
  }
  return new TurquoiseError("DEPLOY_FAILED", `${what} from image "${image}": Swarm rejected its task: ${err}`, { data });
}
