// The floor of any proxy written on Node's sockets, for bench:proxy and bench:tls: each client
// connection gets its own keep-alive connection to the upstream and bytes are copied both ways,
// with no parsing, no routing and no headers. It reads as the built-in proxy does, through net's
// onread into one shared buffer (src/proxy/read-buffer.ts), each read copied out before it is
// written on (a TLS client socket reads as a stream, as in the proxy): what it costs per request
// is what net.Socket (or, with a certificate, tls.TLSSocket) reads and writes cost at the least.
// As a script (`node pipe.js UPSTREAM_PORT [CERT_FILE KEY_FILE]`) it listens on 127.0.0.1 (over
// TLS when given a certificate) and prints "listening PORT".

import { readFileSync } from "node:fs";
import net from "node:net";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { acceptedReadInto, READ_BUFFER } from "../../src/proxy/read-buffer.js";
import { startListeningScript } from "./upstream.js";

export interface RunningPipe {
  port: number;
  pid: number;
  stop(): void;
}

/** Starts the pipe as its own process in front of 127.0.0.1:upstreamPort; with tls, it terminates TLS with that certificate. */
export async function startPipeProcess(upstreamPort: number, opts: { tls?: { certFile: string; keyFile: string }; timeoutMs?: number } = {}): Promise<RunningPipe> {
  const args = [String(upstreamPort), ...(opts.tls ? [opts.tls.certFile, opts.tls.keyFile] : [])];
  const { port, child } = await startListeningScript(fileURLToPath(import.meta.url), args, "the pipe", opts.timeoutMs);
  return { port, pid: child.pid!, stop: () => child.kill("SIGTERM") };
}

function pipe(client: net.Socket, upstreamPort: number): void {
  // A write may complete after the next read lands in the shared buffer: each read is copied out.
  const toClient = (n: number, view: Buffer): boolean => {
    client.write(Buffer.from(view.subarray(0, n)));
    return true;
  };
  const up = net.connect({ host: "127.0.0.1", port: upstreamPort, noDelay: true, onread: { buffer: READ_BUFFER, callback: toClient } });
  const toUpstream = (view: Buffer): void => void up.write(Buffer.from(view));
  if (!acceptedReadInto(client, toUpstream)) client.on("data", (d: Buffer) => up.write(d));
  client.on("error", () => up.destroy());
  up.on("error", () => client.destroy());
  client.on("close", () => up.destroy());
  up.on("close", () => client.destroy());
}

function serve(upstreamPort: number, certFile: string | undefined, keyFile: string | undefined): void {
  // The same TLS settings as the proxy's edge (tls-edge.ts), so that the floor is the same TLS.
  const server = certFile !== undefined && keyFile !== undefined
    ? tls.createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile), minVersion: "TLSv1.2", ALPNProtocols: ["http/1.1"], noDelay: true }, (c) => pipe(c, upstreamPort))
    : net.createServer({ noDelay: true }, (c) => pipe(c, upstreamPort));
  server.listen(0, "127.0.0.1", () => process.stdout.write(`listening ${(server.address() as net.AddressInfo).port}\n`));
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] !== undefined) serve(Number(process.argv[2]), process.argv[3], process.argv[4]);
