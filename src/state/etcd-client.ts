// The etcd store's connection: one etcd3 client over every member, each Store call bounded by the
// store's timeout with transient failures retried (on whichever member answers), and etcd's errors
// turned into Turquoise's typed ones. It knows nothing of the Store contract.

import { setTimeout as sleep } from "node:timers/promises";
import {
  ClientClosedError,
  CompareResult,
  CompareTarget,
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdError,
  EtcdPermissionDeniedError,
  GRPCGenericError,
  GRPCInvalidArgumentError,
  GRPCResourceExhastedError,
  isRecoverableError,
  type ICompare,
  type IOptions,
  type IKeyValue,
  type IRangeRequest,
  type IRangeResponse,
  type IRequestOp,
  type ITxnResponse,
} from "etcd3";
import { TurquoiseError, errorMessage } from "../errors.js";
import { formatDuration } from "../util/duration.js";

export interface EtcdConnectOptions {
  /** Client URLs of the members: http://host:port, or https:// for all of them with tls. */
  endpoints: string[];
  /** How long one Store call may take, retries included. */
  timeoutMs: number;
  auth?: { username: string; password: string };
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
}

/** What a Store call is doing, for its errors: "put of key "x"". Writes say their outcome is unknown when they time out. */
export interface CallPurpose {
  action: string;
  write: boolean;
  /** The size of the value a write carries, for the error when etcd finds the request too large. */
  bytes?: number;
}

/**
 * gRPC keepalive finds a member that holds its connections but answers nothing (paused, cut off),
 * so a watch stream on it fails over. etcd counts pings closer than 5 s, or with no call under way,
 * as abuse and closes the connection.
 */
const KEEPALIVE_MS = 10_000;
const KEEPALIVE_TIMEOUT_MS = 5_000;
type Policy = NonNullable<NonNullable<IOptions["faultHandling"]>["global"]>;

/**
 * etcd3 retries a failed call at once on another member, with the first try's deadline. When the
 * first member hung, that deadline has passed: the retries fail on healthy members too and trip
 * their circuit breakers, and then no member is tried at all. The store retries by itself, with
 * a fresh deadline each time, so the client's own retry is a pass-through.
 */
const NO_RETRY = {
  execute: <T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T) => Promise.resolve().then(() => fn({ signal: new AbortController().signal })),
  onSuccess: () => ({ dispose: () => undefined }),
  onFailure: () => ({ dispose: () => undefined }),
} as unknown as Policy;

const RETRY_FIRST_MS = 25;
const RETRY_MAX_MS = 500;

function isTransient(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  if ((e as { isBrokenCircuitError?: boolean }).isBrokenCircuitError) return true;
  return isRecoverableError(e) || e instanceof GRPCGenericError || e instanceof EtcdError;
}

/** The etcd key of a byte range read or written: a Buffer of the UTF-8 text. */
export function bytes(text: string): Buffer {
  return Buffer.from(text, "utf8");
}

/** A condition that the key is unchanged since it was read (absent counts: its mod revision is 0). */
export function unchanged(key: Buffer, seen: IKeyValue | undefined): ICompare {
  return { key, target: CompareTarget.Mod, result: CompareResult.Equal, mod_revision: seen ? seen.mod_revision : 0 };
}

export function putOp(key: Buffer, value: string, lease?: string): IRequestOp {
  return { request_put: { key, value: bytes(value), ...(lease ? { lease } : {}) } };
}

export function deleteOp(key: Buffer): IRequestOp {
  return { request_delete_range: { key } };
}

export class EtcdConnection {
  readonly client: Etcd3;
  private readonly callTimeoutMs: number;
  private closed = false;

