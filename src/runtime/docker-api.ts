// A small client for the Docker Engine API: HTTP over the daemon's unix socket (or a loopback TCP
// port), with node:http only. Turquoise drives the engine directly; it never shells out to the CLI.

import http from "node:http";
import { isIP } from "node:net";
import type { Readable } from "node:stream";
import { TurquoiseError, type ErrorCode } from "../errors.js";

export const DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock";
/** The newest API version this client is written against (Engine 20.10); a newer daemon still speaks it. */
export const MAX_API_VERSION = "1.41";
/** HostConfig.Init and JSON label filters arrived in 1.25. */
export const MIN_API_VERSION = "1.25";
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

export type DockerEndpoint = { socketPath: string } | { host: string; port: number };

export interface DockerApiOptions {
  /** A unix socket path; wins over host. */
  socketPath?: string;
  /** DOCKER_HOST syntax: unix:///path or tcp://127.0.0.1:2375. Default: $DOCKER_HOST, else the standard socket. */
  host?: string;
}

export interface HealthState {
  Status: "starting" | "healthy" | "unhealthy" | "none";
}

export interface ContainerState {
  Status: string;
  Running: boolean;
  ExitCode: number;
  OOMKilled: boolean;
  Error: string;
  StartedAt: string;
  FinishedAt: string;
  Health?: HealthState;
}

export interface PortBinding {
  HostIp: string;
  HostPort: string;
}

export interface ContainerInspect {
  Id: string;
  Name: string;
  State: ContainerState;
  Config: { Image: string; Env: string[] | null; Labels: Record<string, string> | null; Tty: boolean };
  HostConfig: { NetworkMode: string; PortBindings: Record<string, PortBinding[] | null> | null };
  NetworkSettings: { Ports: Record<string, PortBinding[] | null> | null };
}

export interface ContainerSummary {
  Id: string;
  Names: string[];
  Image: string;
  Labels: Record<string, string>;
  State: string;
  Status: string;
  Created: number;
}

export interface ContainerCreateBody {
  Image: string;
  Cmd?: string[];
  Env?: string[];
  Labels?: Record<string, string>;
  ExposedPorts?: Record<string, Record<string, never>>;
  StopTimeout?: number;
  HostConfig?: {
    NetworkMode?: string;
    PortBindings?: Record<string, PortBinding[]>;
    Init?: boolean;
    AutoRemove?: boolean;
    RestartPolicy?: { Name: "" | "no" | "always" | "unless-stopped" | "on-failure" };
    Mounts?: Array<{ Type: "bind"; Source: string; Target: string; ReadOnly: boolean }>;
  };
}

export interface ImageInspect {
  Id: string;
  RepoTags: string[] | null;
  Config: { Cmd: string[] | null; Labels: Record<string, string> | null; Healthcheck?: { Test: string[] } } | null;
}

export interface DockerVersion {
  Version: string;
  ApiVersion: string;
  MinAPIVersion?: string;
  Os: string;
  Arch: string;
}

export interface DockerEvent {
  Type: string;
  Action: string;
  Actor: { ID: string; Attributes: Record<string, string> };
  time: number;
  timeNano: number;
}

export interface DockerInfo {
  Name: string;
  Swarm: { NodeID: string; NodeAddr: string; LocalNodeState: string; ControlAvailable: boolean };
}

