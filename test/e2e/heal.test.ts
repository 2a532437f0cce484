// End to end: self-healing, the registry (catalog, blocking reads, events) and watches.
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import type { Workspace } from "../../src/demo/workspace.js";
import { LoadGenerator } from "../../src/demo/load.js";
import { RELEASE_KINDS, get, instancePids, status, waitFor, workspaceWith } from "./helpers.js";

function token(ws: Workspace, name = "token"): string {
  return fs.readFileSync(path.join(ws.dir, ".turquoise", name), "utf8").trim();
}

function api(ws: Workspace, p: string, opts: { method?: string; body?: string; tokenName?: string } = {}): Promise<{ status: number; body: string; index: number }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: ws.agentPort, path: p, method: opts.method ?? "GET", agent: false, headers: { authorization: `Bearer ${token(ws, opts.tokenName)}` } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, index: Number(res.headers["x-turquoise-index"] ?? 0) }));
    });
    req.on("error", reject);
    req.end(opts.body);
  });
}

async function events(ws: Workspace, type: string): Promise<Array<{ type: string; message: string; data: Record<string, unknown> }>> {
  const r = await api(ws, "/v1/events?limit=1000");
  return (JSON.parse(r.body) as { events: Array<{ type: string; message: string; data: Record<string, unknown> }> }).events.filter((e) => e.type === type);
}

describe("self-healing", () => {
  let ws: Workspace;
  let flag: string;
  before(async () => {
    flag = path.join(fs.mkdtempSync(path.join(process.env.TMPDIR ?? "/tmp", "turquoise-flag-")), "crash");
    ws = await workspaceWith({ v1: RELEASE_KINDS.crashIfFlag("v1", flag) }, { replicas: 2, healthInterval: "300ms" });
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
  });
  after(async () => {
    await ws?.destroy();
    fs.rmSync(path.dirname(flag), { recursive: true, force: true });
  });

  it("a killed instance leaves rotation at once and is replaced; GETs never fail", async () => {
    const load = new LoadGenerator({ baseUrl: ws.proxyUrl, concurrency: 4, postEvery: 0, maxRequests: 200_000, maxDurationMs: 20_000 }).start();
    const before = await status(ws);
    const victim = before.instances[0]!;
    process.kill(Number(victim.ref), "SIGKILL");
    // Replaced means healthy and back in the route: the supervisor says so once it re-applied the routes.
    await waitFor("a healthy replacement", async () => (await events(ws, "instance.replaced"))[0]);
    const after = await status(ws);
    const report = await load.stop();
    assert.equal(report.failed, 0, JSON.stringify(report.failures));
    assert.equal(after.instances.length, 2);
    assert.ok(!after.instances.some((i) => i.id === victim.id));
    assert.ok(after.instances.every((i) => i.release === "v1" && i.slot === before.color));
  });

  it("a crash-looping release ends degraded after a bounded number of restarts; the healthy replica keeps serving", async () => {
    fs.writeFileSync(flag, "");
    const load = new LoadGenerator({ baseUrl: ws.proxyUrl, concurrency: 2, postEvery: 0, maxRequests: 200_000, maxDurationMs: 60_000 }).start();
    const s = await status(ws);
    process.kill(Number(s.instances[0]!.ref), "SIGKILL");
    const degraded = await waitFor("the degraded event", async () => (await events(ws, "service.degraded"))[0], 30_000);
    assert.match(degraded.message, /books is degraded: 5 replacements in a row never turned healthy/);
    const failedAttempts = (await events(ws, "heal.failed")).length;
    await new Promise((r) => setTimeout(r, 1_500));
    assert.equal((await events(ws, "heal.failed")).length, failedAttempts, "no more restarts once degraded");
    const report = await load.stop();
    assert.equal(report.failed, 0, "the remaining replica served every GET");
    const catalog = JSON.parse((await api(ws, "/v1/catalog/services")).body) as Array<{ name: string; degraded: { reason: string } | null }>;
    assert.match(catalog[0]!.degraded?.reason ?? "", /crash loop/);
    assert.equal(failedAttempts, 5, "restarts are bounded");
    fs.rmSync(flag);
  });
});

