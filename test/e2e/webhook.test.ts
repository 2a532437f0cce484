// End to end: a GitHub-signed push of a tag deploys that release through a real agent, history
// says who triggered it, and `turquoise webhook` prints where to send it.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import http from "node:http";
import { after, before, describe, it } from "node:test";
import { githubSignature } from "../../src/api/hooks.js";
import type { Workspace } from "../../src/demo/workspace.js";
import { RELEASE_KINDS, releaseServing, workspaceWith } from "./helpers.js";

const SECRET = `webhook-secret-${randomUUID()}`;

describe("signed webhooks, end to end", () => {
  let ws: Workspace;
  before(async () => {
    ws = await workspaceWith(
      { v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.good("v2") },
      { replicas: 1, env: { ...process.env, TQ_E2E_HOOK_SECRET: SECRET }, extraServiceYaml: "    bake: 0s\n    webhook: { secret_env: TQ_E2E_HOOK_SECRET }\n" },
    );
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
  });
  after(async () => ws?.destroy());

  const deliver = (body: string, delivery: string) =>
    new Promise<{ status: number; json: Record<string, unknown> }>((resolve, reject) => {
      const req = http.request(
        {
          host: "127.0.0.1", port: ws.agentPort, path: "/v1/hooks/books", method: "POST", agent: false,
          headers: { "content-type": "application/json", "x-github-event": "push", "x-github-delivery": delivery, "x-hub-signature-256": githubSignature(SECRET, body) },
        },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => (text += c));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown> }));
        },
      );
      req.on("error", reject);
      req.end(body);
    });

  it("a tag push deploys the tag; history shows the webhook, the sender and the delivery; a replay deploys nothing", async () => {
    const delivery = randomUUID();
    const body = JSON.stringify({ ref: "refs/tags/v2", after: "0123456789abcdef0123456789abcdef01234567", sender: { login: "octocat" } });
    const r = await deliver(body, delivery);
    assert.equal(r.status, 202, JSON.stringify(r.json));
    assert.equal(r.json.release, "v2");
    let entry: { id: number; outcome: string; actor: string; release: string } | undefined;
    for (let i = 0; i < 300 && entry?.outcome !== "succeeded"; i++) {
      await new Promise((res) => setTimeout(res, 100));
      entry = (JSON.parse((await ws.cli(["history", "books", "--json", "--limit", "1"])).stdout) as Array<typeof entry>)[0];
      if (entry && entry.outcome !== "running" && entry.outcome !== "succeeded") assert.fail(`the deploy ended ${entry.outcome}`);
    }
    assert.equal(entry?.outcome, "succeeded");
    assert.equal(entry!.id, r.json.history);
    assert.equal(entry!.actor, `webhook (GitHub, by octocat, delivery ${delivery})`);
    assert.equal(await releaseServing(ws), "v2");

    const replay = await deliver(body, delivery);
    assert.equal(replay.status, 200);
    assert.equal(replay.json.duplicate, true);
    const latest = (JSON.parse((await ws.cli(["history", "books", "--json", "--limit", "1"])).stdout) as Array<{ id: number }>)[0];
    assert.equal(latest!.id, entry!.id, "no deploy after the replay");
  });

  it("turquoise webhook prints the URL and a signed curl line naming the secret's variable, never its value", async () => {
    const out = await ws.cli(["webhook", "books"]);
    assert.match(out.stdout, new RegExp(`POST http://127\\.0\\.0\\.1:${ws.agentPort}/v1/hooks/books`));
    assert.match(out.stdout, /\$TQ_E2E_HOOK_SECRET/);
    assert.doesNotMatch(out.stdout, new RegExp(SECRET));
    const json = JSON.parse((await ws.cli(["webhook", "books", "--json"])).stdout) as { url: string; secretEnv: string };
    assert.equal(json.secretEnv, "TQ_E2E_HOOK_SECRET");
    assert.equal((await ws.cli(["webhook", "nope"], { allowFail: true })).code, 4);
  });
});
