// Every metric Turquoise exports follows Prometheus' naming rules (checked by hand and by promtool,
// from Debian's prometheus package), docs/metrics.md lists exactly those, and no label can take an
// unbounded value: hostile traffic, hosts, paths, ids and names leave the series as they were.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { AgentMetrics, FLOW_OUTCOMES, HEALTH_STATES, OTHER } from "../../src/metrics/agent.js";
import { DURATION_BUCKETS_S, MAX_SERIES, OVERFLOW_SERVICE, SeriesSet, STATUS_CLASSES } from "../../src/proxy/counters.js";
import { MemoryProxy } from "../../src/proxy/memory.js";
import { ensurePrometheus } from "../support/prometheus.js";
import { request, route, startUpstream, type TestUpstream } from "../proxy/helpers.js";
import { parseExposition, type Exposition } from "./exposition.js";

const DOCS = new URL("../../../docs/metrics.md", import.meta.url);
/** prom-client's process and Node.js metrics keep the names every Node exporter gives them. */
const STANDARD_PREFIXES = ["process_", "nodejs_"];

function random(): string {
  return crypto.randomBytes(6).toString("hex");
}

/** Sends raw bytes and waits for the proxy to close or answer; what it answers does not matter here. */
function raw(port: number, text: string): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port }, () => socket.write(text));
    socket.setTimeout(3_000, () => socket.destroy());
    socket.on("data", () => socket.end());
    socket.on("error", () => resolve());
    socket.on("close", () => resolve());
  });
}

