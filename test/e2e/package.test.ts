// The package as users get it: `npm pack`, then `npm install -g` of the tarball into a clean
// prefix and HOME, then `turquoise init`, `up`, `deploy`, `down` in a directory that knows
// nothing of this checkout.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { freePort } from "../../src/util/net.js";

const run = promisify(execFile);
const REPO = fileURLToPath(new URL("../../../", import.meta.url));
/**
 * npm install builds better-sqlite3 from source when no prebuilt binary is reachable: about 2.5 min
 * on CI, and over 6 min on a machine loaded by other test runs (the bound only ends a hang).
 */
const INSTALL_TIMEOUT_MS = 12 * 60_000;

const APP = `import http from "node:http";
const release = process.env.TURQUOISE_RELEASE;
const server = http.createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/plain" }).end(req.url === "/health" ? "ok" : "hello from " + release);
});
server.listen(Number(process.env.PORT), process.env.HOST ?? "127.0.0.1");
process.on("SIGTERM", () => server.close(() => process.exit(0)));
`;

function get(port: number, pathname: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: "127.0.0.1", port, path: pathname, headers: { host: "web.localhost" }, agent: false }, (res) => {
        let body = "";
        res.setEncoding("utf8").on("data", (s: string) => (body += s));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on("error", reject);
  });
}

describe("the npm package", { timeout: INSTALL_TIMEOUT_MS + 120_000 }, () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "turquoise-package-"));
  const prefix = path.join(root, "prefix");
  const home = path.join(root, "home");
  const app = path.join(root, "app");
  let tarball = "";
  let bin = "";
  let env: NodeJS.ProcessEnv = {};

  before(async () => {
    fs.mkdirSync(home);
    fs.mkdirSync(app);
    // dist/ is built by `npm test` already: --ignore-scripts keeps prepack from rebuilding it under the running tests.
    const packed = await run("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", root], { cwd: REPO, maxBuffer: 16 * 1024 * 1024 });
    tarball = path.join(root, (JSON.parse(packed.stdout) as Array<{ filename: string }>)[0]!.filename);
    // What this machine's npm is configured with that a clean HOME and prefix would lose (their
    // .npmrc files are not read): where Node's headers are, to build better-sqlite3, and how the
    // registry is reached (its CA, a proxy).
    const machine: NodeJS.ProcessEnv = {};
    for (const key of ["nodedir", "cafile", "registry", "https-proxy", "proxy", "noproxy"]) {
      const value = (await run("npm", ["config", "get", key])).stdout.trim();
      if (value !== "" && value !== "undefined" && value !== "null") machine[`npm_config_${key.replace(/-/g, "_")}`] = value;
    }
    for (const name of ["NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy"]) {
      if (process.env[name]) machine[name] = process.env[name];
    }
    env = {
      ...machine,
      PATH: `${path.join(prefix, "bin")}:${process.env.PATH}`,
      HOME: home,
      // The machine's npm cache, so that the install reads what is already downloaded; the prefix and HOME stay clean.
      npm_config_cache: process.env.npm_config_cache ?? path.join(os.homedir(), ".npm"),
      npm_config_prefer_offline: "true",
      npm_config_audit: "false",
      npm_config_fund: "false",
    };
    const started = Date.now();
    await run("npm", ["install", "-g", "--prefix", prefix, tarball], { cwd: root, env, timeout: INSTALL_TIMEOUT_MS, maxBuffer: 16 * 1024 * 1024 }).catch((e: { killed?: boolean; stderr?: string }) => {
      // What npm said, and whether the bound ended it: "Command failed" alone explains nothing.
      throw new Error(`npm install -g ${e.killed ? `was ended at its ${INSTALL_TIMEOUT_MS / 60_000} min bound` : `failed after ${Math.round((Date.now() - started) / 1000)} s`}:\n${(e.stderr ?? "").slice(-2_000)}`);
    });
    bin = path.join(prefix, "bin", "turquoise");
  });

  after(async () => {
    await run(bin, ["down"], { cwd: app, env }).catch(() => undefined);
    fs.rmSync(root, { recursive: true, force: true });
  });

  it("ships the compiled code, the dashboard's browser files, the JSON Schema and the docs, and nothing of the tests", async () => {
    const { stdout } = await run("tar", ["-tzf", tarball], { maxBuffer: 16 * 1024 * 1024 });
    const files = stdout.split("\n").filter(Boolean);
    for (const f of ["package/bin/turquoise.js", "package/dist/src/cli/main.js", "package/dist/src/proxy/main.js", "package/schema/turquoise.schema.json", "package/docs/spec.md", "package/README.md", "package/src/ui/static/app.js", "package/src/ui/static/index.html", "package/src/ui/static/style.css"]) {
      assert.ok(files.includes(f), `${f} is in the package`);
    }
    // Of the sources, only the dashboard's browser files, which run as written.
    assert.deepEqual(files.filter((f) => /^package\/(test|dist\/test|bench|dist\/bench|src)\//.test(f) && !f.startsWith("package/src/ui/static/")), []);
  });

  it("installs a turquoise command that runs init, up, deploy and down in any directory", async () => {
    const version = await run(bin, ["--version"], { cwd: app, env }).catch((e: { stdout?: string; stderr?: string }) => e);
    assert.match(`${version.stdout ?? ""}${version.stderr ?? ""}`, /\d+\.\d+\.\d+/);

    await run(bin, ["init", "--service", "web"], { cwd: app, env });
    const agentPort = await freePort();
    const proxyPort = await freePort();
    const specFile = path.join(app, "turquoise.yml");
    const spec = fs.readFileSync(specFile, "utf8").replace('"127.0.0.1:4700"', `"127.0.0.1:${agentPort}"`).replace('"127.0.0.1:8080"', `"127.0.0.1:${proxyPort}"`);
    fs.writeFileSync(specFile, spec);
    for (const release of ["v1", "v2"]) {
      fs.mkdirSync(path.join(app, "releases", release), { recursive: true });
      fs.writeFileSync(path.join(app, "releases", release, "server.js"), APP);
      fs.writeFileSync(path.join(app, "releases", release, "package.json"), '{"type":"module"}\n');
    }

    await run(bin, ["up", "--detach"], { cwd: app, env, timeout: 60_000 });
    await run(bin, ["deploy", "web", "--release", "v1"], { cwd: app, env, timeout: 60_000 });
    assert.deepEqual(await get(proxyPort, "/"), { status: 200, body: "hello from v1" });
    await run(bin, ["deploy", "web", "--release", "v2"], { cwd: app, env, timeout: 60_000 });
    assert.deepEqual(await get(proxyPort, "/"), { status: 200, body: "hello from v2" });
    const status = JSON.parse((await run(bin, ["status", "--json"], { cwd: app, env })).stdout) as { services: Array<{ name: string; release: string }> };
    assert.equal(status.services.find((s) => s.name === "web")?.release, "v2");
    // The dashboard's files, Preact and htm among them, resolve from the installed package.
    for (const p of ["/ui/", "/ui/app.js", "/ui/vendor/preact.mjs", "/ui/vendor/hooks.mjs", "/ui/vendor/htm.mjs"]) assert.equal((await get(agentPort, p)).status, 200, p);

    await run(bin, ["down"], { cwd: app, env, timeout: 60_000 });
    await assert.rejects(get(proxyPort, "/"), "nothing listens after down");
  });
});
