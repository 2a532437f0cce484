// Certificates over ACME, end to end against Debian's pebble on loopback: pebble's VA fetches the
// HTTP-01 token from the proxy's plain listener, the host's first handshake waits for its
// certificate, a forced renewal swaps it under keep-alive load without a failed request, and a
// restarted proxy serves what it has with the CA gone. The ACME manager itself against CAs that
// refuse or hang: it backs off, capped, and never blocks.

import assert from "node:assert/strict";
import { mkdtemp, rm, stat } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { AcmeManager } from "../../src/proxy/acme.js";
import { type RunningProxy, spawnProxy, stopProxy } from "../../src/proxy/builtin.js";
import { acmeBackoffMs, acmeCertFile, acmeDir, renewAt } from "../../src/proxy/tls-settings.js";
import { pidAlive } from "../../src/util/proc.js";
import { waitFor } from "../e2e/helpers.js";
import { startPebble, type TestPebble } from "../support/pebble.js";
import { request, route, type TestUpstream, startUpstream, tableWith } from "./helpers.js";
import { handshakeOutcome, httpsRequest, servedEverywhere, startHttpsLoad } from "./tls-client.js";

const HOST = "books.turquoise.test";

describe("certificates over ACME", { timeout: 240_000 }, () => {
  const dirs: string[] = [];
  const running: RunningProxy[] = [];
  const pebbles: TestPebble[] = [];
  const upstreams: TestUpstream[] = [];
  const tempDir = async (): Promise<string> => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "turquoise-acme-"));
    dirs.push(dir);
    return dir;
  };
  after(async () => {
    for (const p of running) {
      for (const w of (await p.proxy.health().catch(() => undefined))?.workers ?? []) if (pidAlive(w.pid)) process.kill(w.pid, "SIGKILL");
      if (pidAlive(p.pid)) process.kill(p.pid, "SIGKILL");
    }
    await Promise.all(pebbles.map((p) => p.stop()));
    await Promise.all(upstreams.map((u) => u.close()));
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  it("gets a certificate from pebble at a host's first handshake, renews it on demand under load with 0 failed requests, and serves it after a restart with the CA gone", async (t) => {
    const upstream = await startUpstream("app");
    upstreams.push(upstream);
    const stateDir = await tempDir();
    const spawn = async (): Promise<RunningProxy> => {
      const p = await spawnProxy({ stateDir, listenHost: "127.0.0.1", listenPort: 0, tlsListen: { host: "127.0.0.1", port: 0 }, workers: 2 });
      running.push(p);
      return p;
    };
    let p = await spawn();
    const pebble = await startPebble(p.listenPort);
    pebbles.push(pebble);
    const acme = { directoryUrl: pebble.directoryUrl, email: "ops@turquoise.test", caFile: pebble.caFile };
    // A handshake may wait for its certificate up to client_header: room for pebble on a busy machine.
    const table = tableWith(1, { timeouts: { clientHeaderMs: 60_000 }, tls: { certificates: [], acme, redirectHttp: true } }, route("books", "books:1", [upstream.upstream], { host: HOST }));
    await p.proxy.apply(table);
    // A crash at a bad moment: both serving workers die while the order is under way. The spare
    // and the new workers get the challenge from the supervisor, and the order goes through.
    const killed = ((await p.proxy.health()).workers ?? []).filter((w) => w.state === "serving").map((w) => w.pid);
    assert.equal(killed.length, 2);
    for (const pid of killed) process.kill(pid, "SIGKILL");
    const root = await pebble.issuingRoot();
    const tlsPort = p.tlsListen!.port;

    // First use: the handshake waits while the supervisor orders, pebble validates, the workers load.
    const firstAt = performance.now();
    const first = await httpsRequest({ port: tlsPort, host: HOST, ca: root, timeoutMs: 90_000 });
    t.diagnostic(`first request over TLS answered ${Math.round(performance.now() - firstAt)} ms after it was sent (the order ran meanwhile)`);
    assert.equal(first.status, 200);
    assert.equal(JSON.parse(first.text).headers["x-forwarded-proto"], "https");
    const serving = ((await p.proxy.health()).workers ?? []).filter((w) => w.state === "serving").map((w) => w.pid);
    assert.equal(serving.filter((pid) => killed.includes(pid)).length, 0, "the certificate came through the workers that replaced the dead ones");

    const certFile = acmeCertFile(stateDir, pebble.directoryUrl, HOST);
    assert.equal((await stat(certFile)).mode & 0o777, 0o600);
    assert.equal((await stat(path.join(acmeDir(stateDir, pebble.directoryUrl), "account.key"))).mode & 0o777, 0o600);
    const status = await p.proxy.tls();
    const host = status.acme.find((h) => h.host === HOST)!;
    assert.equal(host.state, "valid");
    assert.equal(host.fingerprint, first.fingerprint);
    const lifetime = Date.parse(host.notAfter!) - Date.parse(status.certificates[0]!.notBefore!);
    assert.ok(Math.abs(Date.parse(host.renewAt!) - (Date.parse(host.notAfter!) - lifetime / 3)) < 1_000, "renewal at 2/3 of the lifetime");

    // The plain listener: redirected to https, except the challenge path, which the proxy answers itself.
    const plain = `http://127.0.0.1:${p.listenPort}`;
    assert.equal((await request(`${plain}/shelf`, { headers: { host: HOST } })).headers.location, `https://${HOST}:${tlsPort}/shelf`);
    const hits = upstream.hits;
    assert.equal((await request(`${plain}/.well-known/acme-challenge/unknown-token`, { headers: { host: HOST } })).status, 404);
    assert.equal(upstream.hits, hits, "an ACME host's challenge path never reaches the app");

    // A name nobody configured gets no order: no certificate for whoever sends an SNI.
    assert.match(await handshakeOutcome({ port: tlsPort, host: "evil.turquoise.test", ca: root }), /alert handshake failure/);
    assert.deepEqual((await p.proxy.tls()).acme.map((h) => h.host), [HOST]);

    // Forced renewal under keep-alive and new-connection load.
    const load = startHttpsLoad({ port: tlsPort, host: HOST, ca: root, keepAlive: 3, fresh: 1 });
    const counts = load.counts;
    await waitFor("load", () => counts.ok >= 100);
    const renewAt0 = performance.now();
    const renewed = await p.proxy.renewCertificate(HOST);
    t.diagnostic(`forced renewal: served by every worker after ${Math.round(performance.now() - renewAt0)} ms`);
    assert.notEqual(renewed.fingerprint, first.fingerprint);
    const okAtRenewal = counts.ok;
    await servedEverywhere({ port: tlsPort, host: HOST, ca: root }, renewed.fingerprint!);
    await waitFor("load after the renewal", () => counts.ok >= okAtRenewal + 100);
    await load.stop();
    assert.deepEqual({ failed: counts.failed, errors: counts.errors }, { failed: 0, errors: [] });
    t.diagnostic(`requests during the renewal: ${counts.ok} answered, ${counts.failed} failed`);

    // The CA goes away and the proxy restarts: the certificate on disk serves at once, no order needed.
    await pebble.stop();
    pebbles.splice(pebbles.indexOf(pebble), 1);
    await stopProxy(stateDir);
    p = await spawn();
    const again = await httpsRequest({ port: p.tlsListen!.port, host: HOST, ca: root, timeoutMs: 30_000 });
    assert.equal(again.fingerprint, renewed.fingerprint);
    const after = (await p.proxy.tls()).acme[0]!;
    assert.equal(after.state, "valid");
    assert.equal(after.failures, 0, "nothing was ordered");
  });

  it("backs off after failed orders (doubling, capped) against a CA that refuses, and gives up on one that hangs, without blocking", async () => {
    const stateDir = await tempDir();
    const logs: string[] = [];
    const installed: string[] = [];
    const hooks = { publish: async () => undefined, withdraw: async () => undefined, installed: async (h: string) => void installed.push(h), log: (m: string, level = "info") => logs.push(`${level}: ${m}`) };
    // Refused: nothing listens on the port.
    const refused = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, "127.0.0.1", () => {
        const port = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(port));
      });
    });
    const manager = new AcmeManager(stateDir, hooks, { backoffMs: 300, maxBackoffMs: 1_200 });
    manager.configure({ directoryUrl: `http://127.0.0.1:${refused}/dir` }, new Set(["a.turquoise.test"]));
    await waitFor("three failed orders", () => manager.status()[0]!.failures >= 3, 120_000);
    const s = manager.status()[0]!;
    assert.equal(s.state, "waiting");
    assert.match(s.lastError!, new RegExp(`no answer from the ACME directory http://127.0.0.1:${refused}/dir`));
    // A handshake's request during the backoff orders nothing new.
    manager.request("a.turquoise.test");
    assert.notEqual(manager.status()[0]!.state, "issuing");
    manager.stop();
    assert.deepEqual(installed, []);
    assert.ok(logs.some((l) => /^warn: acme: a\.turquoise\.test: order failed \(1 in a row\).*next attempt in 0 s, the host has no certificate meanwhile/.test(l)), logs.join("\n"));
    assert.deepEqual([1, 2, 3, 4, 5, 30].map((n) => acmeBackoffMs(n, 300, 1_200)), [300, 600, 1_200, 1_200, 1_200, 1_200]);
    assert.deepEqual([1, 2, 9, 10].map((n) => acmeBackoffMs(n)), [60_000, 120_000, 256 * 60_000, 6 * 3_600_000]);
    assert.equal(renewAt(0, 90), 60);

    // Garbage: a "CA" that answers every request with a page of HTML.
    const junk = http.createServer((_req, res) => res.writeHead(200, { "content-type": "text/html" }).end("<html>" + "x".repeat(100_000) + "</html>"));
    await new Promise<void>((r) => junk.listen(0, "127.0.0.1", r));
    const confused = new AcmeManager(stateDir, hooks, { backoffMs: 60_000 });
    confused.configure({ directoryUrl: `http://127.0.0.1:${(junk.address() as net.AddressInfo).port}/dir` }, new Set(["c.turquoise.test"]));
    await waitFor("the garbage order failed", () => confused.status()[0]!.failures === 1, 20_000);
    assert.ok(confused.status()[0]!.lastError!.length < 500, `a bounded message: ${confused.status()[0]!.lastError}`);
    confused.stop();
    junk.closeAllConnections();
    junk.close();

    // Hung: a CA that accepts and never answers. The order is cut at its timeout and counted as failed.
    const held = new Set<net.Socket>();
    const hung = net.createServer((socket) => held.add(socket)).listen(0, "127.0.0.1");
    await new Promise((r) => hung.once("listening", r));
    const slow = new AcmeManager(stateDir, hooks, { backoffMs: 60_000, orderTimeoutMs: 1_000 });
    const started = Date.now();
    slow.configure({ directoryUrl: `http://127.0.0.1:${(hung.address() as net.AddressInfo).port}/dir` }, new Set(["b.turquoise.test"]));
    await waitFor("the hung order given up", () => slow.status()[0]!.failures === 1, 20_000);
    assert.ok(Date.now() - started < 15_000, "cut at its timeout, not the library's 30 s per request times its retries");
    assert.match(slow.status()[0]!.lastError!, /no certificate within 1000 ms/);
    slow.stop();
    hung.close();
    for (const socket of held) socket.destroy();
  });
});
