// turquoise.yml's preview host and canary section: normalized values, and the rules that refuse
// a preview host that reaches something else, steps that go down, or a canary on nginx.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { loadSpecText } from "../../src/spec/loader.js";

const load = (...lines: string[]) => loadSpecText(lines.join("\n") + "\n", "/srv/app/turquoise.yml");

function service(name: string, route: string, extra: string[] = []): string[] {
  return [`  ${name}:`, "    command: [node, server.js]", "    cwd: releases/{release}", `    route: ${route}`, "    health: { http: /health }", ...extra];
}

describe("spec: preview_host and canary", () => {
  it("normalizes the canary: 100 implied, percentages as fractions, durations in ms, defaults filled", () => {
    const { spec, errors } = load("version: 1", "services:", ...service("books", "{ host: books.localhost, preview_host: Green.Books.localhost }", ["    canary: { steps: [5, 25, 100], step_interval: 10s, max_error_rate: 2 }"]));
    assert.deepEqual(errors, []);
    const svc = spec!.services.books!;
    assert.equal(svc.route.previewHost, "green.books.localhost");
    assert.deepEqual(svc.canary, { steps: [5, 25], stepIntervalMs: 10_000, maxErrorRate: 0.02, maxP99Ratio: 3, minRequests: 20 });
  });

  it("refuses a preview host that is a route host, its own or another service's", () => {
    const own = load("version: 1", "services:", ...service("books", "{ host: books.localhost, preview_host: books.localhost }"));
    assert.match(own.errors[0]!.message, /books\.localhost is this service's own route host/);
    assert.equal(own.errors[0]!.path, "services.books.route.preview_host");
    const other = load("version: 1", "services:", ...service("books", "{ host: books.localhost, preview_host: authors.localhost }"), ...service("authors", "{ host: authors.localhost }"));
    assert.match(other.errors[0]!.message, /the route host of "authors"/);
  });

  it("refuses steps that go down, a step out of range, and a canary on the nginx driver", () => {
    const down = load("version: 1", "services:", ...service("books", "{ path: / }", ["    canary: { steps: [50, 25] }"]));
    assert.match(down.errors[0]!.message, /steps must increase: 50 then 25/);
    const range = load("version: 1", "services:", ...service("books", "{ path: / }", ["    canary: { steps: [0, 150] }"]));
    assert.ok(range.errors.length >= 1 && range.spec === undefined);
    const nginx = load("version: 1", "proxy: { driver: nginx }", "services:", ...service("books", "{ path: / }", ["    canary: { steps: [10] }"]));
    assert.match(nginx.errors[0]!.message, /a canary needs the built-in proxy's per-slot counters; proxy.driver is nginx/);
  });
});
