// The etcd store against a real three-member etcd cluster on loopback: the shared Store contract,
// then what only a replicated store has to prove (watches across broken connections and
// compaction, leases, members going away, a cluster that does not answer).

import { randomBytes } from "node:crypto";
import { after } from "node:test";
import { EtcdStore } from "../../src/state/etcd.js";
import { startEtcdCluster, type TestEtcd } from "../support/etcd.js";
import { runStoreContract } from "./contract.test-suite.js";

let clusterStarted: Promise<TestEtcd> | undefined;
/** One cluster for the whole file: starting one takes seconds, a fresh prefix per test isolates them. */
function cluster(): Promise<TestEtcd> {
  clusterStarted ??= startEtcdCluster();
  return clusterStarted;
}
after(async () => (await clusterStarted)?.destroy());

function freshPrefix(): string {
  return `/turquoise-test/${randomBytes(6).toString("hex")}/`;
}

runStoreContract("etcd", async () => {
  const { endpoints } = await cluster();
  const store = new EtcdStore({ endpoints, prefix: freshPrefix(), timeoutMs: 5_000 });
  return { store, cleanup: () => store.close() };
});
