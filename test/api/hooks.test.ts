// Signed webhooks: GitHub's signature scheme (its published test vector), the payload → release
// rule, and POST /v1/hooks/<service> against the API in-process: who may deploy, what is refused
// and why, replays answered but not run twice (a signed one without a delivery id too), and
// redeliveries of failed ones run again, once.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import http from "node:http";
import os from "node:os";
import { after, before, describe, it } from "node:test";
import { claimDelivery, deliveryRecord, hookKeys } from "../../src/api/deliveries.js";
import { githubSignature, releaseFromPayload, signatureMatches } from "../../src/api/hooks.js";
import type { NewHistoryEntry } from "../../src/state/contract.js";
import { agentId } from "../../src/state/leader.js";
import { MemoryStore } from "../../src/state/memory.js";
import { startHarness, type Harness } from "./harness.js";

/** Polls until check holds; the bound only ends a wait for what never comes. */
async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

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

describe("a delivery's record", () => {
  it("follows its run; a later claim of a failed run is never overwritten by the earlier run's late news", async () => {
    const store = new MemoryStore();
    const read = async () => deliveryRecord((await store.get(hookKeys.delivery("books", "d1")))?.value);
    const first = await claimDelivery(store, "books", "d1", "v1");
    assert.ok(first.won);
    const copy = await claimDelivery(store, "books", "d1", "v1");
    assert.ok(!copy.won && copy.outcome === "running");
    await first.claim.update({ historyId: 7 });
    await first.claim.update({ outcome: "failed" });
    assert.deepEqual({ ...(await read()), at: 0 }, { at: 0, release: "v1", historyId: 7, outcome: "failed", attempt: 1, delivery: null, agent: agentId() });
    const redelivery = await claimDelivery(store, "books", "d1", "v1");
    assert.ok(redelivery.won && redelivery.claim.attempt === 2);
    // The first run's last write, arriving late, loses its compare-and-set.
    await first.claim.update({ outcome: "succeeded" });
    assert.equal((await read())?.outcome, "running");
    assert.equal((await read())?.attempt, 2);
    await store.close();
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
  /** A delivery signed as GitHub signs it; delivery: null sends no X-GitHub-Delivery. */
  const github = (body: string, opts: { event?: string; delivery?: string | null; secret?: string } = {}) =>
    post("/v1/hooks/books", body, {
      "x-github-event": opts.event ?? "push",
      ...(opts.delivery === null ? {} : { "x-github-delivery": opts.delivery ?? randomUUID() }),
      "x-hub-signature-256": githubSignature(opts.secret ?? SECRET, body),
    });
  /** The key a signed body's delivery is recorded under, whatever delivery id it names. */
  const bodyKey = (body: string) => `body-sha256:${createHash("sha256").update(body).digest("hex")}`;
  /** What the agent's record of a signed body's delivery says of its outcome. */
  const recorded = async (service: string, body: string): Promise<string | undefined> => {
    const kv = await h.store.get(hookKeys.delivery(service, bodyKey(body)));
    return kv && (JSON.parse(kv.value) as { outcome?: string }).outcome;
  };

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

  it("a signed delivery without a delivery id is known by its body: sent again it is a duplicate and deploys nothing", async () => {
    const before = h.deploys.length;
    const body = JSON.stringify({ ref: "refs/tags/v10" });
    const id = bodyKey(body);
    const first = await github(body, { delivery: null });
    assert.equal(first.status, 202, JSON.stringify(first.json));
    assert.equal(first.json.delivery, null);
    assert.equal(first.json.key, id);
    assert.equal(h.actors.at(-1), `webhook (GitHub, delivery ${id})`);
    const replay = await github(body, { delivery: null });
    assert.equal(replay.status, 200, JSON.stringify(replay.json));
    assert.equal(replay.json.duplicate, true);
    assert.equal(replay.json.key, id);
    assert.equal(replay.json.history, first.json.history);
    assert.equal(h.deploys.length, before + 1, "one deploy for the body and its replay");
    // Another body is another delivery.
    assert.equal((await github(JSON.stringify({ ref: "refs/tags/v11" }), { delivery: null })).status, 202);
    assert.equal(h.deploys.length, before + 2);
  });

  it("five copies of a signed body without a delivery id sent at once run one deploy", async () => {
    const before = h.deploys.length;
    const body = JSON.stringify({ ref: "refs/tags/v12" });
    const answers = await Promise.all(Array.from({ length: 5 }, () => github(body, { delivery: null })));
    assert.equal(h.deploys.length, before + 1);
    assert.equal(answers.filter((a) => a.status === 202).length, 1, JSON.stringify(answers.map((a) => a.status)));
    assert.equal(answers.filter((a) => a.json.duplicate === true).length, 4);
  });

  it("a captured signed body sent again under a new delivery id is a duplicate: one deploy in history, and the answer names both ids", async () => {
    const body = JSON.stringify({ ref: "refs/tags/v20", sender: { login: "octocat" } });
    const before = h.deploys.length;
    const original = randomUUID();
    const first = await github(body, { delivery: original });
    assert.equal(first.status, 202, JSON.stringify(first.json));
    assert.equal(first.json.delivery, original);
    assert.equal(first.json.key, bodyKey(body));
    await until("the deploy's success in the delivery's record", async () => (await recorded("books", body)) === "succeeded");
    const replayed = randomUUID();
    const replay = await github(body, { delivery: replayed });
    assert.equal(replay.status, 200, JSON.stringify(replay.json));
    assert.equal(replay.json.duplicate, true);
    assert.equal(replay.json.delivery, replayed);
    assert.equal(replay.json.earlierDelivery, original);
    assert.equal(replay.json.history, first.json.history);
    assert.equal(h.deploys.length, before + 1, "the replay deployed nothing");
    // The record keeps the id GitHub sent with the run that stands, beside its body key.
    assert.equal((await h.store.get(hookKeys.delivery("books", bodyKey(body))).then((kv) => JSON.parse(kv!.value) as { delivery: string })).delivery, original);
    assert.equal(h.actors.filter((a) => a.includes(original) || a.includes(replayed)).length, 1);
  });

  it("five copies of one signed body under five delivery ids sent at once deploy once", async () => {
    const body = JSON.stringify({ ref: "refs/tags/v21" });
    const before = h.deploys.length;
    const answers = await Promise.all(Array.from({ length: 5 }, () => github(body, { delivery: randomUUID() })));
    assert.equal(h.deploys.length, before + 1);
    assert.equal(answers.filter((a) => a.status === 202).length, 1, JSON.stringify(answers.map((a) => a.json)));
    assert.equal(answers.filter((a) => a.json.duplicate === true).length, 4);
  });

  it("a replay under a new delivery id of a signed body whose deploy failed runs it again, as GitHub's Redeliver would", async () => {
    // The body is what was signed: once its run failed, sending it again is a retry whichever id it names.
    const body = JSON.stringify({ ref: "refs/tags/v22" });
    const before = h.deploys.length;
    h.missing.add("v22");
    assert.equal((await github(body)).status, 422);
    h.missing.delete("v22");
    const again = await github(body);
    assert.equal(again.status, 202, JSON.stringify(again.json));
    assert.equal(again.json.attempt, 2);
    assert.equal(h.deploys.length, before + 1);
  });

  it("token callers are still known by their delivery id: the same body under another Idempotency-Key deploys again", async () => {
    const body = JSON.stringify({ release: "v23" });
    const before = h.deploys.length;
    const send = (key: string) => post("/v1/hooks/books", body, { authorization: `Bearer ${h.adminToken}`, "idempotency-key": key });
    const first = await send("job-23-a");
    assert.equal(first.status, 200, JSON.stringify(first.json));
    assert.equal(first.json.delivery, "job-23-a");
    assert.equal(first.json.key, "job-23-a");
    assert.equal((await send("job-23-a")).json.duplicate, true);
    assert.equal((await send("job-23-b")).status, 200);
    assert.equal(h.deploys.length, before + 2);
  });

  it("a token call without a delivery id runs every time it is sent: its holder may deploy at will", async () => {
    const before = h.deploys.length;
    for (let i = 0; i < 2; i++) {
      const r = await post("/v1/hooks/books", JSON.stringify({ release: "v13" }), { authorization: `Bearer ${h.adminToken}` });
      assert.equal(r.status, 200, JSON.stringify(r.json));
      assert.equal(r.json.delivery, null);
    }
    assert.equal(h.deploys.length, before + 2);
  });

  it("GitHub's Redeliver of a delivery whose release was not found runs it again; once that succeeded, it is a duplicate", async () => {
    const delivery = randomUUID();
    const body = JSON.stringify({ ref: "refs/tags/v14" });
    const before = h.deploys.length;
    h.missing.add("v14");
    const refused = await github(body, { delivery });
    assert.equal(refused.status, 422, JSON.stringify(refused.json));
    assert.equal(h.deploys.length, before);
    // The release is pushed, then the delivery redelivered.
    h.missing.delete("v14");
    const again = await github(body, { delivery });
    assert.equal(again.status, 202, JSON.stringify(again.json));
    assert.equal(again.json.attempt, 2);
    assert.equal(h.deploys.length, before + 1);
    assert.equal(h.actors.at(-1), `webhook (GitHub, delivery ${delivery}, attempt 2)`);
    await until("the deploy's success in the delivery's record", async () => (await recorded("books", body)) === "succeeded");
    const replay = await github(body, { delivery });
    assert.equal(replay.status, 200);
    assert.equal(replay.json.duplicate, true);
    assert.equal(replay.json.outcome, "succeeded");
    assert.equal(replay.json.history, again.json.history);
    assert.equal(h.deploys.length, before + 1);
  });

  it("a redelivery of a delivery whose deploy failed after it started runs again", async () => {
    const delivery = randomUUID();
    const body = JSON.stringify({ ref: "refs/tags/v15" });
    const before = h.deploys.length;
    h.broken.add("v15");
    const first = await github(body, { delivery });
    assert.equal(first.status, 202, JSON.stringify(first.json));
    await until("the failure in the delivery's record", async () => (await recorded("books", body)) === "failed");
    h.broken.delete("v15");
    const again = await github(body, { delivery });
    assert.equal(again.status, 202, JSON.stringify(again.json));
    assert.notEqual(again.json.history, first.json.history);
    assert.equal(h.deploys.length, before + 2);
  });

  it("a redelivery while the deploy runs is a duplicate", async () => {
    const delivery = randomUUID();
    const body = JSON.stringify({ ref: "refs/tags/v16" });
    let release!: () => void;
    h.holdDeploys(new Promise<void>((r) => (release = r)));
    const before = h.deploys.length;
    const first = github(body, { delivery });
    try {
      await until("the delivery's claim", async () => (await recorded("books", body)) === "running");
      const during = await github(body, { delivery });
      assert.equal(during.status, 200);
      assert.equal(during.json.duplicate, true);
      assert.equal(during.json.outcome, "running");
    } finally {
      release();
      h.holdDeploys(Promise.resolve());
    }
    assert.equal((await first).status, 202);
    assert.equal(h.deploys.length, before + 1);
  });

  it("five copies of a redelivery of a failed delivery sent at once run it once", async () => {
    const delivery = randomUUID();
    const body = JSON.stringify({ ref: "refs/tags/v17" });
    h.missing.add("v17");
    assert.equal((await github(body, { delivery })).status, 422);
    h.missing.delete("v17");
    const before = h.deploys.length;
    // Every copy reads the failed record before any of them claims it again: only the claim's compare-and-set keeps them to one run.
    const key = hookKeys.delivery("books", bodyKey(body));
    const get = h.store.get.bind(h.store);
    let waiting = 0;
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    setTimeout(() => open(), 5_000).unref();
    h.store.get = async (k: string) => {
      const kv = await get(k);
      if (k === key && ++waiting === 5) open();
      if (k === key) await gate;
      return kv;
    };
    let answers: Array<{ status: number; json: Record<string, any> }>;
    try {
      answers = await Promise.all(Array.from({ length: 5 }, () => github(body, { delivery })));
    } finally {
      h.store.get = get;
    }
    assert.equal(answers.filter((a) => a.status === 202).length, 1, JSON.stringify(answers.map((a) => a.json)));
    assert.equal(answers.filter((a) => a.json.duplicate === true).length, 4);
    assert.equal(h.deploys.length, before + 1);
  });

  it("a record an agent left running (it died, or lost its lock) is settled by its history entry", async () => {
    const entry = (outcome: NewHistoryEntry["outcome"]) => h.store.addHistory({
      service: "api", kind: "deploy", release: "v1", previousRelease: null, via: null, actor: "test", startedAt: Date.now(), finishedAt: null, outcome, plan: [], steps: [], error: null,
    });
    const aborted = await entry("aborted");
    const running = await entry("running");
    const succeeded = await entry("succeeded");
    const left = (historyId: number, extra: Record<string, unknown> = { outcome: "running", attempt: 1 }) => JSON.stringify({ at: Date.now(), release: "v1", historyId, ...extra });
    await h.store.put(hookKeys.delivery("api", "job-aborted"), left(aborted.id));
    await h.store.put(hookKeys.delivery("api", "job-running"), left(running.id));
    await h.store.put(hookKeys.delivery("api", "job-succeeded"), left(succeeded.id));
    // Written before records kept an outcome: its history entry decides all the same.
    await h.store.put(hookKeys.delivery("api", "job-old"), left(aborted.id, {}));
    const send = (key: string) => post("/v1/hooks/api", JSON.stringify({ release: "v1" }), { authorization: `Bearer ${h.adminToken}`, "idempotency-key": key });
    const before = h.deploys.length;
    const rerun = await send("job-aborted");
    assert.equal(rerun.status, 200, JSON.stringify(rerun.json));
    assert.equal(rerun.json.attempt, 2);
    assert.deepEqual([(await send("job-running")).json.outcome, (await send("job-succeeded")).json.outcome], ["running", "succeeded"]);
    assert.equal((await send("job-old")).json.attempt, 2);
    assert.equal(h.deploys.length, before + 2);
  });

  it("a claim whose agent died before its deploy began runs again on redelivery; one a living or unknown agent holds stays running", async () => {
    // A pid that was this host's and is gone: the agent that claimed died between its claim and its history entry.
    const gone = spawnSync(process.execPath, ["-e", ""]).pid;
    const claimed = (agent: string | undefined) => JSON.stringify({ at: Date.now(), release: "v1", historyId: null, outcome: "running", attempt: 1, ...(agent ? { agent } : {}) });
    await h.store.put(hookKeys.delivery("api", "claim-dead"), claimed(`${os.hostname()}:${gone}`));
    await h.store.put(hookKeys.delivery("api", "claim-alive"), claimed(`${os.hostname()}:${process.ppid}`));
    await h.store.put(hookKeys.delivery("api", "claim-elsewhere"), claimed(`another-host.test:${gone}`));
    await h.store.put(hookKeys.delivery("api", "claim-unnamed"), claimed(undefined));
    const send = (key: string) => post("/v1/hooks/api", JSON.stringify({ release: "v1" }), { authorization: `Bearer ${h.adminToken}`, "idempotency-key": key });
    const before = h.deploys.length;
    const rerun = await send("claim-dead");
    assert.equal(rerun.status, 200, JSON.stringify(rerun.json));
    assert.equal(rerun.json.attempt, 2);
    assert.equal(h.deploys.length, before + 1);
    for (const key of ["claim-alive", "claim-elsewhere", "claim-unnamed"]) {
      const r = await send(key);
      assert.equal(r.json.duplicate, true, `${key}: ${JSON.stringify(r.json)}`);
      assert.equal(r.json.outcome, "running", key);
    }
    assert.equal(h.deploys.length, before + 1, "nothing else ran");
    // No history id in the record, but a history entry naming the delivery: the id was never
    // written (the agent died just after its deploy began, or the store failed). The entry decides.
    const ran = (outcome: NewHistoryEntry["outcome"], named: string, attempt = 1) => h.store.addHistory({
      service: "api", kind: "deploy", release: "v1", previousRelease: null, via: null, actor: `webhook (token${attempt > 1 ? `, delivery ${named}, attempt ${attempt})` : `, delivery ${named})`}`,
      startedAt: Date.now(), finishedAt: Date.now(), outcome, plan: [], steps: [], error: null,
    });
    await ran("succeeded", "ran-dead");
    await ran("failed", "ran-alive", 2);
    await ran("succeeded", "ran-alive"); // the first attempt's entry: not this record's
    await h.store.put(hookKeys.delivery("api", "ran-dead"), claimed(`${os.hostname()}:${gone}`));
    await h.store.put(hookKeys.delivery("api", "ran-alive"), JSON.stringify({ at: Date.now(), release: "v1", historyId: null, outcome: "running", attempt: 2, agent: `${os.hostname()}:${process.ppid}` }));
    const ranDead = await send("ran-dead");
    assert.deepEqual([ranDead.json.duplicate, ranDead.json.outcome], [true, "succeeded"], "its deploy ran and succeeded: not run again");
    const ranAlive = await send("ran-alive");
    assert.equal(ranAlive.json.attempt, 3, `its second attempt's entry failed: it runs again (${JSON.stringify(ranAlive.json)})`);
    assert.equal(h.deploys.length, before + 2);
    // The rerun's record names the agent that claimed it now.
    assert.equal(deliveryRecord((await h.store.get(hookKeys.delivery("api", "claim-dead")))?.value)?.agent, agentId());
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
