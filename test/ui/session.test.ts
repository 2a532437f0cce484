// Dashboard sign-in over the real API listener: a token becomes an HttpOnly SameSite=Strict session
// cookie; state-changing calls need the CSRF token; read sessions change nothing; forged, expired,
// signed-out and revoked sessions are refused; the pages carry a strict CSP.
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, it } from "node:test";
import { startHarness, type Harness } from "../api/harness.js";
import { MAX_SESSIONS, MAX_SESSIONS_PER_TOKEN, Sessions } from "../../src/ui/sessions.js";

interface Answer { status: number; body: string; headers: http.IncomingHttpHeaders }

/** An event stream opened with a dashboard's cookie: its text so far, and whether the agent ended it. */
function openStream(h: Harness, cookie: string): Promise<{ text: () => string; ended: () => boolean; close: () => void }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port: h.port, path: "/v1/events/stream", agent: false, headers: { cookie } }, (res) => {
      assert.equal(res.statusCode, 200);
      let text = "";
      let ended = false;
      res.setEncoding("utf8");
      res.on("data", (c: string) => (text += c));
      res.on("end", () => (ended = true));
      res.once("data", () => resolve({ text: () => text, ended: () => ended, close: () => req.destroy() }));
    });
    req.on("error", (e) => { if ((e as NodeJS.ErrnoException).code !== "ECONNRESET") reject(e); });
  });
}

