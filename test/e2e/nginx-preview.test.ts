// End to end with the nginx driver: the preview address of a held release (deploy --hold, promote,
// abort) is an ordinary host route, so nginx serves it as the built-in proxy does; a canary is
// refused there before anything starts, with the reason, and the live release is untouched.
// Real nginx (scripts/ensure-nginx.sh installs it, so this never skips), agent and instances.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import type { Workspace } from "../../src/demo/workspace.js";
import { RELEASE_KINDS, get, releaseServing, status, workspaceWith } from "./helpers.js";

const ENSURE_NGINX = fileURLToPath(new URL("../../../scripts/ensure-nginx.sh", import.meta.url));
const PREVIEW = "green.books.localhost";

describe("nginx driver: preview address and canary refusal", { timeout: 180_000 }, () => {
  const spaces: Workspace[] = [];
  before(() => {
    execFileSync("bash", [ENSURE_NGINX], { stdio: ["ignore", "ignore", "inherit"], timeout: 600_000 });
  });
  after(async () => { for (const ws of spaces) await ws.destroy(); });

  it("holds a release on the preview host behind nginx, promotes it, aborts the next, and refuses a canary", async () => {
    const ws = await workspaceWith(
      { v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.good("v2"), v3: RELEASE_KINDS.good("v3") },
      { replicas: 1, previewHost: PREVIEW, proxyDriver: "nginx" },
    );
    spaces.push(ws);
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    assert.equal(await releaseServing(ws), "v1");

    const held = await ws.cli(["deploy", "books", "--release", "v2", "--hold"]);
    assert.match(held.stdout, /deploy of books v2 held in/);
    assert.equal(await releaseServing(ws), "v1", "the public route stays on the live release");
    const preview = await get(`${ws.proxyUrl}/api/v1/books`, { host: PREVIEW });
    assert.equal(preview.status, 200);
    assert.equal(preview.headers["x-release"], "v2", "nginx routes the preview host to the held slot");

    await ws.cli(["promote", "books"]);
    assert.equal(await releaseServing(ws), "v2");

    await ws.cli(["deploy", "books", "--release", "v3", "--hold"]);
    assert.equal((await get(`${ws.proxyUrl}/api/v1/books`, { host: PREVIEW })).headers["x-release"], "v3");
    await ws.cli(["abort", "books"]);
    assert.equal(await releaseServing(ws), "v2");
    assert.equal((await get(`${ws.proxyUrl}/api/v1/books`, { host: PREVIEW })).headers["x-release"], "v2", "the preview route went with the aborted slot");
    assert.ok((await status(ws)).instances.every((i) => i.release === "v2"));

    // nginx keeps no per-slot counters for the agent to judge a step by: refused up front, named.
    const canary = await ws.cli(["deploy", "books", "--release", "v3", "--canary", "5,100"], { allowFail: true });
    assert.equal(canary.code, 10, canary.stderr);
    assert.match(canary.stderr, /nginx driver cannot run a canary/);
    assert.equal(await releaseServing(ws), "v2");
    assert.ok((await status(ws)).instances.every((i) => i.release === "v2"), "nothing was started for the refused canary");
  });
});
