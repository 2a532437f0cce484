// The API of an agent that does not lead (several agents on one store): every write route is
// refused with NOT_LEADER (HTTP 421) naming the leader's API, before it reads a body or changes
// anything; reads are served; a hostile caller cannot get past the refusal.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Election, LEADER_LOCK } from "../../src/state/leader.js";
import { MemoryStore } from "../../src/state/memory.js";
import { startHarness, type Harness } from "./harness.js";

const LEADER_OWNER = "agent web-1:4121 api http://127.0.0.1:7001 proxy 127.0.0.1:8001 term 0f0f0f0f";

describe("the API of a follower", () => {
  let h: Harness;
  let store: MemoryStore;

  before(async () => {
    store = new MemoryStore();
    assert.equal((await store.acquireLock(LEADER_LOCK, LEADER_OWNER, 60_000)).ok, true);
    const election = new Election(store, { id: "web-2:977", api: "http://127.0.0.1:7002", proxy: "127.0.0.1:8002", startedAt: Date.now() }, { ttlMs: 3_000, log: () => {} });
    h = await startHarness({ store, leadership: election, leads: false });
  });

  after(() => h.close());

  const writes: Array<[string, string, string?]> = [
    ["POST", "/v1/services/books/deploy", JSON.stringify({ release: "v2" })],
    ["POST", "/v1/services/books/rollback", "{}"],
    ["POST", "/v1/services/books/migrate", JSON.stringify({ action: "up" })],
    ["POST", "/v1/services/books/signal", JSON.stringify({ signal: "HUP" })],
    ["PUT", "/v1/kv/feature", "on"],
    ["DELETE", "/v1/kv/feature"],
    ["POST", "/v1/tokens", JSON.stringify({ deploy: ["books"] })],
    ["DELETE", "/v1/tokens/abc"],
  ];

  for (const [method, path, body] of writes) {
    it(`refuses ${method} ${path} with 421 NOT_LEADER naming the leader's API`, async () => {
      const r = await h.call(method, path, body === undefined ? {} : { body });
      assert.equal(r.status, 421, r.body);
      const e = (JSON.parse(r.body) as { error: { code: string; message: string; leader: { api: string; id: string } } }).error;
      assert.equal(e.code, "NOT_LEADER");
      assert.equal(e.leader.api, "http://127.0.0.1:7001");
      assert.match(e.message, new RegExp(`send the ${method} ${path.replaceAll("/", "\\/")} to the leader, agent web-1:4121 at http:\\/\\/127\\.0\\.0\\.1:7001`));
    });
  }

  // A webhook is routed outside the route table (it proves itself by signature): it must meet the same refusal.
  it("refuses a webhook delivery with 421 NOT_LEADER naming the leader's API, before any deploy or delivery record", async () => {
    const token = await h.call("POST", "/v1/hooks/books", { body: JSON.stringify({ release: "v2" }), headers: { "content-type": "application/json", "idempotency-key": "ci-run-1" } });
    assert.equal(token.status, 421, token.body);
    const e = (JSON.parse(token.body) as { error: { code: string; message: string; leader: { api: string } } }).error;
    assert.equal(e.code, "NOT_LEADER");
    assert.equal(e.leader.api, "http://127.0.0.1:7001");
    assert.match(e.message, /send the POST \/v1\/hooks\/books to the leader/);
    // Asked again once the CI retries at the leader, the delivery id must still be unclaimed here.
    assert.equal((await h.call("POST", "/v1/hooks/books", { body: JSON.stringify({ release: "v2" }), headers: { "content-type": "application/json", "idempotency-key": "ci-run-1" } })).status, 421);
    // A caller with no token learns nothing about the leader: it is refused as anywhere else.
    assert.equal((await h.call("POST", "/v1/hooks/books", { token: null, body: JSON.stringify({ release: "v2" }) })).status, 401);
  });

  it("changed nothing: no deploy ran, no key, no token, no history", async () => {
    assert.deepEqual(h.deploys, []);
    assert.deepEqual(await store.list(""), []);
    assert.deepEqual(h.agent.deployTokens.list(), []);
  });

  it("refuses a huge body without reading it, and still asks for a token first", async () => {
    const big = await h.call("PUT", "/v1/kv/feature", { body: "x".repeat(4 * 1024 * 1024) }).catch((e: NodeJS.ErrnoException) => ({ status: 0, body: e.code ?? "" }));
    assert.ok(big.status === 421 || big.body === "ECONNRESET" || big.body === "EPIPE", `${big.status} ${big.body.slice(0, 200)}`);
    assert.equal((await h.call("POST", "/v1/services/books/deploy", { token: "wrong", body: "{}" })).status, 401);
  });

  it("answers reads: status, history, the KV", async () => {
    assert.equal((await h.call("GET", "/v1/services/books/history")).status, 200);
    assert.equal((await h.call("GET", "/v1/kv/feature")).status, 404);
  });
});
