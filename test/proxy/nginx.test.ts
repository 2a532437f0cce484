// The nginx driver beyond the shared contract (nginx.contract.test.ts runs that): templates, adopt,
// restarts, its two tiers, against real nginx (installed by scripts/ensure-nginx.sh, so these tests
// never skip) and real upstreams on 127.0.0.1; plus its pure rendering helpers.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { TurquoiseError } from "../../src/errors.js";
import type { ProxySettings, Route } from "../../src/proxy/contract.js";
import { NginxProxy, decodeProcAddress, parseStubStatus } from "../../src/proxy/nginx.js";
import {
  DEFAULT_NGINX_TEMPLATE,
  fillTemplate,
  nginxJson,
  nginxLayout,
  quote,
  renderEdgeConfig,
  renderRouterConfig,
  serverEntries,
} from "../../src/proxy/nginx-template.js";
import { tableSettings } from "../../src/proxy/settings.js";
import { freePort } from "../../src/util/net.js";
import { pidAlive } from "../../src/util/proc.js";
import { type TestUpstream, json, request, route, sleep, startUpstream, table } from "./helpers.js";

const ENSURE_NGINX = fileURLToPath(new URL("../../../scripts/ensure-nginx.sh", import.meta.url));

interface Echo {
  id: string;
  method: string;
  url: string;
  headers: Record<string, string>;
  body: string;
}

