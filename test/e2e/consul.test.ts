// End to end: the read side of Consul's HTTP API on its own listener, read by the consul npm
// client and by raw requests: KV, catalog, health, blocking queries, and what it refuses.
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import Consul from "consul";
import type { Workspace } from "../../src/demo/workspace.js";
import { EXIT_CODES } from "../../src/errors.js";
import { RELEASE_KINDS, api, tokenOf, workspaceWith } from "./helpers.js";
import { consulRequest, enableConsul, type ConsulAnswer } from "./consul-helpers.js";

interface Instance {
  id: string;
  port: number;
  role: string;
  slot: string;
  release: string;
}

const MAX_BLOCKING = 300;

describe("Consul API", () => {
  let ws: Workspace;
  let port: number;
  let registryToken: string;
  let live: Instance[];
  const get = (path: string, opts: Parameters<typeof consulRequest>[2] = {}) => consulRequest(port, path, { token: registryToken, ...opts });

  before(async () => {
    ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, { replicas: 2 });
    port = await enableConsul(ws, { max_blocking: MAX_BLOCKING });
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    registryToken = tokenOf(ws, "registry-token");
    await ws.cli(["kv", "put", "config/books/banner", "closed for inventory"]);
    await ws.cli(["kv", "put", "config/books/color", "blue"]);
    await ws.cli(["kv", "put", "config/authors/banner", "open"]);
    await ws.cli(["kv", "put", "config/books/empty", ""]);
    const own = await api(ws, "/v1/catalog/service/books", { token: registryToken });
    live = (JSON.parse(own.body) as Instance[]).filter((i) => i.role === "live");
    assert.equal(live.length, 2);
  });
  after(async () => ws?.destroy());

  describe("with the consul npm client", () => {
    const client = () => new Consul({ host: "127.0.0.1", port, defaults: { token: registryToken } });

    it("reads a key, a missing key, a recursive listing and the keys of a prefix", async () => {
      const consul = client();
      const banner = await consul.kv.get("config/books/banner");
      assert.equal(banner?.Key, "config/books/banner");
      assert.equal(banner?.Value, "closed for inventory");
      assert.ok(Number(banner?.ModifyIndex) > 0);
      assert.equal(await consul.kv.get("config/nope"), undefined);
      const tree = (await consul.kv.get({ key: "config/books/", recurse: true })) as Array<{ Key: string; Value: string | null }>;
      assert.deepEqual(tree.map((kv) => [kv.Key, kv.Value]), [["config/books/banner", "closed for inventory"], ["config/books/color", "blue"], ["config/books/empty", null]]);
      assert.deepEqual(await consul.kv.keys("config/"), ["config/authors/banner", "config/books/banner", "config/books/color", "config/books/empty"]);
    });

    it("reads the services, a service's catalog and its passing instances, at the ports Turquoise runs them on", async () => {
      const consul = client();
      const services = await consul.catalog.service.list();
      assert.deepEqual(services, { books: [live[0]!.slot, "live"].sort() });
      const nodes = await consul.catalog.service.nodes("books");
      assert.deepEqual(nodes.map((n) => `${n.ServiceID} ${n.ServiceAddress}:${n.ServicePort}`).sort(), live.map((i) => `${i.id} 127.0.0.1:${i.port}`).sort());
      const passing = await consul.health.service({ service: "books", passing: true });
      assert.deepEqual(passing.map((e) => `${e.Service.ID}:${e.Service.Port}`).sort(), live.map((i) => `${i.id}:${i.port}`).sort());
      for (const e of passing) {
        assert.deepEqual(e.Checks.map((c: { CheckID: string; Status: string; ServiceName: string }) => [c.CheckID, c.Status, c.ServiceName]), [[`service:${e.Service.ID}`, "passing", "books"]]);
        assert.equal((e.Service as { Meta?: Record<string, string> }).Meta?.release, "v1");
      }
      assert.deepEqual(await consul.catalog.service.nodes("nope"), []);
    });

    it("reads /v1/agent/self and /v1/status/leader as far as clients use them", async () => {
      const consul = client();
      const self = (await consul.agent.self()) as { Config: { Datacenter: string; NodeName: string } };
      assert.equal(self.Config.Datacenter, "dc1");
      assert.ok(self.Config.NodeName);
      assert.equal(await consul.status.leader(), `127.0.0.1:${port}`);
    });
  });

  describe("blocking queries", () => {
    it("a query at the current index returns on a change, with a higher X-Consul-Index", async () => {
      const first = await get("/v1/kv/config/books/banner");
      assert.equal(first.status, 200);
      assert.ok(first.index > 0);
      assert.equal(first.headers["x-consul-knownleader"], "true");
      assert.equal(first.headers["x-consul-lastcontact"], "0");
      let answered: ConsulAnswer | undefined;
      const blocked = get(`/v1/kv/config/books/banner?index=${first.index}&wait=60s`).then((a) => (answered = a));
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(answered, undefined, "the query answered before anything changed");
      const putAt = Date.now();
      await ws.cli(["kv", "put", "config/books/banner", "reopened"]);
      const a = await blocked;
      const tookMs = Date.now() - putAt;
      assert.equal(a.status, 200);
      assert.ok(a.index > first.index, `index ${a.index} after ${first.index}`);
      const [kv] = JSON.parse(a.body) as Array<{ Value: string }>;
      assert.equal(Buffer.from(kv!.Value, "base64").toString(), "reopened");
      // The wrong behaviour waits out the whole minute.
      assert.ok(tookMs < 6_000, `answered ${tookMs}ms after the write`);
    });

    it("a query at the current index with nothing changing returns after ?wait= with the same index", async () => {
      const { index } = await get("/v1/catalog/service/books");
      const started = Date.now();
      const a = await get(`/v1/catalog/service/books?index=${index}&wait=2s`);
      const tookMs = Date.now() - started;
      assert.equal(a.status, 200);
      assert.equal(a.index, index, "something changed the registry during the wait");
      // Consul's jitter takes up to 1/16 off the wait; the wrong behaviours answer at once or after the 5-minute default.
      assert.ok(tookMs >= 1_800 && tookMs < 20_000, `answered after ${tookMs}ms`);
      assert.equal(JSON.parse(a.body).length, 2);
    });

    it("a missing key blocks too, and answers 404 with the index, as in Consul", async () => {
      const missing = await get("/v1/kv/config/books/later");
      assert.equal(missing.status, 404);
      assert.equal(missing.body, "");
      assert.ok(missing.index > 0);
      const blocked = get(`/v1/kv/config/books/later?index=${missing.index}&wait=60s`);
      await ws.cli(["kv", "put", "config/books/later", "now"]);
      const a = await blocked;
      assert.equal(a.status, 200);
      assert.ok(a.index > missing.index);
    });

    it("a huge ?wait= is capped, not overflowed into an answer at once", async () => {
      const { index } = await get("/v1/catalog/services");
      let answered: ConsulAnswer | undefined;
      const blocked = get(`/v1/catalog/services?index=${index}&wait=99999999999999999999h`).then((a) => (answered = a));
      // setTimeout with more than 2^31-1 ms fires at once: the bug this guards against.
      await new Promise((r) => setTimeout(r, 1_500));
      assert.equal(answered, undefined, `answered at once: ${JSON.stringify(answered)}`);
      await ws.cli(["kv", "put", "config/books/wake", "1"]);
      const a = await blocked;
      assert.equal(a.status, 200);
      assert.ok(a.index > index);
    });

    it("garbage ?index= and ?wait= are a 400 that names them, before anything blocks", async () => {
      for (const [query, what] of [["index=abc", "Invalid index"], ["index=-1", "Invalid index"], ["index=1e3", "Invalid index"], ["index=99999999999999999999", "Invalid index"], ["index=1&wait=30", "Invalid wait time"], ["index=1&wait=1e9s", "Invalid wait time"], ["wait=soon", "Invalid wait time"], [`index=1&wait=${"9".repeat(5000)}s`, "Invalid wait time"]] as const) {
        const a = await get(`/v1/kv/config/books/banner?${query}`);
        assert.equal(a.status, 400, query);
        assert.match(a.body, new RegExp(what), query);
      }
    });
  });

  describe("abuse", () => {
    const noData = (a: ConsulAnswer) => {
      for (const secret of ["closed for inventory", "reopened", "books-", ...live.map((i) => String(i.port))]) assert.ok(!a.body.includes(secret), `the refusal leaks ${secret}: ${a.body}`);
    };

    it("no token, a wrong token and a deploy token get 403 and no data; the admin token reads", async () => {
      const deployToken = (await ws.cli(["token", "create", "--deploy", "books"])).stdout.trim();
      const wrong = crypto.randomBytes(32).toString("hex");
      for (const path of ["/v1/catalog/services", "/v1/catalog/service/books", "/v1/health/service/books?passing", "/v1/kv/config/books/banner", "/v1/kv/?recurse", "/v1/agent/self", `/v1/kv/config/books/banner?index=1&wait=1m`]) {
        for (const [who, token, message] of [["none", null, /^Permission denied/], ["wrong", wrong, /^ACL not found/], ["deploy", deployToken, /^Permission denied: a deploy token/]] as const) {
          const a = await get(path, { token });
          assert.equal(a.status, 403, `${who} ${path}`);
          assert.match(a.body, message);
          assert.equal(a.headers["x-consul-index"], undefined);
          noData(a);
        }
        assert.equal((await get(path, { token: tokenOf(ws) })).status, 200, `admin ${path}`);
      }
      // Consul's clients may send the token as a bearer token too.
      assert.equal((await get("/v1/catalog/services", { token: null, headers: { authorization: `Bearer ${registryToken}` } })).status, 200);
    });

    it("refuses ?token= without echoing the token, and never logs it", async () => {
      const a = await get(`/v1/catalog/services?token=${registryToken}`, { token: null });
      assert.equal(a.status, 400);
      assert.match(a.body, /X-Consul-Token header/);
      assert.ok(!a.body.includes(registryToken));
      const log = fs.readFileSync(path.join(ws.dir, ".turquoise", "agent.log"), "utf8");
      assert.match(log, /Consul API \(read side\) on http:\/\/127\.0\.0\.1:/);
      assert.ok(!log.includes(registryToken));
    });

    it("never serves the agent's own records: reserved prefixes, traversal, encoded slashes", async () => {
      for (const path of [
        "/v1/kv/_turquoise/services/books/color",
        "/v1/kv/%5Fturquoise%2Fservices%2Fbooks%2Fcolor",
        "/v1/kv/_turquoise%2Fservices/books/color?raw",
        "/v1/kv/config/../_turquoise/services/books/color",
        "/v1/kv/config/%2E%2E/_turquoise/services/books/color",
        "/v1/kv/_turquoise/?recurse",
        "/v1/kv/_turquoise/?keys",
        "/v1/kv/_turquoise/services/?recurse&index=1&wait=1m",
      ]) {
        const a = await get(path);
        assert.equal(a.status, 403, `${path}: ${a.status} ${a.body}`);
        assert.match(a.body, /reserved namespace "_turquoise\/"/);
      }
      for (const path of ["/v1/kv/?recurse", "/v1/kv/?keys", "/v1/kv/_?recurse", "/v1/kv/_turquoise?keys&separator=/", "/v1/kv/?keys&separator=/", "/v1/kv/_t?recurse&index=1&wait=1s"]) {
        const a = await get(path);
        assert.ok(a.status === 200 || a.status === 404, `${path}: ${a.status}`);
        assert.ok(!a.body.includes("_turquoise"), `${path} lists the agent's records: ${a.body}`);
      }
      const all = JSON.parse((await get("/v1/kv/?keys")).body) as string[];
      assert.deepEqual(all.filter((k) => k.startsWith("config/books/")).length > 0, true);
    });

    it("refuses writes with 405 naming the read side, and unserved endpoints with 404 naming what is served", async () => {
      for (const [method, path] of [["PUT", "/v1/kv/config/books/banner"], ["DELETE", "/v1/kv/config/books/banner"], ["PUT", "/v1/agent/service/register"], ["POST", "/v1/txn"], ["PUT", "/v1/kv/_turquoise/services/books/color"]] as const) {
        const a = await get(path, { method, body: "hijacked" });
        assert.equal(a.status, 405, `${method} ${path}`);
        assert.match(a.body, /read side of Consul's HTTP API only/);
        assert.equal(a.headers.allow, "GET");
      }
      const banner = await get("/v1/kv/config/books/banner?raw");
      assert.equal(banner.body, "reopened");
      for (const path of ["/v1/acl/tokens", "/v1/agent/services", "/v1/health/state/critical", "/"]) {
        const a = await get(path);
        assert.equal(a.status, 404, path);
        assert.match(a.body, /it serves \/v1\/catalog\/services/);
      }
      const dc = await get("/v1/catalog/services?dc=elsewhere");
      assert.equal(dc.status, 500);
      assert.match(dc.body, /No path to datacenter "elsewhere"/);
      assert.equal((await get("/v1/catalog/services?dc=dc1")).status, 200);
      const filter = await get("/v1/health/service/books?filter=Service.Port%20%3D%3D%201");
      assert.equal(filter.status, 400);
      assert.match(filter.body, /\?filter is not supported/);
      const malformed = await get("/v1/kv/%E0%A4%A");
      assert.equal(malformed.status, 400);
    });

    it("a second agent whose consul.listen is taken stops with exit 9, naming consul.listen", async () => {
      const other = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, { replicas: 1 });
      try {
        await enableConsul(other, {}, port);
        const up = await other.cli(["up", "--detach"], { allowFail: true });
        assert.equal(up.code, EXIT_CODES.CONFLICT, up.stderr);
        assert.match(up.stderr + up.stdout, /the Consul API cannot listen on 127\.0\.0\.1:\d+: address in use \(set consul\.listen in /);
      } finally {
        await other.destroy();
      }
      // The first agent's Consul API is untouched.
      assert.equal((await get("/v1/catalog/services")).status, 200);
    });

    it("hundreds of hung blocking queries, and hung half-sent requests, leave the agent's API and plain reads answering; those past the cap get 429", async () => {
      const { index } = await get("/v1/catalog/services");
      const extra = 20;
      let refused = 0;
      const blocked: Array<Promise<ConsulAnswer>> = [];
      for (let i = 0; i < MAX_BLOCKING + extra; i++) {
        blocked.push(get(`/v1/catalog/services?index=${index}&wait=5m`).then((a) => {
          if (a.status === 429) refused++;
          return a;
        }));
      }
      // Hung peers: a request head that never ends.
      const hung: http.ClientRequest[] = [];
      for (let i = 0; i < 100; i++) {
        const req = http.request({ host: "127.0.0.1", port, path: "/v1/catalog/services", agent: false, headers: { "x-consul-token": registryToken } });
        req.on("error", () => undefined);
        req.flushHeaders();
        hung.push(req);
      }
      // Every slot taken: the queries past the cap are refused at once (the wrong behaviour holds them for 5 minutes too).
      const deadline = Date.now() + 30_000;
      while (refused < extra && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.equal(refused, extra);
      const started = Date.now();
      const own = await api(ws, "/v1/status");
      assert.equal(own.status, 200);
      const plain = await get("/v1/health/service/books?passing");
      assert.equal(plain.status, 200);
      assert.equal(JSON.parse(plain.body).length, 2);
      // Against a wrong behaviour that stalls until the 5-minute waits end.
      assert.ok(Date.now() - started < 10_000, `the agent took ${Date.now() - started}ms to answer`);
      const over = await get(`/v1/catalog/services?index=${index}&wait=5m`);
      assert.equal(over.status, 429);
      assert.match(over.body, /at most 300 at once \(consul\.max_blocking\)/);
      assert.equal(over.headers["retry-after"], "5");
      await ws.cli(["kv", "put", "config/books/wake", "2"]);
      const answers = await Promise.all(blocked);
      assert.equal(answers.filter((a) => a.status === 200 && a.index > index).length, MAX_BLOCKING);
      for (const req of hung) req.destroy();
      // The slots are free again.
      const again = await get(`/v1/catalog/services?index=${index}&wait=1s`);
      assert.equal(again.status, 200);
    });
  });
});
