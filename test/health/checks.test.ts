// Health checks: one probe's verdict, the passing/warning/critical state machine, and the deploy's
// readiness wait, which fails fast once the app answers that it is unhealthy.
import assert from "node:assert/strict";
import { createServer as createHttpServer, type RequestListener, type Server as HttpServer } from "node:http";
import { createServer as createTcpServer, type AddressInfo, type Server } from "node:net";
import { after, describe, test } from "node:test";
import { CHECK_CONNECTION_MAX_AGE_MS, CHECK_CONNECTION_MAX_IDLE_MS, CHECK_HISTORY_LENGTH, CheckConnection, CheckState, runHealthCheck, waitHealthy, whyNotHealthy, type CheckResult } from "../../src/health/checks.js";
import type { HealthSpec } from "../../src/spec/types.js";

const servers: Server[] = [];
after(async () => {
  for (const server of servers) {
    (server as HttpServer).closeAllConnections?.();
    await new Promise((resolve) => server.close(resolve));
  }
});

async function listen(server: Server): Promise<{ host: string; port: number }> {
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { host: "127.0.0.1", port: (server.address() as AddressInfo).port };
}

const httpServer = (handler: RequestListener) => listen(createHttpServer(handler));

const respond = (code: number, body = "") => httpServer((_req, res) => res.writeHead(code).end(body));

/** A port nothing listens on: taken from the kernel, then given back. */
async function closedPort(): Promise<{ host: string; port: number }> {
  const server = createTcpServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return { host: "127.0.0.1", port };
}

function spec(overrides: Partial<HealthSpec> = {}): HealthSpec {
  return { http: "/healthz", intervalMs: 1_000, timeoutMs: 1_000, successBeforePassing: 1, failuresBeforeCritical: 1, ...overrides };
}

