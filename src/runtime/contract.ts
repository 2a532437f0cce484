// The Runtime contract: how instances are started, stopped and observed. Implementations:
// process (default), docker, swarm, and memory, the in-process twin for tests. One shared suite
// runs against each; swarm also has the slot-level capability (SlotRuntime).

export type Slot = "blue" | "green";
export const SLOTS: readonly Slot[] = ["blue", "green"];
export function otherSlot(slot: Slot): Slot {
  return slot === "blue" ? "green" : "blue";
}

export interface StartRequest {
  /**
   * The instance's id, chosen by the caller (runtime/identity.ts newInstanceId) so that it is
   * recorded before the instance exists. The instance carries it (TURQUOISE_INSTANCE; docker: a
   * label too), so that it can be found again even if the agent dies before recording it as started.
   */
  id: string;
  service: string;
  slot: Slot;
  release: string;
  /** argv: never a shell string. For docker, empty means the image's own CMD. */
  command: string[];
  /** Process runtime: the release's directory. */
  cwd: string;
  /** The service's own env; the runtime adds PORT and the TURQUOISE_* facts (runtime/env.ts). */
  env: Record<string, string>;
  /** Variables of the agent's own environment passed on by name (env_passthrough); none by default. */
  envPassthrough?: string[];
  /** Address of the agent/registry pushed into the instance as TURQUOISE_API. */
  apiUrl: string;
  /** Docker: the image to run, e.g. "books:v2" (present locally: no registry is pulled from). */
  image?: string;
  /** Docker: "bridge" publishes the instance's port on 127.0.0.1 (default); "host" shares the host's network. */
  network?: "bridge" | "host";
  /** The service's stop_timeout, for runtimes that record it at create time. */
  stopTimeoutMs?: number;
  /** Docker and swarm: host paths bind-mounted into the container (swarm: paths on the task's node). */
  volumes?: Array<{ source: string; target: string; readOnly: boolean }>;
  /** Swarm: placement constraints ("node.role==worker"). */
  placement?: string[];
  /** Swarm: the task's limits. */
  resources?: { cpus?: number; memoryBytes?: number };
}

/** What a runtime knows of a release before starting it. */
export interface ReleaseDescription {
  /** False when the release cannot be started at all (no directory, no local image); reason says why. */
  exists: boolean;
  reason?: string;
  /** The schema range the release declares (turquoise.json, or the image label turquoise.schema="1..3"); null when none. */
  schema: { min: number; max: number } | null;
}

export interface InstanceInfo {
  id: string;
  service: string;
  slot: Slot;
  release: string;
  host: string;
  port: number;
  /** OS pid for the process runtime; container id etc. for others. */
  ref: string;
  startedAt: number;
  /** The runtime that runs it ("process", "docker"), so a restarted agent knows whom to ask. */
  runtime?: string;
  logFile?: string;
  /**
   * Process runtime only: the process's start time in clock ticks since boot (/proc/<pid>/stat,
   * field 22). Pids are recycled; a live pid with another start time is not our instance.
   */
  procStartTicks?: number;
}

export type InstanceState =
  /** health: the runtime's own verdict where it has one (a Docker HEALTHCHECK); it counts beside Turquoise's checks. */
  | { running: true; health?: "starting" | "healthy" | "unhealthy" }
  | { running: false; exitCode: number | null; signal: string | null };

export interface ExitEvent {
  instance: InstanceInfo;
  exitCode: number | null;
  signal: string | null;
  /**
   * The runtime restarts the instance itself, under the same id (swarm: Swarm replaces the task
   * in its slot, maybe on another node): the instance is not gone, only out of service until a
   * RestartEvent gives its new address. Absent: the instance is gone for good.
   */
  restarting?: boolean;
}

/** A new run of an instance the runtime restarted itself: same id, new address and start time. */
export interface RestartEvent {
  instance: InstanceInfo;
}

