// A migration runner in a process of its own, for crash tests to kill: runs `up` on the database
// and prints each migration event as a JSON line. argv: driver url baseDir migrationsDir.
import { readMigrations } from "../../src/migrate/files.js";
import { openMigrator } from "../../src/migrate/index.js";

const [driver, url, baseDir, dir] = process.argv.slice(2);
// `node --test dist/test/` also loads every file under test/ as a test: without arguments, this one does nothing.
if (driver !== undefined) {
  if (driver !== "sqlite" && driver !== "postgres") throw new Error(`driver must be sqlite or postgres, got ${driver}`);
  const migrator = openMigrator({ driver, url: url!, baseDir: baseDir! });
  try {
    await migrator.up(await readMigrations(dir!), { onEvent: (e) => process.stdout.write(`${JSON.stringify(e)}\n`) });
    process.stdout.write(`${JSON.stringify({ type: "finished" })}\n`);
  } finally {
    await migrator.close();
  }
}