describe("metric names and labels", { timeout: 60_000 }, () => {
  let proxy: MemoryProxy;
  let books: TestUpstream;
  let authors: TestUpstream;
  let metrics: AgentMetrics;
  /** Every random string sent or named: none may come back as a label value. */
  const hostile: string[] = [];
  const scrape = async (): Promise<Exposition> => parseExposition(await metrics.render());

  before(async () => {
    proxy = await MemoryProxy.start();
    books = await startUpstream("books");
    authors = await startUpstream("authors", (_req, res) => res.writeHead(500).end("no"));
    const ids = [random(), random()];
    hostile.push(...ids);
    await proxy.apply({
      version: 1,
      metrics: true,
      routes: [
        route("books", "books/blue/v1", [{ ...books.upstream, id: ids[0]! }], { host: "books.test", slot: "blue" }),
        route("authors", "authors/green/v2", [{ ...authors.upstream, id: ids[1]! }], { host: "authors.test", slot: "green" }),
      ],
    });
    metrics = new AgentMetrics({ services: ["books", "authors"], watches: ["page-oncall"], version: "0.0.0-test" });
    metrics.attach({
      liveReleases: async () => [{ service: "books", slot: "blue", release: "v1" }, { service: "authors", slot: "green", release: "v2" }],
      degraded: async () => ["authors"],
      instances: () => [{ service: "books", state: "passing" }, { service: "authors", state: "critical" }],
      proxyMetrics: () => proxy.metrics(),
    });
    // One of each event, so that every family has samples.
    metrics.flowFinished("deploy", "books", "succeeded", 2_000, [{ name: "flip", startedAt: 0, durationMs: 12, ok: true }]);
    metrics.flowFinished("rollback", "books", "reverted", 3_000, []);
    metrics.lockWaited("books", "acquired", 1_500);
    metrics.healed("authors", "failed", 2);
    metrics.migrationApplied("books", "up");
    metrics.watchRan("page-oncall", false);
    await request(`http://127.0.0.1:${proxy.port}/`, { headers: { host: "books.test" } });
  });
  after(async () => {
    await proxy?.close();
    await books?.close();
    await authors?.close();
  });

  it("every family: a valid snake_case name, turquoise_ first, _total on counters only, base units, labels well named", async () => {
    const { types, samples } = await scrape();
    assert.ok(types.size > 20, `${types.size} families`);
    for (const [name, type] of types) {
      assert.match(name, /^[a-z_][a-z0-9_]*$/, name);
      if (STANDARD_PREFIXES.some((p) => name.startsWith(p))) continue;
      assert.ok(name.startsWith("turquoise_"), `${name} has the turquoise_ prefix`);
      assert.ok(["counter", "gauge", "histogram"].includes(type), `${name}: ${type}`);
      assert.equal(name.endsWith("_total"), type === "counter", `${name} (${type}): _total on counters, and only there`);
      if (type === "histogram") assert.match(name, /_(seconds|bytes)$/, `${name}: a histogram says its base unit`);
      assert.doesNotMatch(name, /(^|_)(ms|milliseconds|minutes|hours|kb|mb|kib|mib)(_|$)/, `${name}: base units only`);
    }
    for (const s of samples) {
      for (const label of Object.keys(s.labels)) {
        assert.match(label, /^[a-z_][a-z0-9_]*$/, `${s.name}: label ${label}`);
        assert.ok(!label.startsWith("__"), `${s.name}: label ${label} is reserved`);
      }
    }
  });

  it("promtool check metrics finds nothing to say about Turquoise's families", async () => {
    ensurePrometheus();
    const text = await metrics.render();
    // Turquoise's own families only: prom-client's nodejs_*_total gauges predate the rule and keep their well-known names.
    const ours = text.split("\n\n").filter((block) => /^# HELP turquoise_/.test(block)).join("\n") + "\n";
    const r = spawnSync("promtool", ["check", "metrics"], { input: ours, encoding: "utf8" });
    assert.equal(`${r.stdout}${r.stderr}`.trim(), "");
    assert.equal(r.status, 0);
  });

  it("docs/metrics.md lists every turquoise_ family, and no other", async () => {
    const { types } = await scrape();
    const documented = new Set([...fs.readFileSync(DOCS, "utf8").matchAll(/`(turquoise_[a-z0-9_]+)`/g)].map((m) => m[1]!));
    const exported = [...types.keys()].filter((n) => n.startsWith("turquoise_"));
    assert.deepEqual(exported.filter((n) => !documented.has(n)), [], "exported but not documented");
    assert.deepEqual([...documented].filter((n) => !types.has(n)), [], "documented but not exported");
  });

  it("hostile traffic (random hosts, paths, methods, headers, upgrades) adds no series, and none of it shows as a label", async () => {
    // Turquoise's own: the process metrics (heap spaces, GC kinds) come and go with the runtime.
    const count = async () => (await scrape()).samples.filter((s) => s.name.startsWith("turquoise_")).length;
    const before = await count();
    const base = `http://127.0.0.1:${proxy.port}`;
    for (let i = 0; i < 60; i++) {
      const [host, path, method] = [`${random()}.test`, `/${random()}/${encodeURIComponent(`"}\n${random()}`)}?q=${random()}`, ["GET", "POST", "DELETE", "PROPFIND"][i % 4]!];
      hostile.push(host.split(".")[0]!, path.split("/")[1]!);
      await request(`${base}${path}`, { method, headers: { host: i % 3 === 0 ? host : i % 3 === 1 ? "books.test" : "authors.test", "x-request-id": random() } });
    }
    // What an HTTP client library would not send: label syntax in the Host, no Host, two Hosts, an upgrade to nowhere.
    const evil = random();
    hostile.push(evil);
    await raw(proxy.port, `GET /${evil} HTTP/1.1\r\nHost: books.test"} 1\r\n\r\n`);
    await raw(proxy.port, `GET /${evil} HTTP/1.1\r\n\r\n`);
    await raw(proxy.port, `GET /${evil} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n`);
    await raw(proxy.port, `GET /${evil} HTTP/1.1\r\nHost: ${evil}.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`);
    await raw(proxy.port, `GET /${evil} HTTP/1.1\r\nHost: books.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`);

    const { samples } = await scrape();
    assert.equal(await count(), before, "the same series as before the traffic");
    const values = (label: string) => new Set(samples.filter((s) => s.name.startsWith("turquoise_proxy_") && label in s.labels).map((s) => s.labels[label]!));
    assert.deepEqual([...values("service")].sort(), ["", "authors", "books"]);
    assert.deepEqual([...values("slot")].sort(), ["", "blue", "green"]);
    assert.deepEqual([...values("status_class")].sort(), [...STATUS_CLASSES].sort());
    assert.deepEqual([...values("le")].sort(), [...DURATION_BUCKETS_S.map(String), "+Inf"].sort());
    const text = await metrics.render();
    for (const h of hostile) assert.ok(!text.includes(h), `${h} appears in the metrics`);
    // It was all counted, though: by service and status class.
    const requests = samples.filter((s) => s.name === "turquoise_proxy_requests_total");
    const total = (service: string) => requests.filter((s) => s.labels.service === service).reduce((n, s) => n + s.value, 0);
    assert.equal(total("") + total("books") + total("authors"), 60 + 1 + 5);
    assert.equal(requests.find((s) => s.labels.service === "authors" && s.labels.status_class === "5xx")?.value, 20);
  });

  it("names the agent is handed are kept to the spec's services and watches; step names are capped", async () => {
    const evil = ["../../etc/passwd", 'x"} 1\nturquoise_deploys_total{outcome="succeeded', random(), "Books", ""];
    hostile.push(evil[2]!);
    for (const name of evil) {
      metrics.flowFinished("deploy", name, "failed", 10, [{ name: random(), startedAt: 0, durationMs: 1, ok: false }]);
      metrics.lockWaited(name, "gave-up", 5);
      metrics.healed(name, "replaced", 1);
      metrics.migrationApplied(name, "down");
      metrics.watchRan(name, true);
    }
    for (let i = 0; i < 100; i++) metrics.flowFinished("deploy", "books", "failed", 10, [{ name: `step-${random()}`, startedAt: 0, durationMs: 1, ok: true }]);
    const { samples } = await scrape();
    const values = (label: string, prefix = "turquoise_") => new Set(samples.filter((s) => s.name.startsWith(prefix) && !s.name.startsWith("turquoise_proxy_") && label in s.labels).map((s) => s.labels[label]!));
    assert.deepEqual([...values("service")].sort(), [OTHER, "authors", "books"].sort());
    assert.deepEqual([...values("watch")].sort(), [OTHER, "page-oncall"].sort());
    assert.ok(values("step").size <= 33, `${values("step").size} step values`);
    assert.ok(values("step").has(OTHER));
    for (const o of values("outcome")) assert.ok([...FLOW_OUTCOMES, "acquired", "gave-up", "replaced", "failed"].includes(o), o);
    for (const s of values("state")) assert.ok((HEALTH_STATES as readonly string[]).includes(s), s);
    const text = await metrics.render();
    for (const h of hostile) assert.ok(!text.includes(h), `${h} appears in the metrics`);
    assert.equal(samples.filter((s) => s.name === "turquoise_deploys_total" && s.labels.outcome === "succeeded").length, 1, "no sample was forged through a label");
  });

  it("a table with more services than MAX_SERIES counts the rest in one overflow series", () => {
    const set = new SeriesSet();
    for (let i = 0; i < MAX_SERIES + 500; i++) set.get(`svc-${i}`, "blue").record(200, 1);
    const series = set.snapshot();
    assert.equal(series.length, 1 + MAX_SERIES + 1, "unrouted, MAX_SERIES services, one overflow");
    const overflow = series.find((s) => s.service === OVERFLOW_SERVICE)!;
    assert.equal(overflow.statuses[2], 500);
  });
});
