// The API bounds what a client can make the agent hold: a stream client that never reads is dropped,
// a token holds a bounded number of event streams and so does the agent, a body over the limit is
// a 413 before it is buffered.
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { setImmediate as tick } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { MAX_STREAMS, MAX_STREAMS_PER_TOKEN, MAX_STREAM_BUFFER_BYTES, STREAM_RETRY_AFTER_S, StreamSlots } from "../../src/api/events.js";
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

interface OpenedStream {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The whole body of a refusal; the first lines of an open stream. */
  body: () => string;
  /** The agent's end of the connection. */
  serverSide: () => net.Socket | undefined;
  /** Whether the agent ended the response. */
  ended: () => boolean;
  close(): void;
}

/**
 * GET /v1/events/stream with these headers: an open stream resolves once its first line came
 * (the agent holds its place from then on), a refusal once its body is read.
 */
function openStream(h: Harness, headers: Record<string, string>): Promise<OpenedStream> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port: h.port, path: "/v1/events/stream", agent: false, headers }, (res) => {
      let body = "";
      let ended = false;
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => (ended = true));
      const localPort = req.socket?.localPort;
      const opened: OpenedStream = {
        status: res.statusCode ?? 0, headers: res.headers, body: () => body, ended: () => ended,
        serverSide: () => [...h.sockets].find((s) => s.remotePort === localPort),
        close: () => req.destroy(),
      };
      if (res.statusCode === 200) res.once("data", () => resolve(opened));
      else res.on("end", () => resolve(opened));
    });
    req.on("error", (e) => { if ((e as NodeJS.ErrnoException).code !== "ECONNRESET") reject(e); });
  });
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** Closes a stream and waits until the agent has seen it close: its place is free from then on. */
async function closed(s: OpenedStream): Promise<void> {
  const serverSide = s.serverSide();
  s.close();
  await until("the agent to see the stream close", () => serverSide === undefined || serverSide.closed);
}

function assertRefused(s: OpenedStream, limit: number, message: RegExp): void {
  assert.equal(s.status, 429, s.body());
  assert.equal(s.headers["retry-after"], String(STREAM_RETRY_AFTER_S));
  assert.match(String(s.headers["content-type"]), /application\/json/);
  const { error } = JSON.parse(s.body()) as { error: { code: string; message: string; limit: number; open: number } };
  assert.equal(error.code, "LIMIT_REACHED");
  assert.equal(error.limit, limit);
  assert.equal(error.open, limit);
  assert.match(error.message, message);
}

