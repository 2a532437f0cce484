// A rig that sends the same bytes to Node's own HTTP server (llhttp, the oracle) and to the proxy's
// client-facing server (ClientServer), over real loopback sockets, and records what each made of
// them: the requests it handed on (method, target, fields, body) and whether it refused the rest.

import http from "node:http";
import net from "node:net";
import { ClientServer } from "../../src/proxy/client-server.js";

/** One request a server handed to its handler, body read whole. */
export interface SeenRequest {
  method: string;
  url: string;
  rawHeaders: string[];
  body: string;
}

/** What one server made of one byte stream. */
export interface Verdict {
  requests: SeenRequest[];
  /** The parser's error code, when it refused something. */
  refused: string | undefined;
  /** The stream neither ended nor was refused within the bound (a body still awaited). */
  hung: boolean;
}

/** Both servers record into the verdict of the connection currently open to them. */
interface Recorder {
  current: Verdict | undefined;
}

/** What any handler answers: a short body, so that each connection moves on to its next request. */
function handler(rec: Recorder): (req: http.IncomingMessage | import("../../src/proxy/client-server.js").ClientRequest, res: { writeHead(s: number, f: string[]): unknown; end(t: string): unknown }) => void {
  return (req, res) => {
    const chunks: Buffer[] = [];
    const verdict = rec.current;
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      verdict?.requests.push({ method: req.method!, url: req.url!, rawHeaders: [...req.rawHeaders], body: Buffer.concat(chunks).toString("latin1") });
      res.writeHead(200, ["Content-Length", "2"]);
      res.end("ok");
    });
  };
}

export interface RequestRig {
  node: net.AddressInfo;
  ours: net.AddressInfo;
  /** Sends `bytes` to both servers on a fresh connection each and returns their verdicts. */
  both(bytes: Buffer, boundMs?: number): Promise<{ node: Verdict; ours: Verdict }>;
  close(): Promise<void>;
}

export async function startRequestRig(): Promise<RequestRig> {
  const nodeRec: Recorder = { current: undefined };
  const oursRec: Recorder = { current: undefined };
  // requireHostHeader off: Host is the data plane's rule, not the parser's, on both sides.
  const nodeServer = http.createServer({ requireHostHeader: false }, handler(nodeRec) as http.RequestListener);
  nodeServer.on("clientError", (err: NodeJS.ErrnoException, socket: net.Socket) => {
    if (nodeRec.current) nodeRec.current.refused ??= err.code ?? "error";
    socket.destroy();
  });
  const ours = new ClientServer({ checkIntervalMs: 250 });
  ours.on("request", handler(oursRec));
  ours.on("clientError", (err: NodeJS.ErrnoException, socket: net.Socket) => {
    if (oursRec.current) oursRec.current.refused ??= err.code ?? "error";
    socket.destroy();
  });
  // An upgrade is handed over by both: recorded as a request, then the connection ends.
  for (const [server, rec] of [[nodeServer, nodeRec], [ours, oursRec]] as const) {
    server.on("upgrade", (req: { method?: string; url?: string; rawHeaders: string[] }, socket: net.Socket) => {
      rec.current?.requests.push({ method: req.method!, url: req.url!, rawHeaders: [...req.rawHeaders], body: "<upgrade>" });
      socket.destroy();
    });
  }
  const listen = (s: net.Server): Promise<net.AddressInfo> =>
    new Promise((resolve) => s.listen(0, "127.0.0.1", () => resolve(s.address() as net.AddressInfo)));
  const nodeAddr = await listen(nodeServer);
  const oursAddr = await listen(ours);

  const one = (addr: net.AddressInfo, rec: Recorder, bytes: Buffer, boundMs: number): Promise<Verdict> =>
    new Promise((resolve) => {
      const verdict: Verdict = { requests: [], refused: undefined, hung: false };
      rec.current = verdict;
      const socket = net.connect(addr.port, "127.0.0.1", () => socket.write(bytes));
      socket.on("error", () => undefined);
      socket.resume();
      // Bounds a stream whose framing waits for bytes that never come (a Content-Length too large).
      const timer = setTimeout(() => {
        verdict.hung = true;
        socket.destroy();
      }, boundMs);
      socket.on("close", () => {
        clearTimeout(timer);
        // A server's handler may still be finishing the last request on this tick.
        setImmediate(() => {
          rec.current = undefined;
          resolve(verdict);
        });
      });
    });

  return {
    node: nodeAddr,
    ours: oursAddr,
    async both(bytes, boundMs = 1_500) {
      // One after the other: each recorder follows one connection at a time.
      const node = await one(nodeAddr, nodeRec, bytes, boundMs);
      const oursVerdict = await one(oursAddr, oursRec, bytes, boundMs);
      return { node, ours: oursVerdict };
    },
    async close() {
      nodeServer.closeAllConnections();
      ours.closeAllConnections();
      await Promise.all([new Promise((r) => nodeServer.close(r)), new Promise((r) => ours.close(r))]);
    },
  };
}

/**
 * The differential rule: every request ours handed on, Node handed on too, alike (method,
 * target, fields, body); ours may refuse sooner than Node, never later.
 */
export function differ(node: Verdict, ours: Verdict): string | undefined {
  if (ours.requests.length > node.requests.length) {
    return `ours handed on ${ours.requests.length} requests, Node ${node.requests.length} (Node refused: ${node.refused ?? "nothing"})`;
  }
  for (let i = 0; i < ours.requests.length; i++) {
    const a = JSON.stringify(ours.requests[i]);
    const b = JSON.stringify(node.requests[i]);
    if (a !== b) return `request ${i} differs:\n  ours ${a}\n  node ${b}`;
  }
  return undefined;
}
