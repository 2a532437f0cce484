// The proxy as a real OS process: spawned detached, adopted, killed, restarted. (Its workers:
// supervisor.test.ts.)

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, describe, it } from "node:test";
import { isTurquoiseError } from "../../src/errors.js";
import { connectProxy, spawnProxy, stopProxy } from "../../src/proxy/builtin.js";
import { PROXY_INFO_FILE } from "../../src/proxy/server.js";
import { pidAlive } from "../../src/util/proc.js";
import { type TestUpstream, json, request, route, sleep, startUpstream, table } from "./helpers.js";

const BUILTIN_JS = fileURLToPath(new URL("../../src/proxy/builtin.js", import.meta.url));
const MAIN_JS = fileURLToPath(new URL("../../src/proxy/main.js", import.meta.url));

const alive = pidAlive;

async function waitDead(pid: number, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (alive(pid)) {
    if (Date.now() > deadline) throw new Error(`pid ${pid} still alive after ${timeoutMs} ms`);
    await sleep(20);
  }
}

function run(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [file, ...args], { timeout: 15_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

async function freePort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe("proxy process", { timeout: 60_000 }, () => {
  const pids = new Set<number>();
  const dirs: string[] = [];
  const upstreams: TestUpstream[] = [];
  const tempDir = async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "turquoise-proxy-proc-"));
    dirs.push(dir);
    return dir;
  };
  after(async () => {
    for (const pid of pids) if (alive(pid)) process.kill(pid, "SIGKILL");
    await Promise.all(upstreams.map((u) => u.close()));
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  it("restores its table after SIGKILL: a new process serves the same routes without a new apply", async () => {
    const stateDir = await tempDir();
    const u = await startUpstream("persisted");
    upstreams.push(u);
    const port = await freePort();
    const first = await spawnProxy({ stateDir, listenHost: "127.0.0.1", listenPort: port });
    pids.add(first.pid);
    assert.equal(first.listenPort, port);
    await first.proxy.apply(table(7, route("books", "books:blue", [u.upstream], { pathPrefix: "/books" })));
    assert.equal(json((await request(`http://127.0.0.1:${port}/books/1`))).id, "persisted");

    // The supervisor, and with it its workers (and spare): they stop on losing it.
    const workers = (await first.proxy.health()).workers ?? [];
    assert.ok(workers.length >= 1);
    process.kill(first.pid, "SIGKILL");
    await waitDead(first.pid);
    for (const w of workers) await waitDead(w.pid);
    await assert.rejects(request(`http://127.0.0.1:${port}/books/1`));
    assert.equal(await connectProxy(stateDir), undefined, "a dead pid is not adopted");

    const second = await spawnProxy({ stateDir, listenHost: "127.0.0.1", listenPort: port });
    pids.add(second.pid);
    assert.notEqual(second.pid, first.pid);
    const r = await request(`http://127.0.0.1:${port}/books/1`);
    assert.equal(r.status, 200);
    assert.equal(json(r).id, "persisted");
    assert.equal((await second.proxy.stats()).tableVersion, 7);
    assert.equal(await stopProxy(stateDir), true);
  });

  it("connectProxy adopts a running proxy and finds none where none runs", async () => {
    const stateDir = await tempDir();
    assert.equal(await connectProxy(stateDir), undefined);
    const spawned = await spawnProxy({ stateDir, listenHost: "127.0.0.1", listenPort: 0 });
    pids.add(spawned.pid);
    const adopted = await connectProxy(stateDir);
    assert.ok(adopted);
    assert.equal(adopted.pid, spawned.pid);
    assert.equal(adopted.listenPort, spawned.listenPort);
    await adopted.proxy.apply(table(1, route("s", "s:1", [])));
    assert.equal((await spawned.proxy.stats()).tableVersion, 1);
    await assert.rejects(spawnProxy({ stateDir, listenHost: "127.0.0.1", listenPort: 0 }), /already running/);
    assert.equal(await stopProxy(stateDir), true);
    await waitDead(spawned.pid);
    assert.equal(await connectProxy(stateDir), undefined);
    assert.equal(await stopProxy(stateDir), false);
  });

  it("keeps serving after the process that spawned it is gone, in its own process group", async () => {
    const stateDir = await tempDir();
    const u = await startUpstream("orphan");
    upstreams.push(u);
    const script = path.join(stateDir, "spawner.mjs");
    await writeFile(
      script,
      `import { spawnProxy } from ${JSON.stringify(BUILTIN_JS)};
const p = await spawnProxy({ stateDir: process.argv[2], listenHost: "127.0.0.1", listenPort: 0 });
await p.proxy.apply(JSON.parse(process.argv[3]));
console.log(JSON.stringify({ pid: p.pid, listenPort: p.listenPort, spawner: process.pid }));
`,
    );
    const out = await run(script, [stateDir, JSON.stringify(table(1, route("o", "o:1", [u.upstream])))]);
    assert.equal(out.code, 0, out.stderr);
    const { pid, listenPort, spawner } = JSON.parse(out.stdout) as { pid: number; listenPort: number; spawner: number };
    pids.add(pid);
    assert.equal(alive(spawner), false);
    assert.equal(alive(pid), true);
    const pgrp = Number((await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1]!.split(" ")[2]);
    assert.equal(pgrp, pid, "the proxy leads its own process group");
    const r = await request(`http://127.0.0.1:${listenPort}/`);
    assert.equal(json(r).id, "orphan");
    assert.equal((await connectProxy(stateDir))?.pid, pid);
    assert.equal(await stopProxy(stateDir), true);
  });

  it("on SIGTERM finishes in-flight requests, removes proxy.json and exits 0", async () => {
    const stateDir = await tempDir();
    const slow = await startUpstream("slow", (_req, res) => setTimeout(() => res.end("finished"), 300));
    upstreams.push(slow);
    const spawned = await spawnProxy({ stateDir, listenHost: "127.0.0.1", listenPort: 0 });
    pids.add(spawned.pid);
    await spawned.proxy.apply(table(1, route("slow", "slow:1", [slow.upstream])));
    const inFlight = request(`http://127.0.0.1:${spawned.listenPort}/`);
    await sleep(50);
    const stopped = stopProxy(stateDir);
    const r = await inFlight;
    assert.equal(r.status, 200);
    assert.equal(r.text, "finished");
    assert.equal(await stopped, true);
    assert.equal(alive(spawned.pid), false);
    await assert.rejects(stat(path.join(stateDir, PROXY_INFO_FILE)), /ENOENT/);
    assert.match(await readFile(path.join(stateDir, "proxy.log"), "utf8"), /SIGTERM[\s\S]*stopped/);
  });

  it("fails to start with a CONFLICT naming the address when the port is taken; its log keeps the detail", async () => {
    const stateDir = await tempDir();
    const blocker = http.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    try {
      const port = (blocker.address() as AddressInfo).port;
      await assert.rejects(spawnProxy({ stateDir, listenHost: "127.0.0.1", listenPort: port }), (e: Error) => {
        assert.ok(isTurquoiseError(e) && e.code === "CONFLICT", String(e));
        assert.equal(e.message, `the proxy cannot listen on 127.0.0.1:${port}: address in use`);
        return true;
      });
      assert.match(await readFile(path.join(stateDir, "proxy.log"), "utf8"), /EADDRINUSE/);
    } finally {
      blocker.close();
    }
  });

  it("refuses to start without a token file", async () => {
    const stateDir = await tempDir();
    const out = await run(MAIN_JS, ["--state-dir", stateDir, "--listen", "127.0.0.1:0"]);
    assert.equal(out.code, 2);
    assert.match(out.stderr, /no API token at .*token/);
  });
});
