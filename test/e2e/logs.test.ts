// The agent's and the proxy's logs, end to end: JSON lines a jq user can read, events under their
// own names, levels that reach the proxy too, a terminal's readable lines, and no secret anywhere
// the agent writes, from a spec and an app that spread them about.
import assert from "node:assert/strict";
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { BIN, REPO_ROOT, type Workspace } from "../../src/demo/workspace.js";
import { EXIT_CODES } from "../../src/errors.js";
import type { LogRecord } from "../support/logs.js";
import { RELEASE_KINDS, agentEvents, api, logRecords, tokenOf, waitFor, workspaceWith } from "./helpers.js";

const run = promisify(execFile);
const LEVELS = ["debug", "info", "warn", "error"];
const COMPONENTS = ["agent", "api", "deploy", "heal", "health", "migrate", "proxy", "watch"];

function stateFile(ws: Workspace, name: string): string {
  return path.join(ws.dir, ".turquoise", name);
}

/** Where each secret of the hostile workspace lives. */
interface Secrets {
  dbPassword: string;
  apiToken: string;
  hookBearer: string;
  hookQuery: string;
  agentEnv: string;
}

/** An app that prints its secrets at start, bare and named; "bad" also answers its health check with them. */
function leakyApp(bad: boolean): string {
  return `import http from "node:http";
const { DATABASE_URL, API_TOKEN } = process.env;
console.log("starting with DATABASE_URL=" + DATABASE_URL);
console.log("calling the API as " + API_TOKEN);
const server = http.createServer((req, res) => {
  if (${bad} && req.url === "/health") { res.writeHead(500); res.end("cannot reach " + DATABASE_URL + " with " + API_TOKEN); return; }
  res.end("ok");
}).listen(Number(process.env.PORT), "127.0.0.1");
process.on("SIGTERM", () => server.close(() => process.exit(0)));
`;
}