/** The parts of a Swarm service spec that Turquoise sets (Engine API ServiceSpec). */
export interface ServiceSpec {
  Name: string;
  Labels: Record<string, string>;
  TaskTemplate: {
    ContainerSpec: {
      Image: string;
      Args?: string[];
      Command?: string[];
      Env: string[];
      Labels: Record<string, string>;
      /** Nanoseconds. */
      StopGracePeriod?: number;
      Init?: boolean;
      Mounts?: Array<{ Type: "bind" | "volume"; Source: string; Target: string; ReadOnly?: boolean }>;
      Healthcheck?: { Test: string[]; Interval?: number; Timeout?: number; Retries?: number; StartPeriod?: number };
    };
    RestartPolicy: { Condition: "none" | "on-failure" | "any"; Delay?: number; MaxAttempts?: number };
    Placement?: { Constraints?: string[] };
    Resources?: { Limits?: { NanoCPUs?: number; MemoryBytes?: number }; Reservations?: { NanoCPUs?: number; MemoryBytes?: number } };
    ForceUpdate?: number;
  };
  Mode: { Replicated: { Replicas: number } };
  EndpointSpec?: { Mode?: "vip" | "dnsrr"; Ports?: Array<{ Protocol: "tcp"; TargetPort: number; PublishedPort?: number; PublishMode: "host" | "ingress" }> };
}

export interface SwarmService {
  ID: string;
  Version: { Index: number };
  Spec: ServiceSpec;
}

export interface SwarmTask {
  ID: string;
  ServiceID: string;
  NodeID?: string;
  Slot?: number;
  DesiredState: string;
  CreatedAt: string;
  Status: {
    Timestamp: string;
    /** new, pending, assigned, accepted, preparing, starting, running, complete, shutdown, failed, rejected, orphaned, remove. */
    State: string;
    Message?: string;
    Err?: string;
    ContainerStatus?: { ContainerID?: string; PID?: number; ExitCode?: number };
    PortStatus?: { Ports?: Array<{ Protocol: string; TargetPort: number; PublishedPort: number; PublishMode: string }> };
  };
}

export interface SwarmNode {
  ID: string;
  Description: { Hostname: string };
  Status: { State: string; Addr: string };
  Spec: { Role: string; Availability: string; Labels?: Record<string, string> };
}

type Query = Record<string, string | number | boolean | string[] | undefined>;

interface RequestOptions {
  query?: Query;
  /** JSON-encoded unless it is a stream, which is piped as is (a tar archive). */
  body?: unknown;
  contentType?: string;
  timeoutMs?: number;
  /** The unversioned endpoints (/_ping, /version) are how the version gets negotiated. */
  unversioned?: boolean;
}

/** The daemon answered, with an error: its own message is kept. */
export class DockerApiError extends TurquoiseError {
  readonly status: number;

  constructor(status: number, daemonMessage: string, what: string) {
    super(codeForStatus(status), `Docker: ${what}: ${daemonMessage}`, { data: { status, daemonMessage } });
    this.name = "DockerApiError";
    this.status = status;
  }

  get daemonMessage(): string {
    return this.data.daemonMessage as string;
  }
}

export function isDockerNotFound(e: unknown): boolean {
  return e instanceof DockerApiError && e.status === 404;
}

export class DockerApi {
  readonly endpoint: DockerEndpoint;
  /** Where the daemon is, for messages: the socket path or tcp://host:port. */
  readonly address: string;
  private readonly agent = new http.Agent({ keepAlive: true });
  private apiPrefix?: Promise<string>;

  constructor(opts: DockerApiOptions = {}) {
    this.endpoint = resolveEndpoint(opts);
    this.address = "socketPath" in this.endpoint ? this.endpoint.socketPath : `tcp://${this.endpoint.host}:${this.endpoint.port}`;
  }

  async ping(): Promise<void> {
    await this.request("GET", "/_ping", { unversioned: true });
  }

  async version(): Promise<DockerVersion> {
    return this.json<DockerVersion>("GET", "/version", { unversioned: true });
  }

  /** The /vX.Y prefix: the daemon's version when it is older than ours, else ours. */
  async apiVersion(): Promise<string> {
    this.apiPrefix ??= this.version().then(
      (v) => {
        const version = compareVersions(v.ApiVersion, MAX_API_VERSION) < 0 ? v.ApiVersion : MAX_API_VERSION;
        if (compareVersions(version, MIN_API_VERSION) < 0) {
          throw new TurquoiseError("RUNTIME_UNAVAILABLE", `the Docker daemon at ${this.address} speaks API ${v.ApiVersion} (Engine ${v.Version}); Turquoise needs ${MIN_API_VERSION} or newer`);
        }
        return version;
      },
      (e: unknown) => {
        // Not cached: the daemon may be up on the next call.
        this.apiPrefix = undefined;
        throw e;
      },
    );
    return this.apiPrefix;
  }

