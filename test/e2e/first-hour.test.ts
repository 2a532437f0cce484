// End to end: a new user's first hour, each test named after what they saw go wrong. Real CLI,
// agent, proxy and instances; the user's own project made with `turquoise init` where it matters.
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { promisify } from "node:util";
import { after, before, describe, it, type TestContext } from "node:test";
import { BIN, REPO_ROOT, type Workspace } from "../../src/demo/workspace.js";
import { EXIT_CODES } from "../../src/errors.js";
import { freePort } from "../../src/util/net.js";
import { RELEASE_KINDS, agentEvents, cliIn, get, markedPids, proxyPids, readAgentPid, status, waitFor, workspaceWith } from "./helpers.js";

const run = promisify(execFile);

interface Project {
  dir: string;
  specFile: string;
  agentPort: number;
  proxyUrl: string;
  cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
}

/** What a user does first: `turquoise init --service books` in a fresh directory, and a release beside it. */
async function initProject(t: TestContext, opts: { agentPort?: number } = {}): Promise<Project> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "turquoise-first-hour-"));
  const cli: Project["cli"] = (args) => cliIn(dir, args);
  t.after(async () => {
    await cli(["down"]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  assert.equal((await cli(["init", "--service", "books"])).code, 0);
  // The starter's ports are the well-known ones; tests beside each other need their own.
  const agentPort = opts.agentPort ?? (await freePort());
  const proxyPort = await freePort();
  const specFile = path.join(dir, "turquoise.yml");
  fs.writeFileSync(specFile, fs.readFileSync(specFile, "utf8").replace("127.0.0.1:4700", `127.0.0.1:${agentPort}`).replace("127.0.0.1:8080", `127.0.0.1:${proxyPort}`));
  // init's command is ["node", "server.js"] in releases/{release}.
  fs.mkdirSync(path.join(dir, "releases", "v1"), { recursive: true });
  fs.writeFileSync(path.join(dir, "releases", "v1", "package.json"), '{"type": "module"}\n');
  fs.writeFileSync(path.join(dir, "releases", "v1", "server.js"), RELEASE_KINDS.good("v1"));
  return { dir, specFile, agentPort, proxyUrl: `http://127.0.0.1:${proxyPort}`, cli };
}

/** Holds a loopback port the way another program would, until released. */
async function holdPort(port: number): Promise<{ release(): Promise<void> }> {
  const server = net.createServer((s) => s.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", resolve);
  });
  return { release: () => new Promise<void>((r) => server.close(() => r())) };
}

function portOf(url: string): number {
  return Number(new URL(url).port);
}

describe("first hour: init, up and the proxy", () => {
  it("init's spec answers curl http://127.0.0.1:<proxy port>/ with the app, not 404 no route", async (t) => {
    const p = await initProject(t);
    assert.equal((await p.cli(["up", "--detach"])).code, 0);
    const d = await p.cli(["deploy", "books", "--release", "v1"]);
    assert.equal(d.code, 0, d.stderr);
    const r = await get(`${p.proxyUrl}/api/v1/books`);
    assert.equal(r.status, 200, r.body);
    assert.equal(r.headers["x-release"], "v1");
  });

  it("a 404 from the proxy names its routes to a client on this machine, and none to one behind a forwarding proxy", async (t) => {
    const p = await initProject(t);
    // The host route the starter spec shows, commented out, switched on as a user would.
    const text = fs.readFileSync(p.specFile, "utf8");
    const commented = /^( *)# +(host: "books\.example\.com").*$/m.exec(text);
    assert.ok(commented, "init's spec shows how to route by host");
    fs.writeFileSync(p.specFile, text.replace(/^    route:\n/m, `    route:\n      ${commented[2]}\n`));
    assert.equal((await p.cli(["up", "--detach"])).code, 0);
    assert.equal((await p.cli(["deploy", "books", "--release", "v1"])).code, 0);

    const local = await get(`${p.proxyUrl}/api/v1/books`);
    assert.equal(local.status, 404);
    const body = JSON.parse(local.body) as { error: string; routes?: string[]; hint?: string };
    assert.equal(body.error, "no route");
    assert.deepEqual(body.routes, ["books.example.com/ (books)"]);
    assert.match(body.hint ?? "", /Host/);

    // Another proxy on this machine connects from loopback on someone else's behalf: it learns nothing.
    const forwarded = await get(`${p.proxyUrl}/api/v1/books`, { "x-forwarded-for": "203.0.113.9" });
    assert.equal(forwarded.status, 404);
    assert.deepEqual(JSON.parse(forwarded.body), { error: "no route", host: new URL(p.proxyUrl).host, path: "/api/v1/books" });
    const viaForwarded = await get(`${p.proxyUrl}/`, { forwarded: "for=203.0.113.9" });
    assert.equal(JSON.parse(viaForwarded.body).routes, undefined);

    const named = await get(`${p.proxyUrl}/api/v1/books`, { host: "books.example.com" });
    assert.equal(named.status, 200);
  });

  it("up with the agent's port (or consul.listen) taken exits 9 naming the key, and leaves no proxy or instance running", async () => {
    const ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, { replicas: 2 });
    try {
      // A live release on record: a start restores it, which is what the port check must come before.
      await ws.cli(["up", "--detach"]);
      await ws.cli(["deploy", "books", "--release", "v1"]);
      await ws.cli(["down"]);
      const held = await holdPort(ws.agentPort);
      try {
        const r = await ws.cli(["up", "--detach"], { allowFail: true });
        assert.equal(r.code, EXIT_CODES.CONFLICT, r.stderr);
        assert.match(r.stderr, /the agent cannot listen on 127\.0\.0\.1:\d+: address in use \(set agent\.listen in /);
        assert.deepEqual(proxyPids(ws), [], "no proxy left running");
        assert.deepEqual(markedPids(ws), [], "no instance left running");
        const fg = await ws.cli(["up"], { allowFail: true });
        assert.equal(fg.code, EXIT_CODES.CONFLICT);
        assert.deepEqual(proxyPids(ws), []);
        assert.deepEqual(markedPids(ws), []);
      } finally {
        await held.release();
      }
      // The Consul API's port is bound as early.
      const consulPort = await freePort();
      fs.appendFileSync(ws.specFile, `consul: { listen: "127.0.0.1:${consulPort}" }\n`);
      const consulHeld = await holdPort(consulPort);
      try {
        const r = await ws.cli(["up", "--detach"], { allowFail: true });
        assert.equal(r.code, EXIT_CODES.CONFLICT, r.stderr);
        assert.match(r.stderr, /consul\.listen/);
        assert.deepEqual(proxyPids(ws), []);
        assert.deepEqual(markedPids(ws), []);
      } finally {
        await consulHeld.release();
      }
    } finally {
      await ws.destroy();
    }
  });

  it("up --detach shows this start's error only, and the proxy's port taken exits 9 naming proxy.listen", async () => {
    const ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, { replicas: 1 });
    try {
      const agentHeld = await holdPort(ws.agentPort);
      const first = await ws.cli(["up", "--detach"], { allowFail: true });
      await agentHeld.release();
      assert.match(first.stderr, /agent cannot listen/);

      const proxyHeld = await holdPort(portOf(ws.proxyUrl));
      try {
        const second = await ws.cli(["up", "--detach"], { allowFail: true });
        assert.equal(second.code, EXIT_CODES.CONFLICT, second.stderr);
        assert.match(second.stderr, /the proxy cannot listen on 127\.0\.0\.1:\d+: address in use \(set proxy\.listen in /);
        assert.doesNotMatch(second.stderr, /agent cannot listen/, "the earlier start's error is not shown again");
        assert.match(fs.readFileSync(path.join(ws.dir, ".turquoise", "agent.log"), "utf8"), /agent cannot listen/, "the log keeps it");
        assert.deepEqual(markedPids(ws), []);
      } finally {
        await proxyHeld.release();
      }
      assert.equal((await ws.cli(["up", "--detach"])).code, 0);
    } finally {
      await ws.destroy();
    }
  });
});

describe("first hour: a broken spec, a neighbour's agent, nothing running", () => {
  it("a broken turquoise.yml does not keep status and down from working: they use the spec the agent started with", async () => {
    const ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, { replicas: 2 });
    try {
      await ws.cli(["up", "--detach"]);
      await ws.cli(["deploy", "books", "--release", "v1"]);
      const good = fs.readFileSync(ws.specFile, "utf8");
      fs.appendFileSync(ws.specFile, "oops: [\n");
      assert.equal((await ws.cli(["validate"], { allowFail: true })).code, EXIT_CODES.SPEC_INVALID);

      const st = await ws.cli(["status"]);
      assert.match(st.stdout, /live: v1 on blue/);
      assert.match(st.stderr, /warning: .*turquoise\.yml is invalid \(1 error: see `turquoise validate`\); using the spec the agent started with/);
      assert.equal((JSON.parse((await ws.cli(["status", "--json"])).stdout) as { services: unknown[] }).services.length, 1);
      assert.equal((await ws.cli(["history", "books"])).code, 0);

      const down = await ws.cli(["down"]);
      assert.match(down.stdout, /stopped the agent, the proxy and all instances/);
      assert.deepEqual(markedPids(ws), []);
      assert.deepEqual(proxyPids(ws), []);

      // Worse: the agent killed, the file gone. down still stops what it left, from its records.
      fs.writeFileSync(ws.specFile, good);
      await ws.cli(["up", "--detach"]);
      await waitFor("the live slot restored", async () => (await status(ws)).instances.length === 2 || undefined);
      process.kill(readAgentPid(ws), "SIGKILL");
      fs.rmSync(ws.specFile);
      const after = await ws.cli(["down"]);
      assert.match(after.stdout, /no agent was running; stopped the proxy and 2 leftover instances/);
      assert.match(after.stderr, /is invalid/);
      assert.deepEqual(markedPids(ws), []);
      assert.deepEqual(proxyPids(ws), []);
      fs.writeFileSync(ws.specFile, good);
    } finally {
      await ws.destroy();
    }
  });

  it("a second project on another project's agent port is told it is not its agent, not 'missing or wrong API token'", async (t) => {
    const ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, { replicas: 1 });
    try {
      await ws.cli(["up", "--detach"]);
      const other = await initProject(t, { agentPort: ws.agentPort });
      const up = await other.cli(["up", "--detach"]);
      assert.equal(up.code, EXIT_CODES.CONFLICT);
      assert.match(up.stderr, /agent\.listen/);
      for (const args of [["status"], ["deploy", "books", "--release", "v1"], ["history", "books"]]) {
        const r = await other.cli(args);
        assert.equal(r.code, EXIT_CODES.CONFLICT, `${args.join(" ")}: ${r.stderr}`);
        assert.match(r.stderr, /is not this project's agent: it serves another project .*agent\.listen port of its own/);
        assert.doesNotMatch(r.stderr, /API token/);
        assert.ok(!r.stderr.includes(fs.readFileSync(path.join(ws.dir, ".turquoise", "token"), "utf8").trim()), "no token in the message");
      }
      // What the liveness probe tells anyone: an id, no path and no secret.
      const probe = JSON.parse((await get(`http://127.0.0.1:${ws.agentPort}/v1/health`)).body) as Record<string, unknown>;
      assert.deepEqual(Object.keys(probe).sort(), ["agent", "ok", "pid", "uptimeMs"]);
      assert.match(String(probe.agent), /^[0-9a-f]{12}$/);
      // Its own project's CLI still gets the plain answer.
      assert.equal((await ws.cli(["status"])).code, 0);
    } finally {
      await ws.destroy();
    }
  });

  it("down with nothing running says nothing was running, not that it stopped the proxy", async (t) => {
    const p = await initProject(t);
    const r = await p.cli(["down"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^nothing was running: no agent, no proxy and no instance of this project$/m);
    assert.doesNotMatch(r.stdout, /stopped/);
    assert.deepEqual(JSON.parse((await p.cli(["down", "--json"])).stdout), { stopped: "nothing" });
  });
});

describe("first hour: what the CLI says", () => {
  let ws: Workspace;
  let deploys: string[];
  before(async () => {
    ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1"), v2: RELEASE_KINDS.good("v2"), broken: RELEASE_KINDS.exitsAtOnce() }, { replicas: 1, keepPrevious: "5m" });
    await ws.cli(["up", "--detach"]);
    deploys = [(await ws.cli(["deploy", "books", "--release", "v1"])).stdout, (await ws.cli(["deploy", "books", "--release", "v2"])).stdout];
  });
  after(async () => ws?.destroy());

  it("status bookz (a typo) exits 4 naming the known services", async () => {
    const r = await ws.cli(["status", "bookz"], { allowFail: true });
    assert.equal(r.code, EXIT_CODES.NOT_FOUND);
    assert.match(r.stderr, /no service named "bookz" in .*; known: books/);
    assert.equal(r.stdout, "");
    const one = await ws.cli(["status", "books"]);
    assert.match(one.stdout, /^books {2}\*\//m);
  });

  it("deploy --release ../v1 says what a release name is, naming --release rather than an API field", async () => {
    for (const [args, flag] of [[["deploy", "books", "--release", "../v1"], "--release"], [["plan", "books", "--release", "v1/x"], "--release"], [["deploy", "books", "--release", "v2", "--via", ".."], "--via"]] as const) {
      const r = await ws.cli([...args], { allowFail: true });
      assert.equal(r.code, EXIT_CODES.USAGE, r.stderr);
      assert.match(r.stderr, new RegExp(`${flag} ".*" is not a release name: write 1 to 128 letters, digits`));
      assert.doesNotMatch(r.stderr, /body\./);
    }
  });

  it("a deploy of one replica says '1 new instance passing', never '1 new instances'", () => {
    for (const out of deploys) {
      assert.match(out, /healthy .* 1 new instance passing after/);
      assert.doesNotMatch(out, /\b1 new instances\b/);
    }
  });

  it("status, history and plans print times one way: ISO 8601 UTC to the second, and durations as the spec writes them", async () => {
    const iso = String.raw`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`;
    const st = (await ws.cli(["status"])).stdout;
    assert.match(st, new RegExp(`warm \\(until ${iso}\\)  v1`));
    const history = (await ws.cli(["history", "books"])).stdout.trim().split("\n");
    for (const line of history.filter((l) => l.startsWith("#"))) assert.match(line, new RegExp(`^#\\d+ ${iso} `));
    const plan = deploys[1]!;
    assert.match(plan, /deploy_timeout 20s\)/);
    assert.match(plan, /up to 5s, then keep it warm for 5m/);
    assert.match(plan, new RegExp(`kept warm in blue until ${iso}`));
    for (const text of [st, ...history, plan]) {
      assert.doesNotMatch(text, /\b(AM|PM)\b/, "no locale time");
      assert.doesNotMatch(text, /\d{4,}ms/, "no raw milliseconds");
      assert.doesNotMatch(text, /\.\d{3}Z/, "no milliseconds in times");
    }
    // --json keeps the API's machine form: epoch milliseconds.
    const json = JSON.parse((await ws.cli(["history", "books", "--json"])).stdout) as Array<{ startedAt: unknown }>;
    assert.equal(typeof json[0]!.startedAt, "number");
  });

  it("after a failed deploy, agent.log promises no replacement that never comes", async () => {
    const r = await ws.cli(["deploy", "books", "--release", "broken"], { allowFail: true });
    assert.equal(r.code, EXIT_CODES.DEPLOY_FAILED);
    // The exit is noticed at once; healing would answer within its zero first backoff.
    await new Promise((res) => setTimeout(res, 1_500));
    assert.deepEqual((await agentEvents(ws, "heal.scheduled")).map((e) => e.message), []);
    assert.doesNotMatch(fs.readFileSync(path.join(ws.dir, ".turquoise", "agent.log"), "utf8"), /heal\.scheduled/);
    // A live instance that dies is replaced, and said to be.
    const live = (await status(ws)).instances.find((i) => i.release === "v2")!;
    process.kill(Number(live.ref), "SIGKILL");
    await waitFor("the replacement", async () => (await agentEvents(ws, "instance.replaced")).length > 0 || undefined, 20_000);
    const scheduled = await agentEvents(ws, "heal.scheduled");
    assert.equal(scheduled.length, 1);
    assert.match(scheduled[0]!.message, new RegExp(`^${live.id} \\(v2, ${live.slot}\\) exited: replacing it$`));
  });
});

describe("first hour: the demo and its example", () => {
  /** Starts `turquoise demo` with its stdout on a pipe; resolves with its workspace once it printed `until`. */
  async function startDemo(until: RegExp): Promise<{ child: ChildProcess; dir: string; exited: Promise<{ code: number | null; stderr: string }> }> {
    const child = spawn(process.execPath, [BIN, "demo"], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr!.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    const exited = new Promise<{ code: number | null; stderr: string }>((r) => child.on("exit", (code) => r({ code, stderr })));
    let seen = "";
    const dir = await new Promise<string>((resolve, reject) => {
      child.stdout!.setEncoding("utf8").on("data", (c: string) => {
        seen += c;
        const ws = /^workspace (\S+)$/m.exec(seen);
        if (ws && until.test(seen)) resolve(ws[1]!);
      });
      void exited.then(({ code }) => reject(new Error(`the demo exited (${code}) before printing ${until}: ${seen}\n${stderr}`)));
    });
    return { child, dir, exited };
  }

  function leftBehind(dir: string): string[] {
    const ws = { dir };
    return [...(fs.existsSync(dir) ? [`${dir} exists`] : []), ...markedPids(ws).map((p) => `instance pid ${p}`), ...proxyPids(ws).map((p) => `proxy pid ${p}`)];
  }

  it("turquoise demo | head: the demo stops when its reader goes, and leaves no workspace behind", { timeout: 180_000 }, async () => {
    const demo = await startDemo(/^workspace /m);
    // What head does once it has its lines: it closes its end of the pipe.
    demo.child.stdout!.destroy();
    const { code, stderr } = await demo.exited;
    assert.equal(code, 0, stderr);
    assert.deepEqual(leftBehind(demo.dir), []);
  });

  it("Ctrl-C during turquoise demo stops it and removes its workspace, agent, proxy and instances", { timeout: 180_000 }, async () => {
    const demo = await startDemo(/agent and proxy up/);
    demo.child.kill("SIGINT");
    const { code, stderr } = await demo.exited;
    assert.equal(code, EXIT_CODES.INTERNAL);
    assert.match(stderr, /the demo was interrupted; its workspace was stopped and removed/);
    assert.deepEqual(leftBehind(demo.dir), []);
  });

  it("demo --help lists no -f, which the demo would ignore, and demo -f is refused", async () => {
    const help = await run(process.execPath, [BIN, "demo", "--help"]);
    assert.doesNotMatch(help.stdout, /--file|-f,/);
    assert.match(help.stdout, /--json/);
    await assert.rejects(run(process.execPath, [BIN, "demo", "-f", "turquoise.yml"]), (e: { code: number; stderr: string }) => e.code === EXIT_CODES.USAGE && /Unknown option '-f'/.test(e.stderr));
    // A command that reads a spec still lists and takes it.
    assert.match((await run(process.execPath, [BIN, "status", "--help"])).stdout, /-f, --file <path>/);
  });

  it("the example's README describes every release it ships and both databases it runs on", () => {
    const root = path.join(REPO_ROOT, "examples", "books-service");
    const readme = fs.readFileSync(path.join(root, "README.md"), "utf8");
    for (const release of fs.readdirSync(path.join(root, "releases"))) {
      assert.match(readme, new RegExp(`\`${release}\``), `release ${release}`);
      const schema = (JSON.parse(fs.readFileSync(path.join(root, "releases", release, "turquoise.json"), "utf8")) as { schema: { min: number; max: number } }).schema;
      assert.match(readme, new RegExp(`\`${release}\`[^\\n]*schema ${schema.min === schema.max ? schema.min : `${schema.min}\\.\\.${schema.max}`}\\b`), `the schema ${release} runs on`);
    }
    for (const driver of fs.readdirSync(path.join(root, "migrations"))) {
      assert.match(readme, new RegExp(`migrations/${driver}/`), `migrations for ${driver}`);
      for (const file of fs.readdirSync(path.join(root, "migrations", driver)).filter((f) => f.endsWith(".up.sql"))) {
        assert.match(readme, new RegExp(file.replace(/\.up\.sql$/, "").replace(/^\d+_/, "")), file);
      }
    }
    assert.match(readme, /DATABASE_URL/);
    assert.match(readme, /BOOKS_FILE/);
  });
});
