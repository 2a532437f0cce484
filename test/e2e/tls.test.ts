// End to end: proxy.tls in turquoise.yml reaches the proxy the agent starts; a deploy flips over
// HTTPS under keep-alive load without a failed request; a new tls.listen restarts the proxy on it.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, describe, it } from "node:test";
import { createTestCa, type TestCa } from "../../bench/lib/certs.js";
import type { Workspace } from "../../src/demo/workspace.js";
import { freePort } from "../../src/util/net.js";
import { get, RELEASE_KINDS, waitFor, workspaceWith } from "./helpers.js";
import { httpsRequest, startHttpsLoad } from "../proxy/tls-client.js";

const HOST = "books.turquoise.test";

/** The workspace's proxy line, with a TLS listener on tlsPort serving HOST from the CA's files. */
function withTls(ws: Workspace, tlsPort: number, cert: { certFile: string; keyFile: string }): void {
  const spec = fs.readFileSync(ws.specFile, "utf8");
  const next = spec.replace(
    /^proxy: \{ listen: ("127\.0\.0\.1:\d+")(?:, tls: .*)? \}$/m,
    (_m, listen: string) =>
      `proxy: { listen: ${listen}, tls: { listen: "127.0.0.1:${tlsPort}", certificates: [{ hosts: [${HOST}], cert_file: ${JSON.stringify(cert.certFile)}, key_file: ${JSON.stringify(cert.keyFile)} }], hsts: "max-age=60" } }`,
  );
  assert.notEqual(next, spec, "the workspace's proxy line was found");
  fs.writeFileSync(ws.specFile, next);
}

describe("TLS through the agent", () => {
  const spaces: Workspace[] = [];
  let ca: TestCa | undefined;
  after(async () => {
    for (const ws of spaces) await ws.destroy();
    await ca?.close();
  });

  it("serves the live release over HTTPS, flips under keep-alive HTTPS load with 0 failed, and moves to a new TLS port", async () => {
    ca = await createTestCa();
    const cert = await ca.issue("books", [HOST], { days: 30 });
    const ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.good("v2") }, { replicas: 1 });
    spaces.push(ws);
    const tlsPort = await freePort();
    withTls(ws, tlsPort, cert);
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);

    const first = await httpsRequest({ port: tlsPort, host: HOST, ca: ca.pem, path: "/api/v1/books" });
    assert.equal(first.status, 200);
    assert.equal(first.headers["x-release"], "v1");
    assert.equal(first.fingerprint, cert.fingerprint);
    assert.equal(first.headers["strict-transport-security"], "max-age=60");
    // redirect_http is on by default: the plain listener sends this host to https.
    const plain = await get(`${ws.proxyUrl}/api/v1/books?x=1`, { host: HOST });
    assert.equal(plain.status, 308);
    assert.equal(plain.headers.location, `https://${HOST}:${tlsPort}/api/v1/books?x=1`);

    const load = startHttpsLoad({ port: tlsPort, host: HOST, ca: ca.pem, path: "/api/v1/books", keepAlive: 4, fresh: 1 });
    await waitFor("HTTPS load on v1", () => load.counts.ok >= 100);
    await ws.cli(["deploy", "books", "--release", "v2"]);
    await waitFor("HTTPS load on v2", () => (load.counts.releases.v2 ?? 0) >= 100);
    const counts = await load.stop();
    assert.deepEqual({ failed: counts.failed, errors: counts.errors }, { failed: 0, errors: [] });

    // Another TLS port in the spec: the agent's next start restarts the proxy on it.
    const movedPort = await freePort();
    withTls(ws, movedPort, cert);
    await ws.cli(["down", "--agent-only"]);
    await ws.cli(["up", "--detach"]);
    const moved = await waitFor("HTTPS on the new port", async () => {
      try {
        return await httpsRequest({ port: movedPort, host: HOST, ca: ca!.pem, path: "/api/v1/books" });
      } catch {
        return undefined;
      }
    });
    assert.equal(moved.headers["x-release"], "v2");
    const log = fs.readFileSync(path.join(ws.dir, ".turquoise", "agent.log"), "utf8");
    assert.match(log, new RegExp(`the running proxy's TLS listener is 127\\.0\\.0\\.1:${tlsPort} but .* says 127\\.0\\.0\\.1:${movedPort}: restarting it`));

    // The proxy's supervisor killed: the agent starts it again, its TLS listener with it.
    const { pid } = JSON.parse(fs.readFileSync(path.join(ws.dir, ".turquoise", "proxy.json"), "utf8")) as { pid: number };
    process.kill(pid, "SIGKILL");
    const again = await waitFor("HTTPS from the restarted proxy", async () => {
      const now = JSON.parse(fs.readFileSync(path.join(ws.dir, ".turquoise", "proxy.json"), "utf8")) as { pid: number };
      if (now.pid === pid) return undefined;
      try {
        return await httpsRequest({ port: movedPort, host: HOST, ca: ca!.pem, path: "/api/v1/books" });
      } catch {
        return undefined;
      }
    });
    assert.equal(again.headers["x-release"], "v2");
  });
});
