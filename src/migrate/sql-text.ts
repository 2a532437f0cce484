// SQL text as the migrators need it: statements split at top-level semicolons, lines named by
// offset, $n placeholders rewritten for sqlite, and a scanner that knows strings and comments.

/** 1-based line of a 0-based offset in text. */
export function lineAt(text: string, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}

export interface SqlStatement {
  sql: string;
  /** Offset of the statement's first character in the text it was split from. */
  offset: number;
}

/**
 * Splits SQL at top-level semicolons. Knows quotes, "identifiers", -- and nested block comments, and
 * postgres $tag$ quoting, which is enough for a no-transaction step: postgres runs several
 * statements sent at once as one implicit transaction, which is exactly what such a step must avoid.
 */
export function splitSqlStatements(text: string): SqlStatement[] {
  const out: SqlStatement[] = [];
  let start = 0;
  const push = (end: number): void => {
    const raw = text.slice(start, end);
    const lead = raw.length - raw.trimStart().length;
    if (!isOnlyComments(raw)) out.push({ sql: raw.trim(), offset: start + lead });
  };
  scanSql(text, true, (i, ch) => {
    if (ch === ";") {
      push(i);
      start = i + 1;
    }
  });
  push(text.length);
  return out;
}

function isOnlyComments(sql: string): boolean {
  let code = false;
  scanSql(sql, true, (_i, ch) => {
    if (!/\s|;/.test(ch)) code = true;
  });
  return !code;
}

/**
 * Rewrites $1, $2, ... into sqlite's anonymous ? and orders the values to match, so a module step
 * can write one query for both drivers.
 */
export function toSqliteParams(sql: string, params: unknown[]): { sql: string; params: unknown[] } {
  let out = "";
  let last = 0;
  const ordered: unknown[] = [];
  scanSql(sql, false, (i, ch) => {
    if (ch !== "$" || !/[0-9]/.test(sql[i + 1] ?? "")) return;
    let j = i + 1;
    while (/[0-9]/.test(sql[j] ?? "")) j++;
    const n = Number(sql.slice(i + 1, j));
    if (n < 1 || n > params.length) throw new Error(`$${n} has no value: ${params.length} given`);
    out += `${sql.slice(last, i)}?`;
    ordered.push(params[n - 1]);
    last = j;
  });
  return { sql: out + sql.slice(last), params: ordered };
}

/** Calls visit(index, char) for every character that is code (not in a string or comment). */
export function scanSql(text: string, dollarQuotes: boolean, visit: (i: number, ch: string) => void): void {
  let i = 0;
  const n = text.length;
  while (i < n) {
    const ch = text[i]!;
    const next = text[i + 1];
    if (ch === "-" && next === "-") {
      const end = text.indexOf("\n", i);
      i = end === -1 ? n : end + 1;
    } else if (ch === "/" && next === "*") {
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (text[i] === "/" && text[i + 1] === "*") {
          depth++;
          i += 2;
        } else if (text[i] === "*" && text[i + 1] === "/") {
          depth--;
          i += 2;
        } else i++;
      }
    } else if (ch === "'" || ch === '"' || ch === "`") {
      // E'...' strings take backslash escapes; elsewhere a doubled quote is the escape.
      const backslash = ch === "'" && /[eE]/.test(text[i - 1] ?? "") && !/[A-Za-z0-9_]/.test(text[i - 2] ?? "");
      i++;
      while (i < n) {
        if (backslash && text[i] === "\\") i += 2;
        else if (text[i] === ch) {
          if (text[i + 1] === ch) i += 2;
          else {
            i++;
            break;
          }
        } else i++;
      }
    } else if (dollarQuotes && ch === "$" && !/[A-Za-z0-9_]/.test(text[i - 1] ?? "")) {
      const m = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(text.slice(i, i + 64));
      if (m) {
        const close = text.indexOf(m[0], i + m[0].length);
        i = close === -1 ? n : close + m[0].length;
      } else {
        visit(i, ch);
        i++;
      }
    } else {
      visit(i, ch);
      i++;
    }
  }
}

/** The statement from its first word on: comments before it are not SQL a pattern should see. */
export function withoutLeadingComments(sql: string): string {
  let s = sql.trimStart();
  for (;;) {
    if (s.startsWith("--")) s = (s.includes("\n") ? s.slice(s.indexOf("\n") + 1) : "").trimStart();
    else if (s.startsWith("/*") && s.includes("*/")) s = s.slice(s.indexOf("*/") + 2).trimStart();
    else return s;
  }
}
