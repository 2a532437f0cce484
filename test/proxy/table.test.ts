import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import type { RouteTable } from "../../src/proxy/contract.js";
import { CompiledTable, MAX_RETIRED_POOLS, Pool, Router, mergeDelta, normalizeHost, prefixMatches, validateDelta, validateTable } from "../../src/proxy/table.js";

const up = (id: string, port = 1000) => ({ id, host: "127.0.0.1", port });

function compile(table: RouteTable): CompiledTable {
  const router = new Router();
  router.apply(table);
  return router.current;
}

describe("route matching", () => {
  const t = compile({
    version: 1,
    routes: [
      { service: "root", pathPrefix: "/", poolId: "root", upstreams: [up("r")] },
      { service: "api", pathPrefix: "/api", poolId: "api", upstreams: [up("a")] },
      { service: "api-v2", pathPrefix: "/api/v2/", poolId: "api2", upstreams: [up("a2")] },
      { service: "books", host: "Books.Example", pathPrefix: "/", poolId: "books", upstreams: [up("b")] },
      { service: "books-admin", host: "books.example", pathPrefix: "/admin", poolId: "books-admin", upstreams: [up("ba")] },
    ],
  });
  const service = (host: string | undefined, url: string) => t.lookup(host, url)?.route.service;

  it("matches hosts exactly, case-insensitively, without the port", () => {
    assert.equal(service("books.example", "/x"), "books");
    assert.equal(service("BOOKS.EXAMPLE:8080", "/x"), "books");
    assert.equal(service("books.example.", "/x"), "books");
    assert.equal(service("sub.books.example", "/x"), "root");
  });

  it("prefers a host-specific route over a host-less one, even with a shorter prefix", () => {
    assert.equal(service("books.example", "/api/users"), "books");
    assert.equal(service("other.example", "/api/users"), "api");
  });

  it("picks the longest prefix", () => {
    assert.equal(service(undefined, "/api/v2/users"), "api-v2");
    assert.equal(service(undefined, "/api/v1/users"), "api");
    assert.equal(service("books.example", "/admin/users"), "books-admin");
    assert.equal(service("books.example", "/"), "books");
  });

  it("matches prefixes on a segment boundary or exactly; '/' matches everything", () => {
    assert.equal(service(undefined, "/api"), "api");
    assert.equal(service(undefined, "/api?x=1"), "api");
    assert.equal(service(undefined, "/apix"), "root");
    assert.equal(service(undefined, "/api/v2"), "api-v2");
    assert.equal(service(undefined, "/anything/at/all"), "root");
    assert.equal(prefixMatches("", "/x"), true);
    assert.equal(prefixMatches("/a", "/ab"), false);
  });

  it("finds nothing when no route matches", () => {
    const only = compile({ version: 1, routes: [{ service: "s", host: "a.example", pathPrefix: "/app", poolId: "p", upstreams: [] }] });
    assert.equal(only.lookup("a.example", "/other"), undefined);
    assert.equal(only.lookup("b.example", "/app"), undefined);
    assert.equal(only.lookup(undefined, "/app"), undefined);
  });

  it("normalizes hosts", () => {
    assert.equal(normalizeHost("Example.COM:8080"), "example.com");
    assert.equal(normalizeHost("[::1]:8080"), "[::1]");
  });
});

