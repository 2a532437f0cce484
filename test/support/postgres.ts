// A real PostgreSQL for tests: scripts/ensure-postgres.sh sets one up and prints its URL, which the
// test command exports as TURQUOISE_TEST_PG_URL. Each caller gets a database of its own.

import { randomBytes } from "node:crypto";
import pg from "pg";

export const PG_URL_ENV = "TURQUOISE_TEST_PG_URL";

/** The admin URL, or an error that says how to get one; postgres tests fail without it, never skip. */
export function testPgUrl(): string {
  const url = process.env[PG_URL_ENV];
  if (!url) {
    throw new Error(`${PG_URL_ENV} is not set: run scripts/ensure-postgres.sh (it installs and starts PostgreSQL) and export the line it prints`);
  }
  return url;
}

/** The same server and credentials, another database. */
export function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

export async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  c.on("error", () => undefined);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** A new empty database; drop() removes it even when connections to it are still open. */
export async function freshDatabase(): Promise<{ url: string; name: string; drop: () => Promise<void> }> {
  const admin = testPgUrl();
  const name = `turquoise_t_${randomBytes(6).toString("hex")}`;
  await withClient(admin, (c) => c.query(`CREATE DATABASE ${name}`));
  return {
    url: withDatabase(admin, name),
    name,
    drop: () => withClient(admin, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => undefined),
  };
}
