// The swarm runtime: each slot of a service is one Swarm service (<service>-<slot>-<agent tag>),
// driven through the Engine API of a manager (docker-api.ts); its tasks are the instances. An
// instance is a task slot (Swarm's Task.Slot, 1..N), which Swarm keeps when it replaces a task:
// the instance's id lives in a service label for its slot, its task, node and port change.
// Tasks publish in host mode, so the proxy reaches each at its node's address, never through the
// routing mesh. Swarm places and restarts tasks; the runtime follows the manager's task list.

import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { TurquoiseError, errorMessage } from "../errors.js";
import type { AdoptResult, ExitEvent, InstanceInfo, InstanceState, ReleaseDescription, RestartEvent, Runtime, Slot, SlotRuntime, StartRequest } from "./contract.js";
import { DockerApi, DockerApiError, isDockerNotFound, type ServiceSpec, type SwarmNode, type SwarmService, type SwarmTask } from "./docker-api.js";
import { CONTAINER_PORT, LABELS, declaredSchema, exitOf, tailLines } from "./docker.js";
import { instanceEnv } from "./env.js";
import { INSTANCE_ENV } from "./identity.js";

/** How often the manager's task list is read while instances run: a task's end or restart is seen within it. */
export const DEFAULT_POLL_MS = 250;
/** How long a start waits for Swarm to place and start the tasks (pulling nothing: images are on the nodes). */
export const DEFAULT_SWARM_START_TIMEOUT_MS = 60_000;
/** Swarm's own default grace before SIGKILL, when the service sets no stop_timeout. */
export const DEFAULT_STOP_GRACE_MS = 10_000;
/**
 * Swarm waits this long before it restarts a task that ended. Short, so that a crashed instance
 * is back soon; long enough that a task the runtime stopped on purpose (one chosen instance of a
 * slot) is scaled away before Swarm starts it again.
 */
export const SWARM_RESTART_DELAY_MS = 1_000;
const KEPT_LOG_LINES = 200;
/** On each service: the image as the release names it (the tasks run it by id). */
export const IMAGE_LABEL = "turquoise.image";
/** On each service: a hash of what its tasks run; an instance added to a slot must run the same. */
export const SPEC_LABEL = "turquoise.spec";
/** On each service, one per task slot: `turquoise.task.<slot>` = the instance id of that slot. */
export const TASK_LABEL_PREFIX = "turquoise.task.";
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
   * Swarm's API can neither signal a task nor stop a chosen one; with a node's socket the runtime
   * does both on that node's daemon. Without it, signal() and stopping some (not all) instances
   * of a slot are refused with why, and a stop waits out the stop_timeout recorded at start.
   */
  nodeSockets?: Record<string, string>;
  /** Extra labels on every service (to tell test runs apart); discover() filters by them, and they name the service. */
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
  /** The Swarm service's name: the key its starts and stops are serialized on. */
  name: string;
  /** Swarm's Task.Slot: kept across restarts, so it is the instance. */
  taskSlot: number;
  /** The task whose facts the instance has now (node, port, container). */
  task?: SwarmTask;
  /** running: its task runs. Not running: its last task ended; Swarm restarts it unless gone. */
  state: InstanceState;
  /** Stopped, or removed behind the agent's back: it never comes back. */
  gone: boolean;
  /** A start or stop of the runtime is deciding its fate; the poller leaves it alone. */
  busy: boolean;
  keptLogs?: string;
}

export class SwarmRuntime implements Runtime {
  readonly name = "swarm";
  readonly api: DockerApi;
  readonly agentId: string;
  readonly slots: SlotRuntime;
  private readonly nodeApis = new Map<string, DockerApi>();
  private readonly extraLabels: Record<string, string>;
  /** Ties service names to this agent and these labels: two agents (or test runs) never share a name. */
  private readonly tag: string;
  private readonly pollMs: number;
  private readonly startTimeoutMs: number;
  private readonly tracked = new Map<string, Tracked>();
  private readonly exitedIds: string[] = [];
  private readonly listeners = new Set<(e: ExitEvent) => void>();
  private readonly restartListeners = new Set<(e: RestartEvent) => void>();
  /** One start or stop at a time per Swarm service: each reads its labels and replicas, then writes them. */
  private readonly queues = new Map<string, Promise<unknown>>();
  private nodes = new Map<string, SwarmNode>();
  private poller?: NodeJS.Timeout;
  private polling = false;