describe("registry and watches", () => {
  let ws: Workspace;
  before(async () => {
    ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, {
      replicas: 1,
      extraServiceYaml: `watches:
  - name: config
    type: keyprefix
    prefix: config/
    args: ["sh", "-c", "cat > watch-config.tmp && echo $TURQUOISE_INDEX > watch-index.tmp && mv watch-index.tmp watch-index.txt && mv watch-config.tmp watch-config.json"]
  - name: books-instances
    type: service
    service: books
    args: ["sh", "-c", "cat > watch-service.tmp && mv watch-service.tmp watch-service.json"]
  - name: stuck
    type: key
    key: hang/now
    args: ["sleep", "30"]
    timeout: 500ms
`,
    });
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
  });
  after(async () => ws?.destroy());

  it("the catalog lists instances with address, slot, release and health; the read-only token reads it but cannot deploy", async () => {
    const r = await api(ws, "/v1/catalog/service/books", { tokenName: "registry-token" });
    assert.equal(r.status, 200);
    const [inst] = JSON.parse(r.body) as Array<{ address: string; port: number; slot: string; release: string; role: string; health: { status: string } }>;
    assert.equal(inst!.address, "127.0.0.1");
    assert.equal(inst!.release, "v1");
    assert.equal(inst!.role, "live");
    assert.ok(r.index > 0, "X-Turquoise-Index is set");
    const deploy = await api(ws, "/v1/services/books/deploy", { method: "POST", body: JSON.stringify({ release: "v1" }), tokenName: "registry-token" });
    assert.equal(deploy.status, 403, "the registry token's scope does not cover deploys");
  });

  it("instances get the registry's address and read-only token in their environment", async () => {
    const [pid] = instancePids(ws);
    const env = fs.readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
    assert.ok(env.includes(`TURQUOISE_API=http://127.0.0.1:${ws.agentPort}`));
    assert.ok(env.includes(`TURQUOISE_TOKEN=${token(ws, "registry-token")}`));
  });

  it("a blocking read returns on a change, and on timeout", async () => {
    const first = await api(ws, "/v1/kv?prefix=app/");
    const t0 = Date.now();
    // ?wait is over 10x the bound: a read that waits it out instead of returning on the change cannot pass.
    const blocked = api(ws, `/v1/kv?prefix=app/&index=${first.index}&wait=90s`);
    await new Promise((r) => setTimeout(r, 200));
    await ws.cli(["kv", "put", "app/flag", "on"]);
    const changed = await blocked;
    assert.ok(Date.now() - t0 < 8_000, "returned on the change, not at the wait's end");
    assert.ok(changed.index > first.index);
    assert.deepEqual((JSON.parse(changed.body) as { items: Array<{ key: string }> }).items.map((k) => k.key), ["app/flag"]);

    const now = await api(ws, "/v1/kv/app/flag");
    const t1 = Date.now();
    const idle = await api(ws, `/v1/kv/app/flag?index=${now.index}&wait=400ms`);
    assert.ok(Date.now() - t1 >= 350, "waited for ?wait");
    assert.equal(idle.status, 200);

    // An index from before an agent restart is above the current one: answered at once, as Consul does.
    const t2 = Date.now();
    const ahead = await api(ws, `/v1/kv/app/flag?index=${now.index + 1000}&wait=90s`);
    assert.equal(ahead.status, 200);
    assert.ok(Date.now() - t2 < 8_000, "did not wait out ?wait");
  });

  it("a watch handler receives the view as JSON on stdin, with the index in its environment", async () => {
    // The handlers write to a temp file and rename it, so a file read here is always one whole run's output.
    await ws.cli(["kv", "put", "config/banner", "hello"]);
    const configFile = path.join(ws.dir, "watch-config.json");
    const view = await waitFor("the config handler's view with the change", () => {
      if (!fs.existsSync(configFile)) return undefined;
      const items = JSON.parse(fs.readFileSync(configFile, "utf8")) as Array<{ key: string; value: string }>;
      return items.some((k) => k.key === "config/banner" && k.value === "hello") ? items : undefined;
    }, 30_000);
    assert.deepEqual(view.map((k) => [k.key, k.value]), [["config/banner", "hello"]]);
    // The run renamed its index file before its view: the same run wrote both.
    const index = fs.readFileSync(path.join(ws.dir, "watch-index.txt"), "utf8");
    assert.match(index, /^\d+\n$/);
    // Logged once that handler has exited, under the index it was given.
    const run = await waitFor("the config handler's run in the events", async () =>
      (await events(ws, "watch.handler")).find((e) => e.data.watch === "config" && e.data.index === Number(index)), 30_000);
    assert.equal(run.data.ok, true, JSON.stringify(run.data));
    assert.equal(run.data.status, "exit 0");
    const file = path.join(ws.dir, "watch-service.json");
    const service = await waitFor("the service handler's view of the live instance", () => {
      if (!fs.existsSync(file)) return undefined;
      const seen = (JSON.parse(fs.readFileSync(file, "utf8")) as Array<{ release: string; role: string }>).map((i) => [i.release, i.role]);
      return seen.length > 0 ? seen : undefined;
    }, 30_000);
    assert.deepEqual(service, [["v1", "live"]]);
  });

  it("a handler that hangs is timed out, and the agent stays healthy", async () => {
    await ws.cli(["kv", "put", "hang/now", "1"]);
    const t0 = Date.now();
    const health = await get(`http://127.0.0.1:${ws.agentPort}/v1/health`);
    assert.equal(health.status, 200);
    assert.ok(Date.now() - t0 < 3_000, "answers while the handler hangs");
    const run = await waitFor("the stuck handler's timeout", async () => (await events(ws, "watch.handler")).find((e) => e.data.watch === "stuck" && e.data.ok === false), 10_000);
    assert.equal(run.data.status, "timed out after 500ms");
    assert.match(String(run.data.output), /^timed out after 500ms/);
  });

  it("the event stream delivers events as they happen; the registry token's stream carries catalog and health changes only", async () => {
    const follow = (tokenName: string, until: string, timeoutMs: number) => new Promise<string>((resolve, reject) => {
      let text = "";
      const req = http.get({ host: "127.0.0.1", port: ws.agentPort, path: "/v1/events/stream", headers: { authorization: `Bearer ${token(ws, tokenName)}` } }, (res) => {
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          text += c;
          if (text.includes(until)) {
            req.destroy();
            resolve(text);
          }
        });
      });
      req.on("error", reject);
      setTimeout(() => { req.destroy(); resolve(text); }, timeoutMs);
    });
    const admin = follow("token", "event: signal", 60_000);
    const registry = follow("registry-token", "event: never", 1_500);
    setTimeout(() => void ws.cli(["signal", "books", "HUP"]), 200);
    assert.match(await admin, /data: \{.*"type":"signal"/);
    const seen = await registry;
    assert.match(seen, /^: turquoise events, index \d+/);
    assert.doesNotMatch(seen, /event: signal/, "a signal is not a catalog change");
  });
});