/** Polls until check holds; the bound only ends a wait for what never comes. */
async function until(what: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("dashboard sessions", () => {
  let h: Harness;
  let clock = Date.now();
  const TTL_MS = 60 * 60_000;
  before(async () => {
    h = await startHarness({ sessions: { ttlMs: TTL_MS, now: () => clock } });
  });
  after(async () => h.close());

  /** A request as a browser sends it: a cookie, maybe a CSRF header, never an Authorization header unless asked. */
  function call(method: string, path: string, opts: { cookie?: string; csrf?: string; body?: string; type?: string; headers?: Record<string, string> } = {}): Promise<Answer> {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.cookie) headers.cookie = opts.cookie;
    if (opts.csrf) headers["x-csrf-token"] = opts.csrf;
    if (opts.body !== undefined) headers["content-type"] = opts.type ?? "application/json";
    return h.call(method, path, { token: null, headers, ...(opts.body !== undefined ? { body: opts.body } : {}) });
  }

  async function signIn(token: string): Promise<{ cookie: string; csrf: string; setCookie: string; scope: string }> {
    const r = await call("POST", "/ui/session", { body: JSON.stringify({ token }) });
    assert.equal(r.status, 200, r.body);
    const setCookie = r.headers["set-cookie"]![0]!;
    const body = JSON.parse(r.body) as { csrf: string; scope: string };
    return { cookie: setCookie.split(";")[0]!, csrf: body.csrf, setCookie, scope: body.scope };
  }

  it("serves the page and its files with a strict CSP, no framing, no sniffing, and no token in them", async () => {
    for (const p of ["/ui/", "/ui/app.js", "/ui/style.css", "/ui/vendor/preact.mjs", "/ui/vendor/hooks.mjs", "/ui/vendor/htm.mjs"]) {
      const r = await call("GET", p);
      assert.equal(r.status, 200, p);
      assert.match(String(r.headers["content-security-policy"]), /script-src 'self'; .*frame-ancestors 'none'/, p);
      assert.doesNotMatch(String(r.headers["content-security-policy"]), /unsafe-inline|unsafe-eval/, p);
      assert.equal(r.headers["x-frame-options"], "DENY");
      assert.equal(r.headers["x-content-type-options"], "nosniff");
      assert.ok(!r.body.includes(h.adminToken), `${p} holds the admin token`);
    }
    const hooks = await call("GET", "/ui/vendor/hooks.mjs");
    assert.match(hooks.body, /from"\.\/preact\.mjs"/, "the hooks import preact by a path a browser resolves");
    assert.equal((await call("GET", "/ui")).headers.location, "/ui/");
    for (const p of ["/ui/../token", "/ui/%2e%2e/token", "/ui/..%2ftoken"]) assert.ok([401, 404].includes((await call("GET", p)).status), p);
    assert.equal((await call("GET", "/ui/nothing.js")).status, 404);
    assert.equal((await call("POST", "/ui/app.js", { body: "{}" })).status, 405);
  });

  it("a sign-in body sent chunked (no Content-Length) and over the API's 1 MiB limit is a 413, not a 400, and signs nothing in", async () => {
    const r = await new Promise<{ status: number; body: string; cookie: unknown }>((resolve, reject) => {
      let answer: { status: number; body: string; cookie: unknown } | undefined;
      const req = http.request({ host: "127.0.0.1", port: h.port, path: "/ui/session", method: "POST", agent: false, headers: { "content-type": "application/json" } }, (res) => {
        answer = { status: res.statusCode ?? 0, body: "", cookie: res.headers["set-cookie"] };
        res.setEncoding("utf8");
        res.on("data", (c: string) => (answer!.body += c));
        res.on("end", () => resolve(answer!));
        res.on("error", () => resolve(answer!));
      });
      // The agent answers and closes while the rest is still being sent: a reset after the answer is expected.
      req.on("error", (e) => (answer ? resolve(answer) : reject(e)));
      // 40 × 64 KiB of spaces: JSON would parse it as whitespace around a token, were it read whole.
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      let sent = 0;
      const pump = (): void => {
        while (sent < 40 && !answer) {
          sent++;
          if (!req.write(chunk)) return void req.once("drain", pump);
        }
        if (!answer) req.end(JSON.stringify({ token: h.adminToken }));
      };
      pump();
    });
    assert.equal(r.status, 413, r.body);
    assert.equal(r.cookie, undefined);
  });

  it("a page on another port of the same host (same-site, so it gets the cookie) is refused by its Origin, even holding the CSRF token", async () => {
    const foreign = { origin: "http://127.0.0.1:3000" };
    const refused = await call("POST", "/ui/session", { body: JSON.stringify({ token: h.adminToken }), headers: foreign });
    assert.equal(refused.status, 403, refused.body);
    assert.equal(refused.headers["set-cookie"], undefined);
    const s = await signIn(h.adminToken);
    const before = h.deploys.length;
    const deploy = await call("POST", "/v1/services/books/deploy", { cookie: s.cookie, csrf: s.csrf, body: JSON.stringify({ release: "v2" }), headers: foreign });
    assert.equal(deploy.status, 403, deploy.body);
    assert.match(deploy.body, /from http:\/\/127\.0\.0\.1:3000, not the dashboard's own origin/);
    assert.equal((await call("PUT", "/v1/kv/flag", { cookie: s.cookie, csrf: s.csrf, body: "on", headers: foreign })).status, 403);
    assert.equal((await call("DELETE", "/ui/session", { cookie: s.cookie, csrf: s.csrf, headers: foreign })).status, 403);
    assert.equal((await call("GET", "/v1/status", { cookie: s.cookie, headers: { origin: "null" } })).status, 403);
    assert.equal(h.deploys.length, before, "nothing deployed");
    // The dashboard's own origin, as Chromium sends it on a POST, is let through.
    const own = { origin: `http://127.0.0.1:${h.port}` };
    assert.equal((await call("PUT", "/v1/kv/flag", { cookie: s.cookie, csrf: s.csrf, body: "on", headers: own })).status, 200);
    assert.equal((await call("DELETE", "/ui/session", { cookie: s.cookie, csrf: s.csrf, headers: own })).status, 200);
  });

  it("the admin token signs in: an HttpOnly, SameSite=Strict cookie that is not the token, and the CSRF token in the answer only", async () => {
    const s = await signIn(h.adminToken);
    assert.equal(s.scope, "admin");
    assert.match(s.setCookie, /^tq_session=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Strict; Max-Age=3600$/);
    assert.ok(!s.setCookie.includes(h.adminToken));
    const who = await call("GET", "/ui/session", { cookie: s.cookie });
    assert.equal(who.status, 200);
    assert.equal((JSON.parse(who.body) as { csrf: string }).csrf, s.csrf);
    assert.ok(!who.body.includes(h.adminToken));
    assert.equal((await call("GET", "/v1/status", { cookie: s.cookie })).status, 200);
  });

  it("a wrong, empty, deploy, registry or oversized token does not sign in, and sets no cookie", async () => {
    const deploy = JSON.parse((await h.call("POST", "/v1/tokens", { body: JSON.stringify({ deploy: ["books"] }) })).body) as { token: string };
    const cases: Array<[string, number]> = [
      [JSON.stringify({ token: "0".repeat(64) }), 401], [JSON.stringify({ token: h.adminToken.slice(1) }), 401], [JSON.stringify({ token: "" }), 400],
      [JSON.stringify({ token: 42 }), 400], ["not json", 400], ["null", 400], [JSON.stringify({ token: deploy.token }), 403], [JSON.stringify({ token: h.registryToken }), 403],
      [JSON.stringify({ token: "a".repeat(10_000) }), 413],
    ];
    for (const [body, status] of cases) {
      const r = await call("POST", "/ui/session", { body });
      assert.equal(r.status, status, body.slice(0, 80));
      assert.equal(r.headers["set-cookie"], undefined);
      assert.ok(!r.body.includes(deploy.token) && !r.body.includes(h.adminToken));
    }
    // A cross-site form can only post a form or text: refused before the token is looked at.
    const form = await call("POST", "/ui/session", { body: `token=${h.adminToken}`, type: "application/x-www-form-urlencoded" });
    assert.equal(form.status, 415);
    assert.equal(form.headers["set-cookie"], undefined);
  });

  it("a session cookie without the CSRF token, or with a wrong one, cannot deploy, roll back or write", async () => {
    const s = await signIn(h.adminToken);
    const before = h.deploys.length;
    for (const csrf of [undefined, "wrong", s.csrf.slice(1)]) {
      for (const [method, p] of [["POST", "/v1/services/books/deploy"], ["POST", "/v1/services/books/rollback"], ["PUT", "/v1/kv/config/x"], ["POST", "/v1/tokens"], ["DELETE", "/ui/session"]] as const) {
        const r = await call(method, p, { cookie: s.cookie, ...(csrf ? { csrf } : {}), body: JSON.stringify({ release: "v2", read: true }) });
        assert.equal(r.status, 403, `${method} ${p} csrf=${csrf}`);
        assert.match(r.body, /X-CSRF-Token/);
      }
    }
    assert.equal(h.deploys.length, before);
    const ok = await call("POST", "/v1/services/books/deploy", { cookie: s.cookie, csrf: s.csrf, body: JSON.stringify({ release: "v2", actor: "dashboard" }) });
    assert.equal(ok.status, 200);
    assert.match(ok.body, /"type":"result","ok":true/);
    assert.equal(h.deploys.length, before + 1);
    assert.equal(h.actors.at(-1), "dashboard");
  });

  it("a forged or altered cookie is no session; a wrong Authorization header beside a good cookie is refused", async () => {
    const s = await signIn(h.adminToken);
    const id = s.cookie.slice("tq_session=".length);
    const forged = [`tq_session=${"A".repeat(43)}`, `tq_session=${id.slice(0, -1)}${id.endsWith("A") ? "B" : "A"}`, `tq_session=${id}x`, `tq_session=${h.adminToken}`, "tq_session=", `other=${id}`];
    for (const cookie of forged) {
      assert.equal((await call("GET", "/v1/status", { cookie })).status, 401, cookie);
      assert.equal((await call("GET", "/ui/session", { cookie })).status, 401, cookie);
    }
    assert.equal((await call("GET", "/v1/status", { cookie: s.cookie, headers: { authorization: "Bearer wrong" } })).status, 401);
  });

  it("a read token signs in to a read-only session: status, history and events, but no deploy, rollback, plan or write even with the CSRF token", async () => {
    const created = await h.call("POST", "/v1/tokens", { body: JSON.stringify({ read: true, name: "on-call" }) });
    assert.equal(created.status, 200, created.body);
    const read = JSON.parse(created.body) as { id: string; token: string; scope: string; services: string[] };
    assert.equal(read.scope, "read");
    assert.deepEqual(read.services, []);
    const s = await signIn(read.token);
    assert.equal(s.scope, "read");
    for (const p of ["/v1/status", "/v1/services/books/history", "/v1/events"]) assert.equal((await call("GET", p, { cookie: s.cookie })).status, 200, p);
    const before = h.deploys.length;
    for (const [method, p] of [["POST", "/v1/services/books/deploy"], ["POST", "/v1/services/books/rollback"], ["POST", "/v1/services/books/plan"], ["PUT", "/v1/kv/config/x"], ["POST", "/v1/tokens"], ["GET", "/v1/tokens"], ["GET", "/v1/services/books/logs"], ["POST", "/v1/shutdown"]] as const) {
      const r = await call(method, p, { cookie: s.cookie, csrf: s.csrf, body: JSON.stringify({ release: "v2", read: true }) });
      assert.equal(r.status, 403, `${method} ${p}`);
      assert.match(r.body, /read token .* reads status, history and events only/);
    }
    // The same token over the API, and through a webhook: still read-only.
    assert.equal((await h.call("POST", "/v1/services/books/deploy", { token: read.token, body: JSON.stringify({ release: "v2" }) })).status, 403);
    assert.equal((await h.call("POST", "/v1/hooks/shop", { token: read.token, body: JSON.stringify({ release: "v2" }) })).status, 403);
    assert.equal(h.deploys.length, before);
    // Revoking the token ends its sessions at once.
    assert.equal((await h.call("DELETE", `/v1/tokens/${read.id}`)).status, 200);
    assert.equal((await call("GET", "/v1/status", { cookie: s.cookie })).status, 401);
    assert.equal((await call("POST", "/ui/session", { body: JSON.stringify({ token: read.token }) })).status, 401);
  });

  it("a session expires after its time; sign-out ends it and clears the cookie", async () => {
    const s = await signIn(h.adminToken);
    clock += TTL_MS - 1;
    assert.equal((await call("GET", "/v1/status", { cookie: s.cookie })).status, 200);
    clock += 2;
    assert.equal((await call("GET", "/v1/status", { cookie: s.cookie })).status, 401);
    assert.equal((await call("GET", "/ui/session", { cookie: s.cookie })).status, 401);
    const t = await signIn(h.adminToken);
    const out = await call("DELETE", "/ui/session", { cookie: t.cookie, csrf: t.csrf });
    assert.equal(out.status, 200);
    assert.match(out.headers["set-cookie"]![0]!, /^tq_session=; .*Max-Age=0/);
    assert.equal((await call("GET", "/v1/status", { cookie: t.cookie })).status, 401);
  });

  it("signing out ends the session's open event streams with a last 'revoked' message; another session of the same token keeps its own", async () => {
    const s = await signIn(h.adminToken);
    const t = await signIn(h.adminToken);
    const mine = await Promise.all([openStream(h, s.cookie), openStream(h, s.cookie)]);
    const theirs = await openStream(h, t.cookie);
    try {
      assert.equal((await call("DELETE", "/ui/session", { cookie: s.cookie, csrf: s.csrf })).status, 200);
      await until("the signed-out session's streams to end", () => mine.every((x) => x.ended()));
      for (const x of mine) assert.match(x.text(), /event: revoked\ndata: \{"reason":"the dashboard session ended: signed out"\}\n\n$/);
      h.registry.publish({ id: 999_998, at: Date.now(), service: "books", type: "deploy.succeeded", message: "after the sign-out", data: {} });
      await until("the other session's stream to get the next event", () => theirs.text().includes("after the sign-out"));
      assert.equal(theirs.ended(), false);
    } finally {
      for (const x of [...mine, theirs]) x.close();
    }
  });

  it("revoking a read token ends the event streams of the sessions signed in with it", async () => {
    const read = JSON.parse((await h.call("POST", "/v1/tokens", { body: JSON.stringify({ read: true }) })).body) as { id: string; token: string };
    const s = await signIn(read.token);
    const streams = await Promise.all([openStream(h, s.cookie), openStream(h, s.cookie), openStream(h, s.cookie)]);
    try {
      assert.equal((await h.call("DELETE", `/v1/tokens/${read.id}`)).status, 200);
      await until("the sessions' streams to end", () => streams.every((x) => x.ended()));
      for (const x of streams) assert.match(x.text(), new RegExp(`event: revoked\ndata: .*read token ${read.id} was revoked`));
    } finally {
      for (const x of streams) x.close();
    }
  });

  it(`signing in again and again keeps at most ${MAX_SESSIONS_PER_TOKEN} sessions of one token: its oldest ends`, async () => {
    const first = await signIn(h.adminToken);
    const second = await signIn(h.adminToken);
    for (let i = 0; i < MAX_SESSIONS_PER_TOKEN - 1; i++) await signIn(h.adminToken);
    assert.equal((await call("GET", "/v1/status", { cookie: first.cookie })).status, 401);
    assert.equal((await call("GET", "/v1/status", { cookie: second.cookie })).status, 200);
  });

  it(`a read token's holder signing in ${MAX_SESSIONS} times ends only its own sessions, never the admin's`, async () => {
    const admin = await signIn(h.adminToken);
    const read = JSON.parse((await h.call("POST", "/v1/tokens", { body: JSON.stringify({ read: true, name: "flood" }) })).body) as { token: string };
    const firstRead = await signIn(read.token);
    for (let i = 0; i < MAX_SESSIONS; i++) await signIn(read.token);
    assert.equal((await call("GET", "/v1/status", { cookie: admin.cookie })).status, 200, "the admin's session outlived a read token's flood");
    assert.equal((await call("GET", "/v1/status", { cookie: firstRead.cookie })).status, 401);
  });

  it(`past ${MAX_SESSIONS} sessions over many tokens, the token holding the most gives up its oldest`, () => {
    const sessions = new Sessions();
    const admin = sessions.create({ kind: "admin" });
    for (let t = 0; t * MAX_SESSIONS_PER_TOKEN < MAX_SESSIONS + 10; t++) {
      for (let i = 0; i < MAX_SESSIONS_PER_TOKEN - (t % 3); i++) sessions.create({ kind: "read", id: `t${t}`, name: null });
    }
    assert.equal(sessions.size, MAX_SESSIONS, "the overall cap holds");
    assert.ok(sessions.fromCookie(`tq_session=${admin.id}`), "one admin session is never the busiest token's");
  });
});

describe("a dashboard session's event stream at the session's expiry", () => {
  it("ends with a last 'revoked' message when the session expires, though no request comes to sweep it", async () => {
    const TTL_MS = 500;
    const h = await startHarness({ sessions: { ttlMs: TTL_MS } });
    try {
      const r = await h.call("POST", "/ui/session", { token: null, headers: { "content-type": "application/json" }, body: JSON.stringify({ token: h.adminToken }) });
      assert.equal(r.status, 200, r.body);
      const stream = await openStream(h, r.headers["set-cookie"]![0]!.split(";")[0]!);
      try {
        await until("the expired session's stream to end", () => stream.ended(), 10 * TTL_MS);
        assert.match(stream.text(), /event: revoked\ndata: \{"reason":"the dashboard session expired"\}\n\n$/);
      } finally {
        stream.close();
      }
    } finally {
      await h.close();
    }
  });
});
