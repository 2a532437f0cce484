// The consul: section of turquoise.yml: off unless set, its defaults, its errors, and the rule
// that keeps it off the agent's and the proxy's ports.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { loadSpecText } from "../../src/spec/loader.js";

const FILE = "/srv/app/turquoise.yml";
const BASE = ["version: 1", 'agent: { listen: "127.0.0.1:4700" }', 'proxy: { listen: "0.0.0.0:8080" }', "services:", "  books:", "    command: [node, server.js]", "    cwd: releases/{release}", "    route: { path: / }", "    health: { http: /health }"];
const load = (...lines: string[]) => loadSpecText([...BASE, ...lines].join("\n") + "\n", FILE);

describe("spec: consul", () => {
  it("is off unless set", () => {
    const { spec, errors } = load();
    assert.deepEqual(errors, []);
    assert.equal(spec!.consul, undefined);
  });

  it("takes listen, with datacenter and max_blocking defaulted", () => {
    const { spec, errors } = load("consul:", '  listen: "127.0.0.1:8500"');
    assert.deepEqual(errors, []);
    assert.deepEqual(spec!.consul, { host: "127.0.0.1", port: 8500, datacenter: "dc1", maxBlocking: 512 });
    const ipv6 = load("consul: { listen: \"[::1]:8500\", datacenter: eu-west_2, max_blocking: 40 }");
    assert.deepEqual(ipv6.spec!.consul, { host: "::1", port: 8500, datacenter: "eu-west_2", maxBlocking: 40 });
  });

  it("names what is wrong, with its line", () => {
    const cases: Array<[string[], string]> = [
      [["consul: {}"], 'consul: missing required key "listen"'],
      [["consul:", "  listen: 8500"], "consul.listen: must be a string, got number"],
      [["consul:", '  listen: "127.0.0.1:99999"'], 'consul.listen: invalid address "127.0.0.1:99999"'],
      [["consul:", '  listen: "127.0.0.1:8500"', "  datacenter: eu/west"], 'consul.datacenter: invalid datacenter "eu/west"'],
      [["consul:", '  listen: "127.0.0.1:8500"', "  max_blocking: 0"], "consul.max_blocking: must be at least 1"],
      [["consul:", '  listen: "127.0.0.1:8500"', "  token: abc"], 'unknown key "token" in consul'],
    ];
    for (const [lines, message] of cases) {
      const { spec, errors } = load(...lines);
      assert.equal(spec, undefined, message);
      assert.ok(errors.some((e) => e.line !== undefined && e.line >= BASE.length + 1 && `${e.path}: ${e.message}`.includes(message)), `${message}\n${JSON.stringify(errors)}`);
    }
  });

  it("rule consul-listen: the agent's or the proxy's port is an error at consul.listen", () => {
    const agent = load("consul:", '  listen: "127.0.0.1:4700"');
    assert.deepEqual(agent.errors.map((e) => [e.path, e.line, e.message]), [["consul.listen", BASE.length + 2, "the Consul API and the agent both listen on port 4700: give the Consul API a port of its own"]]);
    // The proxy listens on every interface: its port is taken on loopback too.
    const proxy = load("consul:", '  listen: "127.0.0.1:8080"');
    assert.match(proxy.errors[0]!.message, /the Consul API and the proxy both listen on port 8080/);
    assert.deepEqual(load("consul:", '  listen: "127.0.0.2:4700"').errors, []);
  });
});
