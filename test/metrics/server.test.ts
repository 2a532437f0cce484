// The metrics endpoint against hostile clients: without the token (missing, wrong, almost right)
// a scraper gets 401 and no data, the token never appears in anything it or the log is told,
// garbage and huge heads are refused, a hung client or a hung proxy holds up no scrape.

import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import type http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { MIN_USER_TOKEN_LENGTH, readUserToken } from "../../src/auth/token.js";
import { AgentMetrics, PROXY_READ_TIMEOUT_MS } from "../../src/metrics/agent.js";
import { MAX_METRICS_CONNECTIONS, startMetricsServer } from "../../src/metrics/server.js";
import { TurquoiseError } from "../../src/errors.js";

interface Answer {
  /** Everything that came back: status line, headers, body. */
  raw: string;
  status: number;
  body: string;
}

/** One request as raw bytes on a fresh connection; resolves with all that came back before the server closed it. */
function send(port: number, text: string | Buffer, timeoutMs = 30_000): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port }, () => socket.write(text));
    let raw = "";
    socket.setEncoding("latin1");
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    socket.on("data", (d: string) => (raw += d));
    socket.on("error", reject);
    socket.on("close", () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(raw)?.[1] ?? 0);
      resolve({ raw, status, body: raw.slice(raw.indexOf("\r\n\r\n") + 4) });
    });
  });
}

const get = (port: number, headers: string[] = [], method = "GET", target = "/metrics") =>
  send(port, `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${headers.map((h) => `${h}\r\n`).join("")}\r\n`);

