// The proxy's sockets read into one shared buffer (src/proxy/read-buffer.ts): accepted sockets
// really switch to net's onread mode on this Node, pause and resume still hold, and no byte is
// lost or overwritten when a body outlives the read it came in (slow upstream, slow client,
// pipelined requests).

import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import tls from "node:tls";
import { after, before, describe, it } from "node:test";
import { acceptedReadInto, acceptedReadIntoSupported, owned, READ_BUFFER } from "../../src/proxy/read-buffer.js";
import { createTestCa } from "../../bench/lib/certs.js";
import { RawClient, route, sleep, startTestProxy, statuses, table, type TestProxy } from "./helpers.js";

const BIG = 8 * 1024 * 1024;

function sha256(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

describe("the shared read buffer", { timeout: 60_000 }, () => {
  it("switches an accepted socket to onread mode on this Node; pause stops reads, resume brings them back, end still comes", async () => {
    assert.equal(acceptedReadIntoSupported(), true, "this Node's sockets keep the onread fields where read-buffer.ts looks");
    const reads: Buffer[] = [];
    let sameMemory = true;
    let accepted: net.Socket | undefined;
    let ended = false;
    const server = net.createServer((socket) => {
      accepted = socket;
      assert.equal(
        acceptedReadInto(socket, (view) => {
          sameMemory &&= view.buffer === READ_BUFFER.buffer;
          reads.push(owned(view));
        }),
        true,
      );
      socket.on("end", () => (ended = true));
      socket.on("error", () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const client = net.connect((server.address() as AddressInfo).port, "127.0.0.1");
    await new Promise((resolve) => client.once("connect", resolve));
    client.write("first");
    while (Buffer.concat(reads).toString() !== "first") await sleep(10);
    accepted!.pause();
    client.write("second");
    await sleep(200);
    assert.equal(Buffer.concat(reads).toString(), "first", "nothing read while paused");
    accepted!.resume();
    while (Buffer.concat(reads).toString() !== "firstsecond") await sleep(10);
    assert.ok(sameMemory, "every read landed in READ_BUFFER");
    assert.notEqual(reads[0]!.buffer, READ_BUFFER.buffer, "owned() copied the view out");
    client.end();
    while (!ended) await sleep(10);
    accepted!.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  it("switches a TLS socket at its handshake too: the cleartext lands in READ_BUFFER, whole and in order, with the first request sent in the handshake's flight", async () => {
    const ca = await createTestCa();
    const cert = await ca.issue("rb", ["rb.test"]);
    let switched: boolean | undefined;
    let sameMemory = true;
    const reads: Buffer[] = [];
    let accepted: tls.TLSSocket | undefined;
    let ended = false;
    const server = tls.createServer({ cert: cert.certPem, key: cert.keyPem }, (socket) => {
      accepted = socket;
      switched = acceptedReadInto(socket, (view) => {
        sameMemory &&= view.buffer === READ_BUFFER.buffer;
        reads.push(owned(view));
      });
      socket.on("end", () => (ended = true));
      socket.on("error", () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const body = randomBytes(4 * 1024 * 1024);
    const client = tls.connect({ port: (server.address() as AddressInfo).port, host: "127.0.0.1", servername: "rb.test", ca: ca.pem });
    client.on("error", () => undefined);
    // Written before the handshake ends: TLS 1.3 sends it with the client's Finished.
    client.write("first|");
    await new Promise((resolve) => client.once("secureConnect", resolve));
    client.write(body);
    client.end();
    const deadline = Date.now() + 20_000;
    while (!ended && Date.now() < deadline) await sleep(10);
    assert.equal(switched, true, "the TLS socket switched to onread mode");
    assert.equal(ended, true);
    const got = Buffer.concat(reads);
    assert.equal(got.subarray(0, 6).toString(), "first|");
    assert.equal(sha256(got.subarray(6)), sha256(body));
    assert.ok(sameMemory, "every read landed in READ_BUFFER");
    accepted!.destroy();
    await new Promise((resolve) => server.close(resolve));
    await ca.close();
  });

  describe("through the proxy", () => {
    let p: TestProxy;
    let upstream: http.Server;
    let port: number;
    const download = randomBytes(BIG);
    before(async () => {
      upstream = http.createServer((req, res) => {
        if (req.url === "/download") {
          // Written in pieces with a chunked framing: many reads on the proxy's upstream socket.
          res.writeHead(200, { "content-type": "application/octet-stream" });
          for (let i = 0; i < download.length; i += 100_000) res.write(download.subarray(i, i + 100_000));
          res.end();
          return;
        }
        // A slow reader: the proxy's writes of the body queue up behind it while it reads on.
        req.pause();
        const chunks: Buffer[] = [];
        setTimeout(() => {
          req.on("data", (c: Buffer) => chunks.push(c));
          req.resume();
        }, req.url === "/slow" ? 300 : 0);
        req.on("end", () => {
          const body = Buffer.concat(chunks);
          res.writeHead(200, { "content-type": "text/plain" }).end(`${body.length} ${sha256(body)} ${body.toString("latin1", 0, 16)}`);
        });
      });
      await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
      p = await startTestProxy();
      const u = { id: "u", host: "127.0.0.1", port: (upstream.address() as AddressInfo).port };
      await p.proxy.apply(table(1, route("app", "app:1", [u])));
      port = Number(new URL(p.base).port);
    });
    after(async () => {
      await p.close();
      upstream.closeAllConnections();
      await new Promise((resolve) => upstream.close(resolve));
    });

    it("hands a slow upstream an 8 MiB request body byte for byte, with a length and chunked", async () => {
      const body = randomBytes(BIG);
      for (const chunked of [false, true]) {
        const c = await RawClient.connect(port);
        const framing = chunked ? "Transfer-Encoding: chunked" : `Content-Length: ${body.length}`;
        c.write(`POST /slow HTTP/1.1\r\nHost: app.test\r\n${framing}\r\nConnection: close\r\n\r\n`);
        // Many writes, so that the proxy reads the body in many pieces while its writes upstream wait.
        for (let i = 0; i < body.length; i += 50_000) {
          const piece = body.subarray(i, i + 50_000);
          c.write(chunked ? Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from("\r\n")]) : piece);
        }
        if (chunked) c.write("0\r\n\r\n");
        assert.ok(await c.waitClose(20_000), "answered and closed");
        assert.deepEqual(statuses(c.received), [200]);
        assert.ok(c.received.includes(`${body.length} ${sha256(body)}`), `the upstream got the body as sent (chunked: ${chunked}): ${c.received.slice(-120)}`);
      }
    });

    it("relays an 8 MiB response byte for byte to a client that starts reading late", async () => {
      const received: Buffer[] = [];
      const socket = net.connect(port, "127.0.0.1");
      socket.pause();
      socket.write("GET /download HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
      // The proxy's reads from the upstream go on into its queue towards this client meanwhile.
      await sleep(300);
      socket.on("data", (d: Buffer) => received.push(d));
      socket.resume();
      await new Promise((resolve) => socket.once("close", resolve));
      const all = Buffer.concat(received);
      const headEnd = all.indexOf("\r\n\r\n");
      assert.match(all.toString("latin1", 0, headEnd), /^HTTP\/1\.1 200 /);
      // De-chunk what the proxy relayed.
      const parts: Buffer[] = [];
      let pos = headEnd + 4;
      for (;;) {
        const eol = all.indexOf("\r\n", pos);
        const size = parseInt(all.toString("latin1", pos, eol), 16);
        // Framing the proxy garbled (a chunk overwritten in flight) ends the walk with a clear failure.
        assert.ok(eol !== -1 && Number.isInteger(size) && size >= 0, `a well-formed chunk size line at byte ${pos}`);
        if (size === 0) break;
        parts.push(all.subarray(eol + 2, eol + 2 + size));
        pos = eol + 2 + size + 2;
      }
      const body = Buffer.concat(parts);
      assert.equal(body.length, download.length);
      assert.equal(sha256(body), sha256(download));
    });

    it("answers pipelined requests with bodies, sent in one write, each with its own body", async () => {
      const c = await RawClient.connect(port);
      const bodies = ["alpha-0123456789abcdef", "bravo-0123456789abcdef", "charlie-0123456789abcdef"];
      c.write(bodies.map((b, i) => `POST /p${i} HTTP/1.1\r\nHost: app.test\r\nContent-Length: ${b.length}\r\n${i === bodies.length - 1 ? "Connection: close\r\n" : ""}\r\n${b}`).join(""));
      assert.ok(await c.waitClose(10_000));
      assert.deepEqual(statuses(c.received), [200, 200, 200]);
      const firsts = [...c.received.matchAll(/\r\n\r\n(?:[0-9a-f]+\r\n)?\d+ [0-9a-f]{64} (\S{16})/g)].map((m) => m[1]);
      assert.deepEqual(firsts, bodies.map((b) => b.slice(0, 16)));
    });
  });
});