  async createContainer(name: string, body: ContainerCreateBody): Promise<{ Id: string; Warnings: string[] | null }> {
    return this.json("POST", "/containers/create", { query: { name }, body });
  }

  async startContainer(id: string): Promise<void> {
    await this.request("POST", `/containers/${enc(id)}/start`);
  }

  /** SIGTERM (or the image's STOPSIGNAL), then SIGKILL after t seconds. A stopped container is fine (304). */
  async stopContainer(id: string, opts: { t: number }): Promise<void> {
    await this.request("POST", `/containers/${enc(id)}/stop`, { query: { t: opts.t }, timeoutMs: opts.t * 1000 + DEFAULT_REQUEST_TIMEOUT_MS });
  }

  async killContainer(id: string, signal: string): Promise<void> {
    await this.request("POST", `/containers/${enc(id)}/kill`, { query: { signal } });
  }

  async removeContainer(id: string, opts: { force?: boolean } = {}): Promise<void> {
    await this.request("DELETE", `/containers/${enc(id)}`, { query: { force: opts.force ?? false } });
  }

  async inspectContainer(id: string): Promise<ContainerInspect> {
    return this.json("GET", `/containers/${enc(id)}/json`);
  }

  /** labels: "key=value" or "key" filters, all of which must match. */
  async listContainers(opts: { labels?: string[]; all?: boolean } = {}): Promise<ContainerSummary[]> {
    return this.json("GET", "/containers/json", { query: { all: opts.all ?? false, filters: labelFilters(opts.labels) } });
  }

  /** stdout and stderr interleaved as the container wrote them (containers without a TTY). */
  async containerLogs(id: string, opts: { tail?: number } = {}): Promise<string> {
    const body = await this.request("GET", `/containers/${enc(id)}/logs`, {
      query: { stdout: true, stderr: true, tail: opts.tail === undefined ? "all" : Math.max(0, opts.tail) },
    });
    return demuxDockerStream(body)
      .map((f) => f.data.toString("utf8"))
      .join("");
  }

