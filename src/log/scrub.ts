// Keeps secrets out of what the agent and the proxy write down (log lines, events, a failed step's
// output): values it was told are secret, passwords in URLs, authorization headers, values named
// like secrets. It also bounds every string, and escapes the control characters that would let a
// message forge a second line or drive a terminal.

export const REDACTED = "[redacted]";
/** A longer string is cut here, saying how much was left out. */
export const MAX_STRING_CHARS = 8_192;
/**
 * A known secret shorter than this is not replaced wherever it occurs ("pw" would blank every
 * "pw" in every line); the patterns below still catch it in a URL or after NAME=.
 */
export const MIN_SECRET_CHARS = 6;
/** Past this depth a field is not walked: log data is shallow, anything deeper is noise or a cycle. */
const MAX_DEPTH = 8;
/** Items of one array kept in a line. */
const MAX_ITEMS = 200;
/** Text beyond this is dropped before the patterns run, so a hostile megabyte costs no more than this. */
const SCAN_LIMIT_CHARS = 8 * MAX_STRING_CHARS;

// Names whose values are secrets: variables (API_TOKEN, DB_PASSWORD, DATABASE_URL), fields
// (token, password) and headers (Authorization, Cookie, X-Consul-Token). "-" and "_" alike.
const SECRET_ENDINGS = ["token", "secret", "password", "passwd", "api_key", "apikey", "private_key", "credentials", "database_url"];
const SECRET_WHOLE = ["authorization", "proxy_authorization", "cookie", "set_cookie"];
const words = (list: string[]): string => list.map((w) => w.replace(/_/g, "[-_]")).join("|");
const SECRET_NAME_TEXT = `[A-Za-z0-9_-]{0,64}(?:${words(SECRET_ENDINGS)})|(?:${words(SECRET_WHOLE)})`;
const SECRET_NAME = new RegExp(`^(?:${SECRET_NAME_TEXT})$`, "i");

/** Whether a variable, field or header of this name holds a secret. */
export function isSecretName(name: string): boolean {
  return SECRET_NAME.test(name);
}

// Bounded quantifiers throughout: no pattern backtracks over more than a few hundred characters.
const TEXT_RULES: Array<[RegExp, string]> = [
  // scheme://user:password@host → scheme://user:***@host
  [/\b([a-z][a-z0-9+.-]{0,30}:\/\/[^\s:@/?#]{0,256}):[^\s@]{0,256}?@/gi, "$1:***@"],
  // NAME=value and NAME: value: "API_TOKEN=x", "?access_token=x", "Authorization: Bearer x"
  [new RegExp(`(^|[^A-Za-z0-9_-])(${SECRET_NAME_TEXT})(\\s{0,4}[=:]\\s{0,4})(?!\\[redacted\\])("[^"\\n]{0,1024}"|'[^'\\n]{0,1024}'|(?:(?:bearer|basic|token|digest) )?[^\\s&;,"']{1,1024})`, "gi"), `$1$2$3${REDACTED}`],
  // "NAME": "value", as in a JSON dump of an environment
  [new RegExp(`("(?:${SECRET_NAME_TEXT})"\\s{0,4}:\\s{0,4}")(?:[^"\\\\]|\\\\.){0,4096}"`, "gi"), `$1${REDACTED}"`],
  // a bearer token anywhere
  [/\b(bearer)\s{1,4}(?!\[redacted\])[A-Za-z0-9._~+/=-]{1,1024}/gi, `$1 ${REDACTED}`],
];

// C0 and C1 controls, DEL, and the two Unicode line separators: each shown as an escape instead.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const CONTROL_NAMES: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/** The text with control characters written as escapes: one line, nothing a terminal acts on. */
export function escapeControl(text: string): string {
  return text.replace(CONTROL, (c) => CONTROL_NAMES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length - max} more characters)`;
}

export class Scrubber {
  private readonly known = new Set<string>();
  private knownRe: RegExp | undefined;

  constructor(secrets: Iterable<string> = []) {
    this.add(secrets);
  }

  /** Values never to write, wherever they appear. */
  add(secrets: Iterable<string>): void {
    let changed = false;
    for (const s of secrets) {
      if (typeof s !== "string" || s.length < MIN_SECRET_CHARS || this.known.has(s)) continue;
      this.known.add(s);
      changed = true;
    }
    if (!changed) return;
    // Longest first, so a URL goes as a whole before its password alone is looked for.
    const alternatives = [...this.known].sort((a, b) => b.length - a.length).map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    this.knownRe = new RegExp(alternatives.join("|"), "g");
  }

  /** How many known secrets it holds. */
  get size(): number {
    return this.known.size;
  }

  /** Secrets out, length bounded; line breaks kept (for fields that hold output). */
  text(text: string): string {
    let out = text.length > SCAN_LIMIT_CHARS ? text.slice(0, SCAN_LIMIT_CHARS) : text;
    if (this.knownRe) out = out.replace(this.knownRe, REDACTED);
    for (const [re, replacement] of TEXT_RULES) out = out.replace(re, replacement);
    // Cut after scrubbing: a secret across the cut is still matched whole, then dropped with the rest.
    return out.length > MAX_STRING_CHARS || text.length > SCAN_LIMIT_CHARS ? `${out.slice(0, MAX_STRING_CHARS)}… (cut from ${text.length} characters)` : out;
  }

  /** A line's message: secrets out, length bounded, one line with no control character. */
  message(text: string): string {
    return escapeControl(this.text(text));
  }

  /**
   * A copy of structured data with secrets out: values under secret-looking names and every
   * header value are replaced, strings scrubbed as text; bounded in depth and width.
   */
  fields(value: unknown): unknown {
    return this.walk(value, 0, new WeakSet());
  }

  private walk(value: unknown, depth: number, seen: WeakSet<object>): unknown {
    if (typeof value === "string") return this.text(value);
    if (typeof value === "bigint") return String(value);
    if (value === null || typeof value !== "object") return typeof value === "function" || typeof value === "symbol" ? undefined : value;
    if (seen.has(value)) return "[circular]";
    if (depth >= MAX_DEPTH) return "[too deep]";
    seen.add(value);
    try {
      if (value instanceof Error) {
        const code = (value as NodeJS.ErrnoException).code;
        return { type: value.name, message: this.text(value.message), ...(code !== undefined ? { code: String(code) } : {}) };
      }
      if (Array.isArray(value)) {
        const items = value.slice(0, MAX_ITEMS).map((v) => this.walk(v, depth + 1, seen));
        if (value.length > MAX_ITEMS) items.push(`… (${value.length - MAX_ITEMS} more items)`);
        return items;
      }
      const out: Record<string, unknown> = {};
      for (const [key, v] of Object.entries(value)) {
        const name = truncate(this.text(key), 256);
        if (isSecretName(key) && v !== undefined && v !== null && v !== "") out[name] = REDACTED;
        // Headers carry credentials under any name (X-Hook-Signature, X-Api-Key...): none is shown.
        else if (key.toLowerCase() === "headers" && v && typeof v === "object" && !Array.isArray(v)) out[name] = Object.fromEntries(Object.keys(v).map((h) => [truncate(this.text(h), 256), REDACTED]));
        else out[name] = this.walk(v, depth + 1, seen);
      }
      return out;
    } finally {
      seen.delete(value);
    }
  }
}
