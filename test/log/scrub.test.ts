// The scrubber the logger, the events and a failed step's output go through: known secrets,
// credentials in URLs and NAME=value, secret-named fields, header values; control characters; bounds.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { escapeControl, isSecretName, MAX_STRING_CHARS, REDACTED, Scrubber } from "../../src/log/scrub.js";

describe("Scrubber.text", () => {
  it("replaces a known secret wherever it appears, longest first", () => {
    const s = new Scrubber(["hunter2", "hunter2-and-more"]);
    assert.equal(s.text("a hunter2-and-more b hunter2c"), `a ${REDACTED} b ${REDACTED}c`);
  });

  it("does not blank short values everywhere, but still catches them in a URL or after NAME=", () => {
    const s = new Scrubber(["pw", "x"]);
    assert.equal(s.size, 0);
    assert.equal(s.text("pwd is /tmp; postgres://app:pw@db/books; DB_PASSWORD=pw"), `pwd is /tmp; postgres://app:***@db/books; DB_PASSWORD=${REDACTED}`);
  });

  it("cuts the password out of any URL in text, keeping user, host and path", () => {
    const s = new Scrubber();
    assert.equal(s.text("cannot connect to postgres://books:s3cret@127.0.0.1:5432/books (ECONNREFUSED)"), "cannot connect to postgres://books:***@127.0.0.1:5432/books (ECONNREFUSED)");
    assert.equal(s.text("redis://:only-pass@cache:6379/0 and https://u:p%40ss@x.example/a"), "redis://:***@cache:6379/0 and https://u:***@x.example/a");
    assert.equal(s.text("http://127.0.0.1:8080/path stays"), "http://127.0.0.1:8080/path stays");
  });

  it("redacts values after secret-looking names: variables, query parameters, headers, JSON dumps", () => {
    const s = new Scrubber();
    assert.equal(s.text("API_TOKEN=abc STRIPE_SECRET='x y' DATABASE_URL=sqlite://f.db PORT=3000"), `API_TOKEN=${REDACTED} STRIPE_SECRET=${REDACTED} DATABASE_URL=${REDACTED} PORT=3000`);
    assert.equal(s.text("POST /hook?access_token=q1w2e3&watch=a"), `POST /hook?access_token=${REDACTED}&watch=a`);
    assert.equal(s.text("Authorization: Bearer eyJhbGciOi.x.y\nCookie: sid=42"), `Authorization: ${REDACTED}\nCookie: ${REDACTED}`);
    assert.equal(s.text("curl -H 'X-Api-Key: k3y' -u x"), `curl -H 'X-Api-Key: ${REDACTED}' -u x`);
    assert.equal(s.text('{"DATABASE_URL":"postgres://u:p@h/d","api_token":"t\\"q","PORT":"1"}'), `{"DATABASE_URL":"${REDACTED}","api_token":"${REDACTED}","PORT":"1"}`);
    assert.equal(s.text("sent with bearer  abc.def-123"), `sent with bearer ${REDACTED}`);
  });

  it("leaves the agent's ordinary messages alone", () => {
    const s = new Scrubber();
    for (const text of [
      "deploy of books v2 failed at healthy: unhealthy: the check answered HTTP 500 for 2 × 1000ms",
      "deploy token record 0123456789abcdef is invalid (field sha256 is not a sha256): it grants nothing",
      "stopped books-green-1a2b3c (v1, green; docker 4b8f0c9d2e1a3f5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b): no record named it",
      "watch page: ./page.sh exited 0 in 12ms",
    ]) assert.equal(s.text(text), text);
  });

  it("cuts a huge string, saying how long it was, and scrubs a secret right before the cut", () => {
    const s = new Scrubber(["hunter2-secret"]);
    const text = "x".repeat(MAX_STRING_CHARS - 5) + "hunter2-secret" + "y".repeat(1_000_000);
    const out = s.text(text);
    assert.ok(out.length < MAX_STRING_CHARS + 100, `${out.length} characters`);
    assert.ok(out.endsWith(`… (cut from ${text.length} characters)`), out.slice(-60));
    assert.doesNotMatch(out, /hunter/);
  });

  it("costs the same for a hostile megabyte as for the first 64 KiB of it: the patterns never see more", () => {
    const s = new Scrubber(["some-secret"]);
    // A URL start without an end, over and over: what makes an unbounded pattern rescan.
    const small = "a://b:".repeat(11_000);
    const big = "a://b:".repeat(700_000);
    const best = (text: string) => Math.min(...Array.from({ length: 5 }, () => {
      const t = performance.now();
      s.text(text);
      return performance.now() - t;
    }));
    best(small);
    const [tSmall, tBig] = [best(small), best(big)];
    // The input is 64 times larger: a scrubber that read all of it would take ~64 times (or far more) as long.
    assert.ok(tBig < 10 * Math.max(tSmall, 1), `4 MiB: ${tBig.toFixed(1)} ms, 64 KiB: ${tSmall.toFixed(1)} ms`);
  });
});

