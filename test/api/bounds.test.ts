// The API bounds what a client can make the agent hold: a stream client that never reads is dropped, a body over the limit is a 413 before it is buffered.
import assert from "node:assert/strict";
import net from "node:net";
import { setImmediate as tick } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { MAX_STREAM_BUFFER_BYTES } from "../../src/api/events.js";
import { MAX_BODY_BYTES } from "../../src/util/http-body.js";
import { startHarness, type Harness } from "./harness.js";

/** A raw connection: what we write is exactly what the agent gets; reads only when asked to. */
function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1", () => resolve(s));
    s.on("error", reject);
  });
}

/** Polls until check holds; the bound only ends a wait for what never comes. */
async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function readAll(s: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    s.setEncoding("utf8");
    s.on("data", (c: string) => (text += c));
    s.on("close", () => resolve(text));
    s.on("error", () => resolve(text));
  });
}

describe("API bounds", () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(async () => h.close());

  it("an event stream client that never reads is dropped once the agent holds its limit for it", async () => {
    const client = await connect(h.port);
    client.pause(); // never reads: the kernel's buffers fill, then the agent's
    client.on("error", () => undefined);
    client.write(`GET /v1/events/stream HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer ${h.adminToken}\r\n\r\n`);
    // The stream's first line is written once it is subscribed: from then on, every event is for this client.
    const agentEnd = () => [...h.sockets].find((s) => s.remotePort === client.localPort);
    await until("the agent's end of the stream to be subscribed", () => (agentEnd()?.bytesWritten ?? 0) > 0);
    const serverSide = agentEnd()!;

    // 64 KiB events, a few at a time so the kernel can take what it takes: ~24 MiB in all, far above
    // loopback's socket buffers plus the agent's limit.
    const message = "x".repeat(64 * 1024);
    let peak = 0;
    for (let i = 0; i < 400 && !serverSide.destroyed; i++) {
      h.registry.publish({ id: i + 1, at: Date.now(), service: null, type: "test.flood", message, data: {} });
      peak = Math.max(peak, serverSide.writableLength);
      if (i % 8 === 0) await tick();
    }
    const deadline = Date.now() + 5_000;
    while (!serverSide.destroyed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(serverSide.destroyed, true, "the agent cut the connection");
    // The limit, plus the one event that crossed it and the closing line.
    assert.ok(peak <= MAX_STREAM_BUFFER_BYTES + 2 * message.length, `the agent held ${peak} bytes for the client`);
    const [dropped] = (await h.store.listEvents()).filter((e) => e.type === "stream.dropped");
    assert.ok(dropped, "an event says so");
    assert.match(dropped.message, /event stream client \(admin token, .*\) was dropped: \d+ bytes unread/);
    client.destroy();
  });

  it("a stream client that reads keeps getting events", async () => {
    const client = await connect(h.port);
    let got = "";
    client.setEncoding("utf8");
    client.on("data", (c: string) => (got += c));
    const floods = () => (got.match(/event: test\.flood/g) ?? []).length;
    client.write(`GET /v1/events/stream HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer ${h.adminToken}\r\n\r\n`);
    await until("the stream's first line", () => got.includes(": turquoise events"));
    for (let i = 0; i < 200; i++) {
      h.registry.publish({ id: 10_000 + i, at: Date.now(), service: null, type: "test.flood", message: "y".repeat(16 * 1024), data: {} });
      await new Promise((r) => setTimeout(r, 1));
    }
    // All of them, however slowly a loaded machine delivers them; a drop ends the wait too.
    await until("the 200 events", () => floods() >= 200 || got.includes("event: dropped"));
    client.destroy();
    assert.equal(floods(), 200);
    assert.doesNotMatch(got, /event: dropped/);
  });

  it("a body whose Content-Length is over the limit is a 413 before any of it is read", async () => {
    const client = await connect(h.port);
    const answer = readAll(client);
    client.write(`PUT /v1/kv/config/big HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer ${h.adminToken}\r\nContent-Length: ${MAX_BODY_BYTES * 50}\r\n\r\nabc`);
    const text = await answer;
    assert.match(text, /^HTTP\/1\.1 413 /);
    assert.match(text, /connection: close/i);
    assert.match(text, /over the API's limit of 1048576 bytes/);
    assert.equal(await h.store.get("config/big"), undefined);
  });

  it("a chunked body that grows past the limit is a 413, and what was sent is not kept", async () => {
    const client = await connect(h.port);
    client.on("error", () => undefined);
    const answer = readAll(client);
    client.write(`PUT /v1/kv/config/big HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer ${h.adminToken}\r\nTransfer-Encoding: chunked\r\n\r\n`);
    const chunk = Buffer.alloc(64 * 1024, 97);
    for (let sent = 0; sent <= MAX_BODY_BYTES + chunk.length && !client.destroyed; sent += chunk.length) {
      client.write(`${chunk.length.toString(16)}\r\n`);
      client.write(chunk);
      client.write("\r\n");
    }
    const text = await answer;
    assert.match(text, /^HTTP\/1\.1 413 /);
    assert.equal(await h.store.get("config/big"), undefined);
  });

  it("a body at the limit is accepted", async () => {
    const r = await h.call("PUT", "/v1/kv/config/exact", { body: "z".repeat(MAX_BODY_BYTES) });
    assert.equal(r.status, 200);
    assert.equal((await h.store.get("config/exact"))?.value.length, MAX_BODY_BYTES);
  });
});
