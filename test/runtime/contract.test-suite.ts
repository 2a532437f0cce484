// The shared Runtime suite: every runtime (process, docker, swarm, memory) calls runRuntimeContract with
// its own factory. A new runtime is done when this suite passes against it.

import assert from "node:assert/strict";
import { dirname } from "node:path";
import { afterEach, beforeEach, describe, test } from "node:test";
import type { ExitEvent, InstanceInfo, Runtime, StartRequest } from "../../src/runtime/contract.js";
import { newInstanceId } from "../../src/runtime/identity.js";
import { ECHO_APP, getEnv, getJson, waitFor, waitReachable } from "./helpers.js";

export interface RuntimeUnderTest {
  runtime: Runtime;
  /** The agent id the runtime marks its instances with (TURQUOISE_AGENT). */
  agentId: string;
  /**
   * Another runtime of the same kind, as a restarted agent would make it: with agentId (default:
   * the same one), nothing tracked, nothing adopted. cleanup() lets go of it too.
   */
  peer(agentId?: string): Runtime;
  cleanup(): Promise<void>;
  /**
   * How this runtime runs test/fixtures/echo-app.mjs; by default the host's node with the file in place.
   * image: for runtimes that run images (docker); a missing release is then a missing image, not a missing directory.
   */
  echoApp?: { command: string[]; cwd: string; image?: string };
}

