// The client-facing request-head parser (RFC 9112 §3, §5, §6): strict by design. Anything a
// server and a proxy could read two ways (both Content-Length and Transfer-Encoding, several
// Content-Length, a coding besides chunked, obs-fold, CR or LF alone, controls in a field, several
// Transfer-Encoding fields, an absolute-form target that names another host) is refused, so that
// what the proxy forwards can only mean what it read.

import http from "node:http";
import { DROPPED_REQUEST_HEADERS } from "./http.js";
import { CHUNKED_ONLY, FIELD_LINES, NameTable, trimOws, withLastRun } from "./http-syntax.js";

/**
 * A request head the proxy accepts, read in one pass: what the client server and the data plane
 * act on. Read-only: a connection's next request may share it (parseRequestHead).
 */
export type RequestHead = Readonly<ParsedHead>;

/** RequestHead while the parser fills it in. */
interface ParsedHead {
  /** The head's text, from the request line to its last field line (without the CR LF that ends it). */
  text: string;
  method: string;
  /** The request target as sent: origin-form ("/p?q"), absolute-form, or "*" for OPTIONS. */
  url: string;
  versionMinor: 0 | 1;
  /** The field lines to forward as read, each with its CR LF: every one but the hop-by-hop, forwarding and Content-Length ones. */
  forward: string;
  /** The last Host value, and how many Host fields there were. */
  host: string | undefined;
  hosts: number;
  /** -1: none. */
  contentLength: number;
  /** Content-Length's digits as sent, for the upstream. */
  contentLengthText: string | undefined;
  chunked: boolean;
  keepAlive: boolean;
  /** Connection: upgrade with an Upgrade field: the connection is handed over after the head. */
  upgrade: boolean;
  /** The Expect field's value, when sent. */
  expect: string | undefined;
  /** These fields' values (several joined with ", "), when sent. */
  connection: string | undefined;
  upgradeProtocols: string | undefined;
  xForwardedFor: string | undefined;
  xForwardedProto: string | undefined;
  xForwardedHost: string | undefined;
  xRealIp: string | undefined;
  forwarded: string | undefined;
}

/** Why a head was refused: llhttp's code for the same fault where it has one, so that logs and answers read alike. */
export interface RequestHeadFault {
  code: string;
  why: string;
}

/** Dropped fields whose values the data plane uses (Connection's tokens, a trusted peer's forwarding fields), and where they go. */
const JOINED_FIELDS = {
  connection: "connection",
  upgrade: "upgradeProtocols",
  expect: "expect",
  "x-forwarded-for": "xForwardedFor",
  "x-forwarded-proto": "xForwardedProto",
  "x-forwarded-host": "xForwardedHost",
  "x-real-ip": "xRealIp",
  forwarded: "forwarded",
} as const satisfies Record<string, keyof ParsedHead>;
/** The fields the parser acts on: the dropped ones, Host and Content-Length. */
const SPECIAL_NAMES = new NameTable([...DROPPED_REQUEST_HEADERS, "host", "content-length"]);