describe("nginx proxy driver", { timeout: 120_000 }, () => {
  const upstreams: TestUpstream[] = [];
  const proxies: NginxProxy[] = [];
  const dirs: string[] = [];

  before(() => {
    execFileSync("bash", [ENSURE_NGINX], { stdio: ["ignore", "ignore", "inherit"], timeout: 600_000 });
  });

  after(async () => {
    for (const p of proxies) await p.stop(2_000).catch(() => undefined);
    // Whatever a failed test left behind: masters and their workers, by the pids in the pid files.
    for (const dir of dirs) {
      for (const file of ["router.pid", "edge.pid"]) {
        const pid = Number((await readFile(path.join(dir, "nginx", file), "utf8").catch(() => "")).trim());
        if (pid > 0 && pidAlive(pid)) {
          const children = (await readFile(`/proc/${pid}/task/${pid}/children`, "utf8").catch(() => "")).trim();
          for (const child of children ? children.split(/\s+/).map(Number) : []) process.kill(child, "SIGKILL");
          process.kill(pid, "SIGKILL");
        }
      }
    }
    await Promise.all(upstreams.map((u) => u.close()));
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  const upstream = async (id: string, handler?: Parameters<typeof startUpstream>[1]): Promise<TestUpstream> => {
    const u = await startUpstream(id, handler);
    upstreams.push(u);
    return u;
  };

  const stateDir = async (): Promise<string> => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "tq-nginx-"));
    dirs.push(dir);
    return dir;
  };

  const started = async (opts: Partial<ConstructorParameters<typeof NginxProxy>[0]> = {}): Promise<{ proxy: NginxProxy; base: string; dir: string }> => {
    const dir = opts.stateDir ?? (await stateDir());
    const proxy = new NginxProxy({ stateDir: dir, listenHost: "127.0.0.1", listenPort: await freePort(), ...opts });
    proxies.push(proxy);
    await proxy.start();
    return { proxy, base: `http://127.0.0.1:${proxy.listenPort}`, dir };
  };

  const who = async (url: string, headers: http.OutgoingHttpHeaders = {}, agent?: http.Agent): Promise<string> => {
    const r = await request(url, { headers, ...(agent ? { agent } : {}) });
    assert.equal(r.status, 200, `${url}: ${r.status} ${r.text}`);
    return json<Echo>(r).id;
  };

  it("a template that nginx rejects fails apply with nginx's message, and the previous config stays in force", async () => {
    const [blue, green] = await Promise.all([upstream("tpl-blue"), upstream("tpl-green")]);
    const dir = await stateDir();
    const templateFile = path.join(dir, "nginx.conf.template");
    const valid = DEFAULT_NGINX_TEMPLATE.replace(/^(\s*)\{\{http\}\}$/m, "$1client_max_body_size 2m;\n$1{{http}}");
    await writeFile(templateFile, valid);
    const { proxy, base } = await started({ stateDir: dir, template: templateFile });
    await proxy.apply(table(1, route("books", "books:blue", [blue.upstream])));
    assert.equal(await who(`${base}/`), "tpl-blue");

    await writeFile(templateFile, valid.replace("client_max_body_size 2m;", "bogus_directive on;"));
    await assert.rejects(proxy.apply(table(2, route("books", "books:green", [green.upstream]))), (e: unknown) => {
      assert.ok(e instanceof TurquoiseError);
      assert.match(e.message, /unknown directive "bogus_directive"/);
      assert.match(e.message, /previous one stays in force/);
      return true;
    });
    for (let i = 0; i < 5; i++) assert.equal(await who(`${base}/`), "tpl-blue");
    assert.equal((await proxy.stats()).tableVersion, 1);
    assert.equal(proxy.table.version, 1);
    assert.match(await readFile(path.join(dir, "nginx", "nginx.conf"), "utf8"), /client_max_body_size 2m;/);

    await writeFile(templateFile, valid.replace(/^(\s*)\{\{http\}\}$/m, "$1{{http}}\n$1{{upstreams}}"));
    await assert.rejects(proxy.apply(table(2, route("books", "books:green", [green.upstream]))), /nginx\.conf\.template:\d+: unknown placeholder \{\{upstreams\}\}/);
    assert.equal(await who(`${base}/`), "tpl-blue");

    await writeFile(templateFile, valid);
    await proxy.apply(table(2, route("books", "books:green", [green.upstream])));
    assert.equal(await who(`${base}/`), "tpl-green");
  });

  it("a drain's cut requests, POST included, are answered 502 JSON by the edge, and cut counts their connections", async () => {
    const slowHandler = (req: http.IncomingMessage, res: http.ServerResponse) => {
      setTimeout(() => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ id: `slow-${req.method}` })), 10_000).unref();
    };
    const [slower, fresh] = await Promise.all([upstream("slower", slowHandler), upstream("fresh")]);
    const { proxy, base } = await started();
    await proxy.apply(table(3, route("books", "books:slower", [slower.upstream])));
    const post = request(`${base}/write`, { method: "POST", body: "{}" });
    const get = request(`${base}/read`);
    await sleep(150);
    await proxy.apply(table(4, route("books", "books:fresh", [fresh.upstream])));
    const cut = await proxy.drain("books:slower", 300);
    assert.equal(cut.cut, 2);
    assert.ok(cut.durationMs < 3_000, `drain took ${cut.durationMs} ms`);
    // A cut request is answered 502, whatever its method: nothing is sent twice.
    for (const reply of await Promise.all([get, post])) {
      assert.equal(reply.status, 502, reply.text);
      assert.deepEqual(json(reply), { error: "upstream failed" });
    }
    assert.equal(await who(`${base}/`), "fresh");
  });
  it("a new driver object adopts the running nginx, which kept serving without it", async () => {
    const [blue, green] = await Promise.all([upstream("adopt-blue"), upstream("adopt-green")]);
    const { proxy, base, dir } = await started();
    await proxy.apply(table(3, route("books", "books:blue", [blue.upstream])));

    const fresh = new NginxProxy({ stateDir: await stateDir(), listenHost: "127.0.0.1", listenPort: 0 });
    assert.equal(await fresh.adopt(), false, "nothing runs for an empty state directory");

    const again = new NginxProxy({ stateDir: dir, listenHost: "127.0.0.1", listenPort: proxy.listenPort });
    proxies.push(again);
    assert.equal(await again.adopt(), true);
    assert.equal(again.table.version, 3);
    assert.equal(await who(`${base}/`), "adopt-blue");
    await again.apply(table(4, route("books", "books:green", [green.upstream])));
    assert.equal(await who(`${base}/`), "adopt-green");
    assert.equal((await again.stats()).tableVersion, 4);
    await assert.rejects(again.start(), (e: unknown) => e instanceof TurquoiseError && e.code === "CONFLICT");
    const elsewhere = new NginxProxy({ stateDir: dir, listenHost: "127.0.0.1", listenPort: await freePort() });
    proxies.push(elsewhere);
    assert.equal(await elsewhere.adopt(), false, "a driver for another port does not adopt it");
  });

  it("persists the last table and health marks: after stop and start nginx serves them without an apply", async () => {
    const [one, two] = await Promise.all([upstream("keep-one"), upstream("keep-two")]);
    const { proxy, base, dir } = await started();
    await proxy.apply(table(7, route("books", "books:1", [one.upstream, two.upstream], { host: "books.test" })));
    await proxy.setUpstreamHealth("keep-one", false);
    assert.equal(await proxy.stop(), true);
    await assert.rejects(request(`${base}/`, { headers: { host: "books.test" } }));
    assert.equal(await proxy.stop(), false, "nothing left to stop");

    const restarted = new NginxProxy({ stateDir: dir, listenHost: "127.0.0.1", listenPort: 0 });
    proxies.push(restarted);
    await restarted.start();
    assert.equal(restarted.listenPort, proxy.listenPort, "the saved port is kept");
    assert.equal(restarted.table.version, 7);
    const seen = new Set(await Promise.all(Array.from({ length: 6 }, () => who(`${base}/`, { host: "books.test" }))));
    assert.deepEqual(seen, new Set(["keep-two"]));
    assert.equal((await restarted.stats()).tableVersion, 7);
  });

  it("starts again after nginx was killed (-9), over the sockets it left behind", async () => {
    const u = await upstream("crash");
    const { proxy, base, dir } = await started();
    await proxy.apply(table(2, route("books", "books:1", [u.upstream])));
    for (const file of ["router.pid", "edge.pid"]) {
      const pid = Number((await readFile(path.join(dir, "nginx", file), "utf8")).trim());
      const children = (await readFile(`/proc/${pid}/task/${pid}/children`, "utf8")).trim().split(/\s+/).map(Number);
      process.kill(pid, "SIGKILL");
      for (const child of children) process.kill(child, "SIGKILL");
    }
    await sleep(100);
    await assert.rejects(request(`${base}/`));
    const again = new NginxProxy({ stateDir: dir, listenHost: "127.0.0.1", listenPort: 0 });
    proxies.push(again);
    assert.equal(await again.adopt(), false);
    await again.start();
    assert.equal(await who(`${base}/`), "crash");
    assert.equal(again.table.version, 2);
  });

  it("a start that fails (the port is taken) says why and leaves nothing running", async () => {
    const taken = http.createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const port = (taken.address() as { port: number }).port;
    const dir = await stateDir();
    const proxy = new NginxProxy({ stateDir: dir, listenHost: "127.0.0.1", listenPort: port, startTimeoutMs: 10_000 });
    proxies.push(proxy);
    try {
      await assert.rejects(proxy.start(), /nginx \(edge\) did not start[\s\S]*Address already in use/);
      const router = Number((await readFile(path.join(dir, "nginx", "router.pid"), "utf8").catch(() => "0")).trim());
      assert.ok(router === 0 || !pidAlive(router), "the router it started was stopped again");
    } finally {
      taken.close();
    }
  });

  it("without the edge, nginx listens on the public address itself and its stats show the router alone", async () => {
    const u = await upstream("solo");
    const { proxy, base } = await started({ edge: false });
    assert.equal(proxy.capabilities.hitlessApply, false, "flips close idle client connections without the edge");
    await proxy.apply(table(1, route("books", "books:1", [u.upstream])));
    for (let i = 0; i < 3; i++) assert.equal(await who(`${base}/`), "solo");
    const stats = await proxy.stats();
    assert.equal(stats.nginx.edge, undefined);
    assert.ok(stats.requests >= 3);
  });

  it("a flip leaves the edge's workers alone; a change of the client-facing settings reloads the edge", async () => {
    const [blue, green] = await Promise.all([upstream("edge-blue"), upstream("edge-green")]);
    const { proxy, base, dir } = await started();
    const edgeWorkers = async (): Promise<string> => {
      const pid = Number((await readFile(path.join(dir, "nginx", "edge.pid"), "utf8")).trim());
      return (await readFile(`/proc/${pid}/task/${pid}/children`, "utf8")).trim();
    };
    await proxy.apply(table(1, route("books", "books:blue", [blue.upstream])));
    const before = await edgeWorkers();
    await proxy.apply({ ...table(2, route("books", "books:green", [green.upstream])), settings: tableSettings(undefined) });
    assert.equal(await who(`${base}/`), "edge-green");
    assert.equal(await edgeWorkers(), before, "no edge reload for a flip, nor for settings that equal the defaults");
    // A router-only setting (an upstream timeout) does not touch the edge either.
    const routerOnly = tableSettings(undefined);
    routerOnly.timeouts.upstreamResponseMs = 1_234;
    await proxy.apply({ ...table(3, route("books", "books:blue", [blue.upstream])), settings: routerOnly });
    assert.equal(await edgeWorkers(), before);
    assert.match(await readFile(path.join(dir, "nginx", "nginx.conf"), "utf8"), /proxy_read_timeout 1234ms;/);
    const clientFacing = tableSettings(undefined);
    clientFacing.timeouts.clientIdleMs = 2_000;
    await proxy.apply({ ...table(4, route("books", "books:blue", [blue.upstream])), settings: clientFacing });
    assert.notEqual(await edgeWorkers(), before, "the edge serves the new settings with new workers");
    assert.match(await readFile(path.join(dir, "nginx", "edge.conf"), "utf8"), /keepalive_timeout 2000ms;/);
    assert.equal(await who(`${base}/`), "edge-blue");
  });

  it("the edge's peer field cannot be forged: a client's X-Turquoise-Peer is overwritten and never reaches an upstream", async () => {
    const u = await upstream("peer", (req, res) => res.end(JSON.stringify({ id: "peer", headers: req.headers })));
    for (const edge of [true, false]) {
      const { proxy, base } = await started({ edge });
      // Were the client's claim believed, this peer would be trusted and its chain kept.
      await proxy.apply({ ...table(1, route("peer", "peer:1", [u.upstream])), settings: { ...tableSettings(undefined), trustedProxies: ["203.0.113.0/24"] } });
      const r = await request(`${base}/`, { headers: { "x-turquoise-peer": "203.0.113.9", "x-forwarded-for": "198.51.100.1" } });
      const seen = json<{ headers: Record<string, string> }>(r).headers;
      assert.equal(seen["x-forwarded-for"], "127.0.0.1", `edge: ${edge}`);
      assert.equal(seen["x-turquoise-peer"], undefined, `edge: ${edge}`);
      await proxy.stop(2_000);
    }
  });
  it("refuses a table nginx would read differently, before touching anything", async () => {
    const u = await upstream("strict");
    const { proxy, base } = await started();
    await proxy.apply(table(1, route("books", "books:1", [u.upstream])));
    await assert.rejects(proxy.apply(table(2, route("books", "books:2", [u.upstream], { host: "*.example.com" }))), /not a host name/);
    await assert.rejects(proxy.apply(table(2, route("books", "books:2", [{ ...u.upstream, host: "a b" }]))), /not a host name/);
    assert.equal(await who(`${base}/`), "strict");
    assert.equal(proxy.table.version, 1);
  });
});

