// Where the agent counts, in-process over the memory world: each deploy and rollback once by its
// outcome with its steps timed, a queued deploy's lock wait, a healed instance, each migration step,
// each watch handler run; and what a scrape reads from the state at that moment.

import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, it } from "node:test";
import { Registry } from "../../src/api/registry.js";
import { keys } from "../../src/deploy/records.js";
import { WatchRunner } from "../../src/heal/watches.js";
import { AgentMetrics } from "../../src/metrics/agent.js";
import { MemoryStore } from "../../src/state/memory.js";
import { waitFor } from "../runtime/helpers.js";
import { SERVICE, World } from "../support/world.js";

/** The value of one series of a metric (a histogram's: its count), 0 when the series does not exist. */
async function value(metrics: AgentMetrics, name: string, labels: Record<string, string>): Promise<number> {
  const metric = metrics.registry.getSingleMetric(name);
  assert.ok(metric, `no metric ${name}`);
  const { values } = await metric.get();
  const wanted = (v: { labels: Record<string, unknown>; metricName?: string }) =>
    Object.entries(labels).every(([k, x]) => v.labels[k] === x) && (v.metricName === undefined || v.metricName === name || v.metricName === `${name}_count`);
  return (values as Array<{ labels: Record<string, unknown>; metricName?: string; value: number }>).filter(wanted).reduce((n, v) => n + v.value, 0);
}