describe("the metrics endpoint", { timeout: 60_000 }, () => {
  const token = crypto.randomBytes(24).toString("hex");
  const logged: string[] = [];
  const answers: Answer[] = [];
  let server: http.Server;
  let port: number;
  let open: http.Server;
  let openPort: number;
  let proxyHangs = false;

  before(async () => {
    const metrics = new AgentMetrics({ services: ["books"], watches: [], version: "0.0.0-test", processMetrics: false });
    metrics.attach({
      liveReleases: async () => [{ service: "books", slot: "blue", release: "v7" }],
      degraded: async () => [],
      instances: () => [],
      // A proxy that does not answer, when the test says so.
      proxyMetrics: () => (proxyHangs ? new Promise<never>(() => {}) : Promise.resolve(undefined)),
    });
    const common = { host: "127.0.0.1", port: 0, render: () => metrics.render(), contentType: metrics.contentType, log: (l: string) => logged.push(l) };
    server = await startMetricsServer({ ...common, token });
    port = (server.address() as net.AddressInfo).port;
    open = await startMetricsServer({ ...common, token: undefined });
    openPort = (open.address() as net.AddressInfo).port;
  });
  after(async () => {
    for (const s of [server, open]) {
      s?.closeAllConnections();
      await new Promise((r) => s?.close(r));
    }
    // Nothing anyone was told, nor the agent's log, ever held the token.
    for (const a of answers) assert.ok(!a.raw.includes(token), `an answer held the token: ${a.raw.slice(0, 200)}`);
    for (const l of logged) assert.ok(!l.includes(token), `the log held the token: ${l}`);
  });
  const keep = (a: Answer): Answer => (answers.push(a), a);

  it("with the token: 200 and the text format", async () => {
    const a = keep(await get(port, [`Authorization: Bearer ${token}`]));
    assert.equal(a.status, 200);
    assert.match(a.raw, /content-type: text\/plain; version=0\.0\.4; charset=utf-8/i);
    assert.match(a.body, /^turquoise_service_release_info\{service="books",slot="blue",release="v7"\} 1$/m);
  });

  it("without it, or with a wrong, longer, shorter or differently sent one: 401 and no data", async () => {
    const wrong = [
      [],
      [`Authorization: Bearer ${crypto.randomBytes(24).toString("hex")}`],
      [`Authorization: Bearer ${token}x`],
      [`Authorization: Bearer ${token.slice(0, -1)}`],
      [`Authorization: Bearer ${token.slice(0, 8)}`],
      ["Authorization: Bearer "],
      [`Authorization: Basic ${Buffer.from(`x:${token}`).toString("base64")}`],
      [`Authorization: ${token}`],
      [`X-Token: ${token}`],
      [`Authorization: Bearer ${"a".repeat(4_000)}`],
    ];
    for (const headers of wrong) {
      for (const method of ["GET", "HEAD"]) {
        const a = keep(await get(port, headers, method));
        assert.equal(a.status, 401, `${method} with ${headers.join(" ").slice(0, 40)}`);
        assert.doesNotMatch(a.body, /turquoise_|release/);
        assert.match(a.raw, /www-authenticate: Bearer realm="turquoise metrics"/i);
      }
    }
  });

  it("only GET /metrics: other paths 404 and other methods 405, without data, token or not", async () => {
    for (const target of ["/", "/metrics/", "/v1/status", "/metrics/../metrics2", "/%2e%2e/metrics"]) {
      const a = keep(await get(port, [`Authorization: Bearer ${token}`], "GET", target));
      assert.equal(a.status, 404, target);
      assert.doesNotMatch(a.body, /turquoise_/);
    }
    for (const method of ["POST", "PUT", "DELETE"]) {
      const a = keep(await get(port, [`Authorization: Bearer ${token}`, "Content-Length: 0"], method));
      assert.equal(a.status, 405, method);
      assert.doesNotMatch(a.body, /turquoise_/);
    }
    // Without a token configured the endpoint is open, on its own listener only, and still GET /metrics only.
    assert.equal(keep(await get(openPort)).status, 200);
    assert.equal(keep(await get(openPort, [], "GET", "/v1/status")).status, 404);
  });

  it("garbage and a huge head are refused without data, and the endpoint keeps serving", async () => {
    // Random bytes could spell a valid request line, but not with a 4 KiB random head.
    const garbage = keep(await send(port, Buffer.concat([Buffer.from("\x00\x01"), crypto.randomBytes(4_096)])));
    assert.equal(garbage.status, 400, garbage.raw.slice(0, 80));
    const huge = keep(await get(port, [`Authorization: Bearer ${token}`, `X-Pad: ${"x".repeat(64 * 1024)}`]));
    assert.equal(huge.status, 431, huge.raw.slice(0, 80));
    assert.doesNotMatch(huge.body, /turquoise_/);
    assert.equal(keep(await get(port, [`Authorization: Bearer ${token}`])).status, 200);
  });

  it("a client that sends half a head, and a flood of idle connections, hold up no scrape", async () => {
    const hung = net.connect({ host: "127.0.0.1", port });
    await new Promise((r) => hung.once("connect", r));
    hung.write(`GET /metrics HTTP/1.1\r\nAuthorization: Bearer ${token.slice(0, 10)}`);
    const flood: net.Socket[] = [];
    const closedEarly: boolean[] = [];
    for (let i = 0; i < MAX_METRICS_CONNECTIONS + 8; i++) {
      const s = net.connect({ host: "127.0.0.1", port });
      s.on("error", () => undefined);
      const idx = closedEarly.push(false) - 1;
      s.on("close", () => (closedEarly[idx] = true));
      flood.push(s);
    }
    await Promise.all(flood.map((s) => new Promise((r) => (s.connecting ? s.once("connect", r).once("close", r) : r(undefined)))));
    // Closed at accept, whenever a loaded machine gets to it: wait for it rather than 200 ms.
    for (const deadline = Date.now() + 10_000; closedEarly.filter(Boolean).length < 8 && Date.now() < deadline;) await new Promise((r) => setTimeout(r, 20));
    assert.ok(closedEarly.filter(Boolean).length >= 8, `connections beyond ${MAX_METRICS_CONNECTIONS} are closed at accept (${closedEarly.filter(Boolean).length} were)`);
    for (const s of flood) s.destroy();
    await new Promise((r) => setTimeout(r, 200));
    const a = keep(await get(port, [`Authorization: Bearer ${token}`]));
    assert.equal(a.status, 200);
    assert.ok(!hung.destroyed, "the half-sent request is still waiting (its head timeout is 10 s), and did not hold this scrape up");
    hung.destroy();
  });

  it("a proxy that does not answer costs a scrape its proxy metrics only: turquoise_proxy_up 0", async () => {
    proxyHangs = true;
    try {
      const started = Date.now();
      // The wrong behaviour, waiting on the proxy, would hit this request's own 30 s timeout: 10× the bound.
      const a = keep(await send(port, `GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer ${token}\r\n\r\n`, 10 * PROXY_READ_TIMEOUT_MS));
      assert.equal(a.status, 200);
      assert.match(a.body, /^turquoise_proxy_up 0$/m);
      assert.match(a.body, /^turquoise_service_release_info\{/m);
      assert.ok(Date.now() - started >= PROXY_READ_TIMEOUT_MS - 100);
    } finally {
      proxyHangs = false;
    }
  });
});

describe("metrics.token_file", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "turquoise-metrics-token-"));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, text);
    return p;
  };
  const refusal = (f: string): TurquoiseError => {
    try {
      readUserToken(f, "metrics.token_file");
    } catch (e) {
      assert.ok(e instanceof TurquoiseError);
      return e;
    }
    throw new Error(`${f} was taken as a token`);
  };

  it("reads one word, trimmed", () => {
    const token = crypto.randomBytes(16).toString("hex");
    assert.equal(readUserToken(file("good", `\n  ${token}\n`), "metrics.token_file"), token);
  });

  it("refuses a missing, empty, short or two-word file, naming the file and the key but never the text", () => {
    const secret = "hunter2";
    const cases: Array<[string, RegExp]> = [
      [path.join(dir, "absent"), /cannot read .*absent \(ENOENT\)/],
      [file("empty", " \n"), /it is empty/],
      [file("short", `${secret}\n`), new RegExp(`fewer than ${MIN_USER_TOKEN_LENGTH}`)],
      [file("two", `${secret}-long-enough-to-pass ${secret}-and-another\n`), /more than one word/],
    ];
    for (const [f, why] of cases) {
      const e = refusal(f);
      assert.equal(e.code, "SPEC_INVALID");
      assert.match(e.message, /^metrics\.token_file: /);
      assert.ok(e.message.includes(f), e.message);
      assert.match(e.message, why);
      assert.ok(!e.message.includes(secret), e.message);
    }
  });
});
