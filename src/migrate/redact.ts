// Database URLs carry passwords. Everything the migrators say about a database (messages, events,
// error data) goes through these, so a password never reaches a log, the history or a terminal.

const SCHEME_RE = /^([a-z][a-z0-9+.-]*):/i;

/**
 * The URL with its password replaced by *** and its query dropped (a query can carry
 * `password=` too). Scheme, user, host, port and database stay, so the reader still knows which
 * database is meant.
 */
export function redactUrl(url: string): string {
  const scheme = SCHEME_RE.exec(url)?.[1]?.toLowerCase();
  if (scheme === undefined || !url.slice(scheme.length + 1).startsWith("//")) {
    // sqlite:path/x.db or a plain path: no authority part, so nothing secret in it.
    return url;
  }
  try {
    const u = new URL(url);
    const user = u.username === "" ? "" : `${u.username}${u.password === "" ? "" : ":***"}@`;
    return `${scheme}://${user}${u.host}${u.pathname === "/" ? "" : u.pathname}`;
  } catch {
    // Unparseable (e.g. several hosts): cut the userinfo's password and the query by hand.
    const authorityStart = scheme.length + 3;
    const rest = url.slice(authorityStart).split(/[?#]/)[0] ?? "";
    const at = rest.lastIndexOf("@");
    if (at === -1) return `${scheme}://${rest}`;
    const userinfo = rest.slice(0, at);
    const colon = userinfo.indexOf(":");
    const user = colon === -1 ? userinfo : `${userinfo.slice(0, colon)}:***`;
    return `${scheme}://${user}${rest.slice(at)}`;
  }
}

/**
 * A short name for the database, without credentials: `host:port/dbname` for postgres, the path
 * for sqlite. This is what messages and events use.
 */
export function describeDatabase(url: string): string {
  const scheme = SCHEME_RE.exec(url)?.[1]?.toLowerCase();
  if (scheme === "postgres" || scheme === "postgresql") {
    try {
      const u = new URL(url);
      // pg takes a unix socket directory from ?host=, the way libpq does.
      const host = u.hostname !== "" ? u.hostname : (u.searchParams.get("host") ?? "localhost");
      const port = u.port !== "" ? u.port : (u.searchParams.get("port") ?? "5432");
      const db = decodeURIComponent(u.pathname.replace(/^\//, "")) || decodeURIComponent(u.username) || "postgres";
      return `${host}:${port}/${db}`;
    } catch {
      return redactUrl(url);
    }
  }
  if (scheme === "sqlite" || scheme === "file") {
    return url.slice(scheme.length + 1).replace(/^\/\/(?=\/)/, "").split("?")[0] ?? url;
  }
  return redactUrl(url);
}

/** Every form in which the URL's password could show up in a message, longest first. */
export function secretsOf(url: string): string[] {
  const found = new Set<string>();
  try {
    const u = new URL(url);
    if (u.password !== "") {
      found.add(u.password);
      found.add(safeDecode(u.password));
    }
    for (const key of ["password", "sslpassword"]) {
      const v = u.searchParams.get(key);
      if (v) found.add(v);
    }
  } catch {
    const m = /^[a-z][a-z0-9+.-]*:\/\/[^/@?#]*?:([^@/?#]*)@/i.exec(url);
    if (m?.[1]) {
      found.add(m[1]);
      found.add(safeDecode(m[1]));
    }
  }
  if (url !== "") found.add(url);
  return [...found].filter((s) => s !== "").sort((a, b) => b.length - a.length);
}

/** Replaces the URL itself and its password with redacted forms wherever they appear in text. */
export function scrubSecrets(text: string, url: string): string {
  let out = text;
  for (const secret of secretsOf(url)) {
    const replacement = secret === url ? redactUrl(url) : "***";
    out = out.split(secret).join(replacement);
  }
  return out;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