describe("event stream caps", () => {
  let h: Harness;
  const open: OpenedStream[] = [];
  const hold = async (headers: Record<string, string>, n: number): Promise<OpenedStream[]> => {
    const streams = await Promise.all(Array.from({ length: n }, () => openStream(h, headers)));
    open.push(...streams);
    for (const s of streams) assert.equal(s.status, 200, s.body());
    return streams;
  };
  const readToken = async (): Promise<string> => (JSON.parse((await h.call("POST", "/v1/tokens", { body: JSON.stringify({ read: true }) })).body) as { token: string }).token;

  before(async () => {
    h = await startHarness();
  });
  after(async () => {
    for (const s of open) s.close();
    await h.close();
  });

  it("one token holds at most MAX_STREAMS_PER_TOKEN streams: one more is 429 saying the limit, how many are open and when to retry; other tokens still get theirs", async () => {
    const admin = await hold(bearer(h.adminToken), MAX_STREAMS_PER_TOKEN);
    const refused = await openStream(h, bearer(h.adminToken));
    assertRefused(refused, MAX_STREAMS_PER_TOKEN, new RegExp(`this token has ${MAX_STREAMS_PER_TOKEN} event streams open, its limit is ${MAX_STREAMS_PER_TOKEN}`));
    await hold(bearer(h.registryToken), 1);

    // A client that goes away frees its place at once: the next stream of that token opens.
    await closed(admin[0]!);
    const again = await hold(bearer(h.adminToken), 1);
    assert.equal((await openStream(h, bearer(h.adminToken))).status, 429);

    // So does a stream the agent cuts (as it cuts a client that fell behind).
    const cut = again[0]!.serverSide()!;
    cut.destroy();
    await until("the cut stream's close", () => cut.closed);
    await hold(bearer(h.adminToken), 1);
    for (const s of open.splice(0)) await closed(s);
  });

  it("a dashboard session counts under the token it signed in with", async () => {
    const token = await readToken();
    const signIn = await h.call("POST", "/ui/session", { token: null, headers: { "content-type": "application/json" }, body: JSON.stringify({ token }) });
    assert.equal(signIn.status, 200, signIn.body);
    const cookie = { cookie: signIn.headers["set-cookie"]![0]!.split(";")[0]! };
    await hold(cookie, MAX_STREAMS_PER_TOKEN / 2);
    await hold(bearer(token), MAX_STREAMS_PER_TOKEN / 2);
    assertRefused(await openStream(h, cookie), MAX_STREAMS_PER_TOKEN, /this token has/);
    assertRefused(await openStream(h, bearer(token)), MAX_STREAMS_PER_TOKEN, /this token has/);
    for (const s of open.splice(0)) await closed(s);
  });

  it("the agent holds at most MAX_STREAMS in all, however many tokens ask; a closed one frees a place", async () => {
    const tokens = await Promise.all(Array.from({ length: Math.ceil(MAX_STREAMS / MAX_STREAMS_PER_TOKEN) }, readToken));
    await Promise.all(tokens.map((t, i) => hold(bearer(t), Math.min(MAX_STREAMS_PER_TOKEN, MAX_STREAMS - i * MAX_STREAMS_PER_TOKEN))));
    assert.equal(open.length, MAX_STREAMS);
    // The admin token holds none, and is refused all the same.
    assertRefused(await openStream(h, bearer(h.adminToken)), MAX_STREAMS, new RegExp(`the agent has ${MAX_STREAMS} event streams open, its limit is ${MAX_STREAMS}`));
    await closed(open.pop()!);
    await hold(bearer(h.adminToken), 1);
    for (const s of open.splice(0)) await closed(s);
  });
});

