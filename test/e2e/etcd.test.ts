// End to end on etcd: a real agent with state.driver: etcd (a three-member cluster on loopback,
// authentication on, the password in an environment variable) deploys the example app with the
// process runtime, keeps its state across a restart, and never lets the password out.

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Etcd3, Range } from "etcd3";
import type { Workspace } from "../../src/demo/workspace.js";
import { EXIT_CODES } from "../../src/errors.js";
import { startEtcdCluster, type TestEtcd } from "../support/etcd.js";
import { RELEASE_KINDS, agentEvents, releaseServing, status, workspaceWith } from "./helpers.js";

const PREFIX = "/turquoise/books/";
const USER = "books";
const PASSWORD = "tq-e2e-etcd-password-6d1f0c";
const ROOT_PASSWORD = "tq-e2e-etcd-root-9a4e71";

function stateYaml(endpoints: string[]): string {
  return `state:
  driver: etcd
  etcd:
    endpoints: ${JSON.stringify(endpoints)}
    prefix: ${PREFIX}
    timeout: 5s
    username: ${USER}
    password_env: TQ_ETCD_PASSWORD
`;
}

/** Every file under dir, as text: where a leaked password would show. */
function allText(dir: string): string {
  let out = "";
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) out += fs.readFileSync(path.join(entry.parentPath, entry.name), "latin1");
  }
  return out;
}

describe("an agent on etcd", () => {
  let cluster: TestEtcd;
  let root: Etcd3;
  let ws: Workspace;
  const outputs: string[] = [];

  before(async () => {
    cluster = await startEtcdCluster();
    // Authentication as an operator would set it up: root, and a user whose role covers the project's prefix only.
    const setup = new Etcd3({ hosts: cluster.endpoints });
    await setup.user("root").create(ROOT_PASSWORD);
    await setup.role("root").create();
    await setup.user("root").addRole("root");
    await setup.role(USER).create();
    await setup.role(USER).grant({ permission: "Readwrite", range: Range.prefix(PREFIX) });
    await setup.user(USER).create(PASSWORD);
    await setup.user(USER).addRole(USER);
    await setup.auth.authEnable();
    setup.close();
    root = new Etcd3({ hosts: cluster.endpoints, auth: { username: "root", password: ROOT_PASSWORD } });

    ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, {
      replicas: 2,
      stateYaml: stateYaml(cluster.endpoints),
      env: { TQ_ETCD_PASSWORD: PASSWORD },
    });
  });

  after(async () => {
    await ws?.destroy();
    root?.close();
    await cluster?.destroy();
  });

  it("deploys, and its state lives in etcd under the prefix, not in a local file", { timeout: 120_000 }, async () => {
    for (const args of [["up", "--detach"], ["deploy", "books", "--release", "v1"]]) {
      const r = await ws.cli(args);
      outputs.push(r.stdout, r.stderr);
    }
    assert.equal(await releaseServing(ws), "v1");
    const s = await status(ws);
    assert.equal(s.release, "v1");
    assert.equal(s.instances.length, 2);

    assert.equal(fs.existsSync(path.join(ws.dir, ".turquoise", "state.db")), false, "no SQLite file beside the agent");
    const keys = (await root.getAll().prefix(PREFIX).keys()).map((k) => k.slice(PREFIX.length));
    assert.ok(keys.some((k) => k.startsWith("kv/_turquoise/")), `the agent's records are in etcd: ${keys.slice(0, 10).join(", ")}`);
    assert.ok(keys.some((k) => k.startsWith("history/books/")), "deploy history is in etcd");
    assert.ok(keys.some((k) => k.startsWith("events/")), "events are in etcd");
    assert.ok(keys.includes("meta/revision"));
    // Nothing outside the prefix: the user's role could not have written there, and nothing tried.
    assert.deepEqual((await root.getAll().keys()).filter((k) => !k.startsWith(PREFIX)), []);
    assert.equal((await agentEvents(ws, "deploy.succeeded")).length, 1, "the events API reads them back from etcd");
  });

  it("keeps its state across an agent restart: the new agent finds the live release in etcd", { timeout: 120_000 }, async () => {
    const down = await ws.cli(["down", "--agent-only"]);
    const up = await ws.cli(["up", "--detach"]);
    outputs.push(down.stdout, down.stderr, up.stdout, up.stderr);
    const s = await status(ws);
    assert.equal(s.release, "v1");
    assert.equal(s.color, "blue");
    assert.equal(s.instances.length, 2, "the new agent adopted the running instances from their records in etcd");
    assert.equal(await releaseServing(ws), "v1");
  });

  it("never lets the etcd password out: not in outputs, logs, the state dir, or the events in etcd", async () => {
    const history = await ws.cli(["history", "books", "--json"]);
    outputs.push(history.stdout, history.stderr);
    const events = (await root.getAll().prefix(`${PREFIX}events/`).strings()) as Record<string, string>;
    const haystack = [...outputs, allText(ws.dir), JSON.stringify(events), JSON.stringify(await agentEvents(ws))].join("\n");
    assert.ok(haystack.length > 1_000);
    assert.equal(haystack.includes(PASSWORD), false);
  });

  it("refuses to start with a wrong password, naming the user but not the password", { timeout: 60_000 }, async () => {
    const wrong = `${PASSWORD}-wrong`;
    const other = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, { stateYaml: stateYaml(cluster.endpoints), env: { TQ_ETCD_PASSWORD: wrong } });
    try {
      const r = await other.cli(["up"], { allowFail: true });
      assert.equal(r.code, EXIT_CODES.STATE_UNAVAILABLE, `${r.stdout}\n${r.stderr}`);
      // Off a terminal the agent logs JSON lines: the message's quotes are escaped there.
      assert.match(r.stderr, /etcd refused the credentials of user \\?"books\\?"/);
      assert.equal(`${r.stdout}${r.stderr}${allText(other.dir)}`.includes(wrong), false);
    } finally {
      await other.destroy();
    }
  });
});
