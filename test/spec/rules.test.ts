import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { loadSpecText } from "../../src/spec/loader.js";
import { runRules, SPEC_RULES, type SpecRule } from "../../src/spec/rules.js";
import type { SpecProblem } from "../../src/spec/types.js";

const FILE = "/srv/app/turquoise.yml";

function load(...lines: string[]) {
  return loadSpecText(lines.join("\n") + "\n", FILE);
}

function only(problems: SpecProblem[]): SpecProblem {
  assert.equal(problems.length, 1, JSON.stringify(problems, null, 2));
  return problems[0]!;
}

// A valid service in 5 lines, named and routed by the caller.
function service(name: string, route: string, extra: string[] = []): string[] {
  return [
    `  ${name}:`,
    "    command: [node, server.js]",
    "    cwd: releases/{release}",
    `    route: ${route}`,
    "    health: { http: /health }",
    ...extra,
  ];
}

describe("rule: duplicate-route", () => {
  it("is an error naming both services, at the second route", () => {
    const { spec, errors } = load(
      "version: 1",
      "services:",
      ...service("books", "{ host: books.localhost, path: /api }"),
      ...service("authors", "{ host: BOOKS.localhost, path: /api/ }"),
    );
    assert.equal(spec, undefined);
    const e = only(errors);
    assert.deepEqual([e.line, e.column, e.path], [11, 5, "services.authors.route"]);
    assert.match(e.message, /"books" and "authors" both claim the route books\.localhost\/api/);
  });

  it("allows the same path on different hosts, and different paths on one host", () => {
    const { errors } = load(
      "version: 1",
      "services:",
      ...service("books", "{ host: books.localhost, path: /api }"),
      ...service("authors", "{ host: authors.localhost, path: /api }"),
      ...service("search", "{ host: books.localhost, path: /search }"),
    );
    assert.deepEqual(errors, []);
  });
});

describe("rule: same-listen", () => {
  it("is an error when the agent and the proxy share an address", () => {
    const { errors } = load("version: 1", "agent: { listen: '127.0.0.1:9000' }", "proxy: { listen: '127.0.0.1:9000' }", "services:", ...service("books", "{ path: / }"));
    const e = only(errors);
    assert.deepEqual([e.line, e.column, e.path], [3, 10, "proxy.listen"]);
    assert.match(e.message, /both listen on port 9000/);
  });

  it("counts a wildcard address as every address", () => {
    const { errors } = load("version: 1", "proxy:", "  listen: '0.0.0.0:4700'", "services:", ...service("books", "{ path: / }"));
    assert.deepEqual([only(errors).line, errors[0]!.path], [3, "proxy.listen"]);
  });

  it("allows the same port on two different interfaces", () => {
    const { errors } = load("version: 1", "agent: { listen: '127.0.0.1:9000' }", "proxy: { listen: '127.0.0.2:9000' }", "services:", ...service("books", "{ path: / }"));
    assert.deepEqual(errors, []);
  });
});

describe("rule: agent-on-loopback", () => {
  it("warns when the agent API listens beyond loopback", () => {
    const { spec, errors, warnings } = load("version: 1", "agent:", "  listen: '0.0.0.0:4700'", "services:", ...service("books", "{ path: / }"));
    assert.deepEqual(errors, []);
    assert.ok(spec, "a warning does not stop the spec from loading");
    const w = only(warnings);
    assert.deepEqual([w.line, w.column, w.path], [3, 3, "agent.listen"]);
    assert.match(w.message, /not loopback/);
  });

  it("accepts every loopback spelling, and a public proxy", () => {
    for (const listen of ["127.0.0.1:4700", "127.1.2.3:4700", "localhost:4700", "[::1]:4700"]) {
      const { warnings } = load("version: 1", `agent: { listen: '${listen}' }`, "proxy: { listen: '0.0.0.0:80' }", "services:", ...service("books", "{ path: / }"));
      assert.deepEqual(warnings, [], listen);
    }
  });
});

describe("rule: health-timeout-over-interval", () => {
  it("warns at the timeout", () => {
    const { errors, warnings } = load(
      "version: 1",
      "services:",
      ...service("books", "{ path: / }", ["    deploy_timeout: 1m"]).map((l) => l.replace("{ http: /health }", "{ http: /health, interval: 2s, timeout: 5s }")),
    );
    assert.deepEqual(errors, []);
    const w = only(warnings);
    assert.deepEqual([w.line, w.path], [7, "services.books.health.timeout"]);
    assert.match(w.message, /timeout \(5s\) is longer than the interval \(2s\)/);
  });
});