describe("nginx configuration rendering", () => {
  const layout = nginxLayout("/srv/turquoise/state/nginx");
  const up = (id: string, port: number) => ({ id, host: "127.0.0.1", port });

  it("writes JSON bodies that survive nginx's string escapes and variables", () => {
    const text = nginxJson({ error: "no healthy instance", service: `a$b'c"d\\e\nf` });
    assert.doesNotMatch(text, /[$'\\]n|\$|'/);
    assert.deepEqual(JSON.parse(text), { error: "no healthy instance", service: `a$b'c"d\\e\nf` });
  });

  it("quotes tokens that are not plain, and refuses newlines", () => {
    assert.equal(quote("/api/v1"), "/api/v1");
    assert.equal(quote('/a b"{'), '"/a b\\"{"');
    assert.throws(() => quote("/a\nb"), /cannot write/);
  });

  it("gives a host block the wildcard prefixes it does not cover itself, routed to its own covering route", () => {
    const routes: Route[] = [
      route("any", "any", [up("any", 1)]),
      route("api", "api", [up("api", 2)], { pathPrefix: "/api" }),
      route("docs", "docs", [up("docs", 3)], { pathPrefix: "/docs" }),
      route("site", "site", [up("site", 4)], { host: "Example.com", pathPrefix: "/" }),
      route("site-api", "site-api", [up("sa", 5)], { host: "example.com", pathPrefix: "/api/v2" }),
      route("dup", "dup", [up("dup", 6)], { pathPrefix: "/api/" }),
    ];
    const { anyHost, byHost } = serverEntries(routes);
    assert.deepEqual([...anyHost.keys()].sort(), ["", "/api", "/docs"]);
    assert.equal(anyHost.get("/api")!.service, "api", "the first of two equal routes wins");
    const site = byHost.get("example.com")!;
    assert.equal(site.get("")!.service, "site");
    assert.equal(site.get("/api")!.service, "site", "covered by the host's own / route");
    assert.equal(site.get("/docs")!.service, "site");
    assert.equal(site.get("/api/v2")!.service, "site-api");
  });

  it("fails a template with an unknown, missing or repeated placeholder, naming the line", () => {
    const values = { main: "", http: "", version: "1", prefix: "/p" };
    assert.throws(() => fillTemplate("{{main}}\nhttp {\n  {{http}}\n  {{nope}}\n}", "t.conf", values), /t\.conf:4: unknown placeholder \{\{nope\}\}/);
    assert.throws(() => fillTemplate("{{main}}\n", "t.conf", values), /\{\{http\}\} must appear exactly once, found 0/);
    assert.throws(() => fillTemplate("{{main}}\n{{main}}\n{{http}}", "t.conf", values), /\{\{main\}\} must appear exactly once, found 2/);
    assert.equal(fillTemplate("# {{whatever}}\n{{ main }}\n  {{http}} # v{{version}}", "t.conf", { ...values, main: "a;", http: "b;\nc;" }), "# {{whatever}}\na;\n  b;\nc; # v1");
  });

  it("renders down servers, 503 locations and a control block whose id changes with the content", () => {
    const t = table(5, route("books", "books:1", [up("b1", 4001), up("b2", 4002)]), route("gone", "gone:1", [], { pathPrefix: "/gone" }));
    const a = renderRouterConfig({ layout, table: t, unhealthy: new Set() });
    const b = renderRouterConfig({ layout, table: t, unhealthy: new Set(["b2"]) });
    assert.match(b.text, /server 127\.0\.0\.1:4002 max_conns=\d+ down;/);
    assert.match(a.text, /location = \/gone \{[^}]*return 503/);
    assert.match(a.text, new RegExp(`"config":"${a.configId}"`));
    assert.notEqual(a.configId, b.configId);
    assert.equal(renderRouterConfig({ layout, table: t, unhealthy: new Set() }).configId, a.configId);
    assert.match(a.text, /listen unix:\/srv\/turquoise\/state\/nginx\/router\.sock default_server;/);
    const solo = renderRouterConfig({ layout, table: t, unhealthy: new Set(), listen: { host: "::1", port: 8080 } });
    assert.match(solo.text, /listen \[::1\]:8080 default_server;/);
    assert.match(solo.text, /proxy_set_header X-Forwarded-For \$turquoise_forwarded_for;/);
    assert.match(solo.text, /limit_conn turquoise_connections_[0-9a-f]{16} 8192;/, "without the edge, a limit_conn zone of its own per configuration");
  });

  it("renders each setting: upstream waits and body limits per route, client bounds per server, trust as geo and maps", () => {
    const settings: ProxySettings = {
      timeouts: { clientHeaderMs: 1_500, clientIdleMs: 2_500, upstreamConnectMs: 300, upstreamResponseMs: 4_000, upstreamIdleMs: 5_000, tunnelIdleMs: 60_000 },
      limits: { maxConnections: 100, maxUpstreamConnections: 7, upstreamQueueMs: 2_500, maxHeaderBytes: 4_096, maxBodyBytes: 3_000 },
      trustedProxies: ["198.18.0.0/15", "::1"],
    };
    const own = route("books", "books:1", [up("b1", 4001)], { pathPrefix: "/books", timeouts: { upstreamResponseMs: 9_000, tunnelIdleMs: 7_000 }, maxBodyBytes: 1_000 });
    const t = { ...table(9, own, route("web", "web:1", [up("w1", 4002)])), settings };
    const solo = renderRouterConfig({ layout, table: t, unhealthy: new Set(), listen: { host: "127.0.0.1", port: 8080 } }).text;
    const location = (loc: string): string => {
      const start = solo.indexOf(`    location ${loc} {`);
      return solo.slice(start, solo.indexOf("\n    }\n", start));
    };
    const books = location("= /books");
    for (const line of ["client_max_body_size 1000;", "proxy_connect_timeout 300ms;", "proxy_read_timeout 9000ms;", "proxy_send_timeout 5000ms;", "client_body_timeout 5000ms;", "proxy_next_upstream_timeout 9000ms;", "error_page 418 = @turquoise_tunnel_1;"]) {
      assert.ok(books.includes(line), `${line} in\n${books}`);
    }
    assert.match(location("@turquoise_tunnel_1"), /proxy_read_timeout 7000ms;\n\s*proxy_send_timeout 7000ms;/);
    assert.match(location("/"), /client_max_body_size 3000;[\s\S]*proxy_read_timeout 4000ms;/, "a route without its own takes the table's");
    for (const line of ["client_header_timeout 1500ms;", "keepalive_timeout 2500ms;", "client_header_buffer_size 1024;", "large_client_header_buffers 1 4096;", "limit_conn_status 503;"]) {
      assert.ok(solo.includes(`    ${line}\n`), line);
    }
    assert.match(solo, /limit_conn turquoise_connections_[0-9a-f]{16} 100;/);
    assert.match(solo, /zone turquoise_pool_1 64k;\n\s*server 127\.0\.0\.1:4001 max_conns=7;/);
    assert.match(solo, /geo \$remote_addr \$turquoise_trusted \{\n\s*default 0;\n\s*198\.18\.0\.0\/15 1;\n\s*::1 1;\n\s*\}/);
    assert.match(solo, /add_header Retry-After 3 always;/);
    assert.match(solo, /worker_connections 1024;/);

    const routerBehindEdge = renderRouterConfig({ layout, table: t, unhealthy: new Set() }).text;
    assert.match(routerBehindEdge, /real_ip_header X-Turquoise-Peer;/);
    assert.doesNotMatch(routerBehindEdge, /client_header_timeout|limit_conn /, "the edge bounds the clients");
    assert.match(routerBehindEdge, /large_client_header_buffers 4 8192;/, "room for any head the edge lets through");

    const edge = renderEdgeConfig(layout, { host: "127.0.0.1", port: 8080 }, settings);
    for (const line of ["client_header_timeout 1500ms;", "keepalive_timeout 2500ms;", "large_client_header_buffers 1 4096;", "limit_conn turquoise_connections 100;", "proxy_set_header X-Turquoise-Peer $remote_addr;", "worker_connections 1024;"]) {
      assert.ok(edge.text.includes(line), line);
    }
    assert.match(edge.text, new RegExp(`"config":"${edge.configId}"`));
    assert.equal(renderEdgeConfig(layout, { host: "127.0.0.1", port: 8080 }, tableSettings(settings)).configId, edge.configId);
    assert.notEqual(renderEdgeConfig(layout, { host: "127.0.0.1", port: 8080 }, tableSettings(undefined)).configId, edge.configId);
  });

  it("reads /proc socket addresses and stub_status", () => {
    assert.equal(decodeProcAddress("0100007F:1F90"), "127.0.0.1:8080");
    assert.equal(decodeProcAddress("0000000000000000FFFF00000100007F:0050"), "127.0.0.1:80");
    assert.equal(decodeProcAddress("00000000000000000000000001000000:0050"), "0000:0000:0000:0000:0000:0000:0000:0001:80");
    const s = parseStubStatus("Active connections: 3 \nserver accepts handled requests\n 10 10 42 \nReading: 0 Writing: 1 Waiting: 2 \n");
    assert.deepEqual(s, { active: 3, accepts: 10, handled: 10, requests: 42, reading: 0, writing: 1, waiting: 2 });
  });
});
