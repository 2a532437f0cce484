// The shared HTTP syntax helpers: the head-end search against Buffer.indexOf, and NameTable.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { Events } from "../../src/proxy/client-server.js";
import { headEnd, NameTable, sameBytesAt } from "../../src/proxy/http-syntax.js";

const CRLF_CRLF = Buffer.from("\r\n\r\n", "latin1");

describe("headEnd", () => {
  it("finds what Buffer.indexOf finds, from any start, in bytes dense with CR and LF", () => {
    // Mostly CR, LF and one other byte: every near miss of the pattern (CR CR LF, LF CR LF...) occurs.
    const bytes = fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a.map((b) => [13, 10, 13, 10, 65][b % 5]!)));
    fc.assert(
      fc.property(bytes, fc.nat(70), (buf, from) => {
        assert.equal(headEnd(buf, from), buf.indexOf(CRLF_CRLF, from));
      }),
      { numRuns: 20_000 },
    );
  });

  it("finds the end of real heads, and nothing in a head not yet ended", () => {
    const head = "GET /a HTTP/1.1\r\nHost: h\r\nX: y\r\n\r\n";
    for (const text of [head, `${head}GET /b HTTP/1.1\r\n`, "\r\n\r\n", "a\r\n\r\n", "ab\r\n\r\n", "abc\r\n\r\n"]) {
      const buf = Buffer.from(text, "latin1");
      assert.equal(headEnd(buf), text.indexOf("\r\n\r\n"), JSON.stringify(text));
    }
    for (const text of ["", "\r", "\r\n", "\r\n\r", "GET / HTTP/1.1\r\nHost: h\r\n", "x\n\r\n\r\n".slice(0, 4)]) {
      assert.equal(headEnd(Buffer.from(text, "latin1")), -1, JSON.stringify(text));
    }
  });
});

describe("sameBytesAt", () => {
  it("agrees with Buffer.compare at any start, out of bounds included", () => {
    // Few distinct bytes, so that equal runs are common and a difference can sit anywhere.
    const bytes = fc.uint8Array({ maxLength: 24 }).map((a) => Buffer.from(a.map((b) => b % 3)));
    fc.assert(
      fc.property(bytes, bytes, fc.integer({ min: -2, max: 30 }), (buf, want, start) => {
        const expected = start >= 0 && start + want.length <= buf.length && want.compare(buf, start, start + want.length) === 0;
        assert.equal(sameBytesAt(buf, start, want), expected);
      }),
      { numRuns: 5_000 },
    );
  });
});

describe("NameTable", () => {
  it("finds a name in any case by its bounds, and only a whole name", () => {
    const t = new NameTable(["host", "content-length", "te"]);
    const text = "Host: a\r\nCONTENT-length: 1\r\nTe: x\r\nHosts: b\r\nTE2: c";
    assert.equal(t.find(text, 0, 4), "host");
    assert.equal(t.find(text, 9, 23), "content-length");
    assert.equal(t.find(text, 28, 30), "te");
    assert.equal(t.find(text, 35, 40), undefined);
    assert.equal(t.find(text, 45, 48), undefined);
  });
});

describe("the events of the client server's requests and answers", () => {
  it("calls listeners in order with the object as this, once-listeners once, and removes the last added", () => {
    const e = new Events();
    const calls: string[] = [];
    const a = function (this: unknown, x: number): void {
      assert.equal(this, e);
      calls.push(`a${x}`);
    };
    const b = (x: number): void => void calls.push(`b${x}`);
    assert.equal(e.emit("close", 0), false, "no listener: nothing to call");
    e.on("close", a).once("close", b).on("drain", b).on("close", a);
    assert.equal(e.listenerCount("close"), 3);
    assert.equal(e.emit("close", 1), true);
    assert.deepEqual(calls, ["a1", "b1", "a1"]);
    e.off("close", a);
    e.emit("close", 2);
    assert.deepEqual(calls.slice(3), ["a2"]);
    e.emit("drain", 3);
    assert.deepEqual(calls.slice(4), ["b3"]);
  });

  it("a listener added or removed during an emit takes effect from the next one", () => {
    const e = new Events();
    const calls: string[] = [];
    const late = (): void => void calls.push("late");
    const first = (): void => {
      calls.push("first");
      e.on("x", late);
      e.off("x", second);
    };
    const second = (): void => void calls.push("second");
    e.on("x", first).on("x", second);
    e.emit("x");
    assert.deepEqual(calls, ["first", "second"]);
    e.emit("x");
    assert.deepEqual(calls, ["first", "second", "first", "late"]);
  });
});
