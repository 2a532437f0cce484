// Token scopes on the API: admin everywhere, registry reads the catalog, health and user KV only, deploy tokens deploy their services only.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { internalKey } from "../../src/state/namespace.js";
import { startHarness, type Harness } from "./harness.js";

describe("token scopes", () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(async () => h.close());

  async function createToken(services: string[], name?: string): Promise<{ id: string; token: string }> {
    const r = await h.call("POST", "/v1/tokens", { body: JSON.stringify({ deploy: services, ...(name ? { name } : {}) }) });
    assert.equal(r.status, 200, r.body);
    return JSON.parse(r.body) as { id: string; token: string };
  }

  it("no token, a wrong one or a made-up one: 401", async () => {
    for (const token of ["", "nope", "0".repeat(64), h.adminToken.slice(0, 63)]) {
      assert.equal((await h.call("GET", "/v1/status", { token })).status, 401, token);
    }
  });

  it("the Bearer scheme's name is case-insensitive; the token is not, and another scheme is no token", async () => {
    const status = async (authorization: string) => (await h.call("GET", "/v1/status", { token: null, headers: { authorization } })).status;
    assert.equal(await status(`bearer ${h.adminToken}`), 200);
    assert.equal(await status(`BEARER ${h.adminToken}`), 200);
    const { token } = await createToken(["books"]);
    assert.equal((await h.call("GET", "/v1/status", { token: null, headers: { authorization: `bEaReR ${token}` } })).status, 200, "deploy tokens too");
    assert.equal(await status(`Bearer ${h.adminToken.toUpperCase()}`), 401);
    assert.equal(await status(`Basic ${h.adminToken}`), 401);
    assert.equal(await status(`Bearer${h.adminToken}`), 401);
  });

  it("an answer that echoes a caller's path (<script> in a KV key) is JSON no browser sniffs as a page, runs or frames", async () => {
    for (const [method, path, token] of [["GET", "/v1/kv/%3Cscript%3Ealert(1)%3C%2Fscript%3E", undefined], ["GET", "/v1/services/%3Cimg%20src%3Dx%3E/history", undefined], ["GET", "/v1/status", null]] as const) {
      const r = await h.call(method, path, token === null ? { token: null } : {});
      assert.ok(r.status >= 400, `${path}: ${r.status}`);
      assert.equal(r.headers["content-type"], "application/json", path);
      assert.equal(r.headers["x-content-type-options"], "nosniff", path);
      assert.match(String(r.headers["content-security-policy"]), /default-src 'none'.*frame-ancestors 'none'/, path);
    }
  });

  it("the registry token reads the catalog, health and user KV; everything else is 403", async () => {
    const t = h.registryToken;
    await h.call("PUT", "/v1/kv/config/banner", { body: "hi" });
    for (const p of ["/v1/catalog/services", "/v1/health/checks", "/v1/kv/config/banner", "/v1/kv?prefix=config/", "/v1/events"]) {
      assert.equal((await h.call("GET", p, { token: t })).status, 200, p);
    }
    const refused: Array<[string, string]> = [
      ["GET", "/v1/status"], ["POST", "/v1/services/books/deploy"], ["POST", "/v1/services/books/rollback"], ["POST", "/v1/services/books/plan"],
      ["POST", "/v1/services/books/migrate"], ["POST", "/v1/services/books/signal"], ["GET", "/v1/services/books/history"], ["GET", "/v1/services/books/logs"],
      ["PUT", "/v1/kv/config/banner"], ["DELETE", "/v1/kv/config/banner"], ["GET", "/v1/tokens"], ["POST", "/v1/tokens"], ["POST", "/v1/shutdown"],
    ];
    for (const [method, p] of refused) {
      const r = await h.call(method, p, { token: t, body: "{}" });
      assert.equal(r.status, 403, `${method} ${p}`);
      assert.match((JSON.parse(r.body) as { error: { message: string } }).error.message, /registry token reads the catalog, health checks, the user KV and catalog events only/);
    }
    assert.equal(h.deploys.length, 0);
  });

  it("the registry token sees catalog and health events, without their data; not deploy internals or watch output", async () => {
    await h.store.appendEvent({ service: "books", type: "check.changed", message: "books-blue-1 passing → critical", data: { secret: "x" } });
    await h.store.appendEvent({ service: null, type: "watch.handler", message: "watch w: ./x.sh exit 0", data: { output: "handler output" } });
    await h.store.appendEvent({ service: "books", type: "deploy.started", message: "deploy of books v2 started by ci", data: { historyId: 1 } });
    const seen = JSON.parse((await h.call("GET", "/v1/events", { token: h.registryToken })).body) as { events: Array<{ type: string; data: object }>; next: number };
    assert.deepEqual(seen.events.map((e) => [e.type, e.data]), [["check.changed", {}]]);
    const all = JSON.parse((await h.call("GET", "/v1/events")).body) as { events: Array<{ type: string }>; next: number };
    assert.equal(all.events.length, 3);
    assert.equal(seen.next, all.next, "a filtered page still says where the reader is");
  });

  it("a deploy token deploys, rolls back and reads the status of its services only", async () => {
    const { id, token } = await createToken(["books", "api"], "ci");
    assert.match(token, /^[0-9a-f]{64}$/);
    const deploy = await h.call("POST", "/v1/services/books/deploy", { token, body: JSON.stringify({ release: "v2", actor: "pipeline 7" }) });
    assert.equal(deploy.status, 200);
    const result = deploy.body.trim().split("\n").map((l) => JSON.parse(l) as { type: string; ok?: boolean; history?: { actor: string } }).at(-1)!;
    assert.equal(result.ok, true);
    assert.equal(result.history!.actor, `pipeline 7 (deploy token ${id} ci)`, "history names the token");
    assert.equal((await h.call("POST", "/v1/services/api/rollback", { token, body: "{}" })).status, 200);
    const st = JSON.parse((await h.call("GET", "/v1/status", { token })).body) as { services: Array<{ name: string }>; proxy: { stats?: unknown } };
    assert.deepEqual(st.services.map((s) => s.name), ["books", "api"]);
    assert.equal(st.proxy.stats, undefined);

    const refused: Array<[string, string]> = [
      ["POST", "/v1/services/shop/deploy"], ["POST", "/v1/services/shop/rollback"], ["POST", "/v1/services/shop/promote"], ["POST", "/v1/services/shop/abort"], ["POST", "/v1/services/books/plan"], ["POST", "/v1/services/books/signal"],
      ["POST", "/v1/services/books/migrate"], ["GET", "/v1/services/books/history"], ["GET", "/v1/services/books/logs"], ["GET", "/v1/catalog/services"],
      ["GET", "/v1/kv/config/banner"], ["PUT", "/v1/kv/config/banner"], ["GET", "/v1/events"], ["GET", "/v1/events/stream"], ["GET", "/v1/tokens"],
      ["POST", "/v1/tokens"], ["DELETE", `/v1/tokens/${id}`], ["POST", "/v1/shutdown"],
    ];
    for (const [method, p] of refused) {
      const r = await h.call(method, p, { token, body: JSON.stringify({ release: "v2", deploy: ["shop"] }) });
      assert.equal(r.status, 403, `${method} ${p}: ${r.body}`);
      assert.match(r.body, new RegExp(`deploy token ${id} \\(ci\\) may deploy, roll back and read the status of api, books only`));
    }
    assert.deepEqual(h.deploys.slice(-2), ["books", "api"]);
    assert.ok(!h.deploys.includes("shop"));
  });

  it("tokens are stored as a sha256 in the reserved namespace; a revoked token is 401 at once", async () => {
    const { id, token } = await createToken(["shop"]);
    const stored = await h.store.get(internalKey(`tokens/${id}`));
    assert.ok(stored);
    assert.ok(!stored.value.includes(token), "the token itself is never stored");
    const list = JSON.parse((await h.call("GET", "/v1/tokens")).body) as { tokens: Array<{ id: string; services: string[]; scope: string; createdAt: number }> };
    assert.deepEqual(list.tokens.find((t) => t.id === id), { id, name: null, services: ["shop"], createdAt: list.tokens.find((t) => t.id === id)!.createdAt, scope: "deploy" });
    assert.ok(!JSON.stringify(list).includes("sha256"));
    assert.equal((await h.call("DELETE", `/v1/tokens/${id}`)).status, 200);
    assert.equal((await h.call("GET", "/v1/status", { token })).status, 401);
    assert.equal((await h.call("POST", "/v1/services/shop/deploy", { token, body: "{\"release\":\"v1\"}" })).status, 401);
    assert.equal((await h.call("DELETE", `/v1/tokens/${id}`)).status, 404);
  });

  it("a token for an unknown service is refused, naming it", async () => {
    const r = await h.call("POST", "/v1/tokens", { body: JSON.stringify({ deploy: ["nope"] }) });
    assert.equal(r.status, 404);
    assert.match(r.body, /no service named \\"nope\\"/);
  });
});
