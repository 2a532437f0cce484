import { describe, it } from "node:test";
import { defaultProxySettings } from "../../src/proxy/settings.js";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TurquoiseError } from "../../src/errors.js";
import { loadSpec, loadSpecOrThrow, loadSpecText } from "../../src/spec/loader.js";
import type { SpecProblem } from "../../src/spec/types.js";

const FILE = "/srv/app/turquoise.yml";

function load(...lines: string[]) {
  return loadSpecText(lines.join("\n") + "\n", FILE);
}

function only(problems: SpecProblem[]): SpecProblem {
  assert.equal(problems.length, 1, JSON.stringify(problems, null, 2));
  return problems[0]!;
}

// Lines 1-7 of a valid spec; tests append to it so their line numbers start at 8.
const BOOKS = [
  "version: 1",
  "services:",
  "  books:",
  "    command: [node, server.js]",
  "    cwd: releases/{release}",
  "    route: { path: /api }",
  "    health: { http: /health }",
];

describe("loadSpecText: valid specs", () => {
  it("applies every default", () => {
    const { spec, errors, warnings } = load(...BOOKS);
    assert.deepEqual(errors, []);
    assert.deepEqual(warnings, []);
    assert.ok(spec);
    assert.equal(spec.file, FILE);
    assert.equal(spec.dir, "/srv/app");
    assert.deepEqual(spec.agent, { host: "127.0.0.1", port: 4700 });
    assert.deepEqual(spec.proxy, { host: "127.0.0.1", port: 8080, driver: "builtin", workers: 1, accept: "adaptive", nginx: { binary: "nginx" }, settings: defaultProxySettings() });
    assert.equal(spec.stateDir, "/srv/app/.turquoise");
    assert.deepEqual(spec.state, { driver: "sqlite", path: "/srv/app/.turquoise/state.db" });
    assert.deepEqual(spec.services.books, {
      name: "books",
      runtime: "process",
      command: ["node", "server.js"],
      cwd: "/srv/app/releases/{release}",
      env: {},
      envPassthrough: [],
      replicas: 1,
      route: { pathPrefix: "/api" },
      health: { http: "/health", intervalMs: 1_000, timeoutMs: 1_000, successBeforePassing: 1, failuresBeforeCritical: 2 },
      smoke: [],
      deployTimeoutMs: 30_000,
      drainTimeoutMs: 10_000,
      stopTimeoutMs: 10_000,
      keepPreviousMs: 0,
      bakeMs: 3_000,
      hooks: { afterFlip: [] },
    });
  });

  it("converts durations to milliseconds", () => {
    const { spec, errors } = load(
      "version: 1",
      "services:",
      "  books:",
      "    command: [node, server.js]",
      "    cwd: releases/{release}",
      "    route: { host: books.localhost }",
      "    health: { tcp: true, interval: 500ms, timeout: 250ms }",
      "    deploy_timeout: 1.5s",
      "    drain_timeout: 2m",
      "    stop_timeout: 3s",
      "    keep_previous: 1h",
      "    bake: 0s",
      "    smoke:",
      "      - { command: [curl, x], timeout: 5s }",
    );
    assert.deepEqual(errors, []);
    const books = spec!.services.books!;
    assert.equal(books.health.intervalMs, 500);
    assert.equal(books.health.timeoutMs, 250);
    assert.equal(books.deployTimeoutMs, 1_500);
    assert.equal(books.drainTimeoutMs, 120_000);
    assert.equal(books.stopTimeoutMs, 3_000);
    assert.equal(books.keepPreviousMs, 3_600_000);
    assert.equal(books.bakeMs, 0, "0s disables the bake window");
    assert.equal(books.smoke[0]!.timeoutMs, 5_000);
  });

  it("normalizes env, routes, health and smoke checks", () => {
    const { spec, errors } = load(
      "version: 1",
      "agent: { listen: '[::1]:4701' }",
      "proxy: { listen: '0.0.0.0:80' }",
      "state: { driver: memory, path: ../state/t.db }",
      "state_dir: /var/lib/turquoise",
      "services:",
      "  books:",
      "    command: [node, server.js]",
      "    cwd: releases/{release}",
      "    env: { LOG_LEVEL: info, WORKERS: 4, DEBUG: false }",
      "    env_passthrough: [AWS_REGION, HTTPS_PROXY]",
      "    replicas: 3",
      "    route: { host: Books.Localhost }",
      "    health: { tcp: true }",
      "    smoke:",
      "      - name: list books",
      "        http: { path: /api/v1/books, expect_body: books, headers: { Accept: application/json } }",
      "      - http: { path: /api/v1/books, method: POST, expect_status: 201 }",
      "      - command: [curl, -fsS, 'http://{host}:{port}/health']",
    );
    assert.deepEqual(errors, []);
    assert.ok(spec);
    assert.deepEqual(spec.agent, { host: "::1", port: 4701 });
    assert.deepEqual(spec.proxy, { host: "0.0.0.0", port: 80, driver: "builtin", workers: 1, accept: "adaptive", nginx: { binary: "nginx" }, settings: defaultProxySettings() });
    assert.deepEqual(spec.state, { driver: "memory", path: "/srv/state/t.db" });
    assert.equal(spec.stateDir, "/var/lib/turquoise");
    const books = spec.services.books!;
    assert.deepEqual(books.env, { LOG_LEVEL: "info", WORKERS: "4", DEBUG: "false" });
    assert.deepEqual(books.envPassthrough, ["AWS_REGION", "HTTPS_PROXY"]);
    assert.equal(books.replicas, 3);
    assert.deepEqual(books.route, { host: "books.localhost", pathPrefix: "/" });
    assert.deepEqual(books.health, { tcp: true, intervalMs: 1_000, timeoutMs: 1_000, successBeforePassing: 1, failuresBeforeCritical: 2 });
    assert.deepEqual(books.smoke, [
      { name: "list books", http: { path: "/api/v1/books", method: "GET", expectStatus: 200, expectBody: "books", headers: { Accept: "application/json" } }, timeoutMs: 10_000 },
      { name: "POST /api/v1/books", http: { path: "/api/v1/books", method: "POST", expectStatus: 201, headers: {} }, timeoutMs: 10_000 },
      { name: "curl -fsS http://{host}:{port}/health", command: ["curl", "-fsS", "http://{host}:{port}/health"], timeoutMs: 10_000 },
    ]);
  });
});

