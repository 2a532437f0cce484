// The metrics endpoint: GET /metrics in Prometheus' text format on a listener of its own
// (metrics.listen), apart from the agent API and its tokens. With metrics.token_file set a scraper
// must send that token as a bearer token; a wrong or missing one gets a 401 and nothing else.

import http from "node:http";
import type net from "node:net";
import { tokenMatches } from "../auth/token.js";
import { errorMessage } from "../errors.js";

/** Scrapers are few; a client that opens more is refused at accept rather than served. */
export const MAX_METRICS_CONNECTIONS = 32;
const HEADERS_TIMEOUT_MS = 10_000;
/** A scrape that reads the proxy may take a moment; nothing legitimate takes this long. */
const REQUEST_TIMEOUT_MS = 30_000;
const MAX_HEADER_BYTES = 8 * 1024;

export interface MetricsServerOptions {
  host: string;
  port: number;
  /** The bearer token scrapers must send; undefined: none asked. */
  token: string | undefined;
  render(): Promise<string>;
  contentType: string;
  /** Where a failed collection is told (its message may name internals; the scraper gets none of it). */
  log(line: string): void;
}

export async function startMetricsServer(opts: MetricsServerOptions): Promise<http.Server> {
  const server = http.createServer({ maxHeaderSize: MAX_HEADER_BYTES, headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS }, (req, res) => {
    // Nothing here reads a body: drop whatever comes.
    req.resume();
    const pathname = (req.url ?? "/").split("?")[0];
    if (pathname !== "/metrics") return answer(res, 404, "not found: the metrics are at /metrics\n");
    if (req.method !== "GET" && req.method !== "HEAD") return answer(res, 405, "method not allowed: GET /metrics\n", { allow: "GET, HEAD" });
    if (opts.token !== undefined && !tokenMatches(opts.token, req.headers.authorization)) {
      const why = req.headers.authorization === undefined ? "missing" : "wrong";
      return answer(res, 401, `${why} token: send Authorization: Bearer <the token in metrics.token_file>\n`, { "www-authenticate": 'Bearer realm="turquoise metrics"' });
    }
    opts.render().then(
      (text) => answer(res, 200, req.method === "HEAD" ? "" : text, { "content-type": opts.contentType }, Buffer.byteLength(text)),
      (e: unknown) => {
        opts.log(`metrics: collecting for a scrape failed: ${errorMessage(e)}`);
        answer(res, 500, "collecting the metrics failed; the agent's log says why\n");
      },
    );
  });
  server.maxConnections = MAX_METRICS_CONNECTIONS;
  server.keepAliveTimeout = 5_000;
  server.on("clientError", (err: NodeJS.ErrnoException, socket: net.Socket) => {
    const status = err.code === "HPE_HEADER_OVERFLOW" ? "431 Request Header Fields Too Large" : "400 Bad Request";
    if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return server;
}

function answer(res: http.ServerResponse, status: number, body: string, headers: http.OutgoingHttpHeaders = {}, length = Buffer.byteLength(body)): void {
  if (res.headersSent) return;
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", ...headers, "content-length": length, "cache-control": "no-store" });
  res.end(body);
}
