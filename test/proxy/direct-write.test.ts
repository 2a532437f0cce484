// Whole messages written past the Writable (src/proxy/direct-write.ts): the direct path is really
// taken on this Node, bytes keep their order against socket.write() when the kernel's buffer fills
// and a write waits in libuv, the callback comes on a later tick and only once the bytes are out,
// and a write to a dead socket destroys it with Node's own error instead of throwing.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import net, { type AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { directWrites, writeBytes, writeLatin1 } from "../../src/proxy/direct-write.js";
import { sleep } from "./helpers.js";

interface Pair {
  client: net.Socket;
  /** The accepted side, paused: it reads only when the test says so. */
  peer: net.Socket;
  received(): Promise<Buffer>;
}

/** Counts the socket's write() calls from now on: how many messages went through its Writable. */
function countWrites(socket: net.Socket): () => number {
  let n = 0;
  const write = socket.write.bind(socket);
  socket.write = ((...args: Parameters<net.Socket["write"]>) => {
    n++;
    return write(...args);
  }) as net.Socket["write"];
  return () => n;
}

describe("writeLatin1 and writeBytes", { timeout: 60_000 }, () => {
  let server: net.Server;
  let accepted: ((s: net.Socket) => void) | undefined;

  before(async () => {
    server = net.createServer((s) => {
      s.pause();
      accepted?.(s);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  async function pair(): Promise<Pair> {
    const peerP = new Promise<net.Socket>((resolve) => (accepted = resolve));
    const client = net.connect((server.address() as AddressInfo).port, "127.0.0.1");
    client.on("error", () => undefined);
    await new Promise((resolve) => client.once("connect", resolve));
    const peer = await peerP;
    peer.on("error", () => undefined);
    const chunks: Buffer[] = [];
    peer.on("data", (c: Buffer) => chunks.push(c));
    const ended = new Promise<void>((resolve) => peer.once("end", resolve));
    return {
      client,
      peer,
      received: async () => {
        peer.resume();
        await ended;
        return Buffer.concat(chunks);
      },
    };
  }

  it("skips the Writable on this Node: socket.write is not called, the callback comes on a later tick", async () => {
    assert.equal(directWrites, true, "this Node has process.binding('stream_wrap') with WriteWrap and streamBaseState");
    const { client, received } = await pair();
    const viaWritable = countWrites(client);
    let called = false;
    writeLatin1(client, "GET / HTTP/1.1\r\n\r\n", () => (called = true));
    assert.equal(called, false, "not called synchronously, as socket.write's callback is not");
    await new Promise((resolve) => process.nextTick(resolve));
    assert.equal(called, true);
    assert.equal(viaWritable(), 0, "the direct path was taken");
    client.end();
    assert.equal((await received()).toString("latin1"), "GET / HTTP/1.1\r\n\r\n");
  });

  it("keeps every byte of latin1 text, 0x00-0xff", async () => {
    const { client, received } = await pair();
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    writeLatin1(client, all.toString("latin1"));
    client.end();
    assert.deepEqual(await received(), all);
  });

  it("keeps the order against socket.write when a write waits for a peer that does not read, and calls back only once it is out", async () => {
    const { client, received } = await pair();
    // Enough to fill both sides' socket buffers on loopback: the direct write waits in libuv.
    const big = "a".repeat(8 * 1024 * 1024);
    let bigOut = false;
    writeLatin1(client, big, () => (bigOut = true));
    const viaWritable = countWrites(client);
    // While it waits: these must come after it, through the Writable.
    writeLatin1(client, "b".repeat(1000));
    client.write("c".repeat(1000));
    writeLatin1(client, "d");
    await sleep(100);
    assert.equal(bigOut, false, "the peer read nothing: the big write is not out");
    assert.equal(viaWritable(), 3, "writes behind a waiting one go through the Writable");
    client.end();
    const got = await received();
    assert.equal(got.length, big.length + 2001);
    assert.equal(got.subarray(0, big.length).every((b) => b === 0x61), true);
    assert.equal(got.subarray(big.length).toString("latin1"), `${"b".repeat(1000)}${"c".repeat(1000)}d`);
    assert.equal(bigOut, true);
  });

  it("calls each write's callback once with its own argument, before and after a write that waited, all bytes in order", async () => {
    const { client, peer, received } = await pair();
    const viaWritable = countWrites(client);
    const seen: number[] = [];
    const note = (i: number): void => void seen.push(i);
    for (let i = 0; i < 1000; i++) writeLatin1(client, `${i},`, note, i);
    // One that waits in libuv (the peer reads nothing yet), its callback only once it is out.
    const big = "x".repeat(8 * 1024 * 1024);
    let bigOut = false;
    writeLatin1(client, big, () => (bigOut = true));
    await sleep(50);
    assert.deepEqual(seen, Array.from({ length: 1000 }, (_, i) => i), "every whole write called back once, in order, with its argument");
    assert.equal(bigOut, false);
    peer.resume();
    while (!bigOut) await sleep(5);
    const before = viaWritable();
    for (let i = 1000; i < 1100; i++) writeLatin1(client, `${i},`, note, i);
    await new Promise((resolve) => process.nextTick(resolve));
    assert.equal(viaWritable(), before, "once the waiting write is out, writes go direct again");
    assert.deepEqual(seen.slice(1000), Array.from({ length: 100 }, (_, i) => 1000 + i));
    client.end();
    const got = (await received()).toString("latin1");
    const small = (from: number, to: number): string => Array.from({ length: to - from }, (_, i) => `${from + i},`).join("");
    assert.equal(got, `${small(0, 1000)}${big}${small(1000, 1100)}`);
  });

  it("writes bytes direct, says when they went whole, and then they are the caller's again", async () => {
    const { client, received } = await pair();
    const viaWritable = countWrites(client);
    const bytes = Buffer.from("HTTP/1.1 200 OK\r\n\r\n", "latin1");
    let called = false;
    assert.equal(writeBytes(client, bytes, () => (called = true)), true, "went to the kernel whole");
    bytes.fill(0x21); // the caller's again: changing them now must not change what was sent
    await new Promise((resolve) => process.nextTick(resolve));
    assert.equal(called, true);
    assert.equal(viaWritable(), 0, "the direct path was taken");
    client.end();
    assert.equal((await received()).toString("latin1"), "HTTP/1.1 200 OK\r\n\r\n");
  });

  it("says false for bytes that wait, or go through the Writable, and sends them as they were, in order", async () => {
    const { client, received } = await pair();
    const big = Buffer.alloc(8 * 1024 * 1024, 0x61);
    let bigOut = false;
    assert.equal(writeBytes(client, big, () => (bigOut = true)), false, "the peer reads nothing: the write waits in libuv");
    // Behind a waiting write, through the Writable: not whole either, so the caller keeps its hands off.
    const next = Buffer.from("b".repeat(1000));
    assert.equal(writeBytes(client, next), false);
    writeLatin1(client, "c");
    client.cork();
    assert.equal(writeBytes(client, Buffer.from("d")), false, "a corked socket takes bytes through its Writable");
    client.uncork();
    await sleep(50);
    assert.equal(bigOut, false);
    client.end();
    const got = await received();
    assert.equal(got.length, big.length + 1002);
    assert.equal(got.subarray(0, big.length).every((b) => b === 0x61), true);
    assert.equal(got.subarray(big.length).toString("latin1"), `${"b".repeat(1000)}cd`);
    assert.equal(bigOut, true);
  });

  it("goes through the Writable on a corked socket, so that the corked bytes come first", async () => {
    const { client, received } = await pair();
    client.cork();
    client.write("first,");
    writeLatin1(client, "second");
    client.uncork();
    client.end();
    assert.equal((await received()).toString(), "first,second");
  });

  it("destroys a socket whose peer is gone with the write's error instead of throwing", async () => {
    const { client, peer } = await pair();
    const errors: NodeJS.ErrnoException[] = [];
    client.removeAllListeners("error");
    client.on("error", (e: NodeJS.ErrnoException) => errors.push(e));
    // Not reading (pause() alone leaves libuv reading): the reset is found by a write, not by a read.
    (client as unknown as { _handle: { readStop(): number } })._handle.readStop();
    peer.resetAndDestroy();
    await sleep(100);
    assert.equal(client.destroyed, false);
    // The first write may still be taken by the kernel before the reset is seen: write until it fails.
    for (let i = 0; i < 50 && !client.destroyed; i++) {
      assert.doesNotThrow(() => writeLatin1(client, "x".repeat(64 * 1024)));
      await sleep(10);
    }
    assert.equal(client.destroyed, true);
    assert.ok(errors.length === 1 && /^E[A-Z]+$/.test(errors[0]!.code ?? ""), `one error with a code: ${errors.map((e) => e.message).join(", ")}`);
    assert.equal(errors[0]!.syscall, "write");
  });

  it("on a destroyed socket does nothing that throws", async () => {
    const { client } = await pair();
    client.destroy();
    assert.doesNotThrow(() => writeLatin1(client, "late"));
  });

  it("a callback that throws is an uncaught exception, and the callbacks of the writes after it still run, in order", () => {
    // In a process of its own: the test runner would take the uncaught exception as this test's failure.
    const module = new URL("../../src/proxy/direct-write.js", import.meta.url).href;
    const script = `
      import net from "node:net";
      import { writeLatin1 } from ${JSON.stringify(module)};
      const seen = [];
      process.on("uncaughtException", (e) => seen.push("uncaught " + e.message));
      const server = net.createServer((s) => s.resume()).listen(0, "127.0.0.1", () => {
        const c = net.connect(server.address().port, "127.0.0.1", () => {
          writeLatin1(c, "a", (x) => seen.push(x), "first");
          writeLatin1(c, "b", () => { throw new Error("boom"); });
          writeLatin1(c, "c", (x) => seen.push(x), "third");
          writeLatin1(c, "d", (x) => seen.push(x), "fourth");
          setTimeout(() => { console.log(JSON.stringify(seen)); process.exit(0); }, 100);
        });
      });`;
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 20_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), ["first", "third", "fourth", "uncaught boom"]);
  });
});