describe("pools", () => {
  it("round-robins over healthy upstreams", () => {
    const pool = new Pool({ service: "s", pathPrefix: "/", poolId: "p", upstreams: [up("a"), up("b"), up("c")] });
    const none = new Set<string>();
    assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => pool.pick(none)!.id), ["a", "b", "c", "a", "b", "c"]);
    const unhealthy = new Set(["b"]);
    assert.deepEqual([1, 2, 3, 4].map(() => pool.pick(unhealthy)!.id), ["a", "c", "a", "c"]);
    assert.equal(pool.pick(new Set(["a", "b", "c"])), undefined);
    assert.equal(pool.hasHealthy(new Set(["a", "b", "c"])), false);
  });

  it("avoids the upstream that just failed unless it is the only one", () => {
    const pool = new Pool({ service: "s", pathPrefix: "/", poolId: "p", upstreams: [up("a"), up("b")] });
    const a = pool.upstreams[0]!;
    const none = new Set<string>();
    for (let i = 0; i < 4; i++) assert.equal(pool.pick(none, a)!.id, "b");
    const single = new Pool({ service: "s", pathPrefix: "/", poolId: "q", upstreams: [up("only")] });
    assert.equal(single.pick(none, single.upstreams[0])!.id, "only");
  });

  it("counts in-flight, served and failed, and wakes drain waiters when idle", async () => {
    const pool = new Pool({ service: "s", pathPrefix: "/", poolId: "p", upstreams: [up("a")] });
    const r1 = { cut() {}, poolIndex: -1 };
    const r2 = { cut() {}, poolIndex: -1 };
    pool.enter(r1);
    pool.enter(r2);
    assert.equal(pool.inFlight, 2);
    const idle = pool.whenIdle(1_000);
    pool.leave(r1, true);
    pool.leave(r1, true); // a second leave of the same request changes nothing
    pool.leave(r2, false);
    assert.equal(await idle, true);
    assert.deepEqual(pool.stats(), { poolId: "p", inFlight: 0, served: 1, failed: 1, errors5xx: 0 });
    pool.enter(r1);
    assert.equal(await pool.whenIdle(20), false);
  });

  it("keeps exactly what entered and did not leave in its active list, whatever the order", () => {
    // Enter and leave in any order, leaving twice and leaving what never entered included: the
    // list must hold what a Set would, each item at its poolIndex, and the counts must agree.
    const step = fc.record({ enter: fc.boolean(), item: fc.nat(7), ok: fc.boolean() });
    fc.assert(
      fc.property(fc.array(step, { maxLength: 60 }), (steps) => {
        const pool = new Pool({ service: "s", pathPrefix: "/", poolId: "p", upstreams: [up("a")] });
        const items = Array.from({ length: 8 }, () => ({ cut() {}, poolIndex: -1 }));
        const model = new Set<object>();
        let served = 0;
        let failed = 0;
        for (const { enter, item, ok } of steps) {
          const it = items[item]!;
          if (enter) {
            if (model.has(it)) continue; // an item is in flight once at a time, as an exchange is
            pool.enter(it);
            model.add(it);
          } else {
            pool.leave(it, ok);
            if (model.delete(it)) ok ? served++ : failed++;
          }
          assert.equal(pool.active.length, model.size);
          assert.equal(pool.inFlight, model.size);
          pool.active.forEach((a, i) => assert.equal(a.poolIndex, i));
          for (const x of items) assert.equal(pool.active.includes(x), model.has(x));
        }
        assert.equal(pool.served, served);
        assert.equal(pool.failed, failed);
      }),
      { numRuns: 300 },
    );
  });
});

describe("router", () => {
  it("keeps a pool (and its counters) across tables that name the same pool id", () => {
    const router = new Router();
    router.apply({ version: 1, routes: [{ service: "s", pathPrefix: "/", poolId: "s:blue", upstreams: [up("a")] }] });
    const pool = router.pools.get("s:blue")!;
    pool.served = 7;
    router.apply({ version: 2, routes: [{ service: "s", pathPrefix: "/", poolId: "s:blue", upstreams: [up("a"), up("b")] }] });
    assert.equal(router.pools.get("s:blue"), pool);
    assert.equal(pool.served, 7);
    assert.equal(pool.upstreams.length, 2);
    assert.equal(router.current.lookup(undefined, "/")!.pool, pool);
  });

  it("keeps retired pools until they are drained and released", () => {
    const router = new Router();
    router.apply({
      version: 1,
      routes: [
        { service: "s", pathPrefix: "/", poolId: "s:blue", upstreams: [up("a")] },
        { service: "t", pathPrefix: "/t", poolId: "t:blue", upstreams: [up("c")] },
      ],
    });
    const blue = router.pools.get("s:blue")!;
    const busy = { cut() {}, poolIndex: -1 };
    blue.enter(busy);
    router.apply({ version: 2, routes: [{ service: "s", pathPrefix: "/", poolId: "s:green", upstreams: [up("b")] }] });
    assert.equal(router.pools.get("s:blue"), blue);
    assert.equal(blue.live, false);
    assert.equal(router.pools.get("t:blue")?.live, false, "an idle retired pool waits for its drain too");
    blue.leave(busy, true);
    router.release(blue);
    assert.equal(router.pools.has("s:blue"), false);
    router.release(router.pools.get("t:blue")!);
    assert.equal(router.pools.has("t:blue"), false);
  });

  it("brings a retired pool back to life when a table names it again (rollback)", () => {
    const router = new Router();
    router.apply({ version: 1, routes: [{ service: "s", pathPrefix: "/", poolId: "s:blue", upstreams: [up("a")] }] });
    const blue = router.pools.get("s:blue")!;
    router.apply({ version: 2, routes: [{ service: "s", pathPrefix: "/", poolId: "s:green", upstreams: [up("b")] }] });
    router.apply({ version: 3, routes: [{ service: "s", pathPrefix: "/", poolId: "s:blue", upstreams: [up("a")] }] });
    assert.equal(router.pools.get("s:blue"), blue);
    assert.equal(blue.live, true);
    router.release(blue);
    assert.equal(router.pools.get("s:blue"), blue, "a live pool is never released");
  });

  it("forgets the oldest idle retired pools beyond MAX_RETIRED_POOLS", () => {
    const router = new Router();
    for (let v = 1; v <= MAX_RETIRED_POOLS + 5; v++) {
      router.apply({ version: v, routes: [{ service: "s", pathPrefix: "/", poolId: `s:${v}`, upstreams: [up("a")] }] });
    }
    assert.equal(router.pools.size, MAX_RETIRED_POOLS + 1);
    assert.equal(router.pools.has("s:1"), false);
    assert.equal(router.pools.has(`s:${MAX_RETIRED_POOLS + 5}`), true);
  });

  it("ignores a table older than the current one", () => {
    const router = new Router();
    assert.equal(router.apply({ version: 5, routes: [] }), true);
    assert.equal(router.apply({ version: 4, routes: [{ service: "s", pathPrefix: "/", poolId: "p", upstreams: [] }] }), false);
    assert.equal(router.current.version, 5);
    assert.equal(router.pools.size, 0);
  });
});

