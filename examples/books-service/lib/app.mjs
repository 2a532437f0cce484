// books-service: the example app used by the demo, the tests and the benchmarks.
// It keeps the app contract from DESIGN.md: listen on PORT, answer the health path, and on
// SIGTERM finish in-flight work, then exit. Books live in the shared database (DATABASE_URL:
// SQLite or PostgreSQL) or, without one, in a JSON-lines file that blue and green share (BOOKS_FILE).
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { openDatabase } from "./db.mjs";

const MAX_BODY_BYTES = 64 * 1024;
const PAGE = 20;

/**
 * release: its name. shape(book): how it presents a stored book (file mode).
 * schema: how it reads and writes the database, for releases that have one.
 */
export async function serve({ release, shape, schema }) {
  const port = Number(process.env.PORT ?? 3000);
  const host = process.env.HOST ?? "127.0.0.1";
  const slot = process.env.TURQUOISE_SLOT ?? "none";
  const name = process.env.TURQUOISE_RELEASE ?? release;
  const store = process.env.DATABASE_URL ? await databaseStore(process.env.DATABASE_URL, schema) : fileStore(process.env.BOOKS_FILE ?? path.resolve("books.jsonl"), shape);
  let shuttingDown = false;

  const send = (res, status, body) => {
    const json = JSON.stringify({ release: name, slot, ...body });
    res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(json), "x-release": name });
    res.end(json);
  };
  const fail = (res, e) => { console.error(e); send(res, 500, { error: String(e.message ?? e) }); };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname === "/health") return send(res, shuttingDown ? 503 : 200, { status: shuttingDown ? "stopping" : "ok" });
    if (url.pathname === "/api/v1/slow") {
      const ms = Math.min(Number(url.searchParams.get("ms") ?? 200), 30_000);
      return setTimeout(() => send(res, 200, { sleptMs: ms }), ms);
    }
    if (url.pathname !== "/api/v1/books") return send(res, 404, { error: "not found" });
    if (req.method === "GET") return store.list(url.searchParams.get("all") === "1").then((page) => send(res, 200, page), (e) => fail(res, e));
    if (req.method !== "POST") return send(res, 405, { error: "method not allowed" });
    const chunks = [];
    let size = 0;
    req.on("data", (c) => { size += c.length; if (size <= MAX_BODY_BYTES) chunks.push(c); });
    req.on("end", () => {
      if (size > MAX_BODY_BYTES) return send(res, 413, { error: "body too large" });
      let book;
      try { book = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}"); } catch { return send(res, 400, { error: "body is not JSON" }); }
      if (typeof book.title !== "string" || book.title === "") return send(res, 400, { error: "title (string) is required" });
      const record = { id: `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`, title: book.title, author: String(book.author ?? ""), createdAt: Date.now() };
      store.add(record).then((saved) => send(res, 201, { book: saved }), (e) => fail(res, e));
    });
  });
  server.keepAliveTimeout = 65_000;

  // What a real service would do on HUP (reload its configuration); the tests of `turquoise signal` look for it.
  process.on("SIGHUP", () => console.log(`books-service ${name} got SIGHUP: reloading configuration`));

  process.on("SIGTERM", () => {
    shuttingDown = true;
    // Stop accepting, drop idle keep-alive sockets, let in-flight requests finish, then exit.
    server.close(() => store.close().finally(() => process.exit(0)));
    server.closeIdleConnections();
    setInterval(() => server.closeIdleConnections(), 100).unref();
  });

  server.listen(port, host, () => console.log(`books-service ${name} (${slot}) listening on ${host}:${port}${process.env.DATABASE_URL ? " with a database" : ""}`));
}

/** First word and the rest: how releases that store names in two columns split an author. */
export function splitAuthor(author) {
  const i = author.indexOf(" ");
  return i < 0 ? { first: author, last: "" } : { first: author.slice(0, i), last: author.slice(i + 1) };
}

async function databaseStore(url, schema) {
  if (!schema) throw new Error("this release has no database code: unset DATABASE_URL or deploy a release that has");
  const db = await openDatabase(url);
  return {
    async list(all) {
      const [{ n }] = await db.all("SELECT COUNT(*) AS n FROM books");
      return { count: Number(n), books: await schema.read(db, all ? 1_000_000 : PAGE) };
    },
    async add(book) {
      return db.writeTx(async (tx) => schema.write(tx, book));
    },
    close: () => db.close(),
  };
}

function fileStore(booksFile, shape) {
  // Reads only what other instances appended since the last call, so GET stays cheap as the file grows.
  const books = [];
  let offset = 0;
  const readBooks = () => {
    let fd;
    try { fd = fs.openSync(booksFile, "r"); } catch (e) { if (e.code === "ENOENT") return books; throw e; }
    try {
      const size = fs.fstatSync(fd).size;
      if (size > offset) {
        const buf = Buffer.alloc(size - offset);
        fs.readSync(fd, buf, 0, buf.length, offset);
        const end = buf.lastIndexOf(10) + 1; // only complete lines
        for (const line of buf.subarray(0, end).toString("utf8").split("\n")) if (line) books.push(JSON.parse(line));
        offset += end;
      }
    } finally { fs.closeSync(fd); }
    return books;
  };
  return {
    async list(all) { const b = readBooks(); return { count: b.length, books: (all ? b : b.slice(-PAGE)).map(shape) }; },
    async add(record) {
      // One appendFileSync per book: a single write() of a short line is atomic, so both slots can append safely.
      fs.appendFileSync(booksFile, JSON.stringify(record) + "\n");
      return shape(record);
    },
    async close() {},
  };
}