describe("where the agent counts (in-process)", { timeout: 60_000 }, () => {
  let world: World;
  afterEach(async () => world?.close());

  it("each deploy and rollback once, by outcome, with the steps that ran timed", async () => {
    world = await World.create({ replicas: 1 });
    const agent = world.agent();
    const m = world.metrics;
    const deploy = (release: string) => agent.orchestrator.deploy({ service: SERVICE, release, actor: "test" });
    await deploy("v1");
    world.machine.inject({ release: "v2", times: 1, failStart: "out of memory" });
    await assert.rejects(deploy("v2"), /out of memory/);
    await assert.rejects(deploy("no-such-release"), /not found/);
    await deploy("v2");
    await agent.orchestrator.rollback({ service: SERVICE, actor: "test" });
    const deploys = (outcome: string) => value(m, "turquoise_deploys_total", { service: SERVICE, outcome });
    assert.deepEqual([await deploys("succeeded"), await deploys("failed"), await deploys("refused")], [2, 1, 1]);
    assert.equal(await value(m, "turquoise_rollbacks_total", { service: SERVICE, outcome: "succeeded" }), 1);
    assert.equal(await value(m, "turquoise_deploy_duration_seconds", { service: SERVICE, kind: "deploy" }), 4);
    assert.equal(await value(m, "turquoise_deploy_duration_seconds", { service: SERVICE, kind: "rollback" }), 1);
    // Three flows flipped; the failed one started and stopped before any flip; the refused one never started.
    assert.equal(await value(m, "turquoise_deploy_step_duration_seconds", { service: SERVICE, step: "flip" }), 3);
    assert.equal(await value(m, "turquoise_deploy_step_duration_seconds", { service: SERVICE, step: "start" }), 4);
    // The first deploy had nothing to drain: a skipped step is not timed.
    assert.equal(await value(m, "turquoise_deploy_step_duration_seconds", { service: SERVICE, step: "drain" }), 2);
  });

  it("a deploy queued behind the lock counts its wait, got or given up", async () => {
    world = await World.create({ replicas: 1 });
    const agent = world.agent();
    await world.store.acquireLock(keys.lock(SERVICE), "someone else", 30_000);
    let waiting!: () => void;
    const isWaiting = new Promise<void>((r) => (waiting = r));
    const queued = agent.orchestrator.deploy({ service: SERVICE, release: "v1", actor: "test", wait: true, waitTimeoutMs: 60_000,
      onProgress: (p) => { if (p.type === "info" && /waiting for the deploy lock/.test(p.message)) waiting(); } });
    // Queued for sure (a loaded machine may take its time to get there), then 400 ms of waiting to count.
    await isWaiting;
    await new Promise((r) => setTimeout(r, 400));
    await world.store.releaseLock(keys.lock(SERVICE), "someone else");
    await queued;
    const m = world.metrics;
    assert.equal(await value(m, "turquoise_deploy_lock_waits_total", { service: SERVICE, outcome: "acquired" }), 1);
    const [sum] = ((await m.registry.getSingleMetric("turquoise_deploy_lock_wait_seconds")!.get()).values as Array<{ metricName?: string; value: number }>).filter((v) => v.metricName === "turquoise_deploy_lock_wait_seconds_sum");
    assert.ok(sum!.value >= 0.4, `waited ${sum!.value} s`);

    await world.store.acquireLock(keys.lock(SERVICE), "someone else", 30_000);
    await assert.rejects(agent.orchestrator.deploy({ service: SERVICE, release: "v2", actor: "test", wait: true, waitTimeoutMs: 300 }), /gave up waiting/);
    assert.equal(await value(m, "turquoise_deploy_lock_waits_total", { service: SERVICE, outcome: "gave-up" }), 1);
    assert.equal(await value(m, "turquoise_deploys_total", { service: SERVICE, outcome: "refused" }), 1);
  });

  it("a dead instance replaced by the healer counts one restart", async () => {
    world = await World.create({ replicas: 2 });
    const agent = world.agent();
    await agent.orchestrator.deploy({ service: SERVICE, release: "v1", actor: "test" });
    await agent.heal().monitor.sync();
    world.machine.crash(agent.fleet.list(SERVICE)[0]!);
    await waitFor("the replacement", async () => world.events.some((e) => e.type === "instance.replaced") || undefined, 5_000);
    assert.equal(await value(world.metrics, "turquoise_heal_restarts_total", { service: SERVICE, outcome: "replaced" }), 1);
    assert.equal(await value(world.metrics, "turquoise_heal_restarts_total", { service: SERVICE, outcome: "failed" }), 0);
  });

  it("each migration step applied, by direction", async () => {
    world = await World.create({ replicas: 1, serviceYaml: ['database: { driver: sqlite, url: "sqlite:books.db", migrations: migrations }'] });
    const dir = path.join(world.dir, "migrations");
    await mkdir(dir);
    await writeFile(path.join(dir, "0001_books.up.sql"), "CREATE TABLE books (id INTEGER PRIMARY KEY);\n");
    await writeFile(path.join(dir, "0001_books.down.sql"), "DROP TABLE books;\n");
    await writeFile(path.join(dir, "0002_title.up.sql"), "ALTER TABLE books ADD COLUMN title TEXT;\n");
    await writeFile(path.join(dir, "0002_title.down.sql"), "ALTER TABLE books DROP COLUMN title;\n");
    const agent = world.agent();
    await agent.orchestrator.migrations(SERVICE, { action: "up", actor: "test" });
    await agent.orchestrator.migrations(SERVICE, { action: "down", to: 1, actor: "test" });
    await agent.orchestrator.migrations(SERVICE, { action: "up", dryRun: true, actor: "test" });
    assert.equal(await value(world.metrics, "turquoise_migrations_applied_total", { service: SERVICE, direction: "up" }), 2);
    assert.equal(await value(world.metrics, "turquoise_migrations_applied_total", { service: SERVICE, direction: "down" }), 1, "a dry run applies nothing");
  });

  it("what a scrape reads: the live release, instance health, degraded services, the proxy's counts", async () => {
    world = await World.create({ replicas: 2, metrics: true });
    const agent = world.agent();
    await agent.orchestrator.deploy({ service: SERVICE, release: "v1", actor: "test" });
    const m = world.metrics;
    m.attach({
      liveReleases: async () => {
        const slot = await agent.records.color(SERVICE);
        const rec = slot ? await agent.records.slot(SERVICE, slot) : undefined;
        return slot && rec ? [{ service: SERVICE, slot, release: rec.release }] : [];
      },
      degraded: async () => ((await agent.records.degraded(SERVICE)) ? [SERVICE] : []),
      instances: () => agent.fleet.list().map((i) => ({ service: i.service, state: "passing" as const })),
      proxyMetrics: () => world.proxy.metrics(),
    });
    const text = await m.render();
    assert.match(text, /^turquoise_service_release_info\{service="books",slot="blue",release="v1"\} 1$/m);
    assert.match(text, /^turquoise_instances\{service="books",state="passing"\} 2$/m);
    assert.match(text, /^turquoise_service_degraded\{service="books"\} 0$/m);
    // The deploy's verify request went through the proxy, counted under the live slot.
    assert.match(text, /^turquoise_proxy_requests_total\{service="books",slot="blue",status_class="2xx"\} 1$/m);
    await agent.records.setDegraded(SERVICE, { since: Date.now(), slot: "blue", release: "v1", reason: "test" });
    assert.match(await m.render(), /^turquoise_service_degraded\{service="books"\} 1$/m);
  });

  it("each watch handler run, and each that failed", async () => {
    const store = new MemoryStore();
    const registry = new Registry(store);
    const metrics = new AgentMetrics({ services: [], watches: ["ok", "fails"], version: "test", processMetrics: false });
    const handler = (code: number) => ({ args: [process.execPath, "-e", `process.exit(${code})`] });
    const runner = new WatchRunner(
      [
        { name: "ok", type: "key", key: "a", handler: handler(0), timeoutMs: 10_000 },
        { name: "fails", type: "key", key: "a", handler: handler(3), timeoutMs: 10_000 },
      ],
      registry, async () => ({ at: Date.now() }), process.cwd(), () => undefined, (watch, ok) => metrics.watchRan(watch, ok),
    );
    runner.start();
    try {
      await waitFor("both handlers ran", async () => (await value(metrics, "turquoise_watch_handler_runs_total", {})) >= 2 || undefined, 10_000);
    } finally {
      await runner.stop();
      registry.close();
      await store.close();
    }
    assert.equal(await value(metrics, "turquoise_watch_handler_runs_total", { watch: "fails" }), await value(metrics, "turquoise_watch_handler_failures_total", { watch: "fails" }));
    assert.ok((await value(metrics, "turquoise_watch_handler_failures_total", { watch: "fails" })) >= 1);
    assert.equal(await value(metrics, "turquoise_watch_handler_failures_total", { watch: "ok" }), 0);
  });
});