describe("validateTable", () => {
  it("accepts a valid table and names the field of an invalid one", () => {
    assert.equal(validateTable({ version: 1, routes: [{ service: "s", pathPrefix: "/", poolId: "p", upstreams: [up("a", 80)] }] }), undefined);
    assert.match(validateTable({ routes: [] })!, /version/);
    assert.match(validateTable({ version: 1, routes: [{ service: "s", pathPrefix: "x", poolId: "p", upstreams: [] }] })!, /routes\[0\]\.pathPrefix/);
    assert.match(
      validateTable({ version: 1, routes: [{ service: "s", pathPrefix: "/", poolId: "p", upstreams: [{ id: "a", host: "h", port: 70000 }] }] })!,
      /routes\[0\]\.upstreams\[0\]\.port/,
    );
  });
});

describe("route table deltas", () => {
  const base: RouteTable = {
    version: 7,
    routes: [
      { service: "a", pathPrefix: "/a", poolId: "a:1", upstreams: [up("a1")] },
      { service: "b", pathPrefix: "/", poolId: "b:1", upstreams: [up("b1")] },
      { service: "b", host: "preview.b.test", pathPrefix: "/", poolId: "b:2", upstreams: [up("b2")] },
      { service: "c", pathPrefix: "/c", poolId: "c:1", upstreams: [up("c1")] },
    ],
    metrics: true,
  };

  it("replaces the named services' routes where they stood, keeps every other route and setting, takes the delta's version", () => {
    const merged = mergeDelta(base, { base: 7, version: 9, services: ["b"], routes: [{ service: "b", pathPrefix: "/", poolId: "b:2", upstreams: [up("b2")] }] });
    assert.deepEqual(merged.routes.map((r) => r.poolId), ["a:1", "b:2", "c:1"]);
    assert.equal(merged.version, 9);
    assert.equal(merged.metrics, true);
    assert.equal(base.routes.length, 4, "the base table is left as it was");
  });

  it("drops a service named with no routes, appends a service the base did not route, and only moves the version when it names none", () => {
    assert.deepEqual(mergeDelta(base, { base: 7, version: 8, services: ["a"], routes: [] }).routes.map((r) => r.poolId), ["b:1", "b:2", "c:1"]);
    assert.deepEqual(mergeDelta(base, { base: 7, version: 8, services: ["d"], routes: [{ service: "d", pathPrefix: "/d", poolId: "d:1", upstreams: [] }] }).routes.map((r) => r.poolId), ["a:1", "b:1", "b:2", "c:1", "d:1"]);
    assert.deepEqual(mergeDelta(base, { base: 7, version: 8, services: [], routes: [] }).routes, base.routes);
  });

  it("refuses deltas of the wrong shape with a message naming the field", () => {
    const cases: Array<[unknown, RegExp]> = [
      [null, /delta must be an object/],
      ["{}", /delta must be an object/],
      [{ version: 2, services: [], routes: [] }, /base must be a number/],
      [{ base: 1, version: "2", services: [], routes: [] }, /version must be a number/],
      [{ base: 3, version: 3, services: [], routes: [] }, /version \(3\) must be above base \(3\)/],
      [{ base: 1, version: 2, services: "a", routes: [] }, /services must be an array/],
      [{ base: 1, version: 2, services: [""], routes: [] }, /services must be an array/],
      [{ base: 1, version: 2, services: ["a"], routes: {} }, /routes must be an array/],
      [{ base: 1, version: 2, services: ["a"], routes: [{ service: "b", pathPrefix: "/", poolId: "p", upstreams: [] }] }, /routes\[0\]\.service "b" is not one of the delta's services/],
    ];
    for (const [value, message] of cases) assert.match(validateDelta(value) ?? "accepted", message, JSON.stringify(value));
    assert.equal(validateDelta({ base: 1, version: 2, services: ["a"], routes: [{ service: "a", pathPrefix: "/", poolId: "p", upstreams: [] }] }), undefined);
  });

  it("leaves what a delta's routes are worth to validateTable of the table it makes: a pool another service owns is refused", () => {
    const merged = mergeDelta(base, { base: 7, version: 8, services: ["a"], routes: [{ service: "a", pathPrefix: "/a", poolId: "c:1", upstreams: [] }] });
    assert.match(validateTable(merged) ?? "", /poolId "c:1" is already used by service "a"/);
  });
});
