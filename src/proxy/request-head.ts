// The client-facing request-head parser (RFC 9112 §3, §5, §6): strict by design. Anything a
// server and a proxy could read two ways (both Content-Length and Transfer-Encoding, several
// Content-Length, a coding besides chunked, obs-fold, CR or LF alone, controls in a field, several
// Transfer-Encoding fields, an absolute-form target that names another host) is refused, so that
// what the proxy forwards can only mean what it read.

import http from "node:http";
import { CHUNKED_ONLY, FIELD_LINES, trimOws } from "./http-syntax.js";

/** A request head the proxy accepts. */
export interface RequestHead {
  method: string;
  /** The request target as sent: origin-form ("/p?q"), absolute-form, or "*" for OPTIONS. */
  url: string;
  versionMinor: 0 | 1;
  /** Field names and values in turn, as sent (values without the OWS around them). */
  rawHeaders: string[];
  /** -1: none. */
  contentLength: number;
  chunked: boolean;
  keepAlive: boolean;
  /** Connection: upgrade with an Upgrade field: the connection is handed over after the head. */
  upgrade: boolean;
  /** The Expect field's value, when sent. */
  expect: string | undefined;
}

/** Why a head was refused: llhttp's code for the same fault where it has one, so that logs and answers read alike. */
export interface RequestHeadFault {
  code: string;
  why: string;
}

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

/** Parses a head's text (latin1, from the request line to the last field line, without the blank line). */
export function parseRequestHead(text: string): RequestHead | RequestHeadFault {
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
  // Every line break must start a well-formed field line: this refuses obs-fold, CR or LF alone,
  // a space before the colon, an empty name, and controls (NUL, VT, DEL...) in a value.
  FIELD_LINES.lastIndex = eol;
  if (eol < text.length && FIELD_LINES.test(text)) return fault("HPE_INVALID_HEADER_TOKEN", "malformed header field");
  const versionMinor = m[3] === "1" ? 1 : 0;
  const rawHeaders: string[] = [];
  let contentLength = -1;
  let transferEncoding: string | undefined;
  let connection = "";
  let upgradeField = false;
  let expect: string | undefined;
  let host: string | undefined;
  let start = eol + 2;
  while (start < text.length) {
    let end = text.indexOf("\r\n", start);
    if (end === -1) end = text.length;
    const colon = text.indexOf(":", start);
    const name = text.slice(start, colon);
    const value = trimOws(text.slice(colon + 1, end), 0);
    rawHeaders.push(name, value);
    // Only the names that matter here are lowercased: their lengths tell them apart cheaply.
    switch (name.length) {
      case 4:
        if (name.toLowerCase() === "host") host = value;
        break;
      case 6:
        if (name.toLowerCase() === "expect") expect = expect === undefined ? value : `${expect}, ${value}`;
        break;
      case 7:
        if (name.toLowerCase() === "upgrade") upgradeField = true;
        break;
      case 10:
        if (name.toLowerCase() === "connection") connection += `,${value}`;
        break;
      case 14:
        if (name.toLowerCase() === "content-length") {
          if (contentLength !== -1) return fault("HPE_UNEXPECTED_CONTENT_LENGTH", "more than one Content-Length");
          if (!CONTENT_LENGTH.test(value)) return fault("HPE_INVALID_CONTENT_LENGTH", "invalid Content-Length");
          contentLength = Number(value);
        }
        break;
      case 17:
        if (name.toLowerCase() === "transfer-encoding") {
          if (transferEncoding !== undefined) return fault("HPE_INVALID_TRANSFER_ENCODING", "more than one Transfer-Encoding");
          transferEncoding = text.slice(colon + 1, end);
        }
        break;
    }
    start = end + 2;
  }
  if (transferEncoding !== undefined) {
    if (contentLength !== -1) return fault("HPE_UNEXPECTED_CONTENT_LENGTH", "Content-Length with Transfer-Encoding");
    if (versionMinor === 0) return fault("HPE_INVALID_TRANSFER_ENCODING", "Transfer-Encoding in an HTTP/1.0 request");
    if (!CHUNKED_ONLY.test(transferEncoding)) return fault("HPE_INVALID_TRANSFER_ENCODING", "a transfer coding other than chunked alone");
  }
  if (url.charCodeAt(0) !== 47 && url !== "*") {
    const authority = ABSOLUTE_FORM.exec(url)![1]!;
    if (host === undefined || authority.toLowerCase() !== host.toLowerCase()) return fault("HPE_INVALID_URL", "the request target names another host than Host");
  }
  const close = connection !== "" && CLOSE_TOKEN.test(connection);
  return {
    method,
    url,
    versionMinor,
    rawHeaders,
    contentLength,
    chunked: transferEncoding !== undefined,
    keepAlive: !close && (versionMinor === 1 || (connection !== "" && KEEP_ALIVE_TOKEN.test(connection))),
    upgrade: upgradeField && connection !== "" && UPGRADE_TOKEN.test(connection),
    expect,
  };
}

export function isFault(head: RequestHead | RequestHeadFault): head is RequestHeadFault {
  return (head as RequestHeadFault).code !== undefined;
}
