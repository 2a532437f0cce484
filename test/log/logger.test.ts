// The logger itself, pino and pino-pretty included: the shape of a line, levels, events, the format
// for a terminal and for a file, and that no secret gets through, whatever field it comes in.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { componentOf, levelOf } from "../../src/log/events.js";
import { readableLine } from "../../src/log/pretty.js";
import { captureLog } from "../support/logs.js";

const ISO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

describe("a log line", () => {
  it("is one JSON object with time, level, component, service, event and message, data only when given", () => {
    const log = captureLog("agent");
    log.logger.info("agent.listening", "agent (pid 1) API on http://127.0.0.1:4700");
    log.logger.child("deploy").warn("deploy.reverted", "deploy of books v2 reverted", { service: "books", data: { release: "v2" } });
    assert.equal(log.lines.length, 2);
    const [a, b] = log.records();
    assert.deepEqual(Object.keys(a!), ["level", "time", "pid", "hostname", "component", "service", "event", "message"]);
    assert.match(a!.time, ISO_TIME);
    assert.equal(a!.pid, process.pid);
    assert.deepEqual({ ...a, time: "", hostname: "" }, { level: "info", time: "", pid: process.pid, hostname: "", component: "agent", service: null, event: "agent.listening", message: "agent (pid 1) API on http://127.0.0.1:4700" });
    assert.deepEqual({ level: b!.level, component: b!.component, service: b!.service, event: b!.event, data: b!.data }, { level: "warn", component: "deploy", service: "books", event: "deploy.reverted", data: { release: "v2" } });
  });

  it("an agent event keeps its name, and its type says its component and level", () => {
    const log = captureLog("agent");
    log.logger.event("books", "deploy.failed", "deploy of books v2 failed", { release: "v2" });
    log.logger.event("books", "check.changed", "books-blue-1 passing → critical");
    log.logger.event(null, "stream.dropped", "a client fell behind");
    log.logger.event(null, "records.moved", "moved 2 record(s)");
    assert.deepEqual(log.records().map((r) => [r.component, r.level, r.service, r.event]), [
      ["deploy", "error", "books", "deploy.failed"],
      ["health", "info", "books", "check.changed"],
      ["api", "warn", null, "stream.dropped"],
      ["agent", "info", null, "records.moved"],
    ]);
  });

  it("is left out below the level set, and costs nothing to leave out", () => {
    const log = captureLog("agent", { level: "warn", format: "json" });
    let built = 0;
    const data = { get expensive() { built++; return 1; } };
    log.logger.debug("x.debug", "d", { data });
    log.logger.info("x.info", "i", { data });
    log.logger.warn("x.warn", "w");
    log.logger.error("x.error", "e");
    log.logger.event(null, "check.changed", "an info event");
    log.logger.event(null, "heal.failed", "an error event");
    assert.deepEqual(log.records().map((r) => r.event), ["x.warn", "x.error", "heal.failed"]);
    assert.equal(built, 0);
    assert.equal(log.logger.isEnabled("info"), false);
    const all = captureLog("agent", { level: "debug", format: "json" });
    all.logger.debug("x.debug", "d");
    assert.deepEqual(all.records().map((r) => r.level), ["debug"]);
  });

  it("cannot be forged into two lines by a message with line breaks or control characters", () => {
    const forged = 'ok\n{"level":"error","time":"2020-01-01T00:00:00.000Z","component":"agent","service":null,"event":"x","message":"forged"}\r\n\u2028\x1b[31m';
    for (const format of ["json", "pretty"] as const) {
      const log = captureLog("agent", { level: "info", format });
      log.logger.info("x.y", forged, { service: "books\nevil" });
      assert.equal(log.lines.length, 1, log.lines.join("\n---\n"));
      assert.doesNotMatch(log.lines[0]!, /\x1b|\u2028|\r/);
      if (format === "json") {
        const [r] = log.records();
        assert.equal(r!.message, 'ok\\n{"level":"error","time":"2020-01-01T00:00:00.000Z","component":"agent","service":null,"event":"x","message":"forged"}\\r\\n\\u2028\\u001b[31m');
        assert.equal(r!.service, "books\\nevil");
      }
    }
  });

  it("holds a huge message cut to a bounded length", () => {
    const log = captureLog("agent");
    log.logger.info("x.y", "z".repeat(5_000_000), { data: { output: "o".repeat(5_000_000) } });
    assert.equal(log.lines.length, 1);
    assert.ok(log.lines[0]!.length < 20_000, `${log.lines[0]!.length} characters`);
    const [r] = log.records();
    assert.match(r!.message, /… \(cut from 5000000 characters\)$/);
    assert.match(String(r!.data!.output), /… \(cut from 5000000 characters\)$/);
  });
});

