// How each release reads and writes the books table. Schema versions (see ../migrations):
//   1: books(id, title, author, created_at)
//   2: + author_first, author_last (expand; backfilled from author)
//   3: - author (contract)
import { splitAuthor } from "./app.mjs";

const ORDER = "ORDER BY created_at DESC, id DESC LIMIT $1";

/** v1 and v2: one author column (schema 1). */
export const authorColumn = {
  async read(db, limit) {
    return db.all(`SELECT id, title, author FROM books ${ORDER}`, [limit]);
  },
  async write(tx, b) {
    await tx.run("INSERT INTO books (id, title, author, created_at) VALUES ($1, $2, $3, $4)", [b.id, b.title, b.author, b.createdAt]);
    return { id: b.id, title: b.title, author: b.author };
  },
};

/** v3: first and last name columns (schema 3). */
export const nameColumns = {
  async read(db, limit) {
    const rows = await db.all(`SELECT id, title, author_first, author_last FROM books ${ORDER}`, [limit]);
    return rows.map(presentSplit);
  },
  async write(tx, b) {
    const { first, last } = splitAuthor(b.author);
    await tx.run("INSERT INTO books (id, title, author_first, author_last, created_at) VALUES ($1, $2, $3, $4, $5)", [b.id, b.title, first, last, b.createdAt]);
    return presentSplit({ id: b.id, title: b.title, author_first: first, author_last: last });
  },
};

/** The turquoise release: runs on schemas 1, 2 and 3, reading the version inside each write transaction. */
export const bothShapes = {
  async read(db, limit) {
    return db.readTx(async (tx) => ((await tx.schemaVersion()) >= 2 ? nameColumns.read(tx, limit) : authorColumn.read(tx, limit)));
  },
  async write(tx, b) {
    const v = await tx.schemaVersion();
    if (v <= 1) return authorColumn.write(tx, b);
    if (v >= 3) return nameColumns.write(tx, b);
    const { first, last } = splitAuthor(b.author);
    await tx.run("INSERT INTO books (id, title, author, author_first, author_last, created_at) VALUES ($1, $2, $3, $4, $5, $6)", [b.id, b.title, b.author, first, last, b.createdAt]);
    return presentSplit({ id: b.id, title: b.title, author_first: first, author_last: last });
  },
};

function presentSplit(r) {
  return { id: r.id, title: r.title, author: [r.author_first, r.author_last].filter(Boolean).join(" "), authorFirst: r.author_first, authorLast: r.author_last };
}