describe("logs of a deploy that spreads secrets about", () => {
  let ws: Workspace;
  let hook: http.Server;
  const hookRequests: Array<{ url: string; authorization: string | undefined }> = [];
  const secrets: Secrets = {
    dbPassword: "hunter2",
    apiToken: `tok-${crypto.randomBytes(8).toString("hex")}`,
    hookBearer: `wh-${crypto.randomBytes(8).toString("hex")}`,
    hookQuery: `q-${crypto.randomBytes(8).toString("hex")}`,
    agentEnv: `shop-${crypto.randomBytes(8).toString("hex")}`,
  };
  let failedDeploy: { code: number; stdout: string; stderr: string };

  before(async () => {
    hook = http.createServer((req, res) => {
      hookRequests.push({ url: req.url ?? "", authorization: req.headers.authorization });
      req.resume();
      req.on("end", () => res.end("thanks"));
    });
    await new Promise<void>((r) => hook.listen(0, "127.0.0.1", r));
    const hookPort = (hook.address() as net.AddressInfo).port;
    ws = await workspaceWith({ v1: leakyApp(false), v2: leakyApp(true) }, { replicas: 1, env: { SHOP_SECRET: secrets.agentEnv, TURQUOISE_LOG_LEVEL: "debug" } });
    const spec = fs.readFileSync(ws.specFile, "utf8");
    const withEnv = spec.replace(/env: \{ BOOKS_FILE: ("[^"]*") \}/, `env: { BOOKS_FILE: $1, DATABASE_URL: "postgres://u:${secrets.dbPassword}@127.0.0.1:5432/books", API_TOKEN: "${secrets.apiToken}" }`);
    assert.notEqual(withEnv, spec);
    fs.writeFileSync(ws.specFile, `${withEnv}watches:
  - name: hook
    type: service
    service: books
    http: { url: "http://127.0.0.1:${hookPort}/hook?token=${secrets.hookQuery}", headers: { Authorization: "Bearer ${secrets.hookBearer}" } }
  - name: env-dump
    type: service
    service: books
    args: ["sh", "-c", "echo SHOP_SECRET=$SHOP_SECRET, bare $SHOP_SECRET; exit 3"]
`);
    await ws.cli(["up", "--detach"]);
    await ws.cli(["deploy", "books", "--release", "v1"]);
    await waitFor("both watch handlers to run", async () => {
      const runs = (await agentEvents(ws, "watch.handler")).map((e) => e.data.watch);
      return (runs.includes("hook") && runs.includes("env-dump")) || undefined;
    }, 20_000);
    failedDeploy = await ws.cli(["deploy", "books", "--release", "v2"], { allowFail: true });
    assert.equal(failedDeploy.code, EXIT_CODES.DEPLOY_FAILED, failedDeploy.stderr);
  });

  after(async () => {
    await ws?.destroy();
    hook?.close();
  });

  it("writes agent.log and proxy.log as JSON lines with time, level, component, service, event and message", () => {
    for (const file of ["agent.log", "proxy.log"]) {
      const lines = logRecords(ws, file);
      assert.ok(lines.length >= 2, `${file}: ${lines.length} lines`);
      for (const r of lines) {
        assert.match(r.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, JSON.stringify(r));
        assert.ok(LEVELS.includes(r.level), JSON.stringify(r));
        assert.ok(COMPONENTS.includes(r.component), JSON.stringify(r));
        assert.ok(r.service === null || r.service === "books", JSON.stringify(r));
        assert.match(r.event, /^[a-z]+(\.[a-z-]+)?$/, JSON.stringify(r));
        assert.equal(typeof r.message, "string");
        assert.equal(typeof r.pid, "number");
      }
    }
    assert.ok(logRecords(ws, "proxy.log").every((r) => r.component === "proxy"));
    const agent = logRecords(ws, "agent.log");
    assert.ok(agent.some((r) => r.event === "agent.listening" && r.level === "info"));
    assert.ok(agent.some((r) => r.event === "proxy.started" && r.component === "proxy"));
  });

  it("logs every recorded event under its own name, service and message", async () => {
    // Events first: each is logged before it is recorded, so the log read after holds them all.
    const events = await agentEvents(ws);
    const logged = logRecords(ws, "agent.log");
    assert.ok(events.some((e) => e.type === "deploy.failed"));
    for (const e of events) {
      const line = logged.find((r) => r.event === e.type && r.service === e.service && r.message === e.message);
      assert.ok(line, `event ${e.type} "${e.message.slice(0, 80)}" is not in agent.log`);
    }
    const failed = logged.find((r) => r.event === "deploy.failed")!;
    assert.deepEqual([failed.level, failed.component, failed.service, (failed.data as { release: string }).release], ["error", "deploy", "books", "v2"]);
  });

  it("logs every API request at debug level, without its headers or query values", () => {
    const requests = logRecords(ws, "agent.log").filter((r) => r.event === "api.request");
    assert.ok(requests.some((r) => r.message.startsWith("POST /v1/services/books/deploy 200")), requests.map((r) => r.message).join("\n"));
    assert.ok(requests.every((r) => r.level === "debug" && r.component === "api"));
    assert.ok(!JSON.stringify(requests).includes(tokenOf(ws)));
  });

  it("keeps every secret out of agent.log, proxy.log, the events, the history and the deploy's error", async () => {
    // They were there to leak: the hook got its credentials, the app printed its own.
    assert.ok(hookRequests.some((r) => r.authorization === `Bearer ${secrets.hookBearer}` && r.url.includes(secrets.hookQuery)), JSON.stringify(hookRequests));
    const instanceOutput = (await ws.cli(["logs", "books"])).stdout;
    assert.ok(instanceOutput.includes(secrets.dbPassword) && instanceOutput.includes(secrets.apiToken), "turquoise logs shows the app's own output as it printed it");
    const dump = (await agentEvents(ws, "watch.handler")).find((e) => e.data.watch === "env-dump")!;
    assert.match(String(dump.data.output), /SHOP_SECRET=\[redacted\], bare \[redacted\]$/);

    const history = (await ws.cli(["history", "books", "--json"])).stdout;
    assert.match(history, /HTTP 500 Internal Server Error: cannot reach postgres:\/\/u:\*\*\*@127\.0\.0\.1:5432\/books with \[redacted\]/, "the health check's answer is in the history, scrubbed");
    const written: Record<string, string> = {
      "agent.log": fs.readFileSync(stateFile(ws, "agent.log"), "utf8"),
      "proxy.log": fs.readFileSync(stateFile(ws, "proxy.log"), "utf8"),
      events: (await api(ws, "/v1/events?limit=10000")).body,
      history,
      "deploy error": failedDeploy.stdout + failedDeploy.stderr,
      status: (await ws.cli(["status", "--json"])).stdout,
    };
    const all = { ...secrets, adminToken: tokenOf(ws), registryToken: tokenOf(ws, "registry-token") };
    for (const [where, text] of Object.entries(written)) {
      for (const [name, secret] of Object.entries(all)) assert.ok(!text.includes(secret), `${name} (${secret}) in ${where}`);
    }
  });

  it("leaves turquoise logs, the instances' own output, as the app wrote it", async () => {
    const { stdout } = await ws.cli(["logs", "books"]);
    assert.match(stdout, /^==> books-\w+-\w+ \(v1, \w+\) <==\nstarting with DATABASE_URL=postgres:\/\/u:hunter2@127\.0\.0\.1:5432\/books\ncalling the API as tok-/m);
    assert.doesNotMatch(stdout, /"level":/);
  });

  it("is read by the jq examples of docs/logs.md", async () => {
    execFileSync("bash", [path.join(REPO_ROOT, "scripts", "ensure-jq.sh")], { stdio: ["ignore", "ignore", "inherit"] });
    const examples = jqExamples();
    assert.ok(examples.length >= 3, examples.join("\n"));
    const outputs = await Promise.all(examples.map(async (cmd) => (await run("bash", ["-c", cmd], { cwd: ws.dir })).stdout));
    const joined = outputs.join("\n");
    assert.match(joined, /deploy\.failed: deploy of books v2 failed/);
    assert.match(joined, /deploy\.succeeded v1/);
    assert.match(joined, /"event": "deploy\.started",\s+"count": 2/);
  });
});

/** The commands of docs/logs.md's jq section that read a file (not those that follow it). */
function jqExamples(): string[] {
  const doc = fs.readFileSync(path.join(REPO_ROOT, "docs", "logs.md"), "utf8");
  const section = doc.split(/^## /m).find((s) => s.startsWith("Reading the logs with jq"));
  assert.ok(section, "docs/logs.md has a jq section");
  return [...section.matchAll(/```bash\n([\s\S]*?)```/g)].flatMap((m) => m[1]!.split("\n")).filter((l) => l.startsWith("jq "));
}

describe("log levels and formats", () => {
  let ws: Workspace;
  before(async () => {
    ws = await workspaceWith({ v1: RELEASE_KINDS.good("v1") }, { replicas: 1 });
  });
  after(async () => ws?.destroy());

  it("refuses a bad TURQUOISE_LOG_LEVEL before anything starts, naming the variable", async () => {
    const r = await ws.cli(["up", "--detach"], { allowFail: true, env: { TURQUOISE_LOG_LEVEL: "loud" } });
    assert.equal(r.code, EXIT_CODES.USAGE);
    assert.match(r.stderr, /^error: TURQUOISE_LOG_LEVEL must be one of debug, info, warn, error; got "loud"$/m);
    assert.ok(!fs.existsSync(stateFile(ws, "agent.json")));
  });

  it("at warn, neither the agent nor the proxy it starts writes an info line; at the default both do", async () => {
    await ws.cli(["up", "--detach"], { env: { TURQUOISE_LOG_LEVEL: "warn" } });
    await ws.cli(["deploy", "books", "--release", "v1"]);
    await ws.cli(["down"]);
    const quiet = { agent: logRecords(ws, "agent.log").length, proxy: logRecords(ws, "proxy.log").length };
    assert.deepEqual(quiet, { agent: 0, proxy: 0 }, "nothing at warn or above happened");
    await ws.cli(["up", "--detach"]);
    await ws.cli(["down"]);
    assert.ok(logRecords(ws, "agent.log").some((r) => r.event === "agent.listening" && r.level === "info"));
    assert.ok(logRecords(ws, "proxy.log").some((r) => r.event === "proxy.listening" && r.level === "info"));
  });

  it("up in the foreground writes readable lines on a terminal, and JSON lines into a pipe", async () => {
    // script(1) gives the command a pseudo-terminal, as a person's shell would.
    const tty = foreground("script", ["-qfec", `${quote(process.execPath)} ${quote(BIN)} up -f ${quote(ws.specFile)}`, "/dev/null"]);
    const onTty = await runUntil(tty, (o) => o.all.includes("agent.listening"), () => ws.cli(["down", "--agent-only"]));
    const shown = onTty.all.replace(/\x1b\[[0-9;]*m/g, "");
    assert.match(shown, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: proxy - proxy\.(started|adopted): /m, shown);
    assert.match(shown, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: agent - agent\.listening: agent \(pid \d+\) API on http:\/\/127\.0\.0\.1:\d+\r?$/m, shown);
    assert.doesNotMatch(shown, /"level"/);

    // --json prints its object once up has started and handles SIGINT: only then is Ctrl-C a clean stop.
    const piped = foreground(process.execPath, [BIN, "up", "--json", "-f", ws.specFile]);
    const onPipe = await runUntil(piped, (o) => o.stdout.includes('"api"'), async () => void piped.kill("SIGINT"));
    const lines = onPipe.stderr.trimEnd().split("\n").map((l) => JSON.parse(l) as LogRecord);
    assert.ok(lines.some((r) => r.event === "agent.listening"));
    assert.ok(lines.some((r) => r.event === "agent.stopping"));
    await ws.cli(["down"]);
  });

  it("up --detach that fails shows the messages of agent.log, not its JSON", async () => {
    const squatter = net.createServer();
    await new Promise<void>((r) => squatter.listen(ws.agentPort, "127.0.0.1", r));
    try {
      const r = await ws.cli(["up", "--detach"], { allowFail: true });
      assert.equal(r.code, EXIT_CODES.CONFLICT, r.stderr);
      assert.match(r.stderr, /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] ERROR: agent - agent\.failed: the agent cannot listen on 127\.0\.0\.1:\d+: address in use/m, r.stderr);
      assert.doesNotMatch(r.stderr, /"level"/);
    } finally {
      squatter.close();
      await ws.cli(["down"], { allowFail: true });
    }
  });
});

function quote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

interface Output {
  stdout: string;
  stderr: string;
  all: string;
}

interface Foreground {
  child: ChildProcess;
  output: Output;
  exited: Promise<void>;
}

function foreground(cmd: string, args: string[]): Foreground & ChildProcess {
  // stdin stays open: script(1) ends its session when its input ends.
  const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
  const output: Output = { stdout: "", stderr: "", all: "" };
  child.stdout!.on("data", (d: Buffer) => ((output.stdout += d.toString()), (output.all += d.toString())));
  child.stderr!.on("data", (d: Buffer) => ((output.stderr += d.toString()), (output.all += d.toString())));
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  return Object.assign(child, { child, output, exited });
}

/** Waits until what the command wrote is ready(), stops it with stop(), and returns everything it wrote. */
async function runUntil(fg: Foreground, ready: (o: Output) => boolean, stop: () => Promise<unknown>): Promise<Output> {
  try {
    await waitFor("the agent to start", () => ready(fg.output) || undefined, 30_000);
    await stop();
    await Promise.race([fg.exited, new Promise((_, reject) => setTimeout(() => reject(new Error(`still running:\n${fg.output.all}`)), 30_000))]);
    return fg.output;
  } finally {
    fg.child.kill("SIGKILL");
  }
}
