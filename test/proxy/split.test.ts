// The canary split: a stable point per user (the proxy's cookie, else the client address), share
// accuracy, stickiness as the share grows, hostile cookies, and the same split in every worker of
// a real proxy process with its per-slot counters summed.

import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { type RunningProxy, spawnProxy } from "../../src/proxy/builtin.js";
import type { Route } from "../../src/proxy/contract.js";
import { CANARY_COOKIE, canaryCookie, chooseSide, fnv1a32, MAX_COOKIE_SCAN, readCanaryCookie, shareThreshold } from "../../src/proxy/split.js";
import { validateTable } from "../../src/proxy/table.js";
import { killProxies, request, route, startUpstream, type TestUpstream } from "./helpers.js";

/** Which upstream answered: blue echoes the request as JSON, green answers its name. */
const sideOf = (r: { text: string }): string => (r.text.startsWith("{") ? (JSON.parse(r.text) as { id: string }).id : r.text);
const cookieOf = (setCookie: string): string => setCookie.split(";")[0]!;

describe("canary split, the rule", () => {
  it("hashes an address the same way every time, and spreads similar addresses evenly", () => {
    assert.equal(fnv1a32("127.0.0.1"), fnv1a32("127.0.0.1"));
    const t = shareThreshold(25);
    let inCanary = 0;
    const n = 20_000;
    for (let i = 0; i < n; i++) if (fnv1a32(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`) < t) inCanary++;
    // 25 % ± 1.5 points over 20 000 keys: a biased hash (or a wrong threshold) is far outside.
    assert.ok(Math.abs(inCanary / n - 0.25) < 0.015, `${inCanary} of ${n}`);
  });

  it("issues cookies whose share over many new users matches the step, and keeps each user on its side", () => {
    for (const percent of [5, 25, 50]) {
      const t = shareThreshold(percent);
      let canary = 0;
      const n = 10_000;
      for (let i = 0; i < n; i++) {
        const first = chooseSide([], `198.18.${(i >> 8) & 255}.${i & 255}`, t);
        assert.ok(first.setCookie, "a user without the cookie gets one");
        const cookie = cookieOf(first.setCookie!);
        // The cookie keeps the user where the address put it.
        const again = chooseSide(["Cookie", `a=b; ${cookie}; c=d`], "198.19.0.1", t);
        assert.equal(again.canary, first.canary);
        assert.equal(again.setCookie, undefined, "a user with our cookie gets no new one");
        if (first.canary) canary++;
      }
      assert.ok(Math.abs(canary / n - percent / 100) < 0.02, `${percent} %: ${canary} of ${n}`);
    }
  });

  it("only moves users towards the new slot as the share grows", () => {
    const steps = [5, 25, 50, 100].map(shareThreshold);
    for (let i = 0; i < 2_000; i++) {
      const cookie = cookieOf(chooseSide([], `198.18.1.${i}`, steps[0]!).setCookie!);
      let was = false;
      for (const t of steps) {
        const now = chooseSide(["cookie", cookie], "127.0.0.1", t).canary;
        assert.ok(now || !was, "a user once on the new slot never goes back while the share grows");
        was = now;
      }
      assert.equal(was, true, "at 100 % everyone is on the new slot");
    }
    assert.equal(chooseSide([], "127.0.0.1", shareThreshold(0)).canary, false, "at 0 % nobody is");
  });

  it("treats a forged, garbage, misplaced or huge cookie as no cookie: the address decides and a fresh cookie is issued", () => {
    const t = shareThreshold(50);
    const byAddress = chooseSide([], "127.0.0.9", t).canary;
    for (const value of [
      `${CANARY_COOKIE}=zzzzzzzz`, `${CANARY_COOKIE}=123`, `${CANARY_COOKIE}=0123456789`, `${CANARY_COOKIE}=`, `x${CANARY_COOKIE}=00000000`,
      `${CANARY_COOKIE}=FFFFFFFF`, "\u0000\u00ff garbage ;;;=", `${"a=b; ".repeat(MAX_COOKIE_SCAN / 5)}${CANARY_COOKIE}=00000000`,
    ]) {
      const side = chooseSide(["Cookie", value], "127.0.0.9", t);
      assert.equal(side.canary, byAddress, value.slice(0, 40));
      assert.ok(side.setCookie?.startsWith(`${CANARY_COOKIE}=`), "a fresh cookie replaces it");
    }
    assert.equal(readCanaryCookie(["Cookie", `${CANARY_COOKIE}=0000ffff`]), 0xffff);
    assert.equal(readCanaryCookie(["Cookie", `other=1;${CANARY_COOKIE}=0000ffff;more=2`]), 0xffff);
    // A forged but well-formed point picks a side, as a user's own cookie would: nothing more.
    assert.equal(chooseSide(["Cookie", `${CANARY_COOKIE}=00000000`], "127.0.0.9", shareThreshold(1)).canary, true);
    assert.equal(chooseSide(["Cookie", `${CANARY_COOKIE}=ffffffff`], "127.0.0.9", shareThreshold(99)).canary, false);
    assert.match(canaryCookie(0), /^turquoise_canary=00000000; Path=\/; Max-Age=\d+; HttpOnly; SameSite=Lax$/);
  });

  it("refuses a table whose canary is malformed, naming the field", () => {
    const base: Route = { service: "a", pathPrefix: "/", poolId: "a:1", upstreams: [{ id: "u", host: "127.0.0.1", port: 1 }] };
    const bad = (canary: unknown) => validateTable({ version: 1, routes: [{ ...base, canary }] });
    assert.equal(bad({ poolId: "a:2", slot: "green", upstreams: [], percent: 101 }), "routes[0].canary.percent must be a number from 0 to 100");
    assert.equal(bad({ poolId: "a:1", slot: "green", upstreams: [], percent: 5 }), "routes[0].canary.poolId must differ from the route's own pool");
    assert.equal(bad({ poolId: "a:2", slot: "red", upstreams: [], percent: 5 }), 'routes[0].canary.slot must be "blue" or "green"');
    assert.equal(bad({ poolId: "a:2", slot: "green", upstreams: [{ id: "x", host: "h", port: 0 }], percent: 5 }), "routes[0].canary.upstreams[0].port must be a port number");
    assert.equal(bad("5%"), "routes[0].canary must be an object");
    assert.equal(bad({ poolId: "a:2", slot: "green", upstreams: [], percent: 5 }), undefined);
  });
});

describe("canary split, a proxy process with two workers", { timeout: 120_000 }, () => {
  const upstreams: TestUpstream[] = [];
  const running: RunningProxy[] = [];
  const dirs: string[] = [];
  after(async () => {
    await killProxies(running);
    await Promise.all(upstreams.map((u) => u.close()));
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  it("sends each user to one side in every worker, issues the cookie once, and sums the per-slot counters", async () => {
    const blue = await startUpstream("blue");
    const green = await startUpstream("green", (_req, res) => res.writeHead(500).end("green"));
    upstreams.push(blue, green);
    const stateDir = await mkdtemp(path.join(os.tmpdir(), "tq-split-"));
    dirs.push(stateDir);
    const p = await spawnProxy({ stateDir, listenHost: "127.0.0.1", listenPort: 0, workers: 2, accept: "all" });
    running.push(p);
    const base = `http://127.0.0.1:${p.listenPort}`;
    const main = route("app", "app:blue", [blue.upstream], { slot: "blue" });
    await p.proxy.apply({ version: 1, routes: [{ ...main, canary: { poolId: "app:green", slot: "green", upstreams: [green.upstream], percent: 30 } }] });

    // Users from 60 loopback addresses, each with its own connections (so both workers serve each).
    const sides = new Map<string, string>();
    let canaryUsers = 0;
    let sent = 0;
    for (let a = 2; a < 62; a++) {
      const localAddress = `127.0.${a}.${a}`;
      const first = await request(`${base}/`, { localAddress });
      sent++;
      const set = first.headers["set-cookie"];
      assert.ok(set && set.length === 1, "the first answer sets the cookie");
      const cookie = cookieOf(set[0]!);
      sides.set(localAddress, sideOf(first));
      if (sideOf(first) === "green") canaryUsers++;
      for (let i = 0; i < 4; i++) {
        // Without the cookie the address decides; with it, the cookie: the same side either way.
        const byAddress = await request(`${base}/`, { localAddress });
        const byCookie = await request(`${base}/`, { localAddress: "127.0.0.1", headers: { cookie } });
        sent += 2;
        assert.equal(sideOf(byAddress), sideOf(first), `${localAddress} by address`);
        assert.equal(sideOf(byCookie), sideOf(first), `${localAddress} by cookie`);
        assert.equal(byCookie.headers["set-cookie"], undefined, "no new cookie for a user that has one");
      }
    }
    assert.ok(canaryUsers > 5 && canaryUsers < 35, `about 30 % of 60 users on the canary: ${canaryUsers}`);

    const m = await p.proxy.metrics!();
    const count = (slot: string) => m.requests.filter((r) => r.service === "app" && r.slot === slot).reduce((n, r) => n + r.statuses.reduce((a, b) => a + b, 0), 0);
    const green5xx = m.requests.find((r) => r.service === "app" && r.slot === "green")!.statuses[5];
    assert.equal(count("blue") + count("green"), sent, "every request counted once, summed over both workers");
    assert.equal(count("green"), canaryUsers * 9);
    assert.equal(green5xx, canaryUsers * 9, "the canary's 500s are counted under its slot");

    // A huge Cookie field (but within the head limit) is no cookie: the address decides.
    const huge = await request(`${base}/`, { localAddress: "127.0.2.2", headers: { cookie: `${"x".repeat(MAX_COOKIE_SCAN + 10)}; ${CANARY_COOKIE}=00000000` } });
    assert.equal(sideOf(huge), sides.get("127.0.2.2"));
    // Back to 0 %: everyone on the live slot at once, whatever their cookie says.
    await p.proxy.apply({ version: 2, routes: [{ ...main, canary: { poolId: "app:green", slot: "green", upstreams: [green.upstream], percent: 0 } }] });
    for (let i = 0; i < 10; i++) assert.equal(sideOf(await request(`${base}/`, { headers: { cookie: `${CANARY_COOKIE}=00000000` } })), "blue");
  });
});
