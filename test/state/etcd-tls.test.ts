// The etcd store over TLS with client certificates, as state.etcd.tls configures it: a real
// etcd member that requires a certificate signed by a throwaway CA (made with openssl).

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { isTurquoiseError } from "../../src/errors.js";
import type { WatchEvent } from "../../src/state/contract.js";
import { openStore } from "../../src/state/index.js";
import { makeCerts, startEtcdCluster, type TestCerts, type TestEtcd } from "../support/etcd.js";

describe("EtcdStore over TLS", () => {
  let dir: string;
  let certs: TestCerts;
  let cluster: TestEtcd;

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "turquoise-etcd-tls-"));
    certs = makeCerts(dir);
    cluster = await startEtcdCluster({ members: 1, certs });
  });

  after(async () => {
    await cluster?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  const etcd = (tls: { ca: string; cert?: string; key?: string }, timeoutMs = 5_000) => ({ endpoints: cluster.endpoints, prefix: "/turquoise/tls/", timeoutMs, leaderTtlMs: 3_000, tls });

  it("reads, writes and watches with the CA and a client certificate from files", async () => {
    assert.match(cluster.endpoints[0]!, /^https:/);
    const store = await openStore({ driver: "etcd", etcd: etcd({ ca: certs.ca, cert: certs.clientCert, key: certs.clientKey }) });
    try {
      const seen: WatchEvent[] = [];
      const stop = store.watch("services/", (e) => seen.push(e), { fromRevision: 0 });
      const w = await store.put("services/web/color", "blue");
      assert.equal((await store.get("services/web/color"))?.value, "blue");
      const deadline = Date.now() + 5_000;
      while (seen.length < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      stop();
      assert.deepEqual(seen, [{ type: "put", key: "services/web/color", value: "blue", revision: w.revision }]);
    } finally {
      await store.close();
    }
  });

  it("fails with STATE_UNAVAILABLE within its timeout without a client certificate, or with another CA", async () => {
    const otherDir = mkdtempSync(path.join(os.tmpdir(), "turquoise-etcd-tls-other-"));
    try {
      const stranger = makeCerts(otherDir);
      for (const tls of [{ ca: certs.ca }, { ca: stranger.ca, cert: certs.clientCert, key: certs.clientKey }]) {
        const store = await openStore({ driver: "etcd", etcd: etcd(tls, 1_000) });
        const t0 = Date.now();
        try {
          await assert.rejects(store.get("k"), (e) => isTurquoiseError(e) && e.code === "STATE_UNAVAILABLE" && /did not answer the read of key "k" within 1s/.test(e.message));
          assert.ok(Date.now() - t0 < 10_000, "a refused handshake is not a hang: 10x the timeout is the bound");
        } finally {
          await store.close();
        }
      }
    } finally {
      rmSync(otherDir, { recursive: true, force: true });
    }
  });
});