describe("loadSpecText: proxy timeouts, limits and trusted peers", () => {
  it("reads them, with sizes and durations in the spec's units, and a route's own over the proxy's", () => {
    const { spec, errors, warnings } = load(
      "version: 1",
      "proxy:",
      "  timeouts: { client_header: 2s, upstream_response: 1m, tunnel_idle: 1h }",
      "  limits: { max_connections: 100, max_header_size: 8KiB, max_body_size: 1MB, upstream_queue: 250ms }",
      "  trusted_proxies: [198.18.0.0/15, '::1']",
      "services:",
      "  books:",
      "    command: [node, server.js]",
      "    cwd: releases/{release}",
      "    route: { path: /api, timeouts: { upstream_response: 5s }, max_body_size: 2048 }",
      "    health: { http: /health }",
    );
    assert.deepEqual(errors, []);
    assert.deepEqual(warnings, []);
    const s = spec!.proxy.settings;
    assert.equal(s.timeouts.clientHeaderMs, 2_000);
    assert.equal(s.timeouts.upstreamResponseMs, 60_000);
    assert.equal(s.timeouts.tunnelIdleMs, 3_600_000);
    assert.equal(s.timeouts.upstreamConnectMs, defaultProxySettings().timeouts.upstreamConnectMs);
    assert.deepEqual(s.limits, { ...defaultProxySettings().limits, maxConnections: 100, maxHeaderBytes: 8_192, maxBodyBytes: 1_000_000, upstreamQueueMs: 250 });
    assert.deepEqual(s.trustedProxies, ["198.18.0.0/15", "::1"]);
    assert.deepEqual(spec!.services.books!.route, { pathPrefix: "/api", timeouts: { upstreamResponseMs: 5_000 }, maxBodyBytes: 2048 });
  });

  it("names a bad size, a bad trusted peer and an unknown timeout with their lines", () => {
    const { errors } = load(
      "version: 1",
      "proxy:",
      "  timeouts: { upstream_reply: 2s }",
      "  limits: { max_body_size: lots }",
      ...BOOKS.slice(1),
    );
    const text = errors.map((e) => `${e.line}: ${e.path}: ${e.message}`).join("\n");
    assert.match(text, /^3: proxy\.timeouts\.upstream_reply: unknown key/m);
    assert.match(text, /^4: proxy\.limits\.max_body_size: invalid size "lots"/m);
    const peer = load("version: 1", "proxy:", "  trusted_proxies: [300.1.1.1]", ...BOOKS.slice(1));
    assert.match(peer.errors.map((e) => `${e.line}: ${e.path}: ${e.message}`).join("\n"), /^3: proxy\.trusted_proxies\[0\]: "300\.1\.1\.1" is not an IP address/m);
  });

  it("reads proxy.workers as a count or auto, and names a bad one", () => {
    assert.equal(load("version: 1", "proxy: { workers: 4 }", ...BOOKS.slice(1)).spec!.proxy.workers, 4);
    assert.equal(load("version: 1", "proxy: { workers: auto }", ...BOOKS.slice(1)).spec!.proxy.workers, "auto");
    const bad = (value: string) => load("version: 1", `proxy: { workers: ${value} }`, ...BOOKS.slice(1)).errors.map((e) => `${e.line}: ${e.path}: ${e.message}`);
    assert.deepEqual(bad("0"), ["2: proxy.workers: must be at least 1, got 0"]);
    assert.deepEqual(bad("many"), ['2: proxy.workers: must be a number of workers or "auto" (one per core), got "many"']);
    assert.deepEqual(bad("1.5"), ["2: proxy.workers: must be a string or integer, got number 1.5"]);
  });

  it("reads proxy.accept, adaptive unless it says all, and names a bad one", () => {
    assert.equal(load("version: 1", "proxy: { workers: 2 }", ...BOOKS.slice(1)).spec!.proxy.accept, "adaptive");
    assert.equal(load("version: 1", "proxy: { workers: 2, accept: all }", ...BOOKS.slice(1)).spec!.proxy.accept, "all");
    const errors = load("version: 1", "proxy: { accept: some }", ...BOOKS.slice(1)).errors.map((e) => `${e.line}: ${e.path}: ${e.message}`);
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, /^2: proxy\.accept: .*adaptive.*all.*some/);
  });
});

