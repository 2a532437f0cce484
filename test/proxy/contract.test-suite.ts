// The Proxy contract as tests. Every driver calls runProxyContract; a driver is done when it passes.
// What a driver cannot do it declares in proxy.capabilities, and for each flag that is false the
// suite checks the fallback the contract documents instead: nothing is skipped.

import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, it } from "node:test";
import { WebSocket, WebSocketServer } from "ws";
import type { Proxy, ProxyCapabilities, ProxyLimits, ProxySettings, ProxyTimeouts, Route } from "../../src/proxy/contract.js";
import { tableSettings } from "../../src/proxy/settings.js";
import { type Handler, type TestUpstream, json, request, route, sleep, startUpstream } from "./helpers.js";
import { RawHttpClient, fieldValues, rawRequest, startUnacceptingUpstream } from "./raw-http.js";

export interface ProxyUnderTest {
  proxy: Proxy;
  /** Where clients reach the proxy, e.g. http://127.0.0.1:8080 (loopback only). */
  baseUrl: string;
  close(): Promise<void>;
}

export interface ProxyContractOptions {
  name: string;
  /** Starts a proxy with an empty table. The suite applies tables from version 1 upwards. */
  start(): Promise<ProxyUnderTest>;
}

interface SettingsOverrides {
  timeouts?: Partial<ProxyTimeouts>;
  limits?: Partial<ProxyLimits>;
  trustedProxies?: string[];
}

/** A whole settings object: the defaults, with what a test changes. */
function settings(overrides: SettingsOverrides = {}): ProxySettings {
  const s = tableSettings(undefined);
  return {
    timeouts: { ...s.timeouts, ...overrides.timeouts },
    limits: { ...s.limits, ...overrides.limits },
    trustedProxies: overrides.trustedProxies ?? [],
  };
}

/** Echoes who answered and the request's header fields exactly as they arrived, in order. */
function rawEcho(id: string): Handler {
  return (req, res, body) => {
    const text = JSON.stringify({ id, url: req.url, rawHeaders: req.rawHeaders, body: body.toString("utf8") });
    res.writeHead(200, { "content-type": "application/json" }).end(text);
  };
}

interface RawEcho {
  id: string;
  url: string;
  rawHeaders: string[];
  body: string;
}

/** The values of every field named `name` in an echoed request, in order. */
function seen(e: RawEcho, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < e.rawHeaders.length; i += 2) if (e.rawHeaders[i]!.toLowerCase() === name) out.push(e.rawHeaders[i + 1]!);
  return out;
}

/** Answers after ?delay= ms (the timer never holds the test process open). */
const delayed: (id: string) => Handler = (id) => (req, res) => {
  const delay = Number(new URL(req.url ?? "/", "http://x").searchParams.get("delay") ?? 0);
  setTimeout(() => {
    if (!res.destroyed) res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ id }));
  }, delay).unref();
};

/** Resolves once upstream u has received its n-th request: a request is in flight there, however slow the machine. */
async function arrived(u: TestUpstream, n: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (u.hits < n) {
    if (Date.now() > deadline) throw new Error(`upstream ${u.id} got ${u.hits} request(s) in 10 s, expected ${n}`);
    await sleep(10);
  }
}

/** Resolves to the response, or to "cut" when the connection broke before a whole response. */
function outcome(url: string, opts: Parameters<typeof request>[1] = {}): Promise<{ status: number; text: string } | "cut"> {
  return request(url, opts).then(
    (r) => ({ status: r.status, text: r.text }),
    () => "cut" as const,
  );
}

/** Bounds each test, so that a driver lacking a behaviour fails that test and not the rest of the suite. */
const PER_TEST = { timeout: 30_000 };

function raw(lines: string[]): string {
  return `${lines.join("\r\n")}\r\n\r\n`;
}