  constructor(opts: SwarmRuntimeOptions) {
    this.api = new DockerApi({ socketPath: opts.socketPath, host: opts.host });
    this.agentId = opts.agentId;
    this.extraLabels = { ...opts.labels, [LABELS.agent]: opts.agentId };
    this.tag = createHash("sha256").update(JSON.stringify(Object.entries(this.extraLabels).sort())).digest("hex").slice(0, 8);
    for (const [addr, socketPath] of Object.entries(opts.nodeSockets ?? {})) this.nodeApis.set(addr, new DockerApi({ socketPath }));
    this.pollMs = opts.pollMs ?? DEFAULT_POLL_MS;
    this.startTimeoutMs = opts.startTimeoutMs ?? DEFAULT_SWARM_START_TIMEOUT_MS;
    this.slots = {
      start: (reqs) => this.startMany(reqs),
      stop: (instances, stopTimeoutMs) => this.stopMany(instances, stopTimeoutMs),
      restart: (instance, stopTimeoutMs) => this.restart(instance, stopTimeoutMs),
      onRestarted: (listener) => {
        this.restartListeners.add(listener);
        return () => this.restartListeners.delete(listener);
      },
    };
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

  /** The Swarm service that runs a slot of a service for this agent. */
  serviceName(service: string, slot: Slot): string {
    const suffix = `-${slot}-${this.tag}`;
    // Swarm names are DNS labels: 63 characters at most.
    return `${service.slice(0, 63 - suffix.length)}${suffix}`;
  }

  async start(req: StartRequest): Promise<InstanceInfo> {
    return (await this.startMany([req]))[0]!;
  }

  async stop(instance: InstanceInfo, stopTimeoutMs: number): Promise<{ killed: boolean }> {
    const [r] = await this.stopMany([instance], stopTimeoutMs);
    if (r!.status === "rejected") throw r!.reason;
    return r!.value;
  }

  async signal(instance: InstanceInfo, signal: NodeJS.Signals): Promise<void> {
    const notRunning = () => new TurquoiseError("NOT_FOUND", `cannot send ${signal} to ${instance.id}: it is not running`);
    const t = this.tracked.get(instance.id) ?? (await this.attach(instance));
    if (!t || t.gone) throw notRunning();
    const task = (await this.slotTasks(t.serviceId, t.taskSlot))[0];
    if (!task || task.Status.State !== "running") throw notRunning();
    const { node, containerId } = await this.containerOf(task);
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
    const t = this.tracked.get(instance.id) ?? (await this.attach(instance));
    if (!t) return { running: false, exitCode: null, signal: null };
    if (t.gone || !t.state.running) return { ...t.state };
    const task = t.task ? (await this.slotTasks(t.serviceId, t.taskSlot)).find((tk) => tk.ID === t.task!.ID) : undefined;
    if (!task || TERMINAL.has(task.Status.State)) return { running: false, ...taskExit(task ?? t.task) };
    return task.Status.State === "starting" ? { running: true, health: "starting" } : { running: true };
  }

  /** Every instance started or adopted and not stopped: one Swarm restarts counts, it is still the slot's. */
  async list(service?: string): Promise<InstanceInfo[]> {
    return [...this.tracked.values()].filter((t) => !t.busy && !t.gone && (service === undefined || t.info.service === service)).map((t) => ({ ...t.info }));
  }

  async logs(instance: InstanceInfo, opts: { tailLines?: number } = {}): Promise<string> {
    const lines = opts.tailLines ?? 100;
    const t = this.tracked.get(instance.id);
    if (t?.keptLogs !== undefined) return tailLines(t.keptLogs, lines);
    const task = t?.task ?? (t ? (await this.slotTasks(t.serviceId, t.taskSlot))[0] : undefined);
    if (!task) return "";
    try {
      return await this.api.taskLogs(task.ID, { tail: lines });
    } catch (e) {
      if (!isDockerNotFound(e)) throw e;
      return "";
    }
  }

  onExit(listener: (e: ExitEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * An instance whose slot still has its label is alive, even while Swarm restarts its task: a
   * RestartEvent follows with its new address. Its record's address is refreshed from its task.
   */
  async adopt(instances: InstanceInfo[]): Promise<AdoptResult> {
    const alive: InstanceInfo[] = [];
    const dead: InstanceInfo[] = [];
    for (const instance of instances) {
      const t = this.tracked.get(instance.id) ?? (await this.attach(instance));
      if (t && !t.gone) alive.push({ ...t.info });
      else dead.push(instance);
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

  /** Every task slot of this agent's services, by their labels, running or not. */
  async discover(): Promise<InstanceInfo[]> {
    const found: InstanceInfo[] = [];
    for (const s of await this.api.listServices({ labels: this.ownLabels() })) {
      const l = s.Spec.Labels;
      const slot = l[LABELS.slot];
      if (!l[LABELS.service] || (slot !== "blue" && slot !== "green")) continue;
      const tasks = await this.slotTasksOf(s.ID);
      for (const [taskSlot, id] of taskSlotsOf(s)) {
        const task = newest(tasks.filter((tk) => tk.Slot === taskSlot));
        const at = task ? await this.addressOf(task) : { host: "", port: 0 };
        found.push({ id, service: l[LABELS.service]!, slot, release: l[LABELS.release] ?? "", ...at, ref: s.ID, startedAt: task ? Date.parse(task.Status.Timestamp) || 0 : 0 });
      }
    }
    return found;
  }

  close(): void {
    clearTimeout(this.poller);
    this.poller = undefined;
  }

  private ownLabels(): string[] {
    return [`${LABELS.managed}=true`, ...Object.entries(this.extraLabels).map(([k, v]) => `${k}=${v}`)];
  }

  /** Runs fn after every earlier start or stop of the same Swarm service. */
  private serialized<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const run = (this.queues.get(name) ?? Promise.resolve()).then(fn);
    const tail = run.catch(() => undefined);
    this.queues.set(name, tail);
    void tail.then(() => {
      if (this.queues.get(name) === tail) this.queues.delete(name);
    });
    return run;
  }

  private startMany(reqs: StartRequest[]): Promise<InstanceInfo[]> {
    if (reqs.length === 0) return Promise.resolve([]);
    const first = reqs[0]!;
    const odd = reqs.find((r) => r.service !== first.service || r.slot !== first.slot || r.release !== first.release);
    if (odd) throw new TurquoiseError("INTERNAL", `one start takes instances of one slot: ${first.service} ${first.slot} ${first.release}, not ${odd.service} ${odd.slot} ${odd.release}`);
    const name = this.serviceName(first.service, first.slot);
    return this.serialized(name, () => this.startIn(name, reqs));
  }

  private async startIn(name: string, reqs: StartRequest[]): Promise<InstanceInfo[]> {
    const first = reqs[0]!;
    const what = `cannot start ${first.service} release ${first.release}`;
    const image = first.image;
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
    const spec = this.serviceSpec(name, first, imageId);
    const existing = await this.inspectByName(name);
    if (existing) {
      const l = existing.Spec.Labels;
      if (Object.entries(this.extraLabels).some(([k, v]) => l[k] !== v)) {
        throw new TurquoiseError("CONFLICT", `${what}: a Swarm service named ${name} exists and is not this agent's: remove it, or give this agent another state directory`);
      }
      if (l[SPEC_LABEL] !== spec.Labels[SPEC_LABEL]) {
        throw new TurquoiseError("CONFLICT", `${what}: slot ${first.slot}'s Swarm service ${name} runs release ${l[LABELS.release] ?? "?"} with other settings; its instances must stop before another release or setting starts there`);
      }
    }
    const taken = new Set(existing ? [...taskSlotsOf(existing).keys()] : []);
    // Swarm numbers the tasks it adds from the lowest free slot up; so does this.
    const newSlots: number[] = [];
    for (let n = 1; newSlots.length < reqs.length; n++) if (!taken.has(n)) newSlots.push(n);
    const labels = { ...(existing?.Spec.Labels ?? spec.Labels), ...Object.fromEntries(newSlots.map((n, i) => [`${TASK_LABEL_PREFIX}${n}`, reqs[i]!.id])) };
    const replicas = taken.size + newSlots.length;
    let serviceId: string;
    try {
      if (existing) {
        await this.api.updateService(existing.ID, existing.Version.Index, { ...existing.Spec, Labels: labels, Mode: { Replicated: { Replicas: replicas } } });
        serviceId = existing.ID;
      } else {
        serviceId = (await this.api.createService({ ...spec, Labels: labels, Mode: { Replicated: { Replicas: replicas } } })).ID;
      }
    } catch (e) {
      throw new TurquoiseError(e instanceof DockerApiError ? e.code : "RUNTIME_UNAVAILABLE", `${what}: ${errorMessage(e)}`, { cause: e });
    }
    const batch = reqs.map((req, i): Tracked => ({
      info: { id: req.id, service: req.service, slot: req.slot, release: req.release, host: "", port: 0, ref: serviceId, startedAt: Date.now() },
      serviceId, name, taskSlot: newSlots[i]!, state: { running: true }, gone: false, busy: true,
    }));
    for (const t of batch) this.tracked.set(t.info.id, t);
    const started = await Promise.allSettled(batch.map(async (t) => {
      const task = await this.waitStarted(serviceId, t.taskSlot, what, image);
      t.task = task;
      t.info = { ...t.info, ...(await this.addressOf(task)), startedAt: Date.parse(task.Status.Timestamp) || t.info.startedAt };
    }));
    const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) {
      // All or none: what this start added goes again (the whole service when it made it).
      if (!existing) await this.api.removeService(serviceId).catch(() => undefined);
      else await this.stopIn(name, batch, 0).catch(() => undefined);
      for (const t of batch) this.tracked.delete(t.info.id);
      throw failed.reason;
    }
    for (const t of batch) t.busy = false;
    this.schedulePoll();
    return batch.map((t) => ({ ...t.info }));
  }

  private async stopMany(instances: InstanceInfo[], stopTimeoutMs: number): Promise<Array<PromiseSettledResult<{ killed: boolean }>>> {
    const results = new Map<string, PromiseSettledResult<{ killed: boolean }>>();
    const byService = new Map<string, Tracked[]>();
    for (const instance of instances) {
      const t = this.tracked.get(instance.id) ?? (await this.attach(instance).catch(() => undefined));
      if (!t || t.gone) {
        results.set(instance.id, { status: "fulfilled", value: { killed: false } });
        continue;
      }
      byService.set(t.name, [...(byService.get(t.name) ?? []), t]);
    }
    await Promise.all([...byService].map(async ([name, ts]) => {
      try {
        const killed = await this.serialized(name, () => this.stopIn(name, ts, stopTimeoutMs));
        for (const t of ts) results.set(t.info.id, { status: "fulfilled", value: { killed: killed.has(t.info.id) } });
      } catch (e) {
        for (const t of ts) results.set(t.info.id, { status: "rejected", reason: e });
      }
    }));
    return instances.map((i) => results.get(i.id)!);
  }

  /**
   * Stops some instances of one slot's service, or all of them. All: the service is scaled to 0
   * and removed. Some: Swarm's own scale-down would pick the tasks itself, so their containers
   * are stopped on their nodes first; a scale-down then removes those (Swarm removes tasks that do
   * not run before ones that do) within the restart delay. Returns the ids that were SIGKILLed.
   */
  private async stopIn(name: string, ts: Tracked[], stopTimeoutMs: number): Promise<Set<string>> {
    const service = await this.inspectByName(name);
    if (!service || ts.some((t) => t.serviceId !== service.ID)) {
      for (const t of ts) if (!service || t.serviceId !== service.ID) await this.finalize(t, undefined);
      if (!service) return new Set();
      ts = ts.filter((t) => t.serviceId === service.ID);
    }
    const mine = taskSlotsOf(service);
    // A slot whose label no longer names the instance was scaled away already.
    for (const t of ts) if (mine.get(t.taskSlot) !== t.info.id) await this.finalize(t, undefined);
    ts = ts.filter((t) => mine.get(t.taskSlot) === t.info.id);
    if (ts.length === 0) return new Set();
    const all = ts.length === mine.size;
    const tasks = await this.slotTasksOf(service.ID);
    const runs = new Map(ts.map((t) => [t, newest(tasks.filter((tk) => tk.Slot === t.taskSlot && !TERMINAL.has(tk.Status.State)))]));
    const containers = new Map<Tracked, { node?: DockerApi; containerId?: string }>();
    for (const [t, task] of runs) containers.set(t, task ? await this.containerOf(task) : {});
    if (!all) {
      const blind = ts.find((t) => runs.get(t) && !containers.get(t)!.node);
      if (blind) {
        throw new TurquoiseError("USAGE", `cannot stop ${blind.info.id} alone: Swarm's API cannot stop a chosen task of a service, and the agent has no socket for its node ${blind.info.host} (swarm.nodes in turquoise.yml)`);
      }
    }
    for (const t of ts) t.busy = true;
    // With the node's socket, the grace period is this stop's, as on docker: SIGTERM now, SIGKILL
    // at its end. Swarm's own stop waits the StopGracePeriod recorded at start.
    const killTimers: NodeJS.Timeout[] = [];
    for (const { node, containerId } of containers.values()) {
      if (!node || !containerId) continue;
      await node.killContainer(containerId, "SIGTERM").catch(() => undefined);
      killTimers.push(setTimeout(() => void node.killContainer(containerId, "SIGKILL").catch(() => undefined), Math.max(0, stopTimeoutMs)));
    }
    const deadline = stopTimeoutMs + DEFAULT_STOP_GRACE_MS + this.startTimeoutMs;
    const wanted = new Set(ts.map((t) => t.taskSlot));
    // Each task as last seen: Swarm deletes a scaled-away task (and its exit code) soon after it ends.
    const seen = new Map<string, SwarmTask>();
    const observe = (list: SwarmTask[]) => {
      for (const tk of list) seen.set(tk.ID, tk);
    };
    const logs = new Map<Tracked, string | undefined>();
    try {
      // The stopped containers end first, their output still there to keep; then the scale-down,
      // within the restart delay, so that Swarm removes these slots and brings none of them back.
      if (killTimers.length > 0) await this.waitTasks(service.ID, (list) => (observe(list), [...runs.values()].every((run) => !run || ended(list.find((tk) => tk.ID === run.ID)))), deadline, true);
      for (const t of ts) {
        const run = runs.get(t) ?? t.task;
        logs.set(t, run ? await this.api.taskLogs(run.ID, { tail: KEPT_LOG_LINES }).catch(() => undefined) : undefined);
      }
      if (all) {
        await this.updateService(service.ID, (s) => ({ ...s, Mode: { Replicated: { Replicas: 0 } } }));
      } else {
        await this.updateService(service.ID, (s) => ({
          ...s,
          Labels: Object.fromEntries(Object.entries(s.Labels).filter(([k]) => !(k.startsWith(TASK_LABEL_PREFIX) && wanted.has(Number(k.slice(TASK_LABEL_PREFIX.length)))))),
          Mode: { Replicated: { Replicas: Math.max(0, s.Mode.Replicated.Replicas - ts.length) } },
        }));
      }
      // Until every task of these slots is over (or on a node Swarm declared down), or never got a container.
      await this.waitTasks(service.ID, (list) => (observe(list), list.every((tk) => !wanted.has(tk.Slot ?? 0) || TERMINAL.has(tk.Status.State) || (tk.DesiredState !== "running" && !tk.Status.ContainerStatus?.ContainerID))), deadline, true);
    } catch (e) {
      // Not stopped after all (the manager did not answer, or too late): the poller follows them again.
      for (const t of ts) t.busy = false;
      throw e;
    } finally {
      for (const timer of killTimers) clearTimeout(timer);
    }
    const killed = new Set<string>();
    for (const t of ts) {
      const run = runs.get(t) ?? t.task;
      const exit = await this.finalize(t, (run && seen.get(run.ID)) ?? run, logs.get(t));
      if (exit.signal === "SIGKILL") killed.add(t.info.id);
    }
    if (all) {
      try {
        await this.api.removeService(service.ID);
      } catch (e) {
        if (!isDockerNotFound(e)) throw e;
      }
    }
    return killed;
  }

  /** Ends an instance's run on its node; Swarm's restart policy starts its task again, maybe elsewhere. */
  private async restart(instance: InstanceInfo, stopTimeoutMs: number): Promise<void> {
    const t = this.tracked.get(instance.id) ?? (await this.attach(instance));
    if (!t || t.gone) throw new TurquoiseError("NOT_FOUND", `cannot restart ${instance.id}: it is not running`);
    const run = (await this.slotTasks(t.serviceId, t.taskSlot)).find((tk) => !TERMINAL.has(tk.Status.State));
    if (!run) return;
    const { node, containerId } = await this.containerOf(run);
    if (!node || !containerId) {
      throw new TurquoiseError("USAGE", `cannot restart ${instance.id}: Swarm's API cannot stop a chosen task, and the agent has no socket for its node ${t.info.host} (swarm.nodes in turquoise.yml)`);
    }
    await node.killContainer(containerId, "SIGTERM");
    const kill = setTimeout(() => void node.killContainer(containerId, "SIGKILL").catch(() => undefined), Math.max(0, stopTimeoutMs));
    try {
      await this.waitTasks(t.serviceId, (list) => ended(list.find((tk) => tk.ID === run.ID)), stopTimeoutMs + DEFAULT_STOP_GRACE_MS, true);
    } finally {
      clearTimeout(kill);
    }
  }

  private serviceSpec(name: string, req: StartRequest, imageId: string): ServiceSpec {
    const labels = {
      ...this.extraLabels,
      [LABELS.managed]: "true",
      [LABELS.service]: req.service,
      [LABELS.slot]: req.slot,
      [LABELS.release]: req.release,
      [IMAGE_LABEL]: req.image ?? imageId,
    };
    const limits = req.resources ?? {};
    const env = instanceEnv(req, { port: CONTAINER_PORT, host: "0.0.0.0", hostBasics: false, agentId: this.agentId });
    const template: ServiceSpec["TaskTemplate"] = {
      ContainerSpec: {
        Image: imageId,
        Args: req.command.length > 0 ? req.command : undefined,
        // Swarm expands Go templates in Env: each task reads its own instance id from its slot's
        // label; every other value is escaped, so a "{{" of the service's env stays as written.
        Env: Object.entries(env).map(([k, v]) => (k === INSTANCE_ENV ? `${k}={{index .Service.Labels (printf "${TASK_LABEL_PREFIX}%v" .Task.Slot)}}` : `${k}=${v.replaceAll("{{", '{{"{{"}}')}`)),
        Labels: labels,
        StopGracePeriod: (req.stopTimeoutMs ?? DEFAULT_STOP_GRACE_MS) * 1_000_000,
        Init: false,
        ...(req.volumes?.length ? { Mounts: req.volumes.map((v) => ({ Type: "bind" as const, Source: v.source, Target: v.target, ReadOnly: v.readOnly })) } : {}),
      },
      // Swarm brings a dead task back in its slot, on a node that is up; the agent follows it
      // and routes to the new task once it passes its checks.
      RestartPolicy: { Condition: "any", Delay: SWARM_RESTART_DELAY_MS * 1_000_000, MaxAttempts: 0 },
      ...(req.placement?.length ? { Placement: { Constraints: [...req.placement] } } : {}),
      ...(limits.cpus !== undefined || limits.memoryBytes !== undefined
        ? { Resources: { Limits: { ...(limits.cpus !== undefined ? { NanoCPUs: Math.round(limits.cpus * 1e9) } : {}), ...(limits.memoryBytes !== undefined ? { MemoryBytes: limits.memoryBytes } : {}) } } }
        : {}),
    };
    // Host mode, no published port: each node picks a free one, and the proxy dials node:port.
    const endpoint: ServiceSpec["EndpointSpec"] = { Mode: "dnsrr", Ports: [{ Protocol: "tcp", TargetPort: CONTAINER_PORT, PublishMode: "host" }] };
    const hash = createHash("sha256").update(JSON.stringify([template, endpoint])).digest("hex").slice(0, 16);
    return { Name: name, Labels: { ...labels, [SPEC_LABEL]: hash }, TaskTemplate: template, Mode: { Replicated: { Replicas: 0 } }, EndpointSpec: endpoint };
  }

  /** Reads the service and writes change(its spec) at its version, once more if another write came between. */
  private async updateService(id: string, change: (spec: ServiceSpec) => ServiceSpec): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const s = await this.api.inspectService(id);
      try {
        return await this.api.updateService(id, s.Version.Index, change(s.Spec));
      } catch (e) {
        if (!(e instanceof DockerApiError && /update out of sequence/i.test(e.message)) || attempt >= 3) throw e;
      }
    }
  }

  /** The task of a slot once its container runs (or ran); a task Swarm rejects (no image, no command) is an error saying why. */
  private async waitStarted(serviceId: string, taskSlot: number, what: string, image: string): Promise<SwarmTask> {
    const deadline = Date.now() + this.startTimeoutMs;
    for (;;) {
      const tasks = await this.slotTasks(serviceId, taskSlot);
      // Looked for among all of the slot's tasks: Swarm may already have queued the next try.
      const refused = tasks.find((tk) => tk.Status.State === "rejected" || (tk.Status.State === "failed" && (tk.Status.ContainerStatus?.ExitCode === undefined || /^starting container failed|no such image/i.test(tk.Status.Err ?? ""))));
      if (refused) throw rejection(what, image, refused.Status.Err ?? refused.Status.Message ?? refused.Status.State);
      // Running, or starting (a HEALTHCHECK not passed yet) once its port is known, or over already.
      const task = tasks.find((tk) => runs(tk) || tk.Status.State === "running" || TERMINAL.has(tk.Status.State));
      if (task) return task;
      if (Date.now() > deadline) {
        const last = tasks[0];
        const why = last ? `its task is still "${last.Status.State}"${last.Status.Err ? `: ${last.Status.Err}` : ""}` : "no task was created";
        throw new TurquoiseError("DEPLOY_FAILED", `${what}: Swarm did not start it within ${this.startTimeoutMs}ms; ${why}`);
      }
      await sleep(Math.min(this.pollMs, 100));
    }
  }

  /**
   * Polls the service's tasks until done says so. downIsEnded: a task on a node Swarm declared
   * down counts as ended (its node never reports its end, and waiting would hold up everything).
   */
  private async waitTasks(serviceId: string, done: (tasks: SwarmTask[]) => boolean, timeoutMs: number, downIsEnded = false): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let tasks = await this.slotTasksOf(serviceId);
      if (downIsEnded && tasks.some((tk) => tk.NodeID)) {
        this.nodes = new Map((await this.api.listNodes()).map((n) => [n.ID, n]));
        tasks = tasks.map((tk) => (tk.NodeID && this.nodes.get(tk.NodeID)?.Status.State === "down" && !TERMINAL.has(tk.Status.State) ? { ...tk, Status: { ...tk.Status, State: "orphaned" } } : tk));
      }
      if (done(tasks)) return;
      if (Date.now() > deadline) throw new TurquoiseError("RUNTIME_UNAVAILABLE", `Swarm did not report the end of service ${serviceId}'s tasks within ${timeoutMs}ms`);
      await sleep(Math.min(this.pollMs, 100));
    }
  }

  /** The service's tasks; none when the service is gone. */
  private async slotTasksOf(serviceId: string): Promise<SwarmTask[]> {
    try {
      return await this.api.listTasks({ service: [serviceId] });
    } catch (e) {
      // The manager refuses a task filter naming a service that is gone: so are its tasks.
      if (isDockerNotFound(e)) return [];
      throw e;
    }
  }

  /** One task slot's tasks, newest first. */
  private async slotTasks(serviceId: string, taskSlot: number): Promise<SwarmTask[]> {
    return byAge((await this.slotTasksOf(serviceId)).filter((tk) => tk.Slot === taskSlot));
  }

  private async inspectByName(name: string): Promise<SwarmService | undefined> {
    try {
      return await this.api.inspectService(name);
    } catch (e) {
      if (isDockerNotFound(e)) return undefined;
      throw e;
    }
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

  /** The task's container and its node's daemon, when the agent has that node's socket. */
  private async containerOf(task: SwarmTask): Promise<{ node?: DockerApi; containerId?: string }> {
    const addr = task.NodeID ? (await this.node(task.NodeID))?.Status.Addr : undefined;
    return { node: addr ? this.nodeApis.get(addr) : undefined, containerId: task.Status.ContainerStatus?.ContainerID };
  }

  /** Finds the instance's slot in its service (by ref): only a service of this agent whose label names this id. */
  private async attach(instance: InstanceInfo): Promise<Tracked | undefined> {
    if (!instance.ref) return undefined;
    let s: SwarmService;
    try {
      s = await this.api.inspectService(instance.ref);
    } catch (e) {
      if (isDockerNotFound(e)) return undefined;
      throw e;
    }
    if (Object.entries(this.extraLabels).some(([k, v]) => s.Spec.Labels[k] !== v)) return undefined;
    const taskSlot = [...taskSlotsOf(s)].find(([, id]) => id === instance.id)?.[0];
    if (taskSlot === undefined) return undefined;
    const t: Tracked = { info: { ...instance }, serviceId: s.ID, name: s.Spec.Name, taskSlot, state: { running: true }, gone: false, busy: false };
    const tasks = await this.slotTasks(s.ID, taskSlot);
    const run = tasks.find((tk) => tk.DesiredState === "running" && runs(tk));
    if (run) {
      t.task = run;
      t.info = { ...t.info, ...(await this.addressOf(run)), startedAt: Date.parse(run.Status.Timestamp) || t.info.startedAt };
    } else {
      // Between two runs: Swarm restarts it; the poller reports its new address.
      t.state = { running: false, ...taskExit(tasks[0]) };
    }
    this.tracked.set(instance.id, t);
    this.schedulePoll();
    return t;
  }

  /** The instance is gone for good: its exit is reported once, from its last task. */
  private async finalize(t: Tracked, last: SwarmTask | undefined, logs?: string): Promise<Exit> {
    if (t.gone) return { exitCode: t.state.running ? null : t.state.exitCode, signal: t.state.running ? null : t.state.signal };
    t.gone = true;
    t.busy = false;
    const exit = taskExit(last ?? t.task);
    const task = last ?? t.task;
    t.keptLogs = logs ?? (task ? await this.api.taskLogs(task.ID, { tail: KEPT_LOG_LINES }).catch(() => undefined) : undefined);
    t.state = { running: false, ...exit };
    this.exitedIds.push(t.info.id);
    if (this.exitedIds.length > REMEMBERED_EXITS) this.tracked.delete(this.exitedIds.shift()!);
    this.emit(this.listeners, { instance: { ...t.info }, ...exit });
    return exit;
  }

  private emit<E>(listeners: Set<(e: E) => void>, event: E): void {
    for (const listener of listeners) {
      try {
        listener(event);
      } catch {
        // One broken listener must not keep the others from hearing about it.
      }
    }
  }

  private schedulePoll(): void {
    if (this.poller) return;
    this.poller = setTimeout(() => {
      this.poller = undefined;
      void this.poll().finally(() => {
        if ([...this.tracked.values()].some((t) => !t.gone)) this.schedulePoll();
      });
    }, this.pollMs);
    this.poller.unref();
  }

  /**
   * One read of the manager's services and tasks for every instance not gone. A task that ended
   * (exit, kill, a node Swarm gave up on) is an exit with restarting: true; the slot's next task
   * that runs is a RestartEvent. A service removed, or a slot scaled away behind the agent's back,
   * is an exit for good.
   */
  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      const watched = [...this.tracked.values()].filter((t) => !t.busy && !t.gone);
      if (watched.length === 0) return;
      const services = new Map((await this.api.listServices({ labels: this.ownLabels() })).map((sv) => [sv.ID, sv]));
      const alive = [...new Set(watched.filter((t) => services.has(t.serviceId)).map((t) => t.serviceId))];
      const tasks = alive.length > 0 ? await this.api.listTasks({ service: alive }) : [];
      for (const t of watched) {
        if (t.busy || t.gone) continue;
        const service = services.get(t.serviceId);
        const slotTasks = byAge(tasks.filter((tk) => tk.ServiceID === t.serviceId && tk.Slot === t.taskSlot));
        if (!service || taskSlotsOf(service).get(t.taskSlot) !== t.info.id) {
          void this.finalize(t, slotTasks.find((tk) => tk.ID === t.task?.ID)).catch(() => undefined);
          continue;
        }
        const current = t.task ? slotTasks.find((tk) => tk.ID === t.task!.ID) : undefined;
        // Over, or given up by Swarm: a task on a node declared down keeps its last state
        // ("running") but is set to shut down, and Swarm starts another in its slot.
        if (t.state.running && (!current || ended(current))) {
          t.state = { running: false, ...taskExit(current ?? t.task) };
          this.emit(this.listeners, { instance: { ...t.info }, ...taskExit(current ?? t.task), restarting: true });
        }
        const next = slotTasks.find((tk) => tk.ID !== t.task?.ID && tk.DesiredState === "running" && runs(tk));
        if (!t.state.running && next) {
          t.task = next;
          t.info = { ...t.info, ...(await this.addressOf(next)), startedAt: Date.parse(next.Status.Timestamp) || Date.now() };
          t.state = { running: true };
          this.emit(this.restartListeners, { instance: { ...t.info } });
        }
      }
    } catch {
      // The manager is unreachable for now; the next round asks again.
    } finally {
      this.polling = false;
    }
  }
}

