// PostgreSQL for the benchmarks: an empty database of their own on the local server.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { REPO_ROOT } from "../../src/demo/workspace.js";

/** An empty database on the local PostgreSQL that scripts/ensure-postgres.sh sets up (and installs when missing). */
export async function freshDatabase(): Promise<{ name: string; url: string; drop: () => Promise<void> }> {
  const out = execFileSync("bash", [`${REPO_ROOT}/scripts/ensure-postgres.sh`], { encoding: "utf8", timeout: 300_000, stdio: ["ignore", "pipe", "inherit"] });
  const line = out.trim().split("\n").pop() ?? "";
  const admin = line.slice(line.indexOf("=") + 1);
  if (!admin.startsWith("postgres")) throw new Error(`scripts/ensure-postgres.sh printed no URL: ${line}`);
  const name = `turquoise_bench_${randomBytes(6).toString("hex")}`;
  const adminQuery = async (sql: string) => {
    const c = new pg.Client({ connectionString: admin });
    c.on("error", () => undefined);
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end().catch(() => undefined);
    }
  };
  await adminQuery(`CREATE DATABASE ${name}`);
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return { name, url: url.toString(), drop: () => adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}