  /**
   * Streams events matching the filters; resolves once the daemon has accepted the subscription.
   * onClose runs when the stream ends without stop() being called (the daemon restarted, say).
   */
  async events(
    opts: { labels?: string[]; type?: string[]; event?: string[] },
    onEvent: (e: DockerEvent) => void,
    onClose: (err?: Error) => void,
  ): Promise<() => void> {
    const filters = JSON.stringify(
      Object.fromEntries(Object.entries({ label: opts.labels, type: opts.type, event: opts.event }).filter(([, v]) => v && v.length > 0)),
    );
    const path = `/v${await this.apiVersion()}/events?${new URLSearchParams({ filters })}`;
    return new Promise((resolve, reject) => {
      let stopped = false;
      let closed = false;
      const close = (err?: Error) => {
        if (closed || stopped) return;
        closed = true;
        onClose(err);
      };
      // Its own connection, kept out of the pool, and unref'd once accepted: watching must not keep the process alive.
      const req = http.request({ ...this.target(), method: "GET", path, agent: false }, (res) => {
        if ((res.statusCode ?? 0) >= 400) {
          readAll(res).then((body) => reject(this.apiError(res.statusCode!, body, `GET /events`)), reject);
          return;
        }
        // Only now: while the subscription is pending, the caller is waiting on it.
        res.socket.unref();
        resolve(() => {
          stopped = true;
          req.destroy();
        });
        let buf = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          buf += chunk;
          let nl: number;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (line) onEvent(JSON.parse(line) as DockerEvent);
          }
        });
        res.on("end", () => close());
        res.on("error", (e) => close(e));
        res.on("close", () => close());
      });
      req.on("error", (e) => {
        if (!closed && !stopped) reject(this.unreachable(e));
        close(e);
      });
      req.end();
    });
  }

  async inspectImage(name: string): Promise<ImageInspect> {
    return this.json("GET", `/images/${enc(name)}/json`);
  }

  /**
   * Creates an image from a root filesystem tar (docker import). changes are Dockerfile lines applied
   * to it: CMD, ENV, LABEL, HEALTHCHECK, ... Returns the new image's id.
   */
  async importImage(tar: Readable, opts: { repo: string; tag: string; changes?: string[] }): Promise<string> {
    const body = await this.request("POST", "/images/create", {
      query: { fromSrc: "-", repo: opts.repo, tag: opts.tag, changes: opts.changes },
      body: tar,
      contentType: "application/x-tar",
      timeoutMs: 5 * 60_000,
    });
    // Progress is a JSON stream with a 200 status; a failure shows up as an "error" line in it.
    let id = "";
    for (const line of body.toString("utf8").split("\n")) {
      if (!line.trim()) continue;
      const msg = JSON.parse(line) as { error?: string; status?: string };
      if (msg.error) throw new DockerApiError(500, msg.error, `import ${opts.repo}:${opts.tag}`);
      if (msg.status?.startsWith("sha256:")) id = msg.status.trim();
    }
    return id;
  }

  async removeImage(name: string, opts: { force?: boolean } = {}): Promise<void> {
    await this.request("DELETE", `/images/${enc(name)}`, { query: { force: opts.force ?? false } });
  }

  /** The image as a tar stream (docker save), to load into another daemon: images reach Swarm nodes without a registry. */
  async exportImage(name: string): Promise<Readable> {
    return this.stream("GET", `/images/${enc(name)}/get`);
  }

  /** Loads a tar stream from exportImage (docker load). */
  async loadImage(tar: Readable): Promise<void> {
    const body = await this.request("POST", "/images/load", { query: { quiet: true }, body: tar, contentType: "application/x-tar", timeoutMs: 5 * 60_000 });
    for (const line of body.toString("utf8").split("\n")) {
      if (!line.trim()) continue;
      const msg = JSON.parse(line) as { error?: string };
      if (msg.error) throw new DockerApiError(500, msg.error, "POST /images/load");
    }
  }

  /** Swarm state of this daemon: whether it is a manager, and its node id. */
  async info(): Promise<DockerInfo> {
    return this.json("GET", "/info");
  }

  async createService(spec: ServiceSpec): Promise<{ ID: string }> {
    return this.json("POST", "/services/create", { body: spec });
  }

  async inspectService(idOrName: string): Promise<SwarmService> {
    return this.json("GET", `/services/${enc(idOrName)}`);
  }

  /** version: the service's Version.Index, as Swarm's optimistic concurrency asks. */
  async updateService(id: string, version: number, spec: ServiceSpec): Promise<void> {
    await this.request("POST", `/services/${enc(id)}/update`, { query: { version }, body: spec });
  }

  async removeService(id: string): Promise<void> {
    await this.request("DELETE", `/services/${enc(id)}`);
  }

  async listServices(opts: { labels?: string[] } = {}): Promise<SwarmService[]> {
    return this.json("GET", "/services", { query: { filters: labelFilters(opts.labels) } });
  }

  async listTasks(filters: { service?: string[]; label?: string[]; "desired-state"?: string[] } = {}): Promise<SwarmTask[]> {
    const f = Object.fromEntries(Object.entries(filters).filter(([, v]) => v && v.length > 0));
    return this.json("GET", "/tasks", { query: { filters: Object.keys(f).length > 0 ? JSON.stringify(f) : undefined } });
  }

  async listNodes(): Promise<SwarmNode[]> {
    return this.json("GET", "/nodes");
  }

  /** A service's output, all its tasks interleaved, as the manager collects it from the nodes. */
  serviceLogs(id: string, opts: { tail?: number } = {}): Promise<string> {
    return this.swarmLogs(`/services/${enc(id)}/logs`, opts.tail);
  }

  /** One task's output: the instances of a slot share one service, and each is one of its tasks. */
  taskLogs(id: string, opts: { tail?: number } = {}): Promise<string> {
    return this.swarmLogs(`/tasks/${enc(id)}/logs`, opts.tail);
  }

  private async swarmLogs(path: string, tail: number | undefined): Promise<string> {
    const body = await this.request("GET", path, { query: { stdout: true, stderr: true, tail: tail === undefined ? "all" : Math.max(0, tail) } });
    return demuxDockerStream(body)
      .map((f) => f.data.toString("utf8"))
      .join("");
  }

  private async json<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    return JSON.parse((await this.request(method, path, opts)).toString("utf8")) as T;
  }

  private async request(method: string, path: string, opts: RequestOptions = {}): Promise<Buffer> {
    const prefix = opts.unversioned ? "" : `/v${await this.apiVersion()}`;
    const query = toSearchParams(opts.query ?? {});
    const fullPath = `${prefix}${path}${query ? `?${query}` : ""}`;
    const isStream = isReadable(opts.body);
    const payload = opts.body === undefined || isStream ? undefined : JSON.stringify(opts.body);
    const timeoutMs = opts.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;

    return new Promise((resolve, reject) => {
      const headers: http.OutgoingHttpHeaders = {};
      if (payload !== undefined) {
        headers["content-type"] = "application/json";
        headers["content-length"] = Buffer.byteLength(payload);
      } else if (isStream) {
        headers["content-type"] = opts.contentType ?? "application/octet-stream";
      }
      const req = http.request({ ...this.target(), method, path: fullPath, headers, agent: this.agent }, (res) => {
        readAll(res).then((body) => {
          const status = res.statusCode ?? 0;
          if (status >= 400) reject(this.apiError(status, body, `${method} ${path}`));
          else resolve(body);
        }, reject);
      });
      req.setTimeout(timeoutMs, () => {
        req.destroy(new TurquoiseError("RUNTIME_UNAVAILABLE", `the Docker daemon at ${this.address} did not answer ${method} ${path} within ${timeoutMs}ms`));
      });
      req.on("error", (e) => reject(e instanceof TurquoiseError ? e : this.unreachable(e)));
      if (isStream) {
        const body = opts.body as Readable;
        body.on("error", (e) => req.destroy(e));
        body.pipe(req);
      } else {
        req.end(payload);
      }
    });
  }

  /** A response body as a stream, for what is too big to hold (an image). */
  private async stream(method: string, path: string): Promise<Readable> {
    const fullPath = `/v${await this.apiVersion()}${path}`;
    return new Promise((resolve, reject) => {
      const req = http.request({ ...this.target(), method, path: fullPath, agent: false }, (res) => {
        if ((res.statusCode ?? 0) >= 400) {
          readAll(res).then((body) => reject(this.apiError(res.statusCode!, body, `${method} ${path}`)), reject);
          return;
        }
        resolve(res);
      });
      req.on("error", (e) => reject(e instanceof TurquoiseError ? e : this.unreachable(e)));
      req.end();
    });
  }

  private target(): http.RequestOptions {
    return "socketPath" in this.endpoint ? { socketPath: this.endpoint.socketPath } : { host: this.endpoint.host, port: this.endpoint.port };
  }

  private apiError(status: number, body: Buffer, what: string): DockerApiError {
    const text = body.toString("utf8").trim();
    let message = text || `HTTP ${status}`;
    try {
      message = (JSON.parse(text) as { message?: string }).message ?? message;
    } catch {
      // Not JSON (a proxy in between, say): the raw text is the best we have.
    }
    return new DockerApiError(status, message, what);
  }

  private unreachable(e: Error): TurquoiseError {
    const code = (e as NodeJS.ErrnoException).code ?? "error";
    const hint = code === "EACCES" ? "is this user allowed to use it (the docker group)?" : "is dockerd running?";
    return new TurquoiseError("RUNTIME_UNAVAILABLE", `cannot reach the Docker daemon at ${this.address} (${code}): ${hint}`, {
      data: { address: this.address, errno: code },
      cause: e,
    });
  }
}