export function runProxyContract(opts: ProxyContractOptions): void {
  describe(`Proxy contract: ${opts.name}`, () => {
    let under: ProxyUnderTest;
    let proxy: Proxy;
    let base: string;
    const upstreams: { close(): Promise<void> }[] = [];
    let version = 0;

    before(async () => {
      under = await opts.start();
      proxy = under.proxy;
      base = under.baseUrl;
    });
    after(async () => {
      await under?.close();
      await Promise.all(upstreams.map((u) => u.close()));
    });

    const upstream = async (id: string, handler?: Handler): Promise<TestUpstream> => {
      const u = await startUpstream(id, handler);
      upstreams.push(u);
      return u;
    };
    /** Applies the next table version: these routes, these settings (the defaults when left out). */
    const apply = (routes: Route[], overrides?: SettingsOverrides): Promise<void> =>
      proxy.apply({ version: ++version, routes, ...(overrides ? { settings: settings(overrides) } : {}) });
    const who = async (urlPath: string, host?: string): Promise<string> => {
      const r = await request(`${base}${urlPath}`, { headers: host ? { host } : {} });
      assert.equal(r.status, 200, `${host ?? ""}${urlPath}: ${r.status} ${r.text}`);
      return json<{ id: string }>(r).id;
    };
    /**
     * A test of a behaviour a driver may lack: with the capability it checks the behaviour, without
     * it the fallback. The title states both; the test's diagnostic says which ran.
     */
    const capIt = (flag: keyof ProxyCapabilities, behaviour: string, fallback: string, body: (on: boolean) => Promise<void>): void => {
      it(`[${flag}] ${behaviour}; without ${flag}: ${fallback}`, PER_TEST, async (t) => {
        const on = proxy.capabilities[flag];
        t.diagnostic(`${opts.name}: ${flag} is ${on}, so the ${on ? "behaviour" : "fallback"} was checked`);
        await body(on);
      });
    };

    describe("routing", () => {
      it("a host's route beats any wildcard route; the longest prefix wins, on whole path segments", PER_TEST, async () => {
        const [any, api, apiV2, docs, site, admin] = await Promise.all(["any", "api", "api-v2", "docs", "site", "admin"].map((id) => upstream(id)));
        await apply([
          route("any", "any:1", [any!.upstream]),
          route("api", "api:1", [api!.upstream], { pathPrefix: "/api" }),
          route("api-v2", "api-v2:1", [apiV2!.upstream], { pathPrefix: "/api/v2" }),
          // A trailing slash is the same prefix: "/docs/" matches "/docs" too.
          route("docs", "docs:1", [docs!.upstream], { pathPrefix: "/docs/" }),
          route("site", "site:1", [site!.upstream], { host: "example.com" }),
          route("admin", "admin:1", [admin!.upstream], { host: "example.com", pathPrefix: "/admin/" }),
        ]);
        assert.equal(await who("/"), "any");
        assert.equal(await who("/api"), "api");
        assert.equal(await who("/api/"), "api");
        assert.equal(await who("/api/books?page=2"), "api");
        assert.equal(await who("/api?page=2"), "api");
        assert.equal(await who("/apix"), "any", "a prefix matches whole path segments");
        assert.equal(await who("/api/v2"), "api-v2");
        assert.equal(await who("/api/v2/x?q=1"), "api-v2");
        assert.equal(await who("/api/v20"), "api");
        assert.equal(await who("/docs"), "docs");
        assert.equal(await who("/docs/x"), "docs");
        assert.equal(await who("/api/v2/x", "example.com"), "site", "a route of the host beats a longer wildcard route");
        assert.equal(await who("/admin/users", "EXAMPLE.com:8080"), "admin", "hosts match case-insensitively, any port");
        assert.equal(await who("/admin", "example.com"), "admin");
        assert.equal(await who("/other", "other.test"), "any");
        const e = json<{ url: string }>(await request(`${base}/api/v2/x?q=1`));
        assert.equal(e.url, "/api/v2/x?q=1", "the path and query go upstream unchanged");
      });

      it("answers 404 when no route matches, and 503 when a route's pool has no upstream", PER_TEST, async () => {
        const only = await upstream("only");
        await apply([route("only", "only:1", [only.upstream], { host: "only.example", pathPrefix: "/app" }), route("empty", "empty:1", [], { host: "only.example", pathPrefix: "/empty" })]);
        for (const [host, urlPath] of [["other.example", "/app/x"], ["only.example", "/nothing"]] as const) {
          const missing = await request(`${base}${urlPath}`, { headers: { host } });
          assert.equal(missing.status, 404, `${host}${urlPath}`);
          assert.match(String(missing.headers["content-type"]), /application\/json/);
          assert.equal(json(missing).error, "no route");
        }
        const empty = await request(`${base}/empty/x`, { headers: { host: "only.example" } });
        assert.equal(empty.status, 503);
        assert.deepEqual(json(empty), { error: "no healthy instance", service: "empty" });
        assert.equal(await who("/app/x", "only.example"), "only");
      });

      it("proxies a WebSocket both ways, large messages included", PER_TEST, async () => {
        const u = await upstream("ws-echo");
        const wss = new WebSocketServer({ server: u.server });
        upstreams.push({ close: () => new Promise<void>((resolve) => wss.close(() => resolve())) });
        wss.on("connection", (socket) => socket.on("message", (data) => socket.send(`echo:${String(data)}`)));
        await apply([route("ws", "ws:echo", [u.upstream], { pathPrefix: "/ws" })]);
        const ws = new WebSocket(`${base.replace("http", "ws")}/ws/chat`);
        try {
          await new Promise<void>((resolve, reject) => {
            ws.once("open", () => resolve());
            ws.once("error", reject);
          });
          const replies: string[] = [];
          const got = new Promise<void>((resolve) =>
            ws.on("message", (data) => {
              replies.push(String(data));
              if (replies.length === 2) resolve();
            }),
          );
          ws.send("hello");
          ws.send("x".repeat(100_000));
          await got;
          assert.deepEqual(replies, ["echo:hello", `echo:${"x".repeat(100_000)}`]);
        } finally {
          ws.terminate();
        }
      });
    });

    describe("table updates", () => {
      capIt(
        "hitlessApply",
        "a swap under a concurrent loop of requests on kept-alive connections never fails or mixes them, and apply resolves only once new requests use the new table",
        "the same on fresh connections; a request on a kept-alive connection may fail as an apply lands",
        async (on) => {
          const blue = await upstream("swap-blue", (_req, res) => res.end("blue"));
          const green = await upstream("swap-green", (_req, res) => res.end("green"));
          const routes = { blue: route("swap", "swap:blue", [blue.upstream]), green: route("swap", "swap:green", [green.upstream]) };
          await apply([routes.blue]);
          const agent = on ? new http.Agent({ keepAlive: true, maxSockets: 8 }) : false;
          // The color every request started from now must get, or undefined while an apply is under way.
          let expected: string | undefined = "blue";
          // Bumped when an apply starts and when it resolves: a request that saw it change proves nothing.
          let epoch = 0;
          let stop = false;
          const problems: string[] = [];
          const counts = { blue: 0, green: 0, checked: 0 };
          const worker = async (): Promise<void> => {
            while (!stop) {
              const want = expected;
              const startEpoch = epoch;
              try {
                const r = await request(`${base}/`, { agent });
                if (r.status !== 200 || (r.text !== "blue" && r.text !== "green")) problems.push(`${r.status} ${r.text}`);
                else {
                  counts[r.text]++;
                  if (want !== undefined && startEpoch === epoch) {
                    counts.checked++;
                    if (r.text !== want) problems.push(`started after ${want} was acknowledged, answered by ${r.text}`);
                  }
                }
              } catch (e) {
                problems.push(String(e));
              }
            }
          };
          // Between two applies, enough checked requests (not a time, which a busy machine stretches).
          const checkedRequests = async (n: number): Promise<void> => {
            const until = counts.checked + n;
            const deadline = Date.now() + 10_000;
            while (counts.checked < until && Date.now() < deadline) await sleep(10);
          };
          const flipper = async (): Promise<void> => {
            for (let i = 0; i < 6; i++) {
              await checkedRequests(4);
              const next = i % 2 === 0 ? "green" : "blue";
              expected = undefined;
              epoch++;
              await apply([routes[next]]);
              expected = next;
              epoch++;
            }
            await checkedRequests(4);
            stop = true;
          };
          try {
            await Promise.all([...Array.from({ length: 8 }, worker), flipper()]);
          } finally {
            if (agent) agent.destroy();
          }
          assert.deepEqual(problems, []);
          assert.ok(counts.blue > 0 && counts.green > 0, JSON.stringify(counts));
          assert.ok(counts.checked >= 20, `only ${counts.checked} requests ran between an acknowledgement and the next apply`);
        },
      );

      it("ignores a table older than the one it serves", PER_TEST, async () => {
        const [newer, older] = await Promise.all([upstream("v-newer"), upstream("v-older")]);
        await apply([route("books", "books:newer", [newer.upstream])]);
        const served = version;
        await proxy.apply({ version: served - 1, routes: [route("books", "books:older", [older.upstream])] });
        assert.equal(await who("/"), "v-newer");
        assert.equal((await proxy.stats()).tableVersion, served);
        assert.equal(older.hits, 0);
      });
    });

    describe("route table deltas", () => {
      it("a delta applies only on top of the version it names: a lost, late or replayed one is refused as stale and changes nothing; one whose table is invalid is refused whole", PER_TEST, async (t) => {
        const applyDelta = proxy.applyDelta?.bind(proxy);
        if (!applyDelta) {
          // The agent sends such a proxy whole tables (RouteTables): nothing else to check here.
          t.diagnostic(`${opts.name} takes whole tables only`);
          assert.equal(proxy.applyDelta, undefined);
          return;
        }
        const [a, b, f, g] = await Promise.all([upstream("d-a"), upstream("d-b"), upstream("d-f"), upstream("d-g")]);
        await apply([route("books", "books:a", [a.upstream]), route("films", "films:f", [f.upstream], { pathPrefix: "/films" })]);
        const v = version;
        assert.equal(await applyDelta({ base: v, version: v + 1, services: ["books"], routes: [route("books", "books:b", [b.upstream])] }), "applied");
        assert.equal(await who("/"), "d-b");
        assert.equal(await who("/films"), "d-f", "a service the delta does not name keeps its route");
        assert.equal((await proxy.stats()).tableVersion, v + 1);

        // Lost: the proxy never saw v + 2, so a delta built on it must not land on v + 1.
        assert.equal(await applyDelta({ base: v + 2, version: v + 3, services: ["books"], routes: [route("books", "books:a", [a.upstream])] }), "stale");
        // Out of order: the second of two deltas arrives first.
        const first = { base: v + 1, version: v + 4, services: ["books"], routes: [route("books", "books:a2", [a.upstream])] };
        const second = { base: v + 4, version: v + 5, services: ["films"], routes: [route("films", "films:g", [g.upstream], { pathPrefix: "/films" })] };
        assert.equal(await applyDelta(second), "stale");
        assert.equal(await who("/"), "d-b");
        assert.equal((await proxy.stats()).tableVersion, v + 1);
        assert.equal(await applyDelta(first), "applied");
        assert.equal(await applyDelta(second), "applied");
        assert.equal(await applyDelta(first), "stale", "a replayed delta");
        assert.equal(await who("/"), "d-a");
        assert.equal(await who("/films"), "d-g");

        // The table it would make gives films' pool to books: refused whole, nothing changes.
        await assert.rejects(applyDelta({ base: v + 5, version: v + 6, services: ["books"], routes: [route("books", "films:g", [b.upstream])] }), /already used by service/);
        assert.equal(await who("/"), "d-a");
        assert.equal((await proxy.stats()).tableVersion, v + 5);
        // The whole-table path goes on from there.
        version = v + 5;
        await apply([route("books", "books:b2", [b.upstream])]);
        assert.equal(await who("/"), "d-b");
        assert.equal(a.hits + b.hits > 0 && g.hits > 0, true);
      });
    });

    describe("upstream health", () => {
      it("setUpstreamHealth takes an upstream out of rotation and back; with none left the route answers 503", PER_TEST, async () => {
        const [one, two] = await Promise.all([upstream("h-one"), upstream("h-two")]);
        await apply([route("books", "books:h", [one.upstream, two.upstream])]);
        await proxy.setUpstreamHealth("h-one", false);
        const ids = new Set<string>();
        for (let i = 0; i < 6; i++) ids.add(await who("/"));
        assert.deepEqual(ids, new Set(["h-two"]));
        await proxy.setUpstreamHealth("h-two", false);
        const none = await request(`${base}/`);
        assert.equal(none.status, 503);
        assert.deepEqual(json(none), { error: "no healthy instance", service: "books" });
        await proxy.setUpstreamHealth("h-one", true);
        assert.equal(await who("/"), "h-one");
        // The same mark again changes nothing.
        await proxy.setUpstreamHealth("h-one", true);
        assert.equal(await who("/"), "h-one");
        await proxy.setUpstreamHealth("h-two", true);
      });
    });

    describe("drain", () => {
      it("waits for the old pool's in-flight requests, which finish, and counts them completed", PER_TEST, async () => {
        const [slow, fresh] = await Promise.all([upstream("drain-slow", delayed("drain-slow")), upstream("drain-fresh")]);
        await apply([route("drain", "drain:old", [slow.upstream])]);
        // Long enough to still be in flight after a slow apply (an nginx reload on a loaded machine).
        const inFlight = outcome(`${base}/?delay=2500`);
        await arrived(slow, 1);
        await apply([route("drain", "drain:new", [fresh.upstream])]);
        assert.equal(await who("/"), "drain-fresh", "new requests go to the new pool at once");
        const result = await proxy.drain("drain:old", 5_000);
        assert.equal(result.poolId, "drain:old");
        assert.deepEqual({ completed: result.completed, cut: result.cut }, { completed: 1, cut: 0 });
        assert.ok(result.durationMs < 4_000, `durationMs ${result.durationMs}`);
        const r = await inFlight;
        assert.ok(r !== "cut" && r.status === 200, JSON.stringify(r));
        assert.equal(json<{ id: string }>({ status: 200, headers: {}, text: r.text }).id, "drain-slow");
        // A driver that counts per pool forgets a retired pool once it is drained.
        assert.equal((await proxy.stats()).pools.some((p) => p.poolId === "drain:old"), false);
      });

      it("cuts what is still in flight when its timeout runs out, and counts it cut", PER_TEST, async () => {
        const [slower, fresh] = await Promise.all([upstream("cut-slow", delayed("cut-slow")), upstream("cut-fresh")]);
        await apply([route("cut", "cut:old", [slower.upstream])]);
        const inFlight = outcome(`${base}/?delay=10000`);
        await arrived(slower, 1);
        await apply([route("cut", "cut:new", [fresh.upstream])]);
        const t0 = Date.now();
        const result = await proxy.drain("cut:old", 300);
        assert.deepEqual({ completed: result.completed, cut: result.cut }, { completed: 0, cut: 1 });
        assert.ok(Date.now() - t0 < 3_000, `drain returned after ${Date.now() - t0} ms`);
        const r = await inFlight;
        assert.ok(r === "cut" || r.status >= 500, `a cut request is not answered as a success: ${JSON.stringify(r)}`);
        assert.equal(await who("/"), "cut-fresh");
      });

      it("returns at once with nothing done for a pool it does not know", PER_TEST, async () => {
        const t0 = Date.now();
        const r = await proxy.drain("no-such-pool", 5_000);
        assert.deepEqual({ poolId: r.poolId, completed: r.completed, cut: r.cut }, { poolId: "no-such-pool", completed: 0, cut: 0 });
        assert.ok(Date.now() - t0 < 2_500, "it did not wait out the 5 s drain timeout");
      });
    });

    describe("stats", () => {
      capIt("poolStats", "stats report the table version served and each pool's requests", "stats report the table version served and no pools at all, rather than wrong counts", async (on) => {
        const u = await upstream("stats");
        await apply([route("stats", "stats:1", [u.upstream])]);
        for (let i = 0; i < 3; i++) await who("/");
        const stats = await proxy.stats();
        assert.equal(stats.tableVersion, version);
        assert.ok(stats.requests >= 3);
        if (on) {
          assert.deepEqual(stats.pools.find((p) => p.poolId === "stats:1"), { poolId: "stats:1", inFlight: 0, served: 3, failed: 0, errors5xx: 0 });
          // An upstream's own 5xx is served (the exchange worked) but counted apart, for the bake window.
          const broken = await upstream("stats-5xx", (_req, res) => res.writeHead(503).end("down"));
          await apply([route("stats", "stats:2", [broken.upstream])]);
          for (let i = 0; i < 2; i++) assert.equal((await request(`${base}/`)).status, 503);
          const after = (await proxy.stats()).pools.find((p) => p.poolId === "stats:2");
          assert.equal(after?.served, 2);
          assert.equal(after?.errors5xx, 2);
        } else {
          assert.deepEqual(stats.pools, [], "a driver without per-pool counters reports none rather than wrong ones");
        }
      });
    });

    describe("forwarding headers", () => {
      const spoofed = [
        "X-Forwarded-For: 203.0.113.3",
        "X-Forwarded-For: 203.0.113.4",
        "X-Real-IP: 203.0.113.7",
        "Forwarded: for=203.0.113.5;proto=https",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: evil.test",
      ];

      it("from an untrusted peer, X-Forwarded-For, X-Real-IP and Forwarded are replaced by the peer's address; X-Forwarded-Proto and -Host are the proxy's", PER_TEST, async () => {
        const u = await upstream("fwd", rawEcho("fwd"));
        await apply([route("fwd", "fwd:1", [u.upstream])], { trustedProxies: ["198.18.0.0/15"] });
        const r = await rawRequest(base, raw(["GET /h?x=1 HTTP/1.1", "Host: app.test", ...spoofed, "Connection: close"]));
        assert.equal(r?.status, 200, JSON.stringify(r));
        assert.deepEqual(fieldValues(r!.fields, "content-type"), ["application/json"], "the upstream's response fields come back");
        const e = JSON.parse(r!.body) as RawEcho;
        assert.equal(e.url, "/h?x=1");
        assert.deepEqual(seen(e, "host"), ["app.test"]);
        assert.deepEqual(seen(e, "x-forwarded-for"), ["127.0.0.1"]);
        assert.deepEqual(seen(e, "x-real-ip"), ["127.0.0.1"]);
        assert.deepEqual(seen(e, "x-forwarded-proto"), ["http"]);
        assert.deepEqual(seen(e, "x-forwarded-host"), ["app.test"]);
        for (const f of seen(e, "forwarded")) {
          assert.doesNotMatch(f, /203\.0\.113\.5|https/, "the client's Forwarded is not passed on");
          assert.match(f, /for="?127\.0\.0\.1/);
        }
      });

      it("from a trusted peer, X-Forwarded-For gets the peer appended, and X-Real-IP and Forwarded are kept", PER_TEST, async () => {
        const u = await upstream("fwd-trusted", rawEcho("fwd-trusted"));
        await apply([route("fwd", "fwd:2", [u.upstream])], { trustedProxies: ["198.18.0.0/15", "127.0.0.0/8"] });
        const r = await rawRequest(
          base,
          raw(["GET /h HTTP/1.1", "Host: app.test", "X-Forwarded-For: 203.0.113.3", "X-Real-IP: 203.0.113.7", "Forwarded: for=203.0.113.5", "Connection: close"]),
        );
        assert.equal(r?.status, 200, JSON.stringify(r));
        const e = JSON.parse(r!.body) as RawEcho;
        assert.deepEqual(seen(e, "x-forwarded-for"), ["203.0.113.3, 127.0.0.1"]);
        assert.deepEqual(seen(e, "x-real-ip"), ["203.0.113.7"]);
        assert.match(seen(e, "forwarded").join(", "), /for=203\.0\.113\.5/);
      });

      it("a request with two Host fields is refused with 400 and reaches no upstream", PER_TEST, async () => {
        const u = await upstream("two-hosts", rawEcho("two-hosts"));
        await apply([route("any", "any:two-hosts", [u.upstream])]);
        const r = await rawRequest(base, raw(["GET / HTTP/1.1", "Host: a.test", "Host: b.test", "Connection: close"]));
        assert.equal(r?.status, 400, JSON.stringify(r));
        assert.equal(u.hits, 0);
      });

      capIt(
        "connectionNamedHeadersRemoved",
        "fields the Connection header names are removed, never Host nor the proxy's own",
        "only the standard hop-by-hop fields are removed; fields the Connection header names pass on",
        async (on) => {
          const u = await upstream("conn", rawEcho("conn"));
          await apply([route("conn", "conn:1", [u.upstream])]);
          const r = await rawRequest(
            base,
            raw([
              "GET / HTTP/1.1",
              "Host: app.test",
              "Connection: close, X-Secret, Host, X-Forwarded-For, X-Real-IP",
              "X-Secret: hop",
              "Keep-Alive: timeout=5",
              "TE: trailers",
              "X-Kept: end-to-end",
            ]),
          );
          assert.equal(r?.status, 200, JSON.stringify(r));
          const e = JSON.parse(r!.body) as RawEcho;
          assert.deepEqual(seen(e, "host"), ["app.test"]);
          assert.deepEqual(seen(e, "x-forwarded-for"), ["127.0.0.1"]);
          assert.deepEqual(seen(e, "x-real-ip"), ["127.0.0.1"]);
          assert.deepEqual(seen(e, "keep-alive"), []);
          assert.deepEqual(seen(e, "te"), []);
          assert.deepEqual(seen(e, "x-kept"), ["end-to-end"]);
          assert.deepEqual(seen(e, "x-secret"), on ? [] : ["hop"]);
        },
      );

      it("an upgrade the upstream declines (no 101) is answered as HTTP, and the connection is not piped to that upstream", PER_TEST, async () => {
        const [declines, other] = await Promise.all([upstream("declines", rawEcho("declines")), upstream("other", rawEcho("other"))]);
        await apply([route("up", "up:1", [declines.upstream], { pathPrefix: "/up" }), route("other", "other:1", [other.upstream], { pathPrefix: "/other" })]);
        const c = await RawHttpClient.connect(base);
        try {
          c.write(raw(["GET /up HTTP/1.1", "Host: app.test", "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]));
          const first = await c.response();
          assert.equal(first?.status, 200, JSON.stringify(first));
          assert.equal((JSON.parse(first!.body) as RawEcho).id, "declines");
          // Had the proxy piped the connection already, this request would reach "declines".
          c.write(raw(["GET /other HTTP/1.1", "Host: app.test", "Connection: close"]));
          const second = await c.response().catch(() => undefined);
          if (second !== undefined) assert.equal((JSON.parse(second.body) as RawEcho).id, "other");
          assert.equal(declines.hits, 1);
        } finally {
          c.close();
        }
      });
    });

    describe("timeouts", () => {
      it("an upstream that sends no response head within upstreamResponseMs gets a 504; a route's own timeout wins over the table's", PER_TEST, async () => {
        const u = await upstream("late-head", delayed("late-head"));
        await apply(
          [route("late", "late:1", [u.upstream], { pathPrefix: "/table" }), route("patient", "patient:1", [u.upstream], { pathPrefix: "/own", timeouts: { upstreamResponseMs: 5_000 } })],
          { timeouts: { upstreamResponseMs: 400 } },
        );
        const t0 = Date.now();
        const late = await request(`${base}/table?delay=3000`);
        assert.equal(late.status, 504, late.text);
        const elapsed = Date.now() - t0;
        assert.ok(elapsed >= 300 && elapsed < 2_500, `answered after ${elapsed} ms`);
        const patient = await request(`${base}/own?delay=1000`);
        assert.equal(patient.status, 200, patient.text);
      });

      it("an upstream that does not take the connection within upstreamConnectMs gets a 504", PER_TEST, async () => {
        const hole = await startUnacceptingUpstream("no-accept");
        upstreams.push(hole);
        await apply([route("hole", "hole:1", [hole.upstream], { timeouts: { upstreamConnectMs: 300 } })]);
        const t0 = Date.now();
        const r = await request(`${base}/`, { timeoutMs: 5_000 });
        assert.equal(r.status, 504, r.text);
        assert.ok(Date.now() - t0 < 3_000, `answered after ${Date.now() - t0} ms`);
      });

      capIt(
        "separateHeadAndIdleTimeouts",
        "a response body that stalls longer than upstreamIdleMs is cut, however long upstreamResponseMs is",
        "one read timeout, upstreamResponseMs, bounds every wait: a body stall under it passes, a longer one is cut",
        async (on) => {
          const u = await upstream("stall", (req, res) => {
            const stall = Number(new URL(req.url ?? "/", "http://x").searchParams.get("stall"));
            res.writeHead(200, { "content-type": "text/plain" });
            res.write("start;");
            setTimeout(() => {
              if (!res.destroyed) res.end("end");
            }, stall).unref();
          });
          await apply([route("stall", "stall:1", [u.upstream])], { timeouts: { upstreamResponseMs: 1_500, upstreamIdleMs: 300 } });
          const midStall = await outcome(`${base}/?stall=800`);
          const longStall = await outcome(`${base}/?stall=2500`);
          const whole = (o: Awaited<ReturnType<typeof outcome>>): boolean => o !== "cut" && o.text === "start;end";
          assert.equal(whole(longStall), false, `a stall over both timeouts is cut: ${JSON.stringify(longStall)}`);
          if (on) assert.equal(whole(midStall), false, `a stall over upstreamIdleMs is cut: ${JSON.stringify(midStall)}`);
          else assert.equal(whole(midStall), true, `a stall under upstreamResponseMs passes: ${JSON.stringify(midStall)}`);
        },
      );

      capIt(
        "clientHeaderTimeout408",
        "a client that has not sent its whole request head within clientHeaderMs gets a 408 (slowloris)",
        "a client that has not sent its whole request head within clientHeaderMs is disconnected without an answer (slowloris)",
        async (on) => {
          const u = await upstream("slowloris");
          await apply([route("any", "any:slowloris", [u.upstream])], { timeouts: { clientHeaderMs: 500 } });
          const c = await RawHttpClient.connect(base);
          const t0 = Date.now();
          // One header line every 100 ms: each read is quick, the head as a whole is not.
          c.write("GET / HTTP/1.1\r\nHost: app.test\r\n");
          const drip = setInterval(() => c.write("X-Drip: 1\r\n"), 100);
          try {
            const r = await c.response(4_000).catch((e: Error) => e);
            const elapsed = Date.now() - t0;
            assert.ok(!(r instanceof Error), `still open after ${elapsed} ms`);
            if (on) assert.equal(r?.status, 408, JSON.stringify(r));
            else assert.equal(r, undefined, `closed without an answer: ${JSON.stringify(r)}`);
            assert.ok(elapsed >= 400 && elapsed < 2_500, `closed after ${elapsed} ms`);
            assert.equal(u.hits, 0);
          } finally {
            clearInterval(drip);
            c.close();
          }
        },
      );

      it("an idle keep-alive client connection is closed after clientIdleMs", PER_TEST, async () => {
        const u = await upstream("idle-client");
        await apply([route("any", "any:idle", [u.upstream])], { timeouts: { clientIdleMs: 500 } });
        const c = await RawHttpClient.connect(base);
        try {
          c.write(raw(["GET / HTTP/1.1", "Host: app.test"]));
          const r = await c.response();
          assert.equal(r?.status, 200);
          const t0 = Date.now();
          await sleep(250);
          assert.equal(c.closed, false, "not before clientIdleMs");
          assert.equal(await c.waitClosed(3_000), true, "closed once idle for clientIdleMs");
          assert.ok(c.closedAt! - t0 < 2_500, `closed after ${c.closedAt! - t0} ms`);
        } finally {
          c.close();
        }
      });

      it("a WebSocket with no byte either way for tunnelIdleMs is closed; traffic from the client alone keeps it open", PER_TEST, async () => {
        const u = await upstream("tunnel");
        // The upstream never writes: only the client's messages count as traffic.
        const wss = new WebSocketServer({ server: u.server });
        upstreams.push({ close: () => new Promise<void>((resolve) => wss.close(() => resolve())) });
        await apply([route("ws", "ws:1", [u.upstream], { pathPrefix: "/ws", timeouts: { tunnelIdleMs: 1_000 } })], { timeouts: { upstreamResponseMs: 400 } });
        const ws = new WebSocket(`${base.replace("http", "ws")}/ws/chat`);
        try {
          await new Promise<void>((resolve, reject) => {
            ws.once("open", () => resolve());
            ws.once("error", reject);
          });
          let closedAt: number | undefined;
          ws.once("close", () => (closedAt = Date.now()));
          // Longer than tunnelIdleMs and than the route's HTTP read timeout, with traffic every 200 ms.
          let lastByte = 0;
          for (let i = 0; i < 10; i++) {
            ws.send(`ping-${i}`);
            lastByte = Date.now();
            await sleep(200);
          }
          assert.equal(closedAt, undefined, "traffic keeps the tunnel open");
          while (closedAt === undefined && Date.now() - lastByte < 4_000) await sleep(50);
          assert.ok(closedAt !== undefined, "a silent tunnel is closed");
          // nginx re-arms a timer only when it moves by 300 ms or more, so it may close that much early.
          assert.ok(closedAt - lastByte >= 600 && closedAt - lastByte < 3_000, `closed ${closedAt - lastByte} ms after the last byte`);
        } finally {
          ws.terminate();
        }
      });
    });

    describe("limits", () => {
      it("a body declared over maxBodyBytes gets a 413 before it is sent; a route's own limit wins over the table's", PER_TEST, async () => {
        const u = await upstream("body", rawEcho("body"));
        await apply(
          [route("small", "small:1", [u.upstream], { pathPrefix: "/small", maxBodyBytes: 1_000 }), route("big", "big:1", [u.upstream], { pathPrefix: "/big" })],
          { limits: { maxBodyBytes: 3_000 } },
        );
        const head = (p: string, length: number) => raw([`POST ${p} HTTP/1.1`, "Host: app.test", "Content-Type: text/plain", `Content-Length: ${length}`]);
        assert.equal((await rawRequest(base, head("/small", 2_000)))?.status, 413);
        assert.equal((await rawRequest(base, head("/big", 5_000)))?.status, 413);
        assert.equal(u.hits, 0, "refused bodies reach no upstream");
        const fits = await request(`${base}/big`, { method: "POST", body: "x".repeat(2_000) });
        assert.equal(fits.status, 200, fits.text);
        assert.equal(json<RawEcho>(fits).body.length, 2_000);
      });

      it("a request head over maxHeaderBytes gets a 431", PER_TEST, async () => {
        const u = await upstream("head-size");
        await apply([route("any", "any:head-size", [u.upstream])], { limits: { maxHeaderBytes: 4_096 } });
        const big = await rawRequest(base, raw(["GET / HTTP/1.1", "Host: app.test", `X-Big: ${"a".repeat(6_000)}`, "Connection: close"]));
        assert.equal(big?.status, 431, JSON.stringify(big));
        assert.equal(u.hits, 0);
        const fits = await request(`${base}/`, { headers: { "x-fits": "a".repeat(1_500) } });
        assert.equal(fits.status, 200, fits.text);
      });

      capIt(
        "upstreamQueue",
        "over maxUpstreamConnections a request waits up to upstreamQueueMs: served when a connection frees in time, else 503 + Retry-After",
        "over maxUpstreamConnections a request is answered 503 + Retry-After at once, without waiting for a connection",
        async (on) => {
          const u = await upstream("capped", delayed("capped"));
          await apply([route("capped", "capped:1", [u.upstream])], { limits: { maxUpstreamConnections: 1, upstreamQueueMs: 1_500 } });
          const overCap = async (holdMs: number): Promise<{ status: number; retryAfter: string | undefined; elapsed: number }> => {
            const before = u.hits;
            const holder = outcome(`${base}/?delay=${holdMs}`);
            await arrived(u, before + 1);
            const t0 = Date.now();
            const r = await request(`${base}/?delay=0`);
            const elapsed = Date.now() - t0;
            const held = await holder;
            assert.ok(held !== "cut" && held.status === 200, `the request holding the connection is served: ${JSON.stringify(held)}`);
            return { status: r.status, retryAfter: r.headers["retry-after"] as string | undefined, elapsed };
          };
          // Held far longer than the queue wait: refused either way.
          const refused = await overCap(4_000);
          assert.equal(refused.status, 503);
          assert.match(refused.retryAfter ?? "", /^\d+$/, "Retry-After in seconds");
          // Held for less than the queue wait.
          const shortHold = await overCap(300);
          if (on) {
            assert.ok(refused.elapsed >= 1_400, `refused only after upstreamQueueMs: ${refused.elapsed} ms`);
            assert.equal(shortHold.status, 200, "queued until the connection freed");
          } else {
            assert.ok(refused.elapsed < 1_000, `refused at once, not after a queue wait of 1.5 s: ${refused.elapsed} ms`);
            assert.equal(shortHold.status, 503, "no queue: refused although the connection freed in time");
          }
        },
      );

      capIt(
        "connectionLimitAtAccept",
        "a client connection beyond maxConnections is closed at accept; once one closes, a new one is served",
        "a request beyond maxConnections in flight is answered 503; idle keep-alive connections do not count",
        async (on) => {
          const u = await upstream("conns", delayed("conns"));
          await apply([route("any", "any:conns", [u.upstream])], { limits: { maxConnections: 3 } });
          const clients: RawHttpClient[] = [];
          try {
            if (on) {
              for (let i = 0; i < 3; i++) {
                const c = await RawHttpClient.connect(base);
                clients.push(c);
                c.write(raw(["GET / HTTP/1.1", "Host: app.test"]));
                assert.equal((await c.response())?.status, 200);
              }
              const extra = await RawHttpClient.connect(base).catch(() => undefined);
              if (extra) {
                clients.push(extra);
                extra.write(raw(["GET / HTTP/1.1", "Host: app.test", "Connection: close"]));
                assert.equal(await extra.response(3_000).catch(() => "no answer"), undefined, "closed at accept, without an answer");
              }
              clients.shift()!.close();
              let served = false;
              for (let i = 0; i < 20 && !served; i++) {
                await sleep(50);
                served = await request(`${base}/`).then((r) => r.status === 200, () => false);
              }
              assert.ok(served, "a new connection is served once another closed");
            } else {
              const held = Array.from({ length: 3 }, () => outcome(`${base}/?delay=3000`));
              await sleep(300);
              const t0 = Date.now();
              const extra = await request(`${base}/?delay=0`);
              assert.equal(extra.status, 503, extra.text);
              assert.ok(Date.now() - t0 < 1_500, "answered at once, not when a held request ended");
              for (const r of await Promise.all(held)) assert.ok(r !== "cut" && r.status === 200, JSON.stringify(r));
              for (let i = 0; i < 5; i++) {
                const c = await RawHttpClient.connect(base);
                clients.push(c);
                c.write(raw(["GET / HTTP/1.1", "Host: app.test"]));
                assert.equal((await c.response())?.status, 200);
              }
              assert.equal((await request(`${base}/`)).status, 200, "idle keep-alive connections are not counted");
            }
          } finally {
            for (const c of clients) c.close();
          }
        },
      );
    });

  });
}