/** Task slot → instance id, from the service's labels. */
function taskSlotsOf(s: SwarmService): Map<number, string> {
  const out = new Map<number, string>();
  for (const [k, v] of Object.entries(s.Spec.Labels)) {
    if (!k.startsWith(TASK_LABEL_PREFIX)) continue;
    const n = Number(k.slice(TASK_LABEL_PREFIX.length));
    if (Number.isInteger(n) && n > 0 && v) out.set(n, v);
  }
  return out;
}

function byAge(tasks: SwarmTask[]): SwarmTask[] {
  return tasks.sort((a, b) => Date.parse(b.CreatedAt) - Date.parse(a.CreatedAt));
}

function newest(tasks: SwarmTask[]): SwarmTask | undefined {
  return byAge(tasks)[0];
}

/** Its container runs (or starts, a HEALTHCHECK not passed yet) with its port published. */
function runs(tk: SwarmTask): boolean {
  return (tk.Status.State === "running" || tk.Status.State === "starting") && !!tk.Status.PortStatus?.Ports?.length;
}

/** Over, or no longer meant to run. */
function ended(tk: SwarmTask | undefined): boolean {
  return !tk || TERMINAL.has(tk.Status.State) || tk.DesiredState !== "running";
}

/** A task's exit code, or the signal that killed it (Docker reports signal n as 128+n). */
function taskExit(task: SwarmTask | undefined): Exit {
  const code = task?.Status.ContainerStatus?.ExitCode;
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
