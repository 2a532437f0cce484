// End to end: deploy tokens made by `turquoise token`, used by CI against a real agent, then revoked.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Workspace } from "../../src/demo/workspace.js";
import { EXIT_CODES } from "../../src/errors.js";
import { RELEASE_KINDS, api, releaseServing, tokenOf, workspaceWith } from "./helpers.js";

describe("deploy tokens", () => {
  let ws: Workspace;
  before(async () => {
    ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.good("v2") }, { replicas: 1 });
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
  });
  after(async () => ws?.destroy());

  it("create prints the token once; it deploys its service; list shows it; revoke ends it at once", async () => {
    const created = await ws.cli(["token", "create", "--deploy", "books", "--name", "ci"]);
    const token = created.stdout.trim();
    assert.match(token, /^[0-9a-f]{64}$/);
    const id = /deploy token ([0-9a-f]{16}) \(ci\) for books/.exec(created.stderr)?.[1];
    assert.ok(id, created.stderr);

    const deploy = await api(ws, "/v1/services/books/deploy", { method: "POST", token, body: JSON.stringify({ release: "v2", actor: "ci run 12" }) });
    assert.equal(deploy.status, 200);
    assert.match(deploy.body, /"type":"result","ok":true/);
    assert.equal(await releaseServing(ws), "v2");
    const history = JSON.parse((await ws.cli(["history", "books", "--json", "--limit", "1"])).stdout) as Array<{ actor: string }>;
    assert.equal(history[0]!.actor, `ci run 12 (deploy token ${id} ci)`);
    assert.equal((await api(ws, "/v1/status", { token })).status, 200);
    assert.equal((await api(ws, "/v1/services/books/logs", { token })).status, 403);
    assert.equal((await api(ws, "/v1/services/books/deploy", { method: "POST", token: tokenOf(ws, "registry-token"), body: "{\"release\":\"v1\"}" })).status, 403);

    const list = JSON.parse((await ws.cli(["token", "list", "--json"])).stdout) as Array<{ id: string; services: string[]; name: string }>;
    assert.deepEqual(list.map((t) => [t.id, t.services, t.name]), [[id, ["books"], "ci"]]);
    await ws.cli(["token", "revoke", id]);
    assert.equal((await api(ws, "/v1/status", { token })).status, 401);
    assert.equal((await ws.cli(["token", "revoke", id], { allowFail: true })).code, EXIT_CODES.NOT_FOUND);
  });

  it("a read token reads status, history and migrations, deploys nothing, and `token create --read` refuses --deploy beside it", async () => {
    const created = await ws.cli(["token", "create", "--read", "--name", "on-call"]);
    const token = created.stdout.trim();
    assert.match(token, /^[0-9a-f]{64}$/);
    const id = /read token ([0-9a-f]{16}) \(on-call\): shown once/.exec(created.stderr)?.[1];
    assert.ok(id, created.stderr);
    assert.equal((await api(ws, "/v1/status", { token })).status, 200);
    assert.equal((await api(ws, "/v1/services/books/history", { token })).status, 200);
    assert.equal((await api(ws, "/v1/services/books/migrations", { token })).status, 400, "books has no database: a clear 400, not a 403");
    for (const [method, p] of [["POST", "/v1/services/books/deploy"], ["POST", "/v1/services/books/rollback"], ["GET", "/v1/services/books/logs"], ["GET", "/v1/tokens"]]) {
      assert.equal((await api(ws, p!, { method, token, body: "{\"release\":\"v1\"}" })).status, 403, `${method} ${p}`);
    }
    const list = (await ws.cli(["token", "list"])).stdout;
    assert.match(list, new RegExp(`^${id}  read   \\(every service\\) +\\S+  on-call$`, "m"));
    const both = await ws.cli(["token", "create", "--read", "--deploy", "books"], { allowFail: true });
    assert.equal(both.code, EXIT_CODES.USAGE);
    assert.match(both.stderr, /--deploy <services> or --read, not both/);
    assert.match((await ws.cli(["token", "revoke", id])).stdout, new RegExp(`^revoked read token ${id} \\(on-call\\)$`, "m"));
  });

  it("tokens outlive an agent restart, and stay refused once revoked", async () => {
    const token = (await ws.cli(["token", "create", "--deploy", "books"])).stdout.trim();
    await ws.cli(["down", "--agent-only"]);
    await ws.cli(["up", "--detach"]);
    assert.equal((await api(ws, "/v1/status", { token })).status, 200);
    const bad = await ws.cli(["token", "create", "--deploy", "nope"], { allowFail: true });
    assert.equal(bad.code, EXIT_CODES.NOT_FOUND);
    const none = await ws.cli(["token", "create"], { allowFail: true });
    assert.equal(none.code, EXIT_CODES.USAGE);
  });
});
