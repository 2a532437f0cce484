// Request bodies read whole under a size limit: the API and the dashboard both take them this way.
import type http from "node:http";
import { TurquoiseError } from "../errors.js";

export const MAX_BODY_BYTES = 1024 * 1024;

/** A request body over MAX_BODY_BYTES: answered 413, and the connection closes so the rest is never read. */
export class BodyTooLarge extends TurquoiseError {
  constructor(size: string) {
    super("USAGE", `the request body (${size}) is over the API's limit of ${MAX_BODY_BYTES} bytes (1 MiB)`);
  }
}

/** The whole body as text: refused at once when its Content-Length is over the limit, and the moment it grows past it otherwise. */
export async function readBody(req: http.IncomingMessage): Promise<string> {
  return (await readRawBody(req)).toString("utf8");
}

/** The whole body as bytes, as a signature covers them; the same limit as readBody. */
export function readRawBody(req: http.IncomingMessage): Promise<Buffer> {
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > MAX_BODY_BYTES) return Promise.reject(new BodyTooLarge(`${declared} bytes declared`));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY_BYTES) return void chunks.push(c);
      // Stop reading: nothing more is buffered, and the 413 closes the connection.
      req.off("data", onData);
      req.pause();
      chunks.length = 0;
      reject(new BodyTooLarge(`over ${MAX_BODY_BYTES} bytes sent`));
    };
    req.on("data", onData);
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}