describe("rule: health-interval-over-deploy-timeout", () => {
  it("is a warning at the interval", () => {
    const { spec, warnings: errors } = load(
      "version: 1",
      "services:",
      "  books:",
      "    command: [node, server.js]",
      "    cwd: releases/{release}",
      "    route: { path: / }",
      "    health:",
      "      http: /health",
      "      interval: 1m",
      "      timeout: 1s",
    );
    assert.ok(spec, "a warning does not reject the spec");
    const e = only(errors);
    assert.deepEqual([e.line, e.column, e.path], [9, 7, "services.books.health.interval"]);
    assert.match(e.message, /interval \(1m\) is longer than deploy_timeout \(30s\)/);
  });

  it("points at the health key when the interval is the default", () => {
    const { warnings: errors } = load("version: 1", "services:", ...service("books", "{ path: / }", ["    deploy_timeout: 500ms"]));
    assert.deepEqual([only(errors).line, errors[0]!.column, errors[0]!.path], [7, 5, "services.books.health.interval"]);
  });
});

describe("rule: cwd-without-release", () => {
  it("warns at the cwd", () => {
    const { errors, warnings } = load("version: 1", "services:", ...service("books", "{ path: / }").map((l) => l.replace("releases/{release}", "app")));
    assert.deepEqual(errors, []);
    const w = only(warnings);
    assert.deepEqual([w.line, w.column, w.path], [5, 5, "services.books.cwd"]);
    assert.match(w.message, /same directory/);
  });
});

