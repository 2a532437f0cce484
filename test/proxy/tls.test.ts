// TLS termination at the built-in proxy, as real processes on loopback with real certificates from
// a test CA: SNI for two hosts, certificates replaced on disk under keep-alive load, a broken file
// that keeps the old certificate serving, the plain listener's redirect, and hostile clients.

import assert from "node:assert/strict";
import { copyFile, mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { after, before, describe, it } from "node:test";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { type RunningProxy, spawnProxy } from "../../src/proxy/builtin.js";
import type { TlsSettings } from "../../src/proxy/contract.js";
import { pidAlive } from "../../src/util/proc.js";
import { WebSocket, WebSocketServer } from "ws";
import { waitFor } from "../e2e/helpers.js";
import { createTestCa, type TestCa, type TestCertificate } from "../../bench/lib/certs.js";
import { json, RawClient, refusedPort, request, route, type TestSettings, type TestUpstream, sleep, startUpstream, tableWith } from "./helpers.js";
import { clientHello, handshakeOutcome, httpsRequest, servedEverywhere, startHttpsLoad } from "./tls-client.js";

const execFileP = promisify(execFile);
const TURQUOISE_JS = fileURLToPath(new URL("../../../bin/turquoise.js", import.meta.url));

interface Served {
  p: RunningProxy;
  stateDir: string;
  /** The TLS listener's port. */
  port: number;
  plain: string;
  /** Copies of the certificates, in a directory the test may rewrite. */
  files: Record<string, { certFile: string; keyFile: string }>;
}

describe("TLS at the built-in proxy", { timeout: 180_000 }, () => {
  let ca: TestCa;
  let certA: TestCertificate;
  let certB: TestCertificate;
  let upstream: TestUpstream;
  const dirs: string[] = [];
  const running: RunningProxy[] = [];

  before(async () => {
    ca = await createTestCa();
    certA = await ca.issue("a", ["a.test"]);
    certB = await ca.issue("b", ["b.test", "www.b.test"]);
    upstream = await startUpstream("app");
  });

  after(async () => {
    for (const p of running) {
      for (const w of (await p.proxy.health().catch(() => undefined))?.workers ?? []) if (pidAlive(w.pid)) process.kill(w.pid, "SIGKILL");
      if (pidAlive(p.pid)) process.kill(p.pid, "SIGKILL");
    }
    await upstream.close();
    await ca.close();
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  /** A proxy with a TLS listener serving a.test and b.test (plus `extra` routes), each from its own copy of the files. */
  const serve = async (opts: { workers?: number; tls?: Partial<TlsSettings>; settings?: TestSettings } = {}): Promise<Served> => {
    const stateDir = await mkdtemp(path.join(os.tmpdir(), "turquoise-tls-"));
    dirs.push(stateDir);
    const certDir = path.join(stateDir, "certs");
    await rm(certDir, { recursive: true, force: true });
    await import("node:fs/promises").then((fs) => fs.mkdir(certDir));
    const files: Served["files"] = {};
    for (const [name, c] of Object.entries({ a: certA, b: certB })) {
      files[name] = { certFile: path.join(certDir, `${name}.pem`), keyFile: path.join(certDir, `${name}.key`) };
      await copyFile(c.certFile, files[name]!.certFile);
      await copyFile(c.keyFile, files[name]!.keyFile);
    }
    const p = await spawnProxy({ stateDir, listenHost: "127.0.0.1", listenPort: 0, tlsListen: { host: "127.0.0.1", port: 0 }, workers: opts.workers ?? 1 });
    running.push(p);
    const tlsSettings: TlsSettings = {
      certificates: [
        { hosts: ["a.test"], ...files.a! },
        { hosts: ["b.test", "www.b.test"], ...files.b! },
      ],
      redirectHttp: false,
      ...opts.tls,
    };
    await p.proxy.apply(
      tableWith(
        1,
        { ...opts.settings, tls: tlsSettings },
        route("a", "a:1", [upstream.upstream], { host: "a.test" }),
        route("b", "b:1", [upstream.upstream], { host: "b.test" }),
        route("plain", "plain:1", [upstream.upstream], { host: "plain.test" }),
      ),
    );
    assert.ok(p.tlsListen, "the proxy reports its TLS listener");
    // The first load of the files runs beside the apply: wait until a handshake gets a certificate.
    await waitFor("the certificates loaded", async () => (await handshakeOutcome({ port: p.tlsListen!.port, host: "a.test", ca: ca.pem })) === "ok");
    // The spare too (it starts once the proxy serves): a test that breaks a file must not race its first load.
    await waitFor("the spare standing by", async () => ((await p.proxy.health()).workers ?? []).some((w) => w.state === "standby"));
    await waitFor("every worker's certificates loaded", async () => (await p.proxy.tls()).certificates.every((c) => c.loaded || c.source === "acme"));
    return { p, stateDir, port: p.tlsListen!.port, plain: `http://127.0.0.1:${p.listenPort}`, files };
  };

  it("serves two hosts by SNI, each with its own certificate, and tells the upstream the request came over https", async () => {
    const s = await serve({ tls: { hsts: "max-age=31536000; includeSubDomains" } });
    const a = await httpsRequest({ port: s.port, host: "a.test", ca: ca.pem, path: "/x?y=1" });
    const b = await httpsRequest({ port: s.port, host: "www.b.test", ca: ca.pem });
    assert.equal(a.status, 200);
    assert.equal(a.fingerprint, certA.fingerprint);
    assert.equal(b.fingerprint, certB.fingerprint);
    const seen = json<{ url: string; headers: Record<string, string> }>({ status: a.status, headers: a.headers, text: a.text });
    assert.equal(seen.url, "/x?y=1");
    assert.equal(seen.headers["x-forwarded-proto"], "https");
    assert.match(seen.headers.forwarded!, /proto=https/);
    assert.equal(a.headers["strict-transport-security"], "max-age=31536000; includeSubDomains");
    // Plain HTTP on the other listener is still plain, and gets no HSTS.
    const plain = await request(`${s.plain}/`, { headers: { host: "plain.test" } });
    assert.equal(json<{ headers: Record<string, string> }>(plain).headers["x-forwarded-proto"], "http");
    assert.equal(plain.headers["strict-transport-security"], undefined);
    const stats = await s.p.proxy.stats();
    assert.ok((stats.tls?.handshakes ?? 0) >= 3, `handshakes counted: ${JSON.stringify(stats.tls)}`);
    const status = await s.p.proxy.tls();
    assert.deepEqual(status.certificates.map((c) => [c.hosts, c.loaded, c.fingerprint]), [
      [["a.test"], true, certA.fingerprint],
      [["b.test", "www.b.test"], true, certB.fingerprint],
    ]);
  });

  it("tunnels a WebSocket over TLS (wss), and holds the TLS listener to max_connections", async () => {
    const s = await serve({ settings: { limits: { maxConnections: 2 } } });
    const wss = new WebSocketServer({ server: upstream.server });
    wss.on("connection", (socket) => socket.on("message", (data) => socket.send(`echo:${String(data)}`)));
    // SNI and Host say a.test while the connection goes to 127.0.0.1 (ws passes its options on to tls.connect).
    const tlsOptions: Record<string, unknown> = { servername: "a.test", ca: ca.pem, headers: { host: "a.test" } };
    const ws = new WebSocket(`wss://127.0.0.1:${s.port}/chat`, tlsOptions);
    try {
      const echoed = await new Promise<string>((resolve, reject) => {
        ws.once("open", () => ws.send("over tls"));
        ws.once("message", (data) => resolve(String(data)));
        ws.once("error", reject);
      });
      assert.equal(echoed, "echo:over tls");
      // The tunnel is one connection; a second completes its handshake; a third is closed at accept.
      const second = tls.connect({ host: "127.0.0.1", port: s.port, servername: "a.test", ca: ca.pem });
      await new Promise<void>((resolve, reject) => second.once("secureConnect", resolve).once("error", reject));
      assert.match(await handshakeOutcome({ port: s.port, host: "a.test", ca: ca.pem }), /socket hang up|ECONNRESET|disconnected/);
      second.destroy();
      assert.ok((await s.p.proxy.stats()).rejected!.connections >= 1);
    } finally {
      ws.terminate();
      wss.close();
    }
  });

  it("refuses a name it has no certificate for, a hello without a name, and TLS 1.1, each with an alert, and serves on", async () => {
    const s = await serve();
    assert.match(await handshakeOutcome({ port: s.port, host: "plain.test", ca: ca.pem }), /alert handshake failure/);
    assert.match(await handshakeOutcome({ port: s.port, host: "", ca: ca.pem }), /alert handshake failure/);
    assert.match(await handshakeOutcome({ port: s.port, host: "a.test", ca: ca.pem, minVersion: "TLSv1", maxVersion: "TLSv1.1" }), /alert protocol version|unsupported protocol/);
    assert.equal((await httpsRequest({ port: s.port, host: "a.test", ca: ca.pem })).status, 200);
    const t = (await s.p.proxy.stats()).tls!;
    assert.ok(t.noCertificate >= 1 && t.failed >= 3, JSON.stringify(t));
  });

  it("redirects a TLS host's plain requests to https (308, path and query kept), and leaves other hosts on plain HTTP", async () => {
    // shop.test is an ACME host whose CA refuses: it has no certificate, so it is not redirected.
    const s = await serve({ tls: { redirectHttp: true, acme: { directoryUrl: `http://127.0.0.1:${await refusedPort()}/dir`, hosts: ["shop.test"] } } });
    const r = await request(`${s.plain}/books?page=2`, { method: "POST", headers: { host: "a.test:8080", "content-length": "3" }, body: "abc" });
    assert.equal(r.status, 308);
    assert.equal(r.headers.location, `https://a.test:${s.port}/books?page=2`);
    assert.equal(r.headers.connection, "close", "a body left unread ends the connection");
    const wild = await request(`${s.plain}/`, { headers: { host: "www.b.test" } });
    assert.equal(wild.headers.location, `https://www.b.test:${s.port}/`);
    const plain = await request(`${s.plain}/`, { headers: { host: "plain.test" } });
    assert.equal(plain.status, 200, "a host without a certificate is not sent to a handshake that would fail");
    // No ACME here: a challenge path is the app's own, routed like any other.
    const challenge = await request(`${s.plain}/.well-known/acme-challenge/abc`, { headers: { host: "plain.test" } });
    assert.equal(json<{ url: string }>(challenge).url, "/.well-known/acme-challenge/abc");
    const shop = await request(`${s.plain}/cart`, { headers: { host: "shop.test" } });
    assert.deepEqual([shop.status, json<{ error: string }>(shop).error], [404, "no route"], "no certificate yet: no redirect");
    // An ACME host's challenge path is the proxy's own, whatever the token.
    const token = await request(`${s.plain}/.well-known/acme-challenge/not-one-of-ours`, { headers: { host: "shop.test" } });
    assert.deepEqual([token.status, token.text], [404, "no such ACME challenge\n"]);
    // A WebSocket upgrade on the plain listener is redirected too, on a raw connection.
    const ws = await RawClient.connect(s.p.listenPort);
    ws.write("GET /live HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert.ok(await ws.waitFor((t) => t.includes("\r\n\r\n")));
    assert.match(ws.received, /^HTTP\/1\.1 308 [^\r]*\r\nLocation: https:\/\/a\.test:\d+\/live\r\n/);
    ws.destroy();
  });

  it("swaps a certificate replaced on disk (by rename) while keep-alive clients keep requesting: 0 failed, no connection dropped", async () => {
    const s = await serve({ workers: 2 });
    const next = await ca.issue("a-next", ["a.test"]);
    const load = startHttpsLoad({ port: s.port, host: "a.test", ca: ca.pem, keepAlive: 4 });
    const counts = load.counts;
    await waitFor("keep-alive traffic", () => counts.ok >= 200);
    // As certbot and most tools do: new files beside the old, renamed over them one after the other.
    const { certFile, keyFile } = s.files.a!;
    await writeFile(`${certFile}.new`, next.certPem);
    await writeFile(`${keyFile}.new`, next.keyPem);
    await rename(`${certFile}.new`, certFile);
    await rename(`${keyFile}.new`, keyFile);
    const okAtSwap = counts.ok;
    await servedEverywhere({ port: s.port, host: "a.test", ca: ca.pem }, next.fingerprint);
    await waitFor("keep-alive traffic after the swap", () => counts.ok >= okAtSwap + 200);
    await load.stop();
    assert.deepEqual({ failed: counts.failed, errors: counts.errors }, { failed: 0, errors: [] });
    assert.ok(counts.reused > counts.ok / 2, `requests reused their connections: ${JSON.stringify(counts)}`);
    const status = await s.p.proxy.tls();
    assert.equal(status.certificates[0]!.fingerprint, next.fingerprint);
    assert.equal(status.certificates[0]!.error, undefined);
  });

  it("keeps the old certificate serving when a broken one is written, reports why, and takes the next good one", async () => {
    const s = await serve();
    const { certFile, keyFile } = s.files.a!;
    // Loading is asynchronous: break the file only once the good one serves, or it is never loaded at all.
    await waitFor("the first certificate loaded", async () => (await s.p.proxy.tls()).certificates[0]?.fingerprint === certA.fingerprint);
    await writeFile(certFile, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n");
    const status = await waitFor("the failure reported", async () => {
      const t = await s.p.proxy.tls();
      return t.certificates[0]!.error !== undefined ? t : undefined;
    });
    assert.match(status.certificates[0]!.error!, /a\.pem: its first certificate cannot be parsed/);
    assert.equal(status.certificates[0]!.loaded, true);
    assert.equal((await httpsRequest({ port: s.port, host: "a.test", ca: ca.pem })).fingerprint, certA.fingerprint, "the old certificate still serves");
    // A key of another pair is refused the same way.
    const other = await ca.issue("a-other", ["a.test"]);
    await writeFile(certFile, other.certPem);
    await waitFor("the mismatch reported", async () => /does not belong to the certificate/.test((await s.p.proxy.tls()).certificates[0]!.error ?? ""));
    assert.equal((await httpsRequest({ port: s.port, host: "a.test", ca: ca.pem })).fingerprint, certA.fingerprint);
    const log = await readFile(path.join(s.stateDir, "proxy.log"), "utf8");
    assert.match(log, /cannot load the certificate for a\.test: .*the one loaded before keeps serving/);
    // The operator's view: `turquoise proxy tls` runs although the spec names the broken file.
    const spec = path.join(s.stateDir, "turquoise.yml");
    await writeFile(
      spec,
      [
        "version: 1",
        `state_dir: ${JSON.stringify(s.stateDir)}`,
        "proxy:",
        `  listen: "127.0.0.1:${s.p.listenPort}"`,
        `  tls: { listen: "127.0.0.1:${s.port}", certificates: [{ hosts: [a.test], cert_file: ${JSON.stringify(certFile)}, key_file: ${JSON.stringify(keyFile)} }] }`,
        "services:",
        "  a: { command: [node, s.js], cwd: 'r/{release}', route: { host: a.test }, health: { tcp: true } }",
        "",
      ].join("\n"),
    );
    const cli = await execFileP(process.execPath, [TURQUOISE_JS, "proxy", "tls", "-f", spec]);
    assert.match(cli.stdout, /a\.test {2}file {2}valid until \S+ {2}LOAD FAILED: .*does not belong to the certificate/);
    await assert.rejects(execFileP(process.execPath, [TURQUOISE_JS, "validate", "-f", spec]), /proxy\.tls\.certificates\[0\]\.key_file: .*does not belong to the certificate/);
    // Its key arrives: the pair loads, the error clears.
    await writeFile(keyFile, other.keyPem);
    await waitFor("the new pair served", async () => (await httpsRequest({ port: s.port, host: "a.test", ca: ca.pem })).fingerprint === other.fingerprint);
    assert.equal((await s.p.proxy.tls()).certificates[0]!.error, undefined);
  });

  it("survives hostile clients: garbage for a ClientHello, a stalled handshake, a 60 KB server name, renegotiation", async () => {
    const s = await serve({ settings: { timeouts: { clientHeaderMs: 1_000 } } });
    const good = async (): Promise<void> => assert.equal((await httpsRequest({ port: s.port, host: "a.test", ca: ca.pem })).status, 200);

    // Plain HTTP, then 64 KB of noise, where a ClientHello belongs: closed, nothing routed.
    const hits = upstream.hits;
    const http = await RawClient.connect(s.port);
    http.write("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert.ok(await http.waitClose(5_000), "a plain request on the TLS port is closed");
    assert.doesNotMatch(http.received, /HTTP\/1\.1/);
    const noise = await RawClient.connect(s.port);
    noise.write(Buffer.alloc(65_536, 0xab));
    assert.ok(await noise.waitClose(5_000));
    assert.equal(upstream.hits, hits);
    await good();

    // A handshake that stalls after 10 bytes is closed at clientHeaderMs (1 s here; Node's own default is 120 s).
    const stalled = await RawClient.connect(s.port);
    stalled.write(clientHello("a.test").subarray(0, 10));
    assert.ok(await stalled.waitClose(20_000));
    assert.ok(stalled.closedAfterMs >= 900 && stalled.closedAfterMs < 12_000, `closed after ${Math.round(stalled.closedAfterMs)} ms`);

    // A server name of 60,000 bytes, over four records.
    const huge = await RawClient.connect(s.port);
    huge.write(clientHello(`${"a".repeat(59_990)}.test`));
    assert.ok(await huge.waitClose(5_000));
    await good();

    // Renegotiation: refused with an alert; the next connection is served.
    const renegotiated = await new Promise<string>((resolve) => {
      const socket = tls.connect({ host: "127.0.0.1", port: s.port, servername: "a.test", ca: ca.pem, maxVersion: "TLSv1.2" }, () => {
        socket.renegotiate({}, (err) => (err ? resolve(err.message) : undefined));
        socket.write("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
      });
      socket.on("error", (e) => resolve(e.message));
      socket.on("close", () => resolve("closed"));
    });
    assert.match(renegotiated, /no renegotiation/);
    await good();

    const t = (await s.p.proxy.stats()).tls!;
    assert.ok(t.timedOut >= 1, `the stalled handshake counted: ${JSON.stringify(t)}`);
    assert.ok(t.failed >= 4, JSON.stringify(t));
    // The worker is the one that started: nothing above crashed it.
    const workers = (await s.p.proxy.health()).workers!;
    assert.equal(workers.filter((w) => w.state === "serving").length, 1);
    assert.equal(workers[0]!.generation, 0);
    await sleep(0);
  });
});
