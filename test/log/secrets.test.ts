// What the agent tells its scrubber before it logs anything: every secret a spec and its
// environment hold, and nothing that would blank ordinary words.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { specSecrets } from "../../src/deploy/secrets.js";
import { loadSpecText } from "../../src/spec/loader.js";

const SPEC = `version: 1
state: { driver: etcd, etcd: { endpoints: ["http://127.0.0.1:2379"], username: root, password_env: ETCD_PW } }
services:
  books:
    command: [node, server.js]
    cwd: .
    route: { path: / }
    health: { http: /health }
    env: { API_TOKEN: tok-123456, GREETING: hello-world, CACHE_URL: "redis://:cache-pass@127.0.0.1:6379/0", PLAIN_URL: "http://127.0.0.1:9000/x" }
    smoke:
      - http: { path: /health, headers: { X-Smoke-Key: smoke-key-1 } }
    webhook: { secret_env: BOOKS_HOOK_SECRET }
    database: { driver: postgres, url: "\${BOOKS_DB}", migrations: migrations }
watches:
  - type: service
    service: books
    http: { url: "https://hooks.example/x?sig=query-sig-1&v=2", headers: { Authorization: "Bearer watch-bearer-1" } }
`;

describe("specSecrets", () => {
  it("finds the secrets of env, smoke and watch headers, URLs, the database, the webhook and etcd, and of the agent's environment", () => {
    const { spec, errors } = loadSpecText(SPEC, "/srv/turquoise.yml");
    assert.deepEqual(errors, []);
    const env = {
      BOOKS_DB: "postgres://books:db-pass-1@db:5432/books", BOOKS_HOOK_SECRET: "hook-secret-1", ETCD_PW: "etcd-pass-1", GITHUB_TOKEN: "ghp_agent_1", HOME: "/root", PATH: "/usr/bin",
      // Not the spec's, not named as a secret: its password, an ordinary word, must not blank that word everywhere.
      TEST_PG_URL: "postgres://turquoise:turquoise@127.0.0.1:5432/t",
    };
    const found = new Set(specSecrets(spec!, env));
    for (const s of ["tok-123456", "cache-pass", "smoke-key-1", "hook-secret-1", "db-pass-1", "sig=query-sig-1&v=2", "query-sig-1", "Bearer watch-bearer-1", "ghp_agent_1", "etcd-pass-1"]) assert.ok(found.has(s), s);
    // A URL keeps its host readable: only its password goes; ordinary values stay.
    for (const s of ["hello-world", "redis://:cache-pass@127.0.0.1:6379/0", "http://127.0.0.1:9000/x", "/root", "/usr/bin", "postgres://books:db-pass-1@db:5432/books", "turquoise"]) assert.ok(!found.has(s), s);
  });

  it("skips a database variable that is not set: the deploy says so, and there is nothing to hide", () => {
    const { spec } = loadSpecText(SPEC, "/srv/turquoise.yml");
    assert.ok(!specSecrets(spec!, {}).some((s) => s.includes("db-pass")));
  });
});