export function runRuntimeContract(name: string, makeRuntime: () => Promise<RuntimeUnderTest>): void {
  describe(`Runtime contract: ${name}`, () => {
    let under: RuntimeUnderTest;
    let runtime: Runtime;
    let exits: ExitEvent[];

    beforeEach(async () => {
      under = await makeRuntime();
      runtime = under.runtime;
      exits = [];
      runtime.onExit((e) => exits.push(e));
    });

    afterEach(async () => {
      for (const instance of await runtime.list()) await runtime.stop(instance, 1_000);
      await under.cleanup();
    });

    function echo(overrides: Partial<StartRequest> = {}): StartRequest {
      const app = under.echoApp ?? { command: [process.execPath, ECHO_APP], cwd: dirname(ECHO_APP) };
      const req = {
        service: "books",
        slot: "green" as const,
        release: "v2",
        command: app.command,
        cwd: app.cwd,
        ...(app.image === undefined ? {} : { image: app.image }),
        env: {},
        apiUrl: "http://127.0.0.1:7070",
        ...overrides,
      };
      return { id: newInstanceId(req.service, req.slot), ...req };
    }

    const exitsOf = (instance: InstanceInfo) => exits.filter((e) => e.instance.id === instance.id);
    const logsInclude = (instance: InstanceInfo, text: string) =>
      waitFor(`"${text}" in the logs of ${instance.id}`, async () => (await runtime.logs(instance)).includes(text));

    test("start gives a reachable loopback port and pushes the facts through the environment", async () => {
      process.env.TURQUOISE_AGENT_ONLY = "must not leak";
      let info: InstanceInfo;
      const req = echo({ env: { GREETING: "hello", PORT: "1", TURQUOISE_INSTANCE: "forged", TURQUOISE_AGENT: "forged" } });
      try {
        info = await runtime.start(req);
      } finally {
        delete process.env.TURQUOISE_AGENT_ONLY;
      }
      assert.ok(info.host.length > 0 && info.port > 0);
      assert.equal(info.id, req.id, "the instance keeps the id it was recorded under before it started");
      assert.deepEqual([info.service, info.slot, info.release], ["books", "green", "v2"]);
      assert.ok(info.ref.length > 0);
      assert.ok(Math.abs(Date.now() - info.startedAt) < 10_000);

      const reply = await waitReachable(info);
      // PORT and HOST are what the app binds to, which a container runtime maps to info's address.
      const { PORT, HOST, ...facts } = reply.env;
      assert.match(PORT ?? "", /^\d+$/);
      assert.notEqual(PORT, "1", "the runtime's PORT must win over the service's own env");
      assert.ok(HOST);
      // Nothing else named TURQUOISE_* gets in.
      assert.deepEqual(facts, {
        GREETING: "hello",
        TURQUOISE_SERVICE: "books",
        TURQUOISE_SLOT: "green",
        TURQUOISE_RELEASE: "v2",
        TURQUOISE_API: "http://127.0.0.1:7070",
        // Its marks, which the service's env cannot change: how a restarted agent or `down` knows it.
        TURQUOISE_INSTANCE: info.id,
        TURQUOISE_AGENT: under.agentId,
      });
      assert.deepEqual(await runtime.inspect(info), { running: true });
      assert.deepEqual((await runtime.list()).map((i) => i.id), [info.id]);
    });

    test("an instance gets none of the agent's environment but the variables envPassthrough names", async () => {
      // What an agent may have been started with: other services' database URLs, cloud credentials.
      const agentOnly = { AWS_SECRET_ACCESS_KEY: "forged-secret-for-the-test", OTHER_DATABASE_URL: "postgres://other:secret@db/other", AWS_REGION: "eu-north-1" };
      Object.assign(process.env, agentOnly);
      let plain: InstanceInfo;
      let passing: InstanceInfo;
      try {
        plain = await runtime.start(echo());
        // Another slot: a runtime with slots (swarm) runs one spec per slot, so other settings go elsewhere.
        passing = await runtime.start(echo({ slot: "blue", envPassthrough: ["AWS_REGION", "TURQUOISE_TEST_UNSET"], env: { GREETING: "hi" } }));
      } finally {
        for (const name of Object.keys(agentOnly)) delete process.env[name];
      }
      const plainEnv = await getEnv(plain);
      for (const name of Object.keys(agentOnly)) assert.equal(plainEnv[name], undefined, `${name} leaked into the instance`);
      const passingEnv = await getEnv(passing);
      assert.equal(passingEnv.AWS_REGION, "eu-north-1");
      assert.equal(passingEnv.GREETING, "hi");
      assert.equal(passingEnv.AWS_SECRET_ACCESS_KEY, undefined);
      assert.equal(passingEnv.OTHER_DATABASE_URL, undefined);
      assert.ok(!("TURQUOISE_TEST_UNSET" in passingEnv), "a variable the agent lacks is skipped, not set empty");
    });

    test("logs capture stdout and stderr and tail the last lines", async () => {
      const info = await runtime.start(echo());
      await logsInclude(info, "listening on");
      await logsInclude(info, "stderr works too");
      const last = await runtime.logs(info, { tailLines: 1 });
      assert.equal(last.trimEnd().split("\n").length, 1);
    });

    test("stop sends SIGTERM and a graceful app exits by itself (killed: false)", async () => {
      const info = await runtime.start(echo());
      await waitReachable(info);
      const result = await runtime.stop(info, 5_000);
      assert.deepEqual(result, { killed: false });
      assert.match(await runtime.logs(info), /SIGTERM received, shutting down/);
      assert.deepEqual(await runtime.inspect(info), { running: false, exitCode: 0, signal: null });
      assert.deepEqual(await runtime.list(), []);
      await assert.rejects(getJson(info.host, info.port), /ECONNREFUSED/);
      await waitFor("the exit event", async () => exitsOf(info).length === 1);
      assert.equal(exitsOf(info)[0]!.exitCode, 0);
    });

    test("an app that ignores SIGTERM is SIGKILLed after the stop timeout (killed: true)", async () => {
      const info = await runtime.start(echo({ env: { IGNORE_SIGTERM: "1" } }));
      await waitReachable(info);
      const startedAt = Date.now();
      const result = await runtime.stop(info, 300);
      const tookMs = Date.now() - startedAt;
      assert.deepEqual(result, { killed: true });
      assert.ok(tookMs >= 290 && tookMs < 3_000, `stop took ${tookMs}ms`);
      assert.match(await runtime.logs(info), /SIGTERM received, ignoring it/);
      await waitFor("the exit event", async () => exitsOf(info).length === 1);
      assert.equal(exitsOf(info)[0]!.signal, "SIGKILL");
    });

    test("onExit fires once, with the exit code, for an instance that exits by itself", async (t) => {
      if (runtime.slots) return t.skip("this runtime restarts its instances itself: the next test says what it does instead");
      const info = await runtime.start(echo({ env: { EXIT_AT_ONCE: "1" } }));
      await waitFor("the exit event", async () => exitsOf(info).length > 0);
      assert.equal(exitsOf(info)[0]!.exitCode, 3);
      assert.equal(exitsOf(info)[0]!.instance.id, info.id);
      assert.equal(exitsOf(info)[0]!.restarting, undefined);
      assert.deepEqual(await runtime.inspect(info), { running: false, exitCode: 3, signal: null });
      assert.match(await runtime.logs(info), /EXIT_AT_ONCE is set/);
      assert.deepEqual(await runtime.list(), []);
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(exitsOf(info).length, 1);
    });

    test("slots: an instance that exits by itself is restarted by the runtime under its id, and a stop ends it for good", async (t) => {
      const slots = runtime.slots;
      if (!slots) return t.skip("this runtime leaves replacing instances to the agent: the test above says what it does");
      const restarts: InstanceInfo[] = [];
      slots.onRestarted((e) => restarts.push(e.instance));
      const info = await runtime.start(echo({ env: { EXIT_AT_ONCE: "1" } }));
      await waitFor("the exit event", async () => exitsOf(info).length > 0, 20_000);
      assert.equal(exitsOf(info)[0]!.exitCode, 3);
      assert.equal(exitsOf(info)[0]!.restarting, true, "the exit says the runtime brings it back");
      assert.match(await runtime.logs(info), /EXIT_AT_ONCE is set/);
      await waitFor("its next run", async () => restarts.some((r) => r.id === info.id), 30_000);
      const again = restarts.find((r) => r.id === info.id)!;
      assert.deepEqual([again.service, again.slot, again.release], [info.service, info.slot, info.release]);
      assert.ok(again.port > 0);
      assert.deepEqual((await runtime.list()).map((i) => i.id), [info.id], "between runs it is still the slot's");
      const startedAt = Date.now();
      assert.deepEqual(await runtime.stop(info, 10_000), { killed: false });
      assert.ok(Date.now() - startedAt < 8_000, "it did not wait out the 10 s stop timeout");
      assert.deepEqual(await runtime.list(), []);
      const final = exitsOf(info).filter((e) => !e.restarting);
      assert.equal(final.length, 1, "one exit for good");
      const restartsAtStop = restarts.length;
      // Longer than the runtime's restart delay: a stopped instance is never brought back.
      await new Promise((resolve) => setTimeout(resolve, 2_500));
      assert.equal(restarts.length, restartsAtStop);
      assert.equal(exitsOf(info).filter((e) => !e.restarting).length, 1);
    });

    test("stopping an instance that already exited resolves at once", async () => {
      const info = await runtime.start(echo({ env: { EXIT_AT_ONCE: "1" } }));
      await waitFor("the exit event", async () => exitsOf(info).length > 0, 20_000);
      const startedAt = Date.now();
      assert.deepEqual(await runtime.stop(info, 10_000), { killed: false });
      assert.ok(Date.now() - startedAt < 5_000, "it did not wait out the 10 s stop timeout");
      assert.equal(exitsOf(info).filter((e) => !e.restarting).length, 1);
    });

    test("a missing working directory (or image) is a clear error naming it and the release", async () => {
      const missing = under.echoApp?.image
        ? { overrides: { image: "turquoise-test-missing:v9" }, named: /"turquoise-test-missing:v9"/, why: /is not present locally/ }
        : { overrides: { cwd: "/nonexistent/turquoise-test/releases/v9" }, named: /\/nonexistent\/turquoise-test\/releases\/v9/, why: /does not exist/ };
      await assert.rejects(runtime.start(echo({ ...missing.overrides, release: "v9" })), (e: Error) => {
        assert.match(e.message, missing.named);
        assert.match(e.message, /\bv9\b/);
        assert.match(e.message, missing.why);
        return true;
      });
      assert.deepEqual(await runtime.list(), []);
    });

    test("a missing executable is a clear error naming the command", async () => {
      await assert.rejects(runtime.start(echo({ command: ["turquoise-no-such-command", "--port"] })), (e: Error) => {
        assert.match(e.message, /"turquoise-no-such-command"/);
        assert.match(e.message, /not found/);
        return true;
      });
      assert.deepEqual(await runtime.list(), []);
    });

    test("list filters by service", async () => {
      const books = await runtime.start(echo({ service: "books" }));
      const authors = await runtime.start(echo({ service: "authors", slot: "blue" }));
      assert.deepEqual((await runtime.list("books")).map((i) => i.id), [books.id]);
      assert.deepEqual((await runtime.list("authors")).map((i) => i.id), [authors.id]);
      assert.deepEqual((await runtime.list()).map((i) => i.id).sort(), [authors.id, books.id].sort());
      assert.deepEqual(await runtime.list("nobody"), []);
    });

    test("discover finds an instance by its marks alone; a runtime of the same agent stops it, another agent's finds nothing", async (t) => {
      if (!runtime.discover) return t.skip("this runtime cannot find its instances without a record");
      const info = await runtime.start(echo());
      await waitReachable(info);
      const stranger = under.peer(`${under.agentId}-other`);
      assert.deepEqual((await stranger.discover!()).filter((i) => i.id === info.id), [], "another agent's instance");

      // A restarted agent that never recorded it: nothing tracked, nothing adopted.
      const restarted = under.peer();
      const found = (await restarted.discover!()).filter((i) => i.id === info.id);
      assert.equal(found.length, 1);
      const [f] = found as [InstanceInfo];
      assert.deepEqual([f.service, f.slot, f.release, f.ref, f.port], [info.service, info.slot, info.release, info.ref, info.port]);
      const r = await restarted.stop(f, 5_000);
      assert.equal(r.refused, undefined, `the stop was refused: ${r.refused}`);
      await assert.rejects(getJson(info.host, info.port), /ECONNREFUSED|ECONNRESET|socket hang up/);
      // Docker: the runtime that started it may still be removing the dead container.
      await waitFor("nothing of it to be found", async () => (await restarted.discover!()).every((i) => i.id !== info.id));
      await waitFor("the exit event on the runtime that started it", async () => exitsOf(info).length === 1);
    });

    test("signal delivers a signal to the instance", async () => {
      const info = await runtime.start(echo());
      await waitReachable(info);
      await runtime.signal(info, "SIGUSR2");
      await logsInclude(info, "SIGUSR2 received");
      assert.deepEqual(await runtime.inspect(info), { running: true });
    });
  });
}