/** Methods Node's parser knows: anything else is refused as llhttp refuses it. */
const METHODS = new Set(http.METHODS);
/** method SP request-target SP HTTP-version; the target visible ASCII only. */
const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP\/1\.([01])$/;
/** Content-Length: digits only, and few enough to stay an exact integer. */
const CONTENT_LENGTH = /^\d{1,15}$/;
/** absolute-form: its authority must name the Host the proxy routes on. */
const ABSOLUTE_FORM = /^https?:\/\/([^/?#]*)/i;
const CLOSE_TOKEN = /(?:^|,)[ \t]*close[ \t]*(?:,|$)/i;
const KEEP_ALIVE_TOKEN = /(?:^|,)[ \t]*keep-alive[ \t]*(?:,|$)/i;
const UPGRADE_TOKEN = /(?:^|,)[ \t]*upgrade[ \t]*(?:,|$)/i;

function fault(code: string, why: string): RequestHeadFault {
  return { code, why };
}

/**
 * Parses a head's text (latin1, from the request line to the last field line, without the blank
 * line). `last` is the previous head on the same connection: a client repeats its field lines from
 * one request to the next, and the same lines, after a request line of the same version with an
 * origin-form target, read as they did. The RequestHead returned is never to be changed.
 */
export function parseRequestHead(text: string, last?: RequestHead): RequestHead | RequestHeadFault {
  // The very same head again (a poll, a probe): the same reading, shared, as nothing changes a head once read.
  if (last !== undefined && text === last.text) return last;
  let eol = text.indexOf("\r\n");
  if (eol === -1) eol = text.length;
  const m = REQUEST_LINE.exec(text.slice(0, eol));
  if (m === null) {
    if (/ HTTP\/(?!1\.[01]$)[^ ]*$/.test(text.slice(0, eol))) return fault("HPE_INVALID_VERSION", "only HTTP/1.0 and HTTP/1.1 are served");
    return fault("HPE_INVALID_URL", "malformed request line");
  }
  const method = m[1]!;
  const url = m[2]!;
  if (!METHODS.has(method)) return fault("HPE_INVALID_METHOD", "unknown method");
  // CONNECT (authority-form) opens a tunnel to anywhere: not a reverse proxy's business.
  if (method === "CONNECT") return fault("HPE_INVALID_METHOD", "CONNECT is not served");
  if (url.charCodeAt(0) !== 47 /* / */ && !(url === "*" && method === "OPTIONS") && !ABSOLUTE_FORM.test(url)) return fault("HPE_INVALID_URL", "malformed request target");
  const versionMinor = m[3] === "1" ? 1 : 0;
  if (last !== undefined && last.versionMinor === versionMinor && url.charCodeAt(0) === 47 /* / */ && sameFieldLines(text, eol, last)) return withRequestLine(last, text, method, url);
  // Every line break must start a well-formed field line: this refuses obs-fold, CR or LF alone,
  // a space before the colon, an empty name, and controls (NUL, VT, DEL...) in a value.
  FIELD_LINES.lastIndex = eol;
  if (eol < text.length && FIELD_LINES.test(text)) return fault("HPE_INVALID_HEADER_TOKEN", "malformed header field");
  const head: ParsedHead = {
    text, method, url, versionMinor, forward: "", host: undefined, hosts: 0, contentLength: -1, contentLengthText: undefined, chunked: false,
    keepAlive: false, upgrade: false, expect: undefined, connection: undefined, upgradeProtocols: undefined,
    xForwardedFor: undefined, xForwardedProto: undefined, xForwardedHost: undefined, xRealIp: undefined, forwarded: undefined,
  };
  let transferEncoding: string | undefined;
  let forward = "";
  const first = eol + 2;
  let run = first;
  // Field lines by their bounds: a string only for the values acted on, and the lines forwarded in runs between the dropped ones.
  for (let at = first; at < text.length; ) {
    let end = text.indexOf("\r\n", at);
    if (end === -1) end = text.length;
    const start = at;
    at = end + 2;
    const colon = text.indexOf(":", start);
    const name = SPECIAL_NAMES.find(text, start, colon);
    if (name === undefined) continue;
    const value = trimOws(text, colon + 1, end);
    if (name === "host") {
      head.host = value;
      head.hosts++;
      continue;
    }
    if (start > run) forward += text.slice(run, start);
    run = at;
    switch (name) {
      case "content-length":
        if (head.contentLength !== -1) return fault("HPE_UNEXPECTED_CONTENT_LENGTH", "more than one Content-Length");
        if (!CONTENT_LENGTH.test(value)) return fault("HPE_INVALID_CONTENT_LENGTH", "invalid Content-Length");
        head.contentLength = Number(value);
        head.contentLengthText = value;
        break;
      case "transfer-encoding":
        if (transferEncoding !== undefined) return fault("HPE_INVALID_TRANSFER_ENCODING", "more than one Transfer-Encoding");
        transferEncoding = text.slice(colon + 1, end);
        break;
      default:
        // The other dropped fields that matter: their values, several joined.
        if (name in JOINED_FIELDS) {
          const key = JOINED_FIELDS[name as keyof typeof JOINED_FIELDS];
          head[key] = join(head[key], value);
        }
    }
  }
  head.forward = withLastRun(text, first, run, forward);
  if (transferEncoding !== undefined) {
    if (head.contentLength !== -1) return fault("HPE_UNEXPECTED_CONTENT_LENGTH", "Content-Length with Transfer-Encoding");
    if (versionMinor === 0) return fault("HPE_INVALID_TRANSFER_ENCODING", "Transfer-Encoding in an HTTP/1.0 request");
    if (!CHUNKED_ONLY.test(transferEncoding)) return fault("HPE_INVALID_TRANSFER_ENCODING", "a transfer coding other than chunked alone");
    head.chunked = true;
  }
  if (url.charCodeAt(0) !== 47 && url !== "*") {
    const authority = ABSOLUTE_FORM.exec(url)![1]!;
    if (head.host === undefined || authority.toLowerCase() !== head.host.toLowerCase()) return fault("HPE_INVALID_URL", "the request target names another host than Host");
  }
  const connection = head.connection;
  const close = connection !== undefined && CLOSE_TOKEN.test(connection);
  head.keepAlive = !close && (versionMinor === 1 || (connection !== undefined && KEEP_ALIVE_TOKEN.test(connection)));
  head.upgrade = head.upgradeProtocols !== undefined && connection !== undefined && UPGRADE_TOKEN.test(connection);
  return head;
}

/** Whether text's field lines, from `eol` (its request line's end), are last's. */
function sameFieldLines(text: string, eol: number, last: RequestHead): boolean {
  // The request line is method SP target SP "HTTP/1.x" (REQUEST_LINE): its length tells where last's field lines start.
  const lastEol = last.method.length + last.url.length + 10;
  return text.length - eol === last.text.length - lastEol && text.endsWith(last.text.slice(lastEol));
}

/** last's reading with another request line: every field listed, so that the copy has the shape of a parsed head (a spread is several times slower). */
function withRequestLine(last: RequestHead, text: string, method: string, url: string): RequestHead {
  return {
    text, method, url, versionMinor: last.versionMinor, forward: last.forward, host: last.host, hosts: last.hosts, contentLength: last.contentLength,
    contentLengthText: last.contentLengthText, chunked: last.chunked, keepAlive: last.keepAlive, upgrade: last.upgrade, expect: last.expect,
    connection: last.connection, upgradeProtocols: last.upgradeProtocols, xForwardedFor: last.xForwardedFor, xForwardedProto: last.xForwardedProto,
    xForwardedHost: last.xForwardedHost, xRealIp: last.xRealIp, forwarded: last.forwarded,
  };
}

function join(a: string | undefined, b: string): string {
  return a === undefined ? b : `${a}, ${b}`;
}

/** A head's field lines as names and values in turn (values without the OWS around them), as Node's rawHeaders. */
export function rawHeadersOf(text: string): string[] {
  const raw: string[] = [];
  let at = text.indexOf("\r\n");
  if (at === -1) return raw;
  for (at += 2; at < text.length; ) {
    let end = text.indexOf("\r\n", at);
    if (end === -1) end = text.length;
    const colon = text.indexOf(":", at);
    raw.push(text.slice(at, colon), trimOws(text, colon + 1, end));
    at = end + 2;
  }
  return raw;
}

export function isFault(head: RequestHead | RequestHeadFault): head is RequestHeadFault {
  return (head as RequestHeadFault).code !== undefined;
}
