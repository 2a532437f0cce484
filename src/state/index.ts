// The one place that picks a Store driver, so callers depend on the contract and not on a driver.
// Secrets a driver needs (the etcd password) are read here, from the environment, when it opens.
// The etcd driver is loaded only when a spec asks for it: its gRPC client costs every CLI command
// a third of a second of CPU to load.

import { readFileSync } from "node:fs";
import { TurquoiseError, errorMessage } from "../errors.js";
import type { EtcdSpec } from "../spec/types.js";
import type { Store } from "./contract.js";
import type { EtcdStore } from "./etcd.js";
import { MemoryStore } from "./memory.js";
import { SqliteStore } from "./sqlite.js";

export type { Store } from "./contract.js";

export interface OpenStoreOptions {
  driver: "sqlite" | "memory" | "etcd";
  path?: string;
  etcd?: EtcdSpec;
  /** Where the etcd driver looks for the password named by passwordEnv. */
  env?: NodeJS.ProcessEnv;
  /** Where a driver reports what no caller would otherwise hear of. */
  warn?: (message: string) => void;
}

export async function openStore(opts: OpenStoreOptions): Promise<Store> {
  switch (opts.driver) {
    case "memory":
      return new MemoryStore();
    case "sqlite":
      if (!opts.path) throw new TurquoiseError("USAGE", "the sqlite state driver needs a file path");
      return new SqliteStore(opts.path);
    case "etcd":
      return openEtcd(opts.etcd, opts.env ?? process.env, opts.warn);
    default:
      throw new TurquoiseError("USAGE", `unknown state driver "${String((opts as { driver: unknown }).driver)}"`);
  }
}

async function openEtcd(spec: EtcdSpec | undefined, env: NodeJS.ProcessEnv, warn: ((message: string) => void) | undefined): Promise<EtcdStore> {
  if (!spec) throw new TurquoiseError("USAGE", "the etcd state driver needs state.etcd with its endpoints");
  let auth: { username: string; password: string } | undefined;
  if (spec.username !== undefined) {
    const password = spec.passwordEnv === undefined ? undefined : env[spec.passwordEnv];
    if (!password) {
      throw new TurquoiseError("USAGE", `state.etcd.password_env names ${spec.passwordEnv ?? "no variable"}, which is not set (or empty) in the agent's environment: the password of etcd user ${JSON.stringify(spec.username)} goes there`);
    }
    auth = { username: spec.username, password };
  }
  const pem = (field: "ca" | "cert" | "key", file: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (e) {
      throw new TurquoiseError("USAGE", `cannot read state.etcd.tls.${field} ${file}: ${errorMessage(e)}`);
    }
  };
  const tls = spec.tls && { ca: pem("ca", spec.tls.ca), ...(spec.tls.cert ? { cert: pem("cert", spec.tls.cert) } : {}), ...(spec.tls.key ? { key: pem("key", spec.tls.key) } : {}) };
  const { EtcdStore } = await import("./etcd.js");
  return new EtcdStore({
    endpoints: spec.endpoints,
    prefix: spec.prefix,
    timeoutMs: spec.timeoutMs,
    ...(auth ? { auth } : {}),
    ...(tls ? { tls } : {}),
    ...(warn ? { warn } : {}),
  });
}