describe("loadSpecText: problems with line numbers", () => {
  it("reports an unknown key at the key, names it and suggests the closest known key", () => {
    const { spec, errors } = load(...BOOKS, "    helth: { http: /health }");
    assert.equal(spec, undefined);
    assert.deepEqual(only(errors), {
      file: FILE,
      line: 8,
      column: 5,
      path: "services.books.helth",
      message: 'unknown key "helth" in services.books; did you mean "health"?',
    });
  });

  it("does not suggest a key that is nothing like the unknown one", () => {
    const { errors } = load(...BOOKS, "    colour: blue");
    assert.equal(only(errors).message, 'unknown key "colour" in services.books');
  });

  it("reports a wrong type at the value", () => {
    const { errors } = load(...BOOKS, '    replicas: "two"');
    assert.deepEqual(only(errors), {
      file: FILE,
      line: 8,
      column: 15,
      path: "services.books.replicas",
      message: "must be a number of type integer, got string",
    });
  });

  it("rejects env_passthrough entries that are not variable names, or are listed twice", () => {
    const bad = only(load(...BOOKS, '    env_passthrough: [AWS_REGION, "AWS-KEY"]').errors);
    assert.deepEqual([bad.line, bad.path], [8, "services.books.env_passthrough[1]"]);
    assert.match(bad.message, /^invalid environment variable name "AWS-KEY"/);
    const twice = only(load(...BOOKS, "    env_passthrough: [AWS_REGION, AWS_REGION]").errors);
    assert.deepEqual([twice.line, twice.path, twice.message], [8, "services.books.env_passthrough", 'lists "AWS_REGION" twice']);
  });

  it("rejects a command written as a string and says to use an argv array", () => {
    const { errors } = load(
      "version: 1",
      "services:",
      "  books:",
      "    command: node server.js",
      "    cwd: releases/{release}",
      "    route: { path: /api }",
      "    health: { http: /health }",
      "    smoke:",
      "      - command: curl -fsS http://localhost/health",
    );
    assert.equal(errors.length, 2);
    assert.deepEqual(
      errors.map((e) => [e.line, e.column, e.path]),
      [
        [4, 14, "services.books.command"],
        [9, 18, "services.books.smoke[0].command"],
      ],
    );
    for (const e of errors) {
      assert.match(e.message, /argv array/);
      assert.match(e.message, /\["sh", "-c", "\.\.\."\]/);
    }
  });

  it("rejects an empty command", () => {
    const { errors } = load(...BOOKS.slice(0, 3), "    command: []", ...BOOKS.slice(4));
    assert.deepEqual([only(errors).line, errors[0]!.path, errors[0]!.message], [4, "services.books.command", "must not be empty"]);
  });

  it("rejects bad durations", () => {
    const { errors } = load(...BOOKS, "    drain_timeout: 10", "    stop_timeout: 10 s", "    keep_previous: 5min");
    assert.deepEqual(
      errors.map((e) => [e.line, e.column, e.path, e.message]),
      [
        [8, 20, "services.books.drain_timeout", 'must be a duration with a unit, like "10s" or "500ms", got number'],
        [9, 19, "services.books.stop_timeout", 'invalid duration "10 s": write a number and a unit, like "500ms", "10s" or "5m"'],
        [10, 20, "services.books.keep_previous", 'invalid duration "5min": write a number and a unit, like "500ms", "10s" or "5m"'],
      ],
    );
  });

  it("reports a missing required key at the mapping that lacks it", () => {
    const { errors } = load(...BOOKS.slice(0, 4), ...BOOKS.slice(5));
    assert.deepEqual(only(errors), { file: FILE, line: 3, column: 3, path: "services.books", message: 'missing required key "cwd"' });
  });

  it("reports missing top-level keys at the top of the file", () => {
    const { errors } = load("# nothing here yet", "agent: { listen: '127.0.0.1:4700' }");
    assert.deepEqual(
      errors.map((e) => [e.line, e.column, e.path, e.message]),
      [
        [2, 1, "", 'missing required key "version"'],
        [2, 1, "", 'missing required key "services"'],
      ],
    );
  });

  it("reports YAML syntax errors with their line", () => {
    const { spec, errors } = load(...BOOKS.slice(0, 5), "    route: path: /api", BOOKS[6]!);
    assert.equal(spec, undefined);
    const e = only(errors);
    assert.deepEqual([e.line, e.column, e.path], [6, 12, ""]);
    assert.match(e.message, /Nested mappings/);
  });

  it("reports duplicate keys as YAML errors", () => {
    const { errors } = load(...BOOKS, "    cwd: elsewhere");
    assert.deepEqual([only(errors).line, errors[0]!.message], [8, "Map keys must be unique"]);
  });

  it("reports an empty file", () => {
    const { errors } = load("# just a comment");
    assert.deepEqual(only(errors), { file: FILE, line: 1, column: 1, path: "", message: "the spec is empty: run `turquoise init` to write a starter spec" });
  });

  it("needs exactly one of http or tcp in a health check", () => {
    const both = load(...BOOKS.slice(0, 6), "    health: { http: /health, tcp: true }");
    assert.deepEqual([only(both.errors).line, both.errors[0]!.message], [7, 'set only one of "http" or "tcp", not both']);
    const neither = load(...BOOKS.slice(0, 6), "    health:", "      interval: 2s");
    assert.deepEqual([only(neither.errors).line, neither.errors[0]!.message], [7, 'set exactly one of "http" or "tcp"']);
  });

  it("points an empty value at its key", () => {
    const { errors } = load(...BOOKS.slice(0, 6), "    health:");
    assert.deepEqual(only(errors), { file: FILE, line: 7, column: 5, path: "services.books.health", message: "must be a mapping, got an empty value" });
  });

  it("rejects a bad service name at the name", () => {
    const { errors } = load(...BOOKS.slice(0, 2), "  Books_API:", ...BOOKS.slice(3));
    const e = only(errors);
    assert.deepEqual([e.line, e.column, e.path], [3, 3, "services.Books_API"]);
    assert.match(e.message, /^invalid service name "Books_API"/);
  });

  it("rejects values out of range or not allowed", () => {
    const { errors } = load(
      "version: 2",
      "proxy: { listen: '127.0.0.1:99999' }",
      "state: { driver: postgres }",
      ...BOOKS.slice(1),
      "    replicas: 0",
    );
    assert.deepEqual(
      errors.map((e) => [e.line, e.path, e.message]),
      [
        [1, "version", "must be 1, got 2"],
        [2, "proxy.listen", 'invalid address "127.0.0.1:99999": write host:port with a port from 1 to 65535, like "127.0.0.1:4700"'],
        [3, "state.driver", 'must be one of "sqlite", "memory", "etcd", got "postgres"'],
        [10, "services.books.replicas", "must be at least 1, got 0"],
      ],
    );
  });

  it("rejects a listen address that is not host:port", () => {
    const { errors } = load("version: 1", "agent: { listen: '127.0.0.1' }", "proxy: { listen: 'localhost:0' }", ...BOOKS.slice(1));
    assert.deepEqual(
      errors.map((e) => [e.line, e.column, e.path, e.message]),
      [
        [2, 18, "agent.listen", 'invalid address "127.0.0.1": write host:port with a port from 1 to 65535, like "127.0.0.1:4700"'],
        [3, 18, "proxy.listen", 'invalid address "localhost:0": write host:port with a port from 1 to 65535, like "127.0.0.1:4700"'],
      ],
    );
  });

  it("reports several errors at once, in file order", () => {
    const { errors } = load(
      "version: 1",
      "servics: {}",
      "services:",
      "  books:",
      "    command: node server.js",
      "    route: { path: api }",
      "    health: { http: /health, interval: soon }",
      "    replicas: 1.5",
    );
    assert.deepEqual(
      errors.map((e) => `${e.line}:${e.column} ${e.path}: ${e.message}`),
      [
        '2:1 servics: unknown key "servics"; did you mean "services"?',
        '4:3 services.books: missing required key "cwd"',
        "5:14 services.books.command: must be an argv array like [\"node\", \"server.js\"], not a string: commands run without a shell (write [\"sh\", \"-c\", \"...\"] if you need one)",
        '6:20 services.books.route.path: must start with "/", got "api"',
        '7:40 services.books.health.interval: invalid duration "soon": write a number and a unit, like "500ms", "10s" or "5m"',
        "8:15 services.books.replicas: must be a number of type integer, got number 1.5",
      ],
    );
  });
});

