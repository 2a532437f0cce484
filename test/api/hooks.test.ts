// Signed webhooks: GitHub's signature scheme (its published test vector), the payload → release
// rule, and POST /v1/hooks/<service> against the API in-process: who may deploy, what is refused
// and why, replays answered but not run twice.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import http from "node:http";
import { after, before, describe, it } from "node:test";
import { githubSignature, releaseFromPayload, signatureMatches } from "../../src/api/hooks.js";
import { startHarness, type Harness } from "./harness.js";

describe("GitHub's signature", () => {
  it("matches GitHub's published test vector", () => {
    // docs.github.com, "Validating webhook deliveries": secret, payload and the expected header.
    const secret = "It's a Secret to Everybody";
    assert.equal(githubSignature(secret, "Hello, World!"), "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
    assert.equal(signatureMatches(secret, Buffer.from("Hello, World!"), "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"), true);
  });

  it("refuses a body altered by one byte, a truncated or empty signature, and another secret", () => {
    const body = Buffer.from('{"ref":"refs/tags/v2"}');
    const good = githubSignature("s3cret", body);
    const altered = Buffer.from(body);
    altered[altered.length - 2] ^= 1;
    assert.equal(signatureMatches("s3cret", altered, good), false);
    assert.equal(signatureMatches("s3cret", body, good.slice(0, -1)), false);
    assert.equal(signatureMatches("s3cret", body, ""), false);
    assert.equal(signatureMatches("s3cret", body, undefined), false);
    assert.equal(signatureMatches("other", body, good), false);
    assert.equal(signatureMatches("s3cret", body, good), true);
  });
});

describe("the payload → release rule", () => {
  const sha = "0123456789abcdef0123456789abcdef01234567";
  it("takes a pushed tag by default from GitHub, a release field from other CIs", () => {
    assert.deepEqual(releaseFromPayload({}, { ref: "refs/tags/v2.1" }, true), { release: "v2.1" });
    assert.deepEqual(releaseFromPayload({}, { action: "published", release: { tag_name: "v3" } }, true), { release: "v3" });
    assert.deepEqual(releaseFromPayload({}, { release: "v4" }, false), { release: "v4" });
  });
  it("fills a template from branch and commit, and ignores other branches", () => {
    const hook = { release: "main-{sha7}", branches: ["main"] };
    assert.deepEqual(releaseFromPayload(hook, { ref: "refs/heads/main", after: sha }, true), { release: "main-0123456" });
    assert.ok("ignored" in releaseFromPayload(hook, { ref: "refs/heads/feature", after: sha }, true));
  });
  it("says what a payload lacks, and refuses what is no release name", () => {
    const r = releaseFromPayload({}, { ref: "refs/heads/main" }, true);
    assert.ok("error" in r);
    assert.match(r.error, /webhook.release "\{tag\}" needs \{tag\}, and it offers \{branch\}/);
    const odd = releaseFromPayload({}, { release: "../../etc" }, false);
    assert.ok("error" in odd && /not a release name/.test(odd.error), JSON.stringify(odd));
    assert.ok("error" in releaseFromPayload({ release: "{release}" }, { release: { tag_name: 3 } }, false));
  });
});

describe("POST /v1/hooks/<service>", () => {
  let h: Harness;
  const SECRET = "a secret only GitHub and the agent know";
  before(async () => {
    process.env.TQ_TEST_BOOKS_SECRET = SECRET;
    h = await startHarness();
  });
  after(async () => {
    delete process.env.TQ_TEST_BOOKS_SECRET;
    await h.close();
  });

  const post = (path: string, body: string | Buffer, headers: Record<string, string>): Promise<{ status: number; json: Record<string, any> }> =>
    new Promise((resolve, reject) => {
      const req = http.request({ host: "127.0.0.1", port: h.port, path, method: "POST", agent: false, headers: { "content-type": "application/json", ...headers } }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (text += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : {} }));
      });
      req.on("error", reject);
      req.end(body);
    });
  const github = (body: string, opts: { event?: string; delivery?: string; secret?: string } = {}) =>
    post("/v1/hooks/books", body, {
      "x-github-event": opts.event ?? "push",
      "x-github-delivery": opts.delivery ?? randomUUID(),
      "x-hub-signature-256": githubSignature(opts.secret ?? SECRET, body),
    });

  it("a signed tag push deploys that tag: 202 with the deploy's id, and history names GitHub and the delivery", async () => {
    const before = h.deploys.length;
    const delivery = randomUUID();
    const r = await github(JSON.stringify({ ref: "refs/tags/v2", sender: { login: "octocat" } }), { delivery });
    assert.equal(r.status, 202, JSON.stringify(r.json));
    assert.equal(r.json.release, "v2");
    assert.equal(r.json.history, before + 1);
    assert.equal(h.deploys.length, before + 1);
    assert.equal(h.actors.at(-1), `webhook (GitHub, by octocat, delivery ${delivery})`);
  });

  it("a delivery seen before is answered 200 with the first deploy's id and not run twice", async () => {
    const delivery = randomUUID();
    const body = JSON.stringify({ ref: "refs/tags/v3" });
    const first = await github(body, { delivery });
    const count = h.deploys.length;
    const replays = await Promise.all([github(body, { delivery }), github(body, { delivery })]);
    for (const r of replays) {
      assert.equal(r.status, 200);
      assert.equal(r.json.duplicate, true);
      assert.equal(r.json.history, first.json.history);
    }
    assert.equal(h.deploys.length, count, "no second deploy");
  });

  it("two copies of one delivery sent at once run one deploy", async () => {
    const delivery = randomUUID();
    const before = h.deploys.length;
    const body = JSON.stringify({ ref: "refs/tags/v4" });
    const answers = await Promise.all(Array.from({ length: 5 }, () => github(body, { delivery })));
    assert.equal(h.deploys.length, before + 1);
    assert.equal(answers.filter((a) => a.status === 202).length, 1, JSON.stringify(answers.map((a) => a.status)));
  });

  it("refuses a bad signature, a body altered by one byte, and no credentials, with 401 and nothing deployed", async () => {
    const before = h.deploys.length;
    const body = JSON.stringify({ ref: "refs/tags/v5" });
    assert.equal((await github(body, { secret: "guess" })).status, 401);
    const altered = body.replace("v5", "v6");
    const r = await post("/v1/hooks/books", altered, { "x-github-event": "push", "x-hub-signature-256": githubSignature(SECRET, body) });
    assert.equal(r.status, 401);
    assert.match(r.json.error.message, /does not match the body/);
    assert.equal((await post("/v1/hooks/books", body, {})).status, 401);
    assert.equal((await post("/v1/hooks/books", body, { authorization: `Bearer ${h.registryToken}` })).status, 403);
    assert.equal(h.deploys.length, before);
    assert.doesNotMatch(JSON.stringify(r.json), new RegExp(SECRET));
  });

  it("answers an unknown service 404 without listing the others, and a service with no secret 401", async () => {
    const r = await github(JSON.stringify({ ref: "refs/tags/v2" }));
    assert.equal(r.status, 202);
    const unknown = await post("/v1/hooks/nope", "{}", { "x-hub-signature-256": githubSignature(SECRET, "{}") });
    assert.equal(unknown.status, 404);
    assert.doesNotMatch(unknown.json.error.message, /books|shop/);
    assert.equal((await post("/v1/hooks/__proto__", "{}", { "x-hub-signature-256": githubSignature(SECRET, "{}") })).status, 404);
    // shop names a secret variable the agent's environment does not have.
    const noSecret = await post("/v1/hooks/shop", "{}", { "x-hub-signature-256": githubSignature(SECRET, "{}") });
    assert.equal(noSecret.status, 401);
    assert.match(noSecret.json.error.message, /TQ_TEST_SHOP_SECRET/);
  });

  it("a payload that maps to no release is 422 with why; a ping, other events and other branches are 200 and deploy nothing", async () => {
    const before = h.deploys.length;
    const branch = await github(JSON.stringify({ ref: "refs/heads/main" }));
    assert.equal(branch.status, 422);
    assert.match(branch.json.error.message, /needs \{tag\}/);
    assert.equal((await github(JSON.stringify({ zen: "Keep it logically awesome." }), { event: "ping" })).json.ping, true);
    assert.match((await github(JSON.stringify({ action: "opened" }), { event: "issues" })).json.ignored, /deploys nothing/);
    assert.equal((await post("/v1/hooks/books", "not json", { "x-github-event": "push", "x-hub-signature-256": githubSignature(SECRET, "not json") })).status, 400);
    assert.equal(h.deploys.length, before);
  });

  it("a 10 MB body is refused with 413 before it is read, and nothing is deployed", async () => {
    const before = h.deploys.length;
    const big = Buffer.alloc(10 * 1024 * 1024, 0x20);
    const r = await post("/v1/hooks/books", big, { "x-hub-signature-256": githubSignature(SECRET, big) }).catch((e: unknown) => ({ status: -1, json: { e: String(e) } }));
    // The agent answers 413 and closes; the client may see the close before the answer.
    assert.ok(r.status === 413 || r.status === -1, JSON.stringify(r));
    assert.equal(h.deploys.length, before);
  });

  it("with a deploy token: waits for the outcome, 200 on success, 422 with the deploy's id when it fails", async () => {
    const { token } = await h.agent.deployTokens.create(["books"], "ci");
    const ok = await post("/v1/hooks/books", JSON.stringify({ release: "v7" }), { authorization: `Bearer ${token}`, "idempotency-key": "job-1" });
    assert.equal(ok.status, 200, JSON.stringify(ok.json));
    assert.equal(ok.json.outcome, "succeeded");
    assert.match(h.actors.at(-1)!, /^webhook \(deploy token [0-9a-f]{16} ci, delivery job-1\)$/);
    const failed = await post("/v1/hooks/books", JSON.stringify({ release: "broken" }), { authorization: `Bearer ${token}` });
    assert.equal(failed.status, 422);
    assert.equal(failed.json.error.code, "DEPLOY_FAILED");
    assert.equal(typeof failed.json.history, "number");
    const missing = await post("/v1/hooks/books", JSON.stringify({ release: "missing" }), { authorization: `Bearer ${token}` });
    assert.equal(missing.status, 422);
    assert.match(missing.json.error.message, /not found/);
    // A token for books deploys nothing else.
    assert.equal((await post("/v1/hooks/api", JSON.stringify({ release: "v1" }), { authorization: `Bearer ${token}` })).status, 403);
    assert.equal((await post("/v1/hooks/books", JSON.stringify({ release: "v8" }), { authorization: `Bearer ${token}`, "idempotency-key": "bad key with spaces" })).status, 400);
  });

  it("only POST reaches a hook", async () => {
    assert.equal((await h.call("GET", "/v1/hooks/books")).status, 405);
  });
});
