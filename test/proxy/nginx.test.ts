// The nginx driver against real nginx (installed by scripts/ensure-nginx.sh, so these tests never
// skip) and real upstream HTTP servers on 127.0.0.1, plus its pure rendering helpers.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { WebSocket, WebSocketServer } from "ws";
import { TurquoiseError } from "../../src/errors.js";
import type { Route } from "../../src/proxy/contract.js";
import { NginxProxy, decodeProcAddress, parseStubStatus } from "../../src/proxy/nginx.js";
import {
  DEFAULT_NGINX_TEMPLATE,
  fillTemplate,
  nginxJson,
  nginxLayout,
  quote,
  renderRouterConfig,
  serverEntries,
} from "../../src/proxy/nginx-template.js";
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

  it("routes by host and path prefix with the built-in proxy's precedence, and sets the forwarding headers", async () => {
    const [any, api, host, admin] = await Promise.all(["any", "api", "host", "admin"].map((id) => upstream(id)));
    const { proxy, base } = await started();
    await proxy.apply(
      table(
        1,
        route("web", "web:1", [any!.upstream]),
        route("api", "api:1", [api!.upstream], { pathPrefix: "/api" }),
        route("site", "site:1", [host!.upstream], { host: "example.com" }),
        route("admin", "admin:1", [admin!.upstream], { host: "example.com", pathPrefix: "/admin/" }),
      ),
    );
    assert.equal(await who(`${base}/`), "any");
    assert.equal(await who(`${base}/api`), "api");
    assert.equal(await who(`${base}/api/books?page=2`), "api");
    assert.equal(await who(`${base}/api?page=2`), "api");
    assert.equal(await who(`${base}/apix`), "any", "a prefix matches whole path segments");
    assert.equal(await who(`${base}/api/x`, { host: "example.com" }), "host", "a route of the host beats a longer wildcard route");
    assert.equal(await who(`${base}/admin/users`, { host: "EXAMPLE.com:8080" }), "admin");
    assert.equal(await who(`${base}/admin`, { host: "example.com" }), "admin");
    assert.equal(await who(`${base}/other`, { host: "other.test" }), "any");

    const r = await request(`${base}/api/x?y=1`, { headers: { host: "books.test:81", "x-forwarded-for": "203.0.113.3" } });
    const e = json<Echo>(r);
    assert.equal(e.url, "/api/x?y=1");
    assert.equal(e.headers.host, "books.test:81");
    assert.equal(e.headers["x-forwarded-for"], "203.0.113.3, 127.0.0.1");
    assert.equal(e.headers["x-forwarded-proto"], "http");
    assert.equal(e.headers["x-forwarded-host"], "books.test:81");

    await proxy.apply(table(2, route("site", "site:1", [host!.upstream], { host: "example.com", pathPrefix: "/site" })));
    const missing = await request(`${base}/site/1`, { headers: { host: "elsewhere.test" } });
    assert.equal(missing.status, 404);
    assert.match(String(missing.headers["content-type"]), /application\/json/);
    assert.deepEqual(json(missing), { error: "no route" });
    assert.equal((await request(`${base}/nothing`, { headers: { host: "example.com" } })).status, 404);
  });

  it("apply resolves once new requests use the new pool, also on a client's kept-alive connection", async () => {
    const [blue, green] = await Promise.all([upstream("blue"), upstream("green")]);
    const { proxy, base } = await started();
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    try {
      await proxy.apply(table(1, route("books", "books:blue", [blue.upstream])));
      for (let i = 0; i < 8; i++) assert.equal(await who(`${base}/books`, {}, agent), "blue");
      await proxy.apply(table(2, route("books", "books:green", [green.upstream])));
      const seen = await Promise.all(Array.from({ length: 20 }, () => who(`${base}/books`, {}, agent)));
      assert.deepEqual(new Set(seen), new Set(["green"]));
      assert.equal((await proxy.stats()).tableVersion, 2);
      // An older table changes nothing, as in the built-in proxy.
      await proxy.apply(table(1, route("books", "books:blue", [blue.upstream])));
      assert.equal(await who(`${base}/books`), "green");
      assert.equal(proxy.table.version, 2);
    } finally {
      agent.destroy();
    }
  });

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

  it("answers 503 JSON without a healthy upstream; setUpstreamHealth takes one out of rotation and back", async () => {
    const [one, two] = await Promise.all([upstream("one"), upstream("two")]);
    const { proxy, base } = await started();
    await proxy.apply(table(1, route("books", "books:1", [one.upstream, two.upstream]), route("empty", "empty:1", [], { pathPrefix: "/empty" })));

    const empty = await request(`${base}/empty/x`);
    assert.equal(empty.status, 503);
    assert.match(String(empty.headers["content-type"]), /application\/json/);
    assert.deepEqual(json(empty), { error: "no healthy instance", service: "empty" });

    await proxy.setUpstreamHealth("one", false);
    const seen = new Set(await Promise.all(Array.from({ length: 10 }, () => who(`${base}/`))));
    assert.deepEqual(seen, new Set(["two"]));
    await proxy.setUpstreamHealth("two", false);
    const none = await request(`${base}/`);
    assert.equal(none.status, 503);
    assert.deepEqual(json(none), { error: "no healthy instance", service: "books" });
    await proxy.setUpstreamHealth("one", true);
    assert.equal(await who(`${base}/`), "one");
    // The same mark twice is no change, and needs no reload.
    await proxy.setUpstreamHealth("one", true);
    assert.equal(await who(`${base}/`), "one");
  });

  it("drain waits for in-flight requests on the old pool, and cuts what outlives its timeout", async () => {
    const slowHandler = (delayMs: number) => (req: http.IncomingMessage, res: http.ServerResponse) => {
      setTimeout(() => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ id: `slow-${req.method}` })), delayMs);
    };
    const [slow, slower, fresh] = await Promise.all([upstream("slow", slowHandler(2_500)), upstream("slower", slowHandler(10_000)), upstream("fresh")]);
    const { proxy, base } = await started();

    await proxy.apply(table(1, route("books", "books:slow", [slow.upstream])));
    const inFlight = request(`${base}/wait`);
    await sleep(150);
    await proxy.apply(table(2, route("books", "books:fresh", [fresh.upstream])));
    assert.equal(await who(`${base}/`), "fresh");
    const drained = await proxy.drain("books:slow", 5_000);
    assert.equal(drained.poolId, "books:slow");
    assert.equal(drained.cut, 0);
    assert.equal(drained.completed, 1);
    assert.equal(json((await inFlight)).id, "slow-GET");

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
    const unknown = await proxy.drain("books:unknown", 1_000);
    assert.deepEqual({ completed: unknown.completed, cut: unknown.cut }, { completed: 0, cut: 0 });
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

  it("proxies WebSockets through the edge and the router", async () => {
    const u = await upstream("ws");
    const wss = new WebSocketServer({ server: u.server });
    let forwardedFor: string | undefined;
    wss.on("connection", (socket, req) => {
      forwardedFor = req.headers["x-forwarded-for"] as string;
      socket.on("message", (data) => socket.send(`echo:${String(data)}`));
    });
    const { proxy, base } = await started();
    await proxy.apply(table(1, route("ws", "ws:1", [u.upstream], { pathPrefix: "/ws" })));
    const ws = new WebSocket(`${base.replace("http", "ws")}/ws/chat`);
    try {
      await new Promise<void>((resolve, reject) => {
        ws.once("open", () => resolve());
        ws.once("error", reject);
      });
      const reply = new Promise<string>((resolve) => ws.once("message", (data) => resolve(String(data))));
      ws.send("hello");
      assert.equal(await reply, "echo:hello");
      assert.equal(forwardedFor, "127.0.0.1");
    } finally {
      ws.terminate();
      wss.close();
    }
  });

  it("without the edge, nginx listens on the public address itself and flips the same way", async () => {
    const [blue, green] = await Promise.all([upstream("solo-blue"), upstream("solo-green")]);
    const { proxy, base } = await started({ edge: false });
    await proxy.apply(table(1, route("books", "books:blue", [blue.upstream])));
    assert.equal(await who(`${base}/`), "solo-blue");
    await proxy.apply(table(2, route("books", "books:green", [green.upstream])));
    assert.equal(await who(`${base}/`), "solo-green");
    const e = json<Echo>(await request(`${base}/`, { headers: { "x-forwarded-for": "203.0.113.9" } }));
    assert.equal(e.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    const stats = await proxy.stats();
    assert.equal(stats.nginx.edge, undefined);
    assert.ok(stats.requests >= 3);
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
    assert.match(b.text, /server 127\.0\.0\.1:4002 down;/);
    assert.match(a.text, /location = \/gone \{[^}]*return 503/);
    assert.match(a.text, new RegExp(`"config":"${a.configId}"`));
    assert.notEqual(a.configId, b.configId);
    assert.equal(renderRouterConfig({ layout, table: t, unhealthy: new Set() }).configId, a.configId);
    assert.match(a.text, /listen unix:\/srv\/turquoise\/state\/nginx\/router\.sock default_server;/);
    const solo = renderRouterConfig({ layout, table: t, unhealthy: new Set(), listen: { host: "::1", port: 8080 } });
    assert.match(solo.text, /listen \[::1\]:8080 default_server;/);
    assert.match(solo.text, /X-Forwarded-For \$proxy_add_x_forwarded_for/);
  });

  it("reads /proc socket addresses and stub_status", () => {
    assert.equal(decodeProcAddress("0100007F:1F90"), "127.0.0.1:8080");
    assert.equal(decodeProcAddress("0000000000000000FFFF00000100007F:0050"), "127.0.0.1:80");
    assert.equal(decodeProcAddress("00000000000000000000000001000000:0050"), "0000:0000:0000:0000:0000:0000:0000:0001:80");
    const s = parseStubStatus("Active connections: 3 \nserver accepts handled requests\n 10 10 42 \nReading: 0 Writing: 1 Waiting: 2 \n");
    assert.deepEqual(s, { active: 3, accepts: 10, handled: 10, requests: 42, reading: 0, writing: 1, waiting: 2 });
  });
});
