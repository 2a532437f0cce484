// HTTP/1.1 syntax both of the proxy's parsers share (RFC 9110, RFC 9112): the client-facing
// request parser (request-head.ts, client-server.ts) and the upstream response parser (upstream.ts).

/** RFC 9110 §5.6.2 token: a field name, a method, a transfer coding. */
export const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/**
 * The one transfer coding the proxy accepts, alone in its field. Trailing HTAB is not OWS here:
 * Node's parser does not read `chunked<HTAB>` as chunked, so neither may the proxy.
 */
export const CHUNKED_ONLY = /^[ \t]*chunked *$/i;
/**
 * Node's limit on the extensions of one chunk. Node counts names and values, the proxy every byte
 * after the size, so extensions within a few bytes per extension of it are refused here alone.
 */
export const MAX_CHUNK_EXTENSION_BYTES = 16 * 1024;
/**
 * Deliberately stricter than Node, which reads any number of leading zeros in a chunk size: the
 * proxy holds a line in memory, so it stops 1 KiB past what the extensions may take.
 */
export const MAX_CHUNK_LINE_BYTES = MAX_CHUNK_EXTENSION_BYTES + 1024;
/**
 * A chunk-size line as Node reads it (RFC 9112 §7.1.1): hex digits, then extensions with no
 * whitespace around ';' or '=', each value a token or a quoted string. Node also takes an empty
 * name (';=v', ';;x'), but not a ';' that ends the line.
 */
export const CHUNK_SIZE_LINE =
  /^([0-9A-Fa-f]+)(?:;(?! |$)[!#$%&'*+\-.^_`|~0-9A-Za-z]*(?:=[!#$%&'*+\-.^_`|~0-9A-Za-z]*(?:"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*")?)?)*$/;
/**
 * A line break not followed by a well-formed field line (RFC 9110 §5.1, §5.5): a token, a colon,
 * then HTAB, SP, VCHAR and obs-text up to the next CR LF. One scan of the whole head is about
 * half the cost of testing line by line. It also refuses obs-fold (a line starting with SP or
 * HTAB), a CR or LF alone, and NUL, VT and the other controls in a value.
 */
export const FIELD_LINES = /\r\n(?![!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*(?:\r\n|$))/g;
/** What a field value (or reason phrase) may hold besides HTAB, SP, VCHAR and obs-text (RFC 9110 §5.5). */
export const INVALID_FIELD_CHAR = /[^\t\x20-\x7e\x80-\xff]/;

/** A field value without the SP and HTAB around it (RFC 9110 §5.5 OWS; not String.trim, which also eats NBSP). */
export function trimOws(s: string, from: number, end = s.length): string {
  while (from < end && (s.charCodeAt(from) === 32 || s.charCodeAt(from) === 9)) from++;
  while (end > from && (s.charCodeAt(end - 1) === 32 || s.charCodeAt(end - 1) === 9)) end--;
  return s.slice(from, end);
}

/** Whether s equals `lower` (lowercase ASCII) but for ASCII case, without building a lowercase copy of s. */
export function equalsLower(s: string, lower: string): boolean {
  return equalsLowerAt(s, 0, s.length, lower);
}

/** Whether s[start, end) equals `lower` (lowercase ASCII) but for ASCII case, without a string of its own. */
export function equalsLowerAt(s: string, start: number, end: number, lower: string): boolean {
  if (end - start !== lower.length) return false;
  for (let i = 0; i < lower.length; i++) {
    let c = s.charCodeAt(start + i);
    if (c >= 65 && c <= 90) c += 32;
    if (c !== lower.charCodeAt(i)) return false;
  }
  return true;
}

/**
 * The few field names a parser acts on, found in a head's text by their bounds: most names (Date,
 * Content-Type, Accept...) are ruled out by their length alone, the rest compared without case
 * and without a string per field.
 */
export class NameTable {
  private readonly byLength: (string[] | undefined)[] = [];

  constructor(lowercaseNames: Iterable<string>) {
    for (const name of lowercaseNames) (this.byLength[name.length] ??= []).push(name);
  }

  /** The lowercase name that s[start, end) is, or undefined. */
  find(s: string, start: number, end: number): string | undefined {
    const candidates = this.byLength[end - start];
    if (candidates !== undefined) for (const c of candidates) if (equalsLowerAt(s, start, end, c)) return c;
    return undefined;
  }
}

/**
 * The field lines a head relays, once its walk is over: `kept`, the runs taken so far, then the
 * last run (from `run` to the end of `text`) with the CR LF the head's text leaves off its last
 * line. `first` is where the field lines start; when nothing was left out, the text is taken whole.
 */
export function withLastRun(text: string, first: number, run: number, kept: string): string {
  if (run >= text.length) return kept;
  return run === first ? `${text.slice(first)}\r\n` : `${kept}${text.slice(run)}\r\n`;
}

/**
 * Where the first CR LF CR LF in buf at or after `from` starts, or -1: buf.indexOf of the same
 * four bytes, in JavaScript. Buffer.indexOf crosses into C++ on every call, which cost more than
 * the search over a head of a few hundred bytes; this looks at one byte in four where there is no
 * line break (Horspool's shift table for the pattern CR LF CR LF).
 */
export function headEnd(buf: Uint8Array, from = 0): number {
  const last = buf.length - 3;
  let i = from;
  while (i < last) {
    const c = buf[i + 3]!;
    if (c === 10) {
      if (buf[i + 2] === 13 && buf[i + 1] === 10 && buf[i] === 13) return i;
      i += 2;
    } else if (c === 13) {
      i += 1;
    } else {
      i += 4;
    }
  }
  return -1;
}

/** Whether buf, from start, holds an LF without a CR before it or a CR followed by something else. */
export function strayLineBreak(buf: Buffer, start: number): boolean {
  for (let i = buf.indexOf(10, start); i !== -1; i = buf.indexOf(10, i + 1)) if (i === 0 || buf[i - 1] !== 13) return true;
  for (let i = buf.indexOf(13, start); i !== -1 && i + 1 < buf.length; i = buf.indexOf(13, i + 1)) if (buf[i + 1] !== 10) return true;
  return false;
}

/** s as one flat string: a string made by concatenation is a tree that every write walks again. */
export function flat(s: string): string {
  return Buffer.from(s, "latin1").toString("latin1");
}

/**
 * Whether buf[start..start + bytes.length) holds bytes: a loop here beats Buffer's compare on a
 * head's few hundred bytes, whose argument checks and call into C++ cost more than the comparing.
 */
export function sameBytesAt(buf: Uint8Array, start: number, bytes: Uint8Array): boolean {
  if (start < 0 || start + bytes.length > buf.length) return false;
  for (let i = bytes.length - 1; i >= 0; i--) if (buf[start + i] !== bytes[i]) return false;
  return true;
}