describe("rule: etcd-endpoints", () => {
  const etcd = (...lines: string[]) => load("version: 1", "services:", ...service("books", "{ path: / }"), "state:", "  driver: etcd", "  etcd:", ...lines);

  it("is an error when http:// and https:// endpoints are mixed", () => {
    const e = only(etcd("    endpoints: ['https://198.51.100.1:2379', 'http://198.51.100.2:2379']", "    tls: { ca: ca.pem }").errors);
    assert.deepEqual([e.line, e.path], [11, "state.etcd.endpoints"]);
    assert.match(e.message, /mixes http:\/\/ and https:\/\//);
  });

  it("is an error when tls is set for http:// endpoints", () => {
    const e = only(etcd("    endpoints: ['http://198.51.100.1:2379']", "    tls: { ca: ca.pem }").errors);
    assert.deepEqual([e.line, e.path], [12, "state.etcd.tls"]);
  });

  it("accepts https:// everywhere, with or without a CA of its own", () => {
    assert.deepEqual(etcd("    endpoints: ['https://198.51.100.1:2379', 'https://198.51.100.2:2379']").errors, []);
    assert.deepEqual(etcd("    endpoints: ['https://198.51.100.1:2379']", "    tls: { ca: ca.pem, cert: c.pem, key: k.pem }").errors, []);
  });
});

describe("rule: etcd-leader-ttl", () => {
  const ttl = (value: string) => load("version: 1", "services:", ...service("books", "{ path: / }"), "state:", "  driver: etcd", "  etcd:", "    endpoints: ['http://etcd-1.example.internal:2379']", `    leader_ttl: ${value}`);

  it("refuses a lease etcd would not grant, or one that leaves the cluster leaderless for minutes, naming the line", () => {
    for (const value of ["500ms", "1s", "61s", "1h"]) {
      const e = only(ttl(value).errors);
      assert.deepEqual([e.line, e.path], [12, "state.etcd.leader_ttl"], value);
      assert.match(e.message, /between 2s .* and 60s/);
    }
  });

  it("takes 2s to 60s, and 3s when unset", () => {
    for (const value of ["2s", "3s", "60s"]) assert.deepEqual(ttl(value).errors, [], value);
    const { spec } = load("version: 1", "services:", ...service("books", "{ path: / }"), "state:", "  driver: etcd", "  etcd: { endpoints: ['http://etcd-1.example.internal:2379'] }");
    assert.equal(spec!.state.etcd!.leaderTtlMs, 3_000);
  });

  it("refuses what is not a duration, naming the key", () => {
    const e = ttl("soon").errors[0]!;
    assert.equal(e.path, "state.etcd.leader_ttl");
  });
});

describe("rule: etcd-unused", () => {
  it("warns when an etcd block sits beside another driver", () => {
    const { warnings, errors } = load("version: 1", "services:", ...service("books", "{ path: / }"), "state:", "  driver: sqlite", "  etcd: { endpoints: ['http://198.51.100.1:2379'] }");
    assert.deepEqual(errors, []);
    const w = only(warnings);
    assert.deepEqual([w.line, w.path], [10, "state.etcd"]);
    assert.match(w.message, /state\.driver is sqlite/);
  });
});

describe("runRules", () => {
  it("sorts each rule's problems by the rule's severity", () => {
    const { spec } = load("version: 1", "services:", ...service("books", "{ path: / }"));
    const at = (path: (string | number)[], message: string): SpecProblem => ({ file: FILE, path: path.join("."), message });
    const loud: SpecRule = { name: "loud", severity: "error", check: (_spec, ctx) => [ctx.at(["services"], "bad")] };
    const quiet: SpecRule = { name: "quiet", severity: "warning", check: (_spec, ctx) => [ctx.at(["agent"], "hmm")] };
    assert.deepEqual(runRules(spec!, { at }, [loud, quiet]), {
      errors: [{ file: FILE, path: "services", message: "bad" }],
      warnings: [{ file: FILE, path: "agent", message: "hmm" }],
    });
  });

  it("has uniquely named rules", () => {
    const names = SPEC_RULES.map((r) => r.name);
    assert.equal(new Set(names).size, names.length);
  });
});

describe("rule: metrics-listen", () => {
  it("is an error when the metrics endpoint takes the agent's or the proxy's port", () => {
    for (const [listen, other] of [["127.0.0.1:4700", "agent"], ["0.0.0.0:8080", "proxy"]] as const) {
      const { errors } = load("version: 1", "services:", ...service("books", "{ path: / }"), "metrics:", `  listen: '${listen}'`);
      const e = only(errors);
      assert.deepEqual([e.line, e.path], [9, "metrics.listen"]);
      assert.match(e.message, new RegExp(`the metrics endpoint and the ${other} both listen on port`));
    }
  });

  it("is an error when it takes the Consul API's port", () => {
    const { errors } = load("version: 1", "consul: { listen: '127.0.0.1:8500' }", "services:", ...service("books", "{ path: / }"), "metrics: { listen: '127.0.0.1:8500' }");
    assert.match(only(errors).message, /the metrics endpoint and the Consul API both listen on port 8500/);
  });

  it("allows a port of its own", () => {
    const { errors, warnings } = load("version: 1", "consul: { listen: '127.0.0.1:8500' }", "services:", ...service("books", "{ path: / }"), "metrics: { listen: '127.0.0.1:4701' }");
    assert.deepEqual([errors, warnings], [[], []]);
  });
});

describe("rule: metrics-open", () => {
  it("warns when the metrics endpoint is reachable beyond loopback without a token", () => {
    const { spec, warnings } = load("version: 1", "services:", ...service("books", "{ path: / }"), "metrics:", "  listen: '0.0.0.0:4701'");
    assert.ok(spec);
    const w = only(warnings);
    assert.deepEqual([w.line, w.path], [9, "metrics.listen"]);
    assert.match(w.message, /not loopback, and asks for no token: set metrics\.token_file/);
  });

  it("is quiet with a token, or on loopback", () => {
    for (const lines of [["  listen: '0.0.0.0:4701'", "  token_file: metrics-token"], ["  listen: 'localhost:4701'"]]) {
      assert.deepEqual(load("version: 1", "services:", ...service("books", "{ path: / }"), "metrics:", ...lines).warnings, []);
    }
  });
});

describe("rule: runtime-needs, for swarm", () => {
  const swarmService = (extra: string[] = []) => [
    "  books:",
    "    runtime: swarm",
    '    image: "books:{release}"',
    "    route: { path: / }",
    "    health: { http: /health }",
    ...extra,
  ];

  it("loads a swarm service with placement, resources and volumes, sockets and sources resolved", () => {
    const { spec, errors } = load(
      "version: 1",
      "swarm: { manager: unix:///run/lab/node1/docker.sock, nodes: { 198.18.100.12: /run/lab/node2/docker.sock } }",
      "services:",
      ...swarmService(['    placement: ["node.role==worker"]', "    resources: { cpus: 0.5, memory: 256MiB }", '    volumes: ["data:/data:ro", "/srv/x:/x"]']),
    );
    assert.deepEqual(errors, []);
    assert.deepEqual(spec!.swarm, { manager: "/run/lab/node1/docker.sock", nodes: { "198.18.100.12": "/run/lab/node2/docker.sock" } });
    const books = spec!.services.books!;
    assert.deepEqual(books.placement, ["node.role==worker"]);
    assert.deepEqual(books.resources, { cpus: 0.5, memoryBytes: 256 * 1024 * 1024 });
    assert.deepEqual(books.volumes, [{ source: "/srv/app/data", target: "/data", readOnly: true }, { source: "/srv/x", target: "/x", readOnly: false }]);
  });

  it("runtime swarm without the swarm block is an error at the runtime", () => {
    const { spec, errors } = load("version: 1", "services:", ...swarmService());
    assert.equal(spec, undefined);
    const e = only(errors);
    assert.equal(e.path, "services.books.runtime");
    assert.match(e.message, /runtime: swarm needs the top-level swarm block/);
  });

  it("placement on another runtime, and volumes on a process, are errors naming the key", () => {
    const docker = load("version: 1", "services:", "  books:", "    runtime: docker", '    image: "books:{release}"', "    route: { path: / }", "    health: { http: /health }", '    placement: ["node.role==worker"]');
    assert.match(only(docker.errors).message, /placement and resources are for runtime: swarm; this service runs on docker/);
    const proc = load("version: 1", "services:", ...service("books", "{ path: / }", ['    volumes: ["/a:/b"]']));
    assert.match(only(proc.errors).message, /volumes are for runtime: docker and swarm/);
  });

  it("a volume that is not source:/target[:ro] is a schema error", () => {
    const { errors } = load("version: 1", "swarm: { manager: /run/docker.sock }", "services:", ...swarmService(['    volumes: ["/a:relative"]']));
    assert.ok(errors.some((e) => e.path === "services.books.volumes[0]" || /volumes/.test(e.path ?? "")), JSON.stringify(errors));
  });
});