/**
 * Optional capability of a runtime that runs a slot as one unit and restarts dead instances
 * itself (swarm: one Swarm service per slot, its tasks the instances, Swarm's restart policy).
 * The fleet starts and stops a slot's instances through it in one go, and healing follows the
 * runtime's restarts instead of starting replacements of its own.
 */
export interface SlotRuntime {
  /**
   * Starts these instances, all of one service, slot and release (swarm: creates the slot's
   * service with their number of replicas, or scales it up by them). All or none: on a failure,
   * the ones that started are stopped before it rejects.
   */
  start(reqs: StartRequest[]): Promise<InstanceInfo[]>;
  /**
   * Stops these instances (SIGTERM, SIGKILL after stopTimeoutMs); a slot left with none is
   * removed (swarm: its service). One result per instance, in order.
   */
  stop(instances: InstanceInfo[], stopTimeoutMs: number): Promise<Array<PromiseSettledResult<{ killed: boolean }>>>;
  /** Ends the instance's current run (SIGTERM, SIGKILL after stopTimeoutMs) so that the runtime restarts it: a critical instance. */
  restart(instance: InstanceInfo, stopTimeoutMs: number): Promise<void>;
  /** Called for each new run of an instance after an exit with restarting: true. */
  onRestarted(listener: (e: RestartEvent) => void): () => void;
}

/**
 * What adopt() makes of recorded instances. refused: records that do not prove the instance is
 * one this agent started (process: no start time, pid ≤ 1, another process's start time). They
 * are reported with the reason and never signalled.
 */
export interface AdoptResult {
  alive: InstanceInfo[];
  dead: InstanceInfo[];
  refused: Array<{ instance: InstanceInfo; reason: string }>;
}

export interface Runtime {
  readonly name: string;
  start(req: StartRequest): Promise<InstanceInfo>;
  /**
   * SIGTERM, wait stopTimeoutMs, then SIGKILL. Resolves when the instance is gone. refused: the
   * record does not prove the instance is ours, so nothing was signalled (the reason why).
   */
  stop(instance: InstanceInfo, stopTimeoutMs: number): Promise<{ killed: boolean; refused?: string }>;
  signal(instance: InstanceInfo, signal: NodeJS.Signals): Promise<void>;
  inspect(instance: InstanceInfo): Promise<InstanceState>;
  /** Instances this runtime knows of (including ones adopted after an agent restart). */
  list(service?: string): Promise<InstanceInfo[]>;
  /** Last lines of the instance's output. */
  logs(instance: InstanceInfo, opts?: { tailLines?: number }): Promise<string>;
  /** Called once for each instance that exits on its own or is stopped. */
  onExit(listener: (e: ExitEvent) => void): () => void;
  /** Re-attaches to instances recorded before an agent restart; returns the ones still alive. */
  adopt(instances: InstanceInfo[]): Promise<AdoptResult>;
  /** Whether a release can start, and the schema range it declares. */
  describeRelease(req: { service: string; release: string; cwd: string; image?: string }): Promise<ReleaseDescription>;
  /**
   * Optional: every instance that carries this agent's marks (runtime/identity.ts), recorded or
   * not, found by the runtime itself (process: /proc/<pid>/environ; docker: container labels).
   * A restarted agent and `turquoise down` stop the ones no live record names: the agent before
   * died between starting them and recording them. Each is one that stop() will stop.
   */
  discover?(): Promise<InstanceInfo[]>;
  /**
   * Optional: the TCP addresses a live instance listens on, where the runtime can see them
   * (process: its processes' sockets). A failed deploy says so when the app listens on another
   * port than the PORT it was given.
   */
  listening?(instance: InstanceInfo): Promise<Array<{ host: string; port: number }>>;
  /** Optional: the slot-level capability (swarm); the per-instance methods above still work one by one. */
  slots?: SlotRuntime;
  /** Optional: lets go of what the runtime holds open (docker: the daemon's event stream), so the process can exit. Instances keep running. */
  close?(): void;
}
