// The plan-time lint: statements known to hold long exclusive locks (or row locks over a whole
// table) on a big table, each warned about with its file and line and what to write instead.
// A warning, not a refusal: on a small table these statements are fine, and only the team knows.

import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import type { MigrationStep } from "./contract.js";
import { isModuleStep } from "./files.js";
import { lineAt, splitSqlStatements, withoutLeadingComments } from "./sql-text.js";

export interface LintWarning {
  file: string;
  line: number;
  message: string;
}

const NAME = String.raw`(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)(?:\.(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*))?`;
const CREATE_TABLE_RE = new RegExp(String.raw`^CREATE\s+(?:(?:GLOBAL\s+|LOCAL\s+)?(?:TEMP|TEMPORARY|UNLOGGED)\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(${NAME})`, "i");
const ALTER_TABLE_RE = new RegExp(String.raw`^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(${NAME})`, "i");
const CREATE_INDEX_RE = new RegExp(String.raw`^CREATE\s+(?:UNIQUE\s+)?INDEX\s+(CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(${NAME}\s+)?ON\s+(?:ONLY\s+)?(${NAME})`, "i");
const WRITE_RE = new RegExp(String.raw`^(UPDATE|DELETE\s+FROM)\s+(?:ONLY\s+)?(${NAME})`, "i");
/** Defaults postgres cannot store once in the catalog: every existing row gets its own value, so the table is rewritten. */
const VOLATILE_DEFAULT_RE = /\bDEFAULT\s+[^,]*?\b(random|gen_random_uuid|uuid_generate_v[14]|clock_timestamp|timeofday|nextval|txid_current)\s*\(/i;

/** Lints one file's SQL. Tables the same file creates are new and empty: nothing on them is warned about. */
export function lintSql(text: string, file: string, driver: "sqlite" | "postgres", opts: { backfill?: boolean } = {}): LintWarning[] {
  const out: LintWarning[] = [];
  const created = new Set<string>();
  const statements = splitSqlStatements(text);
  let addedNotValid = false;
  for (const st of statements) {
    const sql = stripComments(st.sql).replace(/\s+/g, " ").trim();
    const line = lineAt(text, st.offset + (st.sql.length - withoutLeadingComments(st.sql).length));
    const warn = (message: string) => out.push({ file, line, message });
    const createTable = CREATE_TABLE_RE.exec(sql);
    if (createTable) {
      created.add(norm(createTable[1]!));
      continue;
    }
    // A batched statement is the one way to touch every row that holds no lock for long.
    if (opts.backfill && sql.includes("{batch}")) continue;
    const write = WRITE_RE.exec(sql);
    if (write && !created.has(norm(write[2]!)) && !/\bWHERE\b/i.test(sql)) {
      warn(`${write[1]!.split(/\s/)[0]!.toUpperCase()} without WHERE touches every row of ${write[2]} in one transaction, holding each row's lock until it commits (and on a big table, for a long time): make it a backfill step (-- turquoise: backfill table=${write[2]} key=<primary key>, WHERE {batch})`);
    }
    if (driver !== "postgres") continue;

    const index = CREATE_INDEX_RE.exec(sql);
    if (index && !created.has(norm(index[3]!))) {
      if (!index[1]) warn(`CREATE INDEX on ${index[3]} without CONCURRENTLY blocks every write to it for the whole build: use CREATE INDEX CONCURRENTLY in a step marked -- turquoise: no-transaction`);
      else if (!index[2]) warn(`CREATE INDEX CONCURRENTLY without a name: name the index, so that an invalid one a failed build leaves behind can be found and dropped`);
    }
    const alter = ALTER_TABLE_RE.exec(sql);
    if (alter && !created.has(norm(alter[1]!))) {
      const table = alter[1]!;
      if (/\bADD\s+(COLUMN\s+)?/i.test(sql) && VOLATILE_DEFAULT_RE.test(sql)) {
        warn(`ADD COLUMN on ${table} with a volatile default (${VOLATILE_DEFAULT_RE.exec(sql)![1]}()) rewrites the whole table under an ACCESS EXCLUSIVE lock: add the column without a default (or with a constant one), then fill it with a backfill step`);
      }
      if (/\bADD\s+(COLUMN\s+)?(IF\s+NOT\s+EXISTS\s+)?\S+\s+(BIG|SMALL)?SERIAL\b/i.test(sql) || /\bGENERATED\s+ALWAYS\s+AS\s*\(.*\)\s*STORED\b/i.test(sql)) {
        warn(`ADD COLUMN on ${table} with a serial or stored generated column rewrites the whole table under an ACCESS EXCLUSIVE lock: add a plain column, then fill it with a backfill step`);
      }
      if (/\bALTER\s+(COLUMN\s+)?\S+\s+(SET\s+DATA\s+)?TYPE\b/i.test(sql)) {
        warn(`ALTER COLUMN ... TYPE on ${table} rewrites the table (and its indexes) under an ACCESS EXCLUSIVE lock unless the types are binary compatible: add a new column, backfill it, and switch readers over`);
      }
      if (/\bALTER\s+(COLUMN\s+)?\S+\s+SET\s+NOT\s+NULL\b/i.test(sql)) {
        warn(`SET NOT NULL on ${table} scans every row under an ACCESS EXCLUSIVE lock: first ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID, then VALIDATE CONSTRAINT in a later step; SET NOT NULL then uses the valid check and skips the scan`);
      }
      if (/\bADD\s+(CONSTRAINT\s+\S+\s+)?(FOREIGN\s+KEY|CHECK)\b/i.test(sql) && !/\bNOT\s+VALID\b/i.test(sql)) {
        warn(`ADD ${/FOREIGN\s+KEY/i.test(sql) ? "FOREIGN KEY" : "CHECK"} on ${table} checks every row while holding its lock: add it NOT VALID, then VALIDATE CONSTRAINT in a later step (which lets reads and writes through)`);
      }
      if (/\bADD\s+(CONSTRAINT\s+\S+\s+)?(PRIMARY\s+KEY|UNIQUE)\b/i.test(sql) && !/\bUSING\s+INDEX\b/i.test(sql)) {
        warn(`ADD PRIMARY KEY/UNIQUE on ${table} builds its index while blocking writes: CREATE UNIQUE INDEX CONCURRENTLY first (a no-transaction step), then ADD CONSTRAINT ... USING INDEX`);
      }
      if (/\bNOT\s+VALID\b/i.test(sql)) addedNotValid = true;
      if (/\bVALIDATE\s+CONSTRAINT\b/i.test(sql) && addedNotValid && !opts.backfill) {
        warn(`VALIDATE CONSTRAINT in the same step as the ADD ... NOT VALID: in one transaction the ADD's ACCESS EXCLUSIVE lock is held through the whole validation; validate in a later step`);
      }
    }
    if (/^(VACUUM\s+(\(.*\)\s*)?FULL|CLUSTER)\b/i.test(sql)) warn(`${sql.split(" ").slice(0, 2).join(" ")} rewrites the table under an ACCESS EXCLUSIVE lock`);
    if (/^REINDEX\b/i.test(sql) && !/\bCONCURRENTLY\b/i.test(sql)) warn("REINDEX without CONCURRENTLY blocks writes (and reads that use the index) for the whole rebuild: use REINDEX ... CONCURRENTLY in a no-transaction step");
  }
  return out;
}

/** Lints the files of the steps a plan would run: up files going up, down files going down. */
export async function lintSteps(steps: MigrationStep[], direction: "up" | "down", driver: "sqlite" | "postgres"): Promise<LintWarning[]> {
  const out: LintWarning[] = [];
  for (const step of steps) {
    if (isModuleStep(step)) continue;
    const path = direction === "up" ? step.upFile : step.downFile;
    if (!path) continue;
    const text = await readFile(path, "utf8");
    out.push(...lintSql(text, basename(path), driver, { backfill: step.backfill?.[direction] !== undefined }));
  }
  return out;
}

export function formatLintWarning(w: LintWarning): string {
  return `warning: ${w.file} line ${w.line}: ${w.message}`;
}

function norm(name: string): string {
  return name.replace(/"/g, "").toLowerCase().replace(/^public\./, "");
}

/** Comments out of the way, so a word in one is not taken for SQL. Strings are left: a rule that matched inside one would only over-warn. */
function stripComments(sql: string): string {
  return sql.replace(/\/\*[\s\S]*?\*\//g, " ").replace(/--[^\n]*/g, " ");
}
