// End to end: a real Prometheus scrapes a real agent (process runtime, the example app, the proxy
// process) through its metrics listener and its token, after one deploy and a counted amount of
// traffic, and its HTTP API shows exactly that.
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import type { Workspace } from "../../src/demo/workspace.js";
import { freePort } from "../../src/util/net.js";
import { startPrometheus, type TestPrometheus } from "../support/prometheus.js";
import { EXIT_CODES } from "../../src/errors.js";
import { api, get, markedPids, RELEASE_KINDS, workspaceWith } from "./helpers.js";

/** Requests the test sends through the proxy: answered 200 by the app, and 404 (a path it does not have). */
const OK_REQUESTS = 37;
const NOT_FOUND_REQUESTS = 5;

/** Sends `text` as it is and resolves with all the proxy answered before it closed. */
function rawRequest(base: string, text: string): Promise<string> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: hostname, port: Number(port) }, () => socket.end(text));
    let answer = "";
    socket.setEncoding("latin1");
    socket.on("data", (d: string) => (answer += d));
    socket.on("close", () => resolve(answer));
    socket.on("error", reject);
  });
}

describe("metrics scraped by a real Prometheus", { timeout: 180_000 }, () => {
  let ws: Workspace;
  let prom: TestPrometheus;
  let token: string;
  let metricsPort: number;

  before(async () => {
    ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, { replicas: 2 });
    metricsPort = await freePort();
    token = crypto.randomBytes(24).toString("hex");
    fs.writeFileSync(path.join(ws.dir, "metrics-token"), `${token}\n`, { mode: 0o600 });
    fs.writeFileSync(path.join(ws.dir, "wrong-token"), `${crypto.randomBytes(24).toString("hex")}\n`, { mode: 0o600 });
    // A section of its own at the end of the workspace's spec, as a user would add it.
    fs.appendFileSync(ws.specFile, `metrics:\n  listen: "127.0.0.1:${metricsPort}"\n  token_file: metrics-token\n`);
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    const target = `static_configs: [{ targets: ["127.0.0.1:${metricsPort}"] }]`;
    prom = await startPrometheus(
      `  - job_name: turquoise\n    ${target}\n    authorization: { credentials_file: ${JSON.stringify(path.join(ws.dir, "metrics-token"))} }\n` +
        `  - job_name: wrong-token\n    ${target}\n    authorization: { credentials_file: ${JSON.stringify(path.join(ws.dir, "wrong-token"))} }\n` +
        `  - job_name: no-token\n    ${target}\n`,
    );
  });
  after(async () => {
    await prom?.stop();
    await ws?.destroy();
  });

  /** The value of an instant query with one result, once Prometheus has it equal to `want`. */
  const seen = (promql: string, want: number): Promise<number> =>
    prom.waitFor(`${promql} == ${want}`, async () => {
      const r = await prom.query(promql);
      return r.length === 1 && r[0]!.value === want ? want : undefined;
    });

  it("shows the one deploy as succeeded, and the release it made live", async () => {
    await seen('turquoise_deploys_total{job="turquoise",service="books",outcome="succeeded"}', 1);
    await seen('sum(turquoise_deploys_total{job="turquoise",outcome!="succeeded"}) or vector(0)', 0);
    const info = await prom.query('turquoise_service_release_info{job="turquoise"}');
    assert.deepEqual(info.map((r) => [r.labels.service, r.labels.slot, r.labels.release, r.value]), [["books", "blue", "v1", 1]]);
    await seen('turquoise_instances{job="turquoise",service="books",state="passing"}', 2);
    await seen('turquoise_deploy_duration_seconds_count{job="turquoise",service="books",kind="deploy",outcome="succeeded"}', 1);
    // Every step that ran was timed once; the flip among them.
    await seen('turquoise_deploy_step_duration_seconds_count{job="turquoise",service="books",step="flip"}', 1);
    await seen('turquoise_proxy_up{job="turquoise"}', 1);
  });

  it("counts exactly the requests sent through the proxy, by status class", async () => {
    // Before the test's traffic the proxy has answered one request for books: the deploy's verify step, through the public route.
    await seen('sum(turquoise_proxy_requests_total{job="turquoise",service="books"})', 1);
    for (let i = 0; i < OK_REQUESTS; i++) assert.equal((await get(`${ws.proxyUrl}/api/v1/books`)).status, 200);
    for (let i = 0; i < NOT_FOUND_REQUESTS; i++) assert.equal((await get(`${ws.proxyUrl}/no-such-page`)).status, 404);
    const sent = 1 + OK_REQUESTS + NOT_FOUND_REQUESTS;
    await seen('sum(turquoise_proxy_requests_total{job="turquoise",service="books"})', sent);
    await seen('turquoise_proxy_requests_total{job="turquoise",service="books",slot="blue",status_class="2xx"}', 1 + OK_REQUESTS);
    await seen('turquoise_proxy_requests_total{job="turquoise",service="books",slot="blue",status_class="4xx"}', NOT_FOUND_REQUESTS);
    await seen('turquoise_proxy_request_duration_seconds_count{job="turquoise",service="books",slot="blue"}', sent);
    await seen('sum(turquoise_proxy_requests_total{job="turquoise",service="books",status_class=~"none|1xx|3xx|5xx"})', 0);
    // A request no route can take (HTTP/1.1 without a Host) is counted apart, with no service:
    // its label is empty, so absent in Prometheus.
    assert.match(await rawRequest(ws.proxyUrl, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n"), /^HTTP\/1\.1 400 /);
    await seen('turquoise_proxy_requests_total{job="turquoise",service="",status_class="4xx"}', 1);
    assert.deepEqual((await prom.query('sum(turquoise_proxy_requests_total{job="turquoise",service="books"})')).map((r) => r.value), [sent]);
  });

  it("a scraper with a wrong token or none gets nothing: Prometheus sees those targets down", async () => {
    await seen('up{job="turquoise"}', 1);
    await seen('up{job="wrong-token"}', 0);
    await seen('up{job="no-token"}', 0);
    const leaked = await prom.query('{job=~"wrong-token|no-token",__name__=~"turquoise_.*"}');
    assert.deepEqual(leaked, []);
    const targets = await prom.api<{ activeTargets: Array<{ scrapePool: string; lastError: string }> }>("targets");
    for (const t of targets.activeTargets.filter((t) => t.scrapePool !== "turquoise")) {
      assert.match(t.lastError, /401/);
      assert.ok(!t.lastError.includes(token), "the token never appears in what a scraper is told");
    }
    // Served on the metrics listener only: the agent API has no /metrics, with its admin token or the metrics one.
    assert.equal((await api(ws, "/metrics")).status, 404);
    assert.equal((await api(ws, "/metrics", { token })).status, 401);
  });
});

describe("an agent whose metrics cannot be served does not start", { timeout: 120_000 }, () => {
  let ws: Workspace;
  after(async () => ws?.destroy());

  it("says which file or address is wrong, and leaves nothing running", async () => {
    ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, { replicas: 1 });
    const port = await freePort();
    fs.appendFileSync(ws.specFile, `metrics:\n  listen: "127.0.0.1:${port}"\n  token_file: metrics-token\n`);
    const missing = await ws.cli(["up", "--detach"], { allowFail: true });
    assert.equal(missing.code, EXIT_CODES.SPEC_INVALID);
    assert.match(missing.stderr, /metrics\.token_file: cannot read .*metrics-token \(ENOENT\)/);

    const short = "tooshort";
    fs.writeFileSync(path.join(ws.dir, "metrics-token"), `${short}\n`);
    const bad = await ws.cli(["up", "--detach"], { allowFail: true });
    assert.equal(bad.code, EXIT_CODES.SPEC_INVALID);
    assert.match(bad.stderr, /metrics-token is not a usable token \(it holds 8 characters, fewer than 16\)/);
    assert.ok(!`${bad.stdout}${bad.stderr}`.includes(short), "the file's text is never shown");

    fs.writeFileSync(path.join(ws.dir, "metrics-token"), `${crypto.randomBytes(20).toString("hex")}\n`);
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(port, "127.0.0.1", r));
    try {
      const busy = await ws.cli(["up", "--detach"], { allowFail: true });
      assert.equal(busy.code, EXIT_CODES.CONFLICT);
      assert.match(busy.stderr, new RegExp(`the metrics endpoint cannot listen on 127\\.0\\.0\\.1:${port}: address in use \\(set metrics\\.listen in `));
    } finally {
      taken.close();
    }
    // Refused before anything started: no proxy, no agent, no instance.
    assert.equal(fs.existsSync(path.join(ws.dir, ".turquoise", "proxy.json")), false);
    assert.equal(fs.existsSync(path.join(ws.dir, ".turquoise", "agent.json")), false);
    assert.deepEqual(markedPids(ws), []);
  });
});
