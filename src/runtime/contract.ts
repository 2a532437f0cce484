// The Runtime contract: how instances are started, stopped and observed. Implementations:
// process (default), docker and swarm (later). One shared suite runs against each.

export type Slot = "blue" | "green";
export const SLOTS: readonly Slot[] = ["blue", "green"];
export function otherSlot(slot: Slot): Slot {
  return slot === "blue" ? "green" : "blue";
}

export interface StartRequest {
  service: string;
  slot: Slot;
  release: string;
  /** argv: never a shell string. */
  command: string[];
  cwd: string;
  /** The service's own env; the runtime adds PORT and the TURQUOISE_* facts. */
  env: Record<string, string>;
  /** Address of the agent/registry pushed into the instance as TURQUOISE_API. */
  apiUrl: string;
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
  logFile?: string;
  /**
   * Process runtime only: the process's start time in clock ticks since boot (/proc/<pid>/stat,
   * field 22). Pids are recycled; a live pid with another start time is not our instance.
   */
  procStartTicks?: number;
}

export type InstanceState =
  | { running: true }
  | { running: false; exitCode: number | null; signal: string | null };

export interface ExitEvent {
  instance: InstanceInfo;
  exitCode: number | null;
  signal: string | null;
}

export interface Runtime {
  readonly name: string;
  start(req: StartRequest): Promise<InstanceInfo>;
  /** SIGTERM, wait stopTimeoutMs, then SIGKILL. Resolves when the instance is gone. */
  stop(instance: InstanceInfo, stopTimeoutMs: number): Promise<{ killed: boolean }>;
  signal(instance: InstanceInfo, signal: NodeJS.Signals): Promise<void>;
  inspect(instance: InstanceInfo): Promise<InstanceState>;
  /** Instances this runtime knows of (including ones adopted after an agent restart). */
  list(service?: string): Promise<InstanceInfo[]>;
  /** Last lines of the instance's output. */
  logs(instance: InstanceInfo, opts?: { tailLines?: number }): Promise<string>;
  /** Called once for each instance that exits on its own or is stopped. */
  onExit(listener: (e: ExitEvent) => void): () => void;
  /** Re-attaches to instances recorded before an agent restart; returns the ones still alive. */
  adopt(instances: InstanceInfo[]): Promise<{ alive: InstanceInfo[]; dead: InstanceInfo[] }>;
}