describe("a revoked token's event streams", () => {
  let h: Harness;
  const open: OpenedStream[] = [];
  const hold = async (headers: Record<string, string>, n: number, on = h): Promise<OpenedStream[]> => {
    const streams = await Promise.all(Array.from({ length: n }, () => openStream(on, headers)));
    open.push(...streams);
    for (const s of streams) assert.equal(s.status, 200, s.body());
    return streams;
  };
  const readToken = async (on = h): Promise<{ id: string; token: string }> => JSON.parse((await on.call("POST", "/v1/tokens", { body: JSON.stringify({ read: true }) })).body) as { id: string; token: string };
  /** The last message the agent sent on a stream it ended for a revocation. */
  const revokedMessage = (s: OpenedStream): { reason: string } | undefined => {
    const m = /event: revoked\ndata: (.*)\n\n$/.exec(s.body());
    return m ? (JSON.parse(m[1]!) as { reason: string }) : undefined;
  };

  before(async () => {
    h = await startHarness();
  });
  after(async () => {
    for (const s of open) s.close();
    await h.close();
  });

  it("end at once with a last 'revoked' message and free their places; other tokens' streams keep going", async () => {
    const doomed = await readToken();
    const other = await readToken();
    const theirs = await hold(bearer(doomed.token), 3);
    const others = [...await hold(bearer(other.token), 1), ...await hold(bearer(h.adminToken), 1)];
    // Every other place taken: the agent's cap is full, so a place the revoked streams free is seen.
    const fillers = await Promise.all(Array.from({ length: Math.ceil((MAX_STREAMS - 5) / MAX_STREAMS_PER_TOKEN) }, () => readToken()));
    let left = MAX_STREAMS - 5;
    for (const t of fillers) {
      await hold(bearer(t.token), Math.min(MAX_STREAMS_PER_TOKEN, left));
      left -= MAX_STREAMS_PER_TOKEN;
    }
    assert.equal((await openStream(h, bearer(h.adminToken))).status, 429);

    const revoked = await h.call("DELETE", `/v1/tokens/${doomed.id}`);
    assert.equal(revoked.status, 200, revoked.body);
    // Within the drop grace at most, not at the client's leisure: the bound only ends a hang.
    await until("the revoked token's streams to end", () => theirs.every((s) => s.ended()), 5_000);
    for (const s of theirs) assert.match(revokedMessage(s)?.reason ?? s.body(), new RegExp(`read token ${doomed.id} was revoked`));
    // Their three places are free: three more streams open where the cap refused one.
    await hold(bearer(h.adminToken), 3);
    assert.equal((await openStream(h, bearer(h.adminToken))).status, 429);

    // The other token's and the admin's streams still carry events.
    h.registry.publish({ id: 999_999, at: Date.now(), service: "books", type: "deploy.succeeded", message: "after the revocation", data: {} });
    await until("the other streams to get the next event", () => others.every((s) => s.body().includes("after the revocation")));
    for (const s of others) assert.equal(s.ended(), false);
    for (const s of open.splice(0)) await closed(s);
  });

  it("a token revoked through another agent sharing the store ends its streams on this one too", async () => {
    const peer = await startHarness({ store: h.store, leads: false });
    try {
      // Created through this agent, known to the peer through the store.
      const t = await readToken();
      const onPeer = await hold(bearer(t.token), 3, peer);
      const keeps = await hold(bearer(peer.adminToken), 1, peer);
      assert.equal((await h.call("DELETE", `/v1/tokens/${t.id}`)).status, 200);
      await until("the peer's streams of the revoked token to end", () => onPeer.every((s) => s.ended()), 5_000);
      for (const s of onPeer) assert.ok(revokedMessage(s), s.body());
      // And the peer refuses the token from now on.
      assert.equal((await peer.call("GET", "/v1/status", { token: t.token })).status, 401);
      assert.equal(keeps[0]!.ended(), false);
      for (const s of open.splice(0)) s.close();
    } finally {
      await peer.close();
    }
  });

  it("a blocking read of a token revoked while it waits is answered 401, not with data", async () => {
    const t = await readToken();
    const index = (await h.call("GET", "/v1/events", { token: t.token })).headers["x-turquoise-index"];
    const waiting = h.call("GET", `/v1/events?index=${index}&wait=5m`, { token: t.token });
    await tick();
    assert.equal((await h.call("DELETE", `/v1/tokens/${t.id}`)).status, 200);
    const answer = await waiting;
    assert.equal(answer.status, 401, answer.body);
    assert.match(answer.body, /revoked or ended while it waited/);
  });
});

describe("StreamSlots", () => {
  it("refuses past either cap, holds nothing for a refusal, and gives a place back once however often it is given", () => {
    const slots = new StreamSlots(2, 3);
    const a1 = slots.take("a");
    const a2 = slots.take("a");
    assert.ok(a1.ok && a2.ok);
    const a3 = slots.take("a");
    assert.ok(!a3.ok && a3.limit === 2 && a3.open === 2);
    const b1 = slots.take("b");
    assert.ok(b1.ok);
    const b2 = slots.take("b");
    assert.ok(!b2.ok && b2.limit === 3 && b2.open === 3);
    assert.equal(slots.open(), 3);
    a1.give();
    a1.give();
    assert.equal(slots.open("a"), 1);
    assert.equal(slots.open(), 2);
    assert.ok(slots.take("b").ok);
    assert.ok(!slots.take("c").ok);
  });

  it("caps the registry token, which every instance shares, only by the total", () => {
    const slots = new StreamSlots(2, 4);
    for (let i = 0; i < 4; i++) assert.ok(slots.take("registry").ok, `instance ${i + 1}`);
    const fifth = slots.take("registry");
    assert.ok(!fifth.ok && fifth.limit === 4);
  });
});