describe("loadSpec and loadSpecOrThrow", () => {
  function withDir(fn: (dir: string) => void) {
    const dir = mkdtempSync(join(tmpdir(), "turquoise-spec-"));
    try {
      fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it("names a missing file and suggests turquoise init", () => {
    withDir((dir) => {
      const file = join(dir, "turquoise.yml");
      const { spec, errors } = loadSpec(file);
      assert.equal(spec, undefined);
      assert.deepEqual(only(errors), { file, path: "", message: `spec file ${file} not found: run \`turquoise init\` to write a starter spec` });
    });
  });

  it("reads a file and resolves paths against its directory", () => {
    withDir((dir) => {
      const file = join(dir, "turquoise.yml");
      writeFileSync(file, BOOKS.join("\n"));
      const { spec, errors } = loadSpec(file);
      assert.deepEqual(errors, []);
      assert.equal(spec!.dir, dir);
      assert.equal(spec!.services.books!.cwd, join(dir, "releases/{release}"));
      assert.equal(spec!.state.path, join(dir, ".turquoise/state.db"));
    });
  });

  it("throws SPEC_INVALID listing every problem as file:line:col: path: message", () => {
    withDir((dir) => {
      const file = join(dir, "turquoise.yml");
      writeFileSync(file, [...BOOKS, "    helth: {}", "    replicas: many"].join("\n"));
      assert.throws(
        () => loadSpecOrThrow(file),
        (err: unknown) => {
          assert.ok(err instanceof TurquoiseError);
          assert.equal(err.code, "SPEC_INVALID");
          assert.equal(
            err.message,
            [
              `invalid spec ${file} (2 errors):`,
              `${file}:8:5: services.books.helth: unknown key "helth" in services.books; did you mean "health"?`,
              `${file}:9:15: services.books.replicas: must be a number of type integer, got string`,
            ].join("\n"),
          );
          assert.deepEqual(err.details[0], { file, line: 8, column: 5, path: "services.books.helth", message: 'unknown key "helth" in services.books; did you mean "health"?' });
          assert.equal(err.details.length, 2);
          return true;
        },
      );
    });
  });

  it("returns the spec and its warnings when there are no errors", () => {
    withDir((dir) => {
      const file = join(dir, "turquoise.yml");
      writeFileSync(file, [...BOOKS.slice(0, 4), "    cwd: current", ...BOOKS.slice(5)].join("\n"));
      const { spec, warnings } = loadSpecOrThrow(file);
      assert.equal(spec.services.books!.cwd, join(dir, "current"));
      assert.deepEqual(warnings.map((w) => [w.line, w.path]), [[5, "services.books.cwd"]]);
    });
  });
});

describe("loadSpecText: metrics", () => {
  it("has none unless the section is there; reads listen and resolves token_file against the spec's directory", () => {
    assert.equal(load(...BOOKS).spec!.metrics, undefined);
    const { spec, errors } = load(...BOOKS, "metrics:", "  listen: '[::1]:9464'", "  token_file: secrets/metrics-token");
    assert.deepEqual(errors, []);
    assert.deepEqual(spec!.metrics, { host: "::1", port: 9464, tokenFile: "/srv/app/secrets/metrics-token" });
  });

  it("needs a listen address, names an unknown key, and refuses a bad address at its line", () => {
    assert.match(only(load(...BOOKS, "metrics: { token_file: t }").errors).message, /missing required key "listen"/);
    const unknown = only(load(...BOOKS, "metrics:", "  listen: 127.0.0.1:9464", "  tokenfile: t").errors);
    assert.deepEqual([unknown.line, unknown.path], [10, "metrics.tokenfile"]);
    assert.match(unknown.message, /did you mean "token_file"/);
    const bad = only(load(...BOOKS, "metrics:", "  listen: ':9464'").errors);
    assert.deepEqual([bad.line, bad.path], [9, "metrics.listen"]);
    assert.match(bad.message, /invalid address ":9464"/);
  });
});

describe("loadSpecText: state on etcd", () => {
  it("normalizes the etcd block: defaults, durations in ms, TLS files from the spec's directory", () => {
    const { spec, errors } = load(
      ...BOOKS,
      "state:",
      "  driver: etcd",
      "  etcd:",
      '    endpoints: ["https://198.51.100.1:2379", "https://[2001:db8::2]:2379"]',
      "    username: turquoise",
      "    password_env: ETCD_PASSWORD",
      "    timeout: 2s",
      "    tls: { ca: certs/ca.pem, cert: certs/client.pem, key: certs/client-key.pem }",
    );
    assert.deepEqual(errors, []);
    assert.deepEqual(spec!.state.etcd, {
      endpoints: ["https://198.51.100.1:2379", "https://[2001:db8::2]:2379"],
      prefix: "/turquoise/",
      timeoutMs: 2_000,
      leaderTtlMs: 3_000,
      username: "turquoise",
      passwordEnv: "ETCD_PASSWORD",
      tls: { ca: "/srv/app/certs/ca.pem", cert: "/srv/app/certs/client.pem", key: "/srv/app/certs/client-key.pem" },
    });
    assert.equal(spec!.state.driver, "etcd");
  });

  it("needs the etcd block with driver: etcd, and says what is wrong in it", () => {
    assert.deepEqual(
      load(...BOOKS, "state: { driver: etcd }").errors.map((e) => [e.line, e.path, e.message]),
      [[8, "state", 'missing required key "etcd"']],
    );
    const { errors } = load(
      ...BOOKS,
      "state:",
      "  driver: etcd",
      "  etcd:",
      '    endpoints: ["198.51.100.1:2379", "http://user:pw@198.51.100.2:2379"]',
      "    prefix: turquoise",
      "    username: turquoise",
    );
    assert.deepEqual(
      errors.map((e) => [e.line, e.path, e.message]),
      [
        [11, "state.etcd.endpoints[0]", 'invalid etcd endpoint "198.51.100.1:2379": write a member\'s client URL, like "http://etcd-1.example.internal:2379", without a path or credentials'],
        [11, "state.etcd.endpoints[1]", 'invalid etcd endpoint "http://user:pw@198.51.100.2:2379": write a member\'s client URL, like "http://etcd-1.example.internal:2379", without a path or credentials'],
        [12, "state.etcd.prefix", 'invalid etcd prefix "turquoise": write slash-separated names that start and end with "/", like "/turquoise/books/"'],
        [13, "state.etcd.username", "username needs password_env beside it"],
      ],
    );
  });

  it("takes no password in the file itself", () => {
    const e = only(load(...BOOKS, "state:", "  driver: etcd", "  etcd: { endpoints: ['http://127.0.0.1:2379'], password: hunter2 }").errors);
    assert.match(e.message, /unknown key "password" in state\.etcd/);
  });
});