/** The socket path or TCP address to use, from the options, else $DOCKER_HOST, else the standard socket. */
export function resolveEndpoint(opts: DockerApiOptions = {}): DockerEndpoint {
  if (opts.socketPath) return { socketPath: opts.socketPath };
  const host = opts.host ?? process.env.DOCKER_HOST;
  if (!host) return { socketPath: DEFAULT_DOCKER_SOCKET };
  if (host.startsWith("unix://")) return { socketPath: host.slice("unix://".length) };
  if (host.startsWith("tcp://")) {
    const url = new URL(host.replace(/^tcp:/, "http:"));
    const hostname = url.hostname.replace(/^\[|\]$/g, "");
    // Plain HTTP to the daemon is root on that machine for anyone on the path: loopback only.
    if (hostname !== "localhost" && !(isIP(hostname) && /^(127\.|::1$)/.test(hostname))) {
      throw new TurquoiseError("USAGE", `Docker host ${host}: only unix sockets and loopback tcp:// addresses are supported (there is no TLS)`);
    }
    return { host: hostname, port: Number(url.port || 2375) };
  }
  throw new TurquoiseError("USAGE", `Docker host ${host}: expected unix:///path/to/docker.sock or tcp://127.0.0.1:PORT`);
}

/**
 * Splits a non-TTY attach/logs stream into its frames: an 8-byte header (stream: 0 stdin, 1 stdout,
 * 2 stderr; 3 zero bytes; a big-endian uint32 length), then that many bytes.
 */
