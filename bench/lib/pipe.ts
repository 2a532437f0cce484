// The floor of any proxy written on Node's sockets, for bench:proxy: each client connection gets
// its own keep-alive connection to the upstream and bytes are copied both ways, with no parsing,
// no routing and no headers. It reads as the built-in proxy does, through net's onread into one
// shared buffer (src/proxy/read-buffer.ts), each read copied out before it is written on; what it
// costs per request is what the sockets' reads and writes cost in Node at the least.
// As a script (`node pipe.js UPSTREAM_PORT`) it listens on 127.0.0.1 and prints "listening PORT".

import net from "node:net";
import { fileURLToPath } from "node:url";
import { acceptedReadInto, READ_BUFFER } from "../../src/proxy/read-buffer.js";
import { startListeningScript } from "./upstream.js";

export interface RunningPipe {
  port: number;
  pid: number;
  stop(): void;
}

/** Starts the pipe as its own process in front of 127.0.0.1:upstreamPort. */
export async function startPipeProcess(upstreamPort: number, timeoutMs = 10_000): Promise<RunningPipe> {
  const { port, child } = await startListeningScript(fileURLToPath(import.meta.url), [String(upstreamPort)], "the pipe", timeoutMs);
  return { port, pid: child.pid!, stop: () => child.kill("SIGTERM") };
}

function serve(upstreamPort: number): void {
  const server = net.createServer({ noDelay: true }, (client) => {
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
  });
  server.listen(0, "127.0.0.1", () => process.stdout.write(`listening ${(server.address() as net.AddressInfo).port}\n`));
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] !== undefined) serve(Number(process.argv[2]));