describe("Scrubber.message", () => {
  it("writes control characters as escapes, so a message is one line that drives no terminal", () => {
    const s = new Scrubber();
    assert.equal(s.message('ok\n{"level":"error","message":"forged"}\r\x1b[2J\u2028end\ttab'), 'ok\\n{"level":"error","message":"forged"}\\r\\u001b[2J\\u2028end\\ttab');
    assert.equal(escapeControl("\u0000\u007f\u009b"), "\\u0000\\u007f\\u009b");
  });
});

describe("Scrubber.fields", () => {
  it("redacts secret-named fields at any depth, every header value, and known secrets in keys and values", () => {
    const s = new Scrubber(["hunter2-value"]);
    const out = s.fields({
      env: { DATABASE_URL: "postgres://u:p@h/db", API_TOKEN: "t", PORT: "8080", empty_token: "" },
      watch: { http: { url: "http://127.0.0.1:9000/hook", headers: { Authorization: "Bearer x", "X-Hook-Signature": "sig" } } },
      list: [{ password: "p" }, "said hunter2-value"],
      "hunter2-value": 1,
      count: 3, ok: true, none: null, big: 10n,
    });
    assert.deepEqual(out, {
      env: { DATABASE_URL: REDACTED, API_TOKEN: REDACTED, PORT: "8080", empty_token: "" },
      watch: { http: { url: "http://127.0.0.1:9000/hook", headers: { Authorization: REDACTED, "X-Hook-Signature": REDACTED } } },
      list: [{ password: REDACTED }, `said ${REDACTED}`],
      [REDACTED]: 1,
      count: 3, ok: true, none: null, big: "10",
    });
  });

  it("survives cycles, deep nesting, long arrays and errors", () => {
    const s = new Scrubber();
    const cyclic: Record<string, unknown> = { name: "a" };
    cyclic.self = cyclic;
    let deep: Record<string, unknown> = { leaf: true };
    for (let i = 0; i < 20; i++) deep = { deep };
    const err = Object.assign(new Error("connect ECONNREFUSED postgres://u:pw@db/x"), { code: "ECONNREFUSED" });
    const out = s.fields({ cyclic, deep, items: Array.from({ length: 1_000 }, (_, i) => i), err }) as Record<string, unknown>;
    assert.deepEqual(out.cyclic, { name: "a", self: "[circular]" });
    assert.match(JSON.stringify(out.deep), /\[too deep\]/);
    assert.equal((out.items as unknown[]).length, 201);
    assert.equal((out.items as unknown[])[200], "… (800 more items)");
    assert.deepEqual(out.err, { type: "Error", message: "connect ECONNREFUSED postgres://u:***@db/x", code: "ECONNREFUSED" });
  });
});

describe("isSecretName", () => {
  it("knows variables, fields and headers that hold secrets, and not their neighbours", () => {
    for (const name of ["API_TOKEN", "token", "GITHUB_TOKEN", "stripe_secret", "DB_PASSWORD", "passwd", "AWS_SECRET_ACCESS_KEY".replace("_ACCESS_KEY", ""), "api-key", "X-Api-Key", "PRIVATE_KEY", "DATABASE_URL", "READONLY_DATABASE_URL", "Authorization", "proxy-authorization", "cookie", "Set-Cookie", "X-Consul-Token"]) {
      assert.ok(isSecretName(name), name);
    }
    for (const name of ["PORT", "PWD", "tokens", "tokenCount", "key", "sha256", "DATABASE_HOST", "path", "release", "headers"]) assert.ok(!isSecretName(name), name);
  });
});