export function demuxDockerStream(buf: Buffer): Array<{ stream: "stdin" | "stdout" | "stderr"; data: Buffer }> {
  const frames: Array<{ stream: "stdin" | "stdout" | "stderr"; data: Buffer }> = [];
  let pos = 0;
  while (pos + 8 <= buf.length) {
    const kind = buf[pos]!;
    const size = buf.readUInt32BE(pos + 4);
    const stream = kind === 0 ? "stdin" : kind === 2 ? "stderr" : "stdout";
    frames.push({ stream, data: buf.subarray(pos + 8, Math.min(buf.length, pos + 8 + size)) });
    pos += 8 + size;
  }
  return frames;
}

/** -1, 0 or 1 for API versions like "1.41". */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(".").map(Number);
  const pb = b.split(".").map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}

function codeForStatus(status: number): ErrorCode {
  if (status === 404) return "NOT_FOUND";
  if (status === 409) return "CONFLICT";
  return "INTERNAL";
}

function labelFilters(labels: string[] | undefined): string | undefined {
  return labels && labels.length > 0 ? JSON.stringify({ label: labels }) : undefined;
}

function toSearchParams(query: Query): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined) continue;
    // The daemon reads repeated keys as a list (import's changes=...).
    for (const v of Array.isArray(value) ? value : [value]) params.append(key, typeof v === "boolean" ? (v ? "1" : "0") : String(v));
  }
  return params.toString();
}

/** Image references keep their slashes and colons, as the daemon's router expects them. */
function enc(nameOrId: string): string {
  return nameOrId.replace(/[^\w.\-/:@]/g, (c) => encodeURIComponent(c));
}

function isReadable(body: unknown): body is Readable {
  return typeof body === "object" && body !== null && typeof (body as Readable).pipe === "function";
}

function readAll(res: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on("data", (c: Buffer) => chunks.push(c));
    res.on("end", () => resolve(Buffer.concat(chunks)));
    res.on("error", reject);
  });
}