describe("redaction", () => {
  // Secrets as they come: with punctuation, URL-unsafe and JSON-unsafe characters.
  const secret = fc.string({ unit: fc.constantFrom(..."abcXYZ0189-_.~!$%&*+/=?@#:;,\"'\\ "), minLength: 8, maxLength: 40 }).filter((s) => s.trim().length >= 8);
  const place = fc.constantFrom("message", "service", "event", "data", "nested", "array", "key", "error", "url", "env", "header");

  it("keeps a known secret out of the output, whatever field or message carries it, in JSON and pretty alike", () => {
    fc.assert(
      fc.property(secret, place, fc.constantFrom("json" as const, "pretty" as const), (s, where, format) => {
        const log = captureLog("agent", { level: "debug", format });
        log.logger.scrubber.add([s]);
        const around = (x: string) => `before ${x} after`;
        const fields = {
          service: where === "service" ? around(s) : "books",
          data: {
            ...(where === "data" ? { output: around(s) } : {}),
            ...(where === "nested" ? { a: { b: { c: around(s) } } } : {}),
            ...(where === "array" ? { list: ["x", around(s)] } : {}),
            ...(where === "key" ? { [s]: 1 } : {}),
            ...(where === "error" ? { error: new Error(around(s)) } : {}),
          },
        };
        const message = where === "message" ? around(s) : where === "url" ? `postgres://u:${encodeURIComponent(s)}@db/x` : "m";
        const event = where === "event" ? around(s) : "x.y";
        log.logger.warn(event, message, fields);
        if (where === "env") log.logger.info("x.env", `EXTRA_TOKEN=${s}`);
        if (where === "header") log.logger.info("x.header", "h", { data: { headers: { "X-Anything": s } } });
        const out = log.lines.join("\n");
        for (const form of [s, JSON.stringify(s).slice(1, -1), encodeURIComponent(s)]) assert.ok(!out.includes(form), `${where}/${format}: ${JSON.stringify(form)} in ${out}`);
        // It was there to be kept out (pretty leaves data out altogether).
        if (format === "json" || !["data", "nested", "array", "key", "error", "header"].includes(where)) assert.match(out, /\[redacted\]|\*\*\*/);
      }),
      { numRuns: 300 },
    );
  });

  it("redacts secret-named fields and URL passwords it was never told about", () => {
    const log = captureLog("agent");
    log.logger.info("x.y", "connecting to postgres://books:never-told@db/books", { data: { env: { DATABASE_URL: "sqlite://x.db", GITHUB_TOKEN: "ghp_abcdef" }, headers: { authorization: "Basic dTpw" } } });
    const out = log.lines[0]!;
    for (const s of ["never-told", "sqlite://x.db", "ghp_abcdef", "dTpw"]) assert.ok(!out.includes(s), `${s} in ${out}`);
  });
});

describe("format", () => {
  it("auto is pretty on a terminal and JSON lines into a file or a pipe", () => {
    const tty = captureLog("agent", { level: "info", format: "auto" }, true);
    tty.logger.warn("deploy.reverted", "reverted", { service: "books" });
    assert.equal(tty.lines.length, 1);
    // pino-pretty colours on a terminal; a person sees time, level, component, service, event and message.
    const plain = tty.lines[0]!.replace(/\x1b\[[0-9;]*m/g, "");
    assert.match(plain, /^\[\d\d:\d\d:\d\d\.\d{3}\] WARN: agent books deploy\.reverted: reverted$/);
    const piped = captureLog("agent", { level: "info", format: "auto" }, false);
    piped.logger.warn("deploy.reverted", "reverted", { service: "books" });
    assert.equal(piped.records()[0]!.event, "deploy.reverted");
  });

  it("json and pretty are what they say, terminal or not", () => {
    const json = captureLog("agent", { level: "info", format: "json" }, true);
    json.logger.info("a.b", "m");
    assert.equal(json.records()[0]!.message, "m");
    const pretty = captureLog("agent", { level: "info", format: "pretty" }, false);
    pretty.logger.info("a.b", "m");
    assert.match(pretty.lines[0]!, /^\[[^\]]+\] INFO: agent - a\.b: m$/);
  });
});

describe("readableLine", () => {
  it("shows a JSON line as a person reads it, and any other line as it is", () => {
    const line = JSON.stringify({ level: "error", time: "2026-05-01T10:00:00.000Z", pid: 1, hostname: "h", component: "agent", service: null, event: "agent.failed", message: "the agent cannot listen on 127.0.0.1:4700: address in use", data: { code: "CONFLICT" } });
    assert.match(readableLine(line), /^\[2026-05-0\d \d\d:\d\d:\d\d\.000\] ERROR: agent - agent\.failed: the agent cannot listen on 127\.0\.0\.1:4700: address in use$/);
    for (const other of ["Debugger listening on ws://127.0.0.1:9229/x", '{"not":"a log line"}', "[10:00:00.000] INFO: agent - a.b: already pretty", ""]) assert.equal(readableLine(other), other);
  });
});

describe("events.ts", () => {
  it("places every event type the agent records", () => {
    const table: Array<[string, string, string]> = [
      ["deploy.started", "deploy", "info"], ["rollback.succeeded", "deploy", "info"], ["deploy.failed", "deploy", "error"], ["deploy.reverted", "deploy", "warn"],
      ["flip.reverted", "deploy", "warn"], ["drain.cut", "deploy", "warn"], ["lock.lost", "deploy", "warn"], ["lock.error", "deploy", "error"], ["recovered", "deploy", "info"], ["route.error", "deploy", "error"], ["retire.error", "deploy", "error"], ["warm.error", "deploy", "error"],
      ["heal.scheduled", "heal", "info"], ["heal.failed", "heal", "error"], ["instance.replaced", "heal", "info"], ["instance.exited", "heal", "warn"], ["service.degraded", "heal", "warn"],
      ["check.changed", "health", "info"], ["migrate", "migrate", "info"], ["watch.handler", "watch", "info"], ["watch.error", "watch", "error"],
      ["proxy.restarted", "proxy", "info"], ["proxy.restart-failed", "proxy", "error"], ["stream.dropped", "api", "warn"],
      ["instance.orphan", "agent", "warn"], ["instance.orphan-stop-failed", "agent", "error"], ["record.invalid", "agent", "warn"], ["service.held", "agent", "warn"],
    ];
    assert.deepEqual(table.map(([t]) => [t, componentOf(t), levelOf(t)]), table);
  });
});