  constructor(private readonly opts: EtcdConnectOptions) {
    // One hung member must not eat a whole call's budget: each try gets a fifth of it, and after
    // three failures in a row etcd3's circuit breaker skips that member, so two tries remain.
    this.callTimeoutMs = Math.max(500, Math.floor(opts.timeoutMs / 5));
    const tls = opts.tls;
    this.client = new Etcd3({
      hosts: opts.endpoints,
      dialTimeout: opts.timeoutMs,
      ...(opts.auth ? { auth: { username: opts.auth.username, password: opts.auth.password } } : {}),
      ...(tls ? { credentials: { rootCertificate: tls.ca, ...(tls.key ? { privateKey: tls.key } : {}), ...(tls.cert ? { certChain: tls.cert } : {}) } } : {}),
      // Calls the store makes carry their own deadline; this one bounds those it does not (the token exchange).
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + this.callTimeoutMs }),
      faultHandling: { global: NO_RETRY },
      grpcOptions: {
        "grpc.keepalive_time_ms": KEEPALIVE_MS,
        "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
      },
    });
  }

  /** When a Store call that starts now must be over. */
  deadline(): number {
    return Date.now() + this.opts.timeoutMs;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Runs one etcd call for a Store call that must end by deadline. Transient failures (a member
   * down, no leader, a lost connection) are retried with backoff until then; a retried write is
   * safe because every write the store sends is conditional on what it read.
   */
  async attempt<T>(purpose: CallPurpose, deadline: number, call: (options: { deadline: Date }) => Promise<T>): Promise<T> {
    let delayMs = RETRY_FIRST_MS;
    for (;;) {
      this.assertOpen();
      // A Store call that keeps losing races to other writers ends at its deadline too.
      if (Date.now() >= deadline) throw this.unavailable(purpose, new Error("other writers kept changing what it read"));
      try {
        return await call({ deadline: new Date(Math.min(deadline, Date.now() + this.callTimeoutMs)) });
      } catch (e) {
        const final = this.finalError(e, purpose);
        if (final) throw final;
        if (Date.now() + delayMs >= deadline) throw this.unavailable(purpose, e);
        await sleep(delayMs * (0.5 + Math.random() / 2));
        delayMs = Math.min(RETRY_MAX_MS, delayMs * 2);
      }
    }
  }

  /** Several ranges read in one transaction without conditions, so all of them see one revision. */
  async read(purpose: CallPurpose, deadline: number, ranges: IRangeRequest[]): Promise<{ revision: number; results: IRangeResponse[] }> {
    const res = await this.attempt(purpose, deadline, (o) => this.client.kv.txn({ compare: [], success: ranges.map((r) => ({ request_range: r })) }, o));
    return { revision: Number(res.header.revision), results: res.responses.map((r) => r.response_range) };
  }

  /**
   * A write that happens only if every comparison holds. When one does not, the same transaction
   * reads `reread` instead, so the caller can decide again without another round trip.
   */
  async write(purpose: CallPurpose, deadline: number, compare: ICompare[], success: IRequestOp[], reread: IRangeRequest[] = []): Promise<{ succeeded: boolean; revision: number; results: IRangeResponse[] }> {
    const res: ITxnResponse = await this.attempt(purpose, deadline, (o) => this.client.kv.txn({ compare, success, failure: reread.map((r) => ({ request_range: r })) }, o));
    return { succeeded: res.succeeded, revision: Number(res.header.revision), results: res.succeeded ? [] : res.responses.map((r) => r.response_range) };
  }

  /** A lease that outlives ttlMs: etcd counts in whole seconds and raises short ones to its minimum. */
  async grantLease(purpose: CallPurpose, deadline: number, ttlMs: number): Promise<string> {
    const res = await this.attempt(purpose, deadline, (o) => this.client.leaseClient.leaseGrant({ TTL: Math.max(1, Math.ceil(ttlMs / 1000)) }, o));
    return res.ID;
  }

  /** Revokes a lease nobody needs any more; one that cannot be revoked now simply runs out. */
  dropLease(id: string | undefined): void {
    if (!id || id === "0" || this.closed) return;
    this.client.leaseClient.leaseRevoke({ ID: id }, { deadline: new Date(Date.now() + this.callTimeoutMs) }).catch(() => undefined);
  }

  close(): void {
    this.closed = true;
    this.client.close();
  }

  assertOpen(): void {
    if (this.closed) throw new Error("store is closed");
  }

  /** The error a failed call ends with at once, or undefined when trying again may help. */
  private finalError(e: unknown, purpose: CallPurpose): Error | undefined {
    if (this.closed || e instanceof ClientClosedError) return new Error("store is closed");
    const message = errorMessage(e);
    if ((e instanceof GRPCInvalidArgumentError && /request is too large/.test(message)) || (e instanceof GRPCResourceExhastedError && /larger than max/.test(message))) {
      const size = purpose.bytes === undefined ? "" : ` (a value of ${purpose.bytes} bytes)`;
      return new TurquoiseError(
        "USAGE",
        `etcd refused the ${purpose.action}${size} as too large: it takes requests up to its --max-request-bytes (1.5 MiB unless its operator changed it), and a write carries its value twice, in the key and in the change log; nothing was changed`,
        { data: { bytes: purpose.bytes } },
      );
    }
    const user = this.opts.auth?.username;
    if (e instanceof EtcdAuthenticationFailedError) {
      return new TurquoiseError("STATE_UNAVAILABLE", `etcd refused the credentials of user ${JSON.stringify(user)} (state.etcd.username and the password in state.etcd.password_env)`);
    }
    if (e instanceof EtcdPermissionDeniedError) {
      return new TurquoiseError("STATE_UNAVAILABLE", `etcd denied user ${JSON.stringify(user ?? "")} the ${purpose.action}: grant its role readwrite on the store's prefix`);
    }
    if (/user name is empty/.test(message)) {
      return new TurquoiseError("STATE_UNAVAILABLE", "etcd has authentication enabled: set state.etcd.username and state.etcd.password_env");
    }
    if (e instanceof GRPCInvalidArgumentError) return new TurquoiseError("INTERNAL", `etcd refused the ${purpose.action}: ${message}`);
    return isTransient(e) ? undefined : (e as Error);
  }

  private unavailable(purpose: CallPurpose, last: unknown): TurquoiseError {
    const outcome = purpose.write ? "; the write may or may not have been applied" : "";
    return new TurquoiseError(
      "STATE_UNAVAILABLE",
      `etcd did not answer the ${purpose.action} within ${formatDuration(this.opts.timeoutMs)} (endpoints ${this.opts.endpoints.join(", ")})${outcome}; last error: ${errorMessage(last)}`,
      { data: { endpoints: this.opts.endpoints } },
    );
  }
}