describe("runHealthCheck", () => {
  test("HTTP 2xx is passing", async () => {
    let path = "";
    const target = await httpServer((req, res) => {
      path = req.url ?? "";
      res.writeHead(200).end("fine");
    });
    const result = await runHealthCheck(target, spec());
    assert.equal(result.status, "passing");
    assert.equal(result.output, "HTTP 200 OK");
    assert.equal(path, "/healthz");
    assert.ok(result.durationMs >= 0 && result.durationMs < 1_000);
  });

  test("HTTP 429 is warning", async () => {
    const result = await runHealthCheck(await respond(429, "slow down"), spec());
    assert.equal(result.status, "warning");
    assert.equal(result.output, "HTTP 429 Too Many Requests: slow down");
  });

  test("HTTP 500 is critical, with the start of the body in the output", async () => {
    const result = await runHealthCheck(await respond(500, `database down ${"x".repeat(1_000)}`), spec());
    assert.equal(result.status, "critical");
    assert.ok(result.output.startsWith("HTTP 500 Internal Server Error: database down xxx"));
    assert.equal(result.output.length, "HTTP 500 Internal Server Error: ".length + 200);
  });

  test("a refused connection is critical and says so", async () => {
    const result = await runHealthCheck(await closedPort(), spec());
    assert.equal(result.status, "critical");
    assert.match(result.output, /ECONNREFUSED/);
  });

  test("a server that never answers is critical after the timeout", async () => {
    const target = await httpServer(() => {});
    const result = await runHealthCheck(target, spec({ timeoutMs: 200 }));
    assert.equal(result.status, "critical");
    assert.match(result.output, /timed out after 200ms/);
    assert.ok(result.durationMs >= 190 && result.durationMs < 1_000, `took ${result.durationMs}ms`);
  });

  test("each HTTP check opens its own connection, asks for it to be closed and names the host", async () => {
    const heads: string[] = [];
    const ports = new Set<number>();
    const target = await httpServer((req, res) => {
      heads.push(`${req.headers.host} ${req.headers.connection}`);
      ports.add(req.socket.remotePort!);
      res.writeHead(204).end();
    });
    for (let i = 0; i < 3; i++) assert.equal((await runHealthCheck(target, spec())).output, "HTTP 204 No Content");
    assert.deepEqual(heads, Array(3).fill(`127.0.0.1:${target.port} close`));
    assert.equal(ports.size, 3);
  });

  test("a chunked failing body is shown de-chunked, and a UTF-8 one as text", async () => {
    const target = await httpServer((_req, res) => {
      res.writeHead(503, { "content-type": "text/plain; charset=utf-8" });
      res.write("draining: ");
      setTimeout(() => res.end("bientôt de retour"), 20);
    });
    const result = await runHealthCheck(target, spec());
    assert.equal(result.status, "critical");
    assert.equal(result.output, "HTTP 503 Service Unavailable: draining: bientôt de retour");
  });

  /** A server that writes these raw pieces, `gapMs` apart, then closes. */
  const raw = (pieces: string[], gapMs = 10) =>
    listen(createTcpServer((socket) => {
      socket.once("data", async () => {
        for (const p of pieces) {
          socket.write(p);
          await new Promise((r) => setTimeout(r, gapMs));
        }
        socket.end();
      });
    }));

  test("a status line and head split across reads are put together", async () => {
    const target = await raw(["HT", "TP/1.1 4", "29 Too Many\r\nContent-Le", "ngth: 4\r\n\r", "\nbusy"]);
    assert.deepEqual(await runHealthCheck(target, spec()).then((r) => [r.status, r.output]), ["warning", "HTTP 429 Too Many: busy"]);
  });

  test("interim 1xx answers are skipped for the final one", async () => {
    const hinted = await raw(["HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]);
    assert.deepEqual(await runHealthCheck(hinted, spec()).then((r) => [r.status, r.output]), ["passing", "HTTP 200 OK"]);
    const failing = await raw(["HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Broken\r\nContent-Length: 3\r\n\r\nbad"]);
    assert.deepEqual(await runHealthCheck(failing, spec()).then((r) => [r.status, r.output]), ["critical", "HTTP 500 Broken: bad"]);
  });

  test("a body that ends with the connection, and a 304 without one, are read to their end", async () => {
    const untilClose = await raw(["HTTP/1.0 404 Not Found\r\n\r\nno ", "such page"]);
    assert.equal((await runHealthCheck(untilClose, spec())).output, "HTTP 404 Not Found: no such page");
    // A 304 has no body: the answer is complete at its head, even if the server keeps the connection.
    const kept = await listen(createTcpServer((socket) => socket.once("data", () => socket.write("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"))));
    const r = await runHealthCheck(kept, spec({ timeoutMs: 2_000 }));
    assert.deepEqual([r.status, r.output], ["critical", "HTTP 304 Not Modified"]);
    assert.ok(r.durationMs < 1_000, `took ${r.durationMs}ms`);
  });

  test("no answer, half an answer or something else than HTTP is critical and says which", async () => {
    const closes = await raw([]);
    assert.match((await runHealthCheck(closes, spec())).output, /closed before a response/);
    const half = await raw(["HTTP/1.1 2"]);
    assert.match((await runHealthCheck(half, spec())).output, /closed in the middle of the response head/);
    const other = await raw(["SSH-2.0-OpenSSH_9.2\r\n"]);
    const r = await runHealthCheck(other, spec());
    assert.equal(r.status, "critical");
    assert.match(r.output, /not an HTTP response: "SSH-2\.0-OpenSSH_9\.2"/);
  });

  test("TCP: passing when a connection is accepted, critical when refused", async () => {
    const open = await listen(createTcpServer((socket) => socket.end()));
    const tcp = spec({ http: undefined, tcp: true });
    const up = await runHealthCheck(open, tcp);
    assert.equal(up.status, "passing");
    assert.match(up.output, /TCP connect 127\.0\.0\.1:\d+: Success/);
    const down = await runHealthCheck(await closedPort(), tcp);
    assert.equal(down.status, "critical");
    assert.match(down.output, /ECONNREFUSED/);
  });
});

describe("CheckState", () => {
  const result = (status: CheckResult["status"]): CheckResult => ({ status, output: status, durationMs: 1 });

  test("starts critical and turns passing only after successBeforePassing passes in a row", () => {
    const state = new CheckState({ successBeforePassing: 2, failuresBeforeCritical: 3 });
    assert.equal(state.status, "critical");
    assert.equal(state.record(result("passing")), false);
    assert.equal(state.record(result("critical")), false);
    assert.equal(state.record(result("passing")), false);
    assert.equal(state.status, "critical");
    assert.equal(state.record(result("passing")), true);
    assert.equal(state.status, "passing");
  });

  test("leaves passing only after failuresBeforeCritical non-passing results in a row", () => {
    const state = new CheckState({ successBeforePassing: 1, failuresBeforeCritical: 3 });
    state.record(result("passing"));
    assert.equal(state.record(result("critical")), false);
    assert.equal(state.record(result("warning")), false);
    state.record(result("passing"));
    state.record(result("critical"));
    state.record(result("critical"));
    assert.equal(state.status, "passing");
    assert.equal(state.record(result("critical")), true);
    assert.equal(state.status, "critical");
  });

  test("a run of warnings reads warning; the latest non-passing result sets the status", () => {
    const state = new CheckState({ successBeforePassing: 1, failuresBeforeCritical: 2 });
    state.record(result("passing"));
    state.record(result("warning"));
    assert.equal(state.record(result("warning")), true);
    assert.equal(state.status, "warning");
    assert.equal(state.record(result("critical")), true);
    assert.equal(state.status, "critical");
  });

  test("keeps the last results as history", () => {
    const state = new CheckState({ successBeforePassing: 1, failuresBeforeCritical: 1 });
    for (let i = 0; i < CHECK_HISTORY_LENGTH + 5; i++) state.record({ status: "passing", output: `#${i}`, durationMs: i }, 1_000 + i);
    assert.equal(state.history.length, CHECK_HISTORY_LENGTH);
    assert.deepEqual(state.history[0], { at: 1_005, status: "passing", output: "#5", durationMs: 5 });
    assert.equal(state.lastResult?.output, `#${CHECK_HISTORY_LENGTH + 4}`);
  });
});

describe("waitHealthy", () => {
  test("returns as soon as every target has passed successBeforePassing checks", async () => {
    const healthyFrom = Date.now() + 150;
    const slow = await httpServer((_req, res) => res.writeHead(Date.now() < healthyFrom ? 503 : 200).end());
    const fast = await respond(200);
    const startedAt = Date.now();
    const result = await waitHealthy(
      [
        { id: "slow", ...slow },
        { id: "fast", ...fast },
      ],
      spec({ successBeforePassing: 2 }),
      { deadline: Date.now() + 5_000 },
    );
    const tookMs = Date.now() - startedAt;
    assert.equal(result.ok, true);
    if (!result.ok) return;
    // Bounds contrast with the wrong behaviour (waiting out the 5 s deadline), not with the machine's speed.
    assert.ok(result.readyAtMs.slow! >= 150, `slow ready at ${result.readyAtMs.slow}ms`);
    assert.ok(result.readyAtMs.fast! < result.readyAtMs.slow!, `fast ready at ${result.readyAtMs.fast}ms, slow at ${result.readyAtMs.slow}ms`);
    assert.ok(tookMs < 2_500, `took ${tookMs}ms`);
  });

  test("times out at the deadline, naming what still fails", async () => {
    const broken = await respond(500, "migrations pending");
    const good = await respond(200);
    const startedAt = Date.now();
    const result = await waitHealthy(
      [
        { id: "broken", ...broken },
        { id: "good", ...good },
      ],
      // Interval and timeout far past the deadline: a wait that honoured them instead would take 10 s.
      spec({ intervalMs: 10_000, timeoutMs: 10_000 }),
      { deadline: Date.now() + 300 },
    );
    const tookMs = Date.now() - startedAt;
    assert.deepEqual(result, {
      ok: false,
      reason: "timeout",
      failing: [{ id: "broken", status: "critical", output: "HTTP 500 Internal Server Error: migrations pending" }],
    });
    assert.ok(tookMs >= 290 && tookMs < 5_000, `took ${tookMs}ms`);
  });

  test("a probe that hangs does not hold the wait past the deadline", async () => {
    const hanging = await httpServer(() => {});
    const startedAt = Date.now();
    const result = await waitHealthy([{ id: "hanging", ...hanging }], spec({ timeoutMs: 10_000 }), { deadline: Date.now() + 200 });
    assert.equal(result.ok, false);
    assert.ok(Date.now() - startedAt < 5_000);
  });

  test("fails fast when an instance exits", async () => {
    const starting = await respond(503);
    const exitAt = Date.now() + 100;
    const startedAt = Date.now();
    const result = await waitHealthy([{ id: "books-green-1", ...starting }], spec(), {
      deadline: Date.now() + 10_000,
      isAlive: () => Date.now() < exitAt,
    });
    const tookMs = Date.now() - startedAt;
    assert.deepEqual(result, {
      ok: false,
      reason: "exited",
      failing: [{ id: "books-green-1", status: "critical", output: "the instance exited" }],
    });
    assert.ok(tookMs >= 90 && tookMs < 5_000, `took ${tookMs}ms`);
  });

  test("fails fast when every instance answers critical for failures_before_critical × interval, with the answer", async () => {
    const a = await respond(500, "database unreachable");
    const b = await respond(500, "database unreachable");
    const health = spec({ intervalMs: 150, failuresBeforeCritical: 2 });
    const startedAt = Date.now();
    const result = await waitHealthy([{ id: "a", ...a }, { id: "b", ...b }], health, { deadline: Date.now() + 10_000 });
    const tookMs = Date.now() - startedAt;
    assert.equal(result.ok, false);
    if (result.ok) return;
    assert.equal(result.reason, "unhealthy");
    assert.deepEqual(result.failing.map((f) => [f.id, f.status, f.output]), [
      ["a", "critical", "HTTP 500 Internal Server Error: database unreachable"],
      ["b", "critical", "HTTP 500 Internal Server Error: database unreachable"],
    ]);
    assert.ok(tookMs >= 290 && tookMs < 2_000, `took ${tookMs}ms`);
    assert.match(whyNotHealthy(result, health, 10_000), /^unhealthy: the check answered HTTP 500 Internal Server Error: database unreachable for 2 × 150ms .*deploy_timeout \(10s\)/);
  });

  test("one instance passing does not save another that answers 500: the wait fails fast", async () => {
    const good = await respond(200);
    const bad = await respond(500);
    const result = await waitHealthy([{ id: "good", ...good }, { id: "bad", ...bad }], spec({ intervalMs: 50, failuresBeforeCritical: 2 }), { deadline: Date.now() + 10_000 });
    assert.equal(result.ok, false);
    if (!result.ok) assert.deepEqual([result.reason, result.failing.map((f) => f.id)], ["unhealthy", ["bad"]]);
  });

  test("keeps waiting while an instance does not listen yet, even when another already answers 500", async () => {
    const refusing = await closedPort();
    const bad = await respond(500);
    const startedAt = Date.now();
    const result = await waitHealthy([{ id: "refusing", ...refusing }, { id: "bad", ...bad }], spec({ intervalMs: 20, failuresBeforeCritical: 1 }), { deadline: Date.now() + 500 });
    assert.equal(result.ok, false);
    if (!result.ok) assert.equal(result.reason, "timeout");
    assert.ok(Date.now() - startedAt >= 490);
  });

  test("an instance found listening elsewhere (an app that ignores PORT) fails the wait after failures_before_critical × interval, saying where", async () => {
    const refusing = await closedPort();
    const health = spec({ intervalMs: 150, failuresBeforeCritical: 2 });
    const asked: string[] = [];
    const startedAt = Date.now();
    // The deadline is 10× the bound below: a wait that runs it out cannot pass for a verdict.
    const result = await waitHealthy([{ id: "wrong", ...refusing }], health, {
      deadline: Date.now() + 60_000,
      listeningElsewhere: async (id) => { asked.push(id); return `listening on 127.0.0.1:3000, not on $PORT=${refusing.port}`; },
    });
    const tookMs = Date.now() - startedAt;
    assert.equal(result.ok, false);
    if (result.ok) return;
    assert.equal(result.reason, "misdirected");
    assert.equal(result.failing[0]!.listening, `listening on 127.0.0.1:3000, not on $PORT=${refusing.port}`);
    assert.ok(tookMs >= 290 && tookMs < 6_000, `took ${tookMs}ms`);
    assert.deepEqual(asked, ["wrong"], "asked once the window passed, not at every probe");
    assert.match(whyNotHealthy(result, health, 60_000), /^not listening where its check goes: wrong is listening on 127\.0\.0\.1:3000, not on \$PORT=\d+\. An app must listen on the port Turquoise gives it in \$PORT .*deploy_timeout \(1m\)/);
  });

  test("an instance that listens nowhere yet is still starting: the runtime is asked, and the wait goes on", async () => {
    const refusing = await closedPort();
    let asked = 0;
    const result = await waitHealthy([{ id: "slow", ...refusing }], spec({ intervalMs: 50, failuresBeforeCritical: 1 }), {
      deadline: Date.now() + 600,
      listeningElsewhere: async () => { asked++; return undefined; },
    });
    assert.equal(result.ok, false);
    if (!result.ok) assert.equal(result.reason, "timeout");
    assert.ok(asked >= 2 && asked <= 13, `asked ${asked} times: once an interval`);
  });

  test("an app that answers 503 while it warms up, for less than the window, passes", async () => {
    const healthyFrom = Date.now() + 200;
    const warming = await httpServer((_req, res) => res.writeHead(Date.now() < healthyFrom ? 503 : 200).end());
    const result = await waitHealthy([{ id: "warming", ...warming }], spec({ intervalMs: 200, failuresBeforeCritical: 2 }), { deadline: Date.now() + 5_000 });
    assert.equal(result.ok, true);
  });

  test("429 (warning) is not a verdict: the wait goes on", async () => {
    const busy = await respond(429, "slow down");
    const result = await waitHealthy([{ id: "busy", ...busy }], spec({ intervalMs: 10, failuresBeforeCritical: 1 }), { deadline: Date.now() + 300 });
    assert.equal(result.ok, false);
    if (!result.ok) assert.equal(result.reason, "timeout");
  });

  test("stops when aborted", async () => {
    const starting = await respond(503);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const result = await waitHealthy([{ id: "a", ...starting }], spec(), { deadline: Date.now() + 10_000, signal: controller.signal });
    assert.equal(result.ok, false);
    if (result.ok) return;
    assert.equal(result.reason, "aborted");
    assert.match(result.failing[0]!.output, /HTTP 503/);
  });
});

describe("CheckConnection: an instance's checks reuse one connection", () => {
  /** A server that counts the connections it accepted; respond() decides each answer, raw. */
  async function counting(respond: (socket: import("node:net").Socket, n: number) => void) {
    let connections = 0;
    let requests = 0;
    const target = await listen(
      createTcpServer((socket) => {
        connections++;
        socket.on("error", () => undefined);
        let pending = "";
        socket.on("data", (d) => {
          pending += d.toString("latin1");
          while (pending.includes("\r\n\r\n")) {
            pending = pending.slice(pending.indexOf("\r\n\r\n") + 4);
            respond(socket, ++requests);
          }
        });
      }),
    );
    return { target, connections: () => connections, requests: () => requests };
  }
  const ok = (socket: import("node:net").Socket) => socket.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");

  test("five passing checks in a row use one connection", async () => {
    const s = await counting(ok);
    const connection = new CheckConnection();
    for (let i = 0; i < 5; i++) assert.equal((await runHealthCheck(s.target, spec(), { connection })).status, "passing");
    assert.equal(s.requests(), 5);
    assert.equal(s.connections(), 1);
    connection.close();
  });

  test("a chunked passing answer keeps its connection too; one with trailing bytes does not", async () => {
    const chunked = await counting((socket) => socket.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"));
    const c1 = new CheckConnection();
    for (let i = 0; i < 3; i++) assert.equal((await runHealthCheck(chunked.target, spec(), { connection: c1 })).status, "passing");
    assert.equal(chunked.connections(), 1);
    // Bytes after the body would be read as the next answer's: such a connection is never kept.
    const junk = await counting((socket) => socket.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 500 Forged\r\n\r\n"));
    const c2 = new CheckConnection();
    for (let i = 0; i < 3; i++) assert.equal((await runHealthCheck(junk.target, spec(), { connection: c2 })).status, "passing");
    assert.equal(junk.connections(), 3);
    c1.close();
    c2.close();
  });

  test("Connection: close, a body with no length, and a non-passing answer each end their connection", async () => {
    const answers = [
      "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
      "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy",
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ];
    const s = await counting((socket, n) => socket.write(answers[(n - 1) % answers.length]!));
    const connection = new CheckConnection();
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await runHealthCheck(s.target, spec(), { connection })).status);
    assert.deepEqual(statuses, ["passing", "critical", "passing"]);
    assert.equal(s.connections(), 3);
    connection.close();
  });

  test("a connection the server closed while idle costs no false critical: the check asks again on a fresh one", async () => {
    const s = await counting((socket) => {
      ok(socket);
      // As a server whose keep-alive timeout ran out between two checks.
      setImmediate(() => socket.end());
    });
    const connection = new CheckConnection();
    for (let i = 0; i < 3; i++) {
      const r = await runHealthCheck(s.target, spec(), { connection });
      assert.equal(r.status, "passing", r.output);
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(s.connections(), 3);
    connection.close();
  });

  test("after CHECK_CONNECTION_MAX_AGE_MS a fresh connection is opened: an instance that no longer accepts new ones turns critical", async () => {
    let now = 1_000_000;
    const s = await counting(ok);
    const connection = new CheckConnection(() => now);
    assert.equal((await runHealthCheck(s.target, spec(), { connection })).status, "passing");
    // The app stops accepting connections (its listening socket closed); the kept one still answers.
    servers.at(-1)!.close();
    for (let age = 0; age + CHECK_CONNECTION_MAX_IDLE_MS / 2 < CHECK_CONNECTION_MAX_AGE_MS; age += CHECK_CONNECTION_MAX_IDLE_MS / 2) {
      now += CHECK_CONNECTION_MAX_IDLE_MS / 2;
      assert.equal((await runHealthCheck(s.target, spec(), { connection })).status, "passing", "the kept connection answers until it is too old");
    }
    now += CHECK_CONNECTION_MAX_IDLE_MS / 2;
    const r = await runHealthCheck(s.target, spec(), { connection });
    assert.equal(r.status, "critical");
    assert.match(r.output, /ECONNREFUSED/);
    connection.close();
  });

  test("a passing answer with a huge body is judged at once and its connection dropped, not read to its end", async () => {
    let sent = 0;
    const s = await counting((socket) => {
      socket.write("HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n");
      const chunk = Buffer.alloc(64 * 1024, 97);
      const pump = () => {
        while (!socket.destroyed && sent < 50 * 1024 * 1024 && socket.write(chunk)) sent += chunk.length;
        if (!socket.destroyed && sent < 50 * 1024 * 1024) socket.once("drain", pump);
      };
      pump();
    });
    const connection = new CheckConnection();
    const r = await runHealthCheck(s.target, spec({ timeoutMs: 10_000 }), { connection });
    assert.equal(r.status, "passing");
    assert.ok(sent < 50 * 1024 * 1024, `the server got to send ${sent} bytes`);
    assert.equal((await runHealthCheck(s.target, spec(), { connection })).status, "passing");
    assert.equal(s.connections(), 2);
    connection.close();
  });
});
