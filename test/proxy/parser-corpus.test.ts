// Named regression cases for the upstream response parser: byte streams (smuggling and desync
// attempts among them) with the verdict the proxy must reach, checked against Node's as well.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type ClientResponse, isProxyError, ParserRig } from "./parser-rig.js";

/**
 * What the client must see for the first request: that response, the proxy's 502 (before any
 * byte of a response), or a connection closed without a complete response (`broken`). Node fails
 * every stream expected to end in 502 or broken, unless the row names the deliberate rule by which
 * the proxy refuses what Node accepts.
 */
type Expect = { status: number; body: string } | "502" | "broken";

interface Row {
  name: string;
  method?: "GET" | "HEAD";
  /** The upstream's bytes, in the pieces it writes them a tick apart. */
  pieces: string[];
  /** The last piece waits for the next request on that upstream connection. */
  holdLast?: boolean;
  /** The upstream keeps the connection open after its bytes even when Node has failed them. */
  keepOpen?: boolean;
  expect: Expect;
  /** The rule, as upstream.ts documents it, when Node accepts what the proxy refuses. */
  rule?: string;
}

const CL5 = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
const CHUNKED = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
const ok = (body: string, status = 200): Expect => ({ status, body });
const TE_RULE = "Transfer-Encoding other than one chunked";

const CORPUS: Row[] = [
  // What must keep working.
  { name: "Content-Length body", pieces: [`${CL5}hello`], expect: ok("hello") },
  { name: "chunked body", pieces: [`${CHUNKED}5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n`], expect: ok("hello world") },
  { name: "chunk extensions", pieces: [`${CHUNKED}5;foo=bar\r\nhello\r\n0;a="b c";d\r\n\r\n`], expect: ok("hello") },
  { name: "trailers are dropped", pieces: [`${CHUNKED}5\r\nhello\r\n0\r\nX-Checksum: 1\r\nY: 2\r\n\r\n`], expect: ok("hello") },
  { name: "body until close", pieces: ["HTTP/1.1 200 OK\r\n\r\nhello world"], expect: ok("hello world") },
  // Framing field names in any case: the parser compares them without lowercasing (equalsLower).
  { name: "Content-Length in mixed case", pieces: ["HTTP/1.1 200 OK\r\ncOnTeNt-LeNgTh: 5\r\n\r\nhello"], expect: ok("hello") },
  { name: "Transfer-Encoding in capitals", pieces: ["HTTP/1.1 200 OK\r\nTRANSFER-ENCODING: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"], expect: ok("hello") },
  { name: "Content-Length twice, cased apart", pieces: ["HTTP/1.1 200 OK\r\nContent-Length: 5\r\nCONTENT-LENGTH: 5\r\n\r\nhello"], expect: "502" },
  { name: "Content-Length with a capitalised Transfer-Encoding", pieces: ["HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-ENCODING: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"], expect: "502" },
  { name: "HTTP/1.0 body until close", pieces: ["HTTP/1.0 200 OK\r\n\r\nhello"], expect: ok("hello") },
  { name: "no reason phrase", pieces: [`HTTP/1.1 200\r\nContent-Length: 5\r\n\r\nhello`], expect: ok("hello") },
  { name: "head and body in many pieces", pieces: ["HTTP/1.1 2", "00 OK\r\nContent-Le", "ngth: 5\r", "\n\r", "\nhe", "llo"], expect: ok("hello") },
  { name: "chunk framing in many pieces", pieces: [`${CHUNKED}5`, "\r", "\nhel", "lo\r", "\n0\r\n", "\r", "\n"], expect: ok("hello") },
  { name: "100 Continue then the answer, one packet", pieces: [`HTTP/1.1 100 Continue\r\n\r\n${CL5}hello`], expect: ok("hello") },
  { name: "100 Continue then the answer, two packets", pieces: ["HTTP/1.1 100 Continue\r\n\r\n", `${CL5}hello`], expect: ok("hello") },
  { name: "103 Early Hints twice then the answer", pieces: [`HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n${CL5}hello`], expect: ok("hello") },
  { name: "HEAD: Content-Length, no body", method: "HEAD", pieces: [CL5], expect: ok("") },
  { name: "204 without a body", pieces: ["HTTP/1.1 204 No Content\r\n\r\n"], expect: ok("", 204) },
  { name: "304 with a Content-Length and no body", pieces: ["HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"], expect: ok("", 304) },
  { name: "a large body over many reads", pieces: [`HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n${"x".repeat(100_000)}`], expect: ok("x".repeat(100_000)) },
  { name: "a response pipelined behind a complete one is not served", pieces: [`${CL5}helloHTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsmuggle`], expect: ok("hello") },

  // Failures Node and the proxy agree on.
  { name: "closed before any byte", pieces: [""], expect: "502" },
  { name: "closed inside the head", pieces: ["HTTP/1.1 200 OK\r\nContent-Le"], expect: "502" },
  { name: "closed mid-body", pieces: ["HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"], expect: "broken" },
  { name: "closed mid-chunk", pieces: [`${CHUNKED}5\r\nhel`], expect: "broken" },
  { name: "closed before the last chunk", pieces: [`${CHUNKED}5\r\nhello\r\n`], expect: "broken" },
  { name: "closed in the trailer section", pieces: [`${CHUNKED}5\r\nhello\r\n0\r\n`], expect: "broken" },
  { name: "Content-Length: 5, 5", pieces: ["HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello"], expect: "502" },
  { name: "Content-Length: +5", pieces: ["HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"], expect: "502" },
  { name: "Content-Length: -5", pieces: ["HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello"], expect: "502" },
  { name: "Content-Length: 0x5", pieces: ["HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello"], expect: "502" },
  { name: "Content-Length empty", pieces: ["HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nhello"], expect: "502" },
  { name: "two different Content-Lengths", pieces: ["HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 3\r\n\r\nhello"], expect: "502" },
  { name: "obs-fold continuation line", pieces: ["HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 5\r\n\r\nhello"], expect: "502" },
  { name: "obs-fold on the first field", pieces: ["HTTP/1.1 200 OK\r\n X: a\r\nContent-Length: 5\r\n\r\nhello"], expect: "502" },
  { name: "space before the colon", pieces: ["HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello"], expect: "502" },
  { name: "a 1xx with a body", pieces: [`HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nhello${CL5}hello`], expect: "502" },
  { name: "HTTP/1.1 200<HTAB>OK", pieces: [`HTTP/1.1 200\tOK\r\nContent-Length: 5\r\n\r\nhello`], expect: "502" },
  { name: "status 2000", pieces: [`HTTP/1.1 2000 OK\r\nContent-Length: 5\r\n\r\nhello`], expect: "502" },
  { name: "lowercase http/1.1", pieces: [`http/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello`], expect: "502" },

  // Node accepts these; the proxy refuses them by rule.
  // Upgrades are tunnel.ts's; Node's client switches protocols on any 101.
  { name: "101 on the normal request path", pieces: ["HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"], expect: "502", rule: "101 outside an upgrade" },
  { name: "status 099", pieces: [`HTTP/1.1 099 Low\r\nContent-Length: 5\r\n\r\nhello`], expect: "502", rule: "status below 100" },
  { name: "HTTP/2.0 status line", pieces: [`HTTP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nhello`], expect: "502", rule: "HTTP version other than 1.0 and 1.1" },
  { name: "ICE/1.0 status line", pieces: [`ICE/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello`], expect: "502", rule: "HTTP version other than 1.0 and 1.1" },

  // Content-Length and Transfer-Encoding together: the proxy used to relay the Content-Length with
  // the de-chunked body, so the client read the rest as its next response.
  { name: "Transfer-Encoding: chunked with a shorter Content-Length", pieces: [`${CHUNKED.slice(0, -2)}Content-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n`], expect: "502" },
  { name: "Content-Length before Transfer-Encoding: chunked", pieces: ["HTTP/1.1 200 OK\r\nContent-Length: 12\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"], expect: "502" },
  { name: "Content-Length: 0 with Transfer-Encoding: chunked", pieces: ["HTTP/1.1 200 OK\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"], expect: "502" },
  { name: "HEAD answered with both framings", method: "HEAD", pieces: ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"], expect: "502" },

  // Content-Length as Node reads it; the proxy used to take all of these but the overflow.
  { name: "Content-Length twice with the same value", pieces: ["HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"], expect: "502" },
  { name: "Content-Length: 5<HTAB>", pieces: ["HTTP/1.1 200 OK\r\nContent-Length: 5\t\r\n\r\nhello"], expect: "502" },
  { name: "Content-Length: 5<NBSP>", pieces: ["HTTP/1.1 200 OK\r\nContent-Length: 5\xa0\r\n\r\nhello"], expect: "502" },
  { name: "Content-Length past 2^64 - 1", pieces: ["HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\nhello"], expect: "502" },
  { name: "Content-Length: 2^64 - 1, closed after 5 bytes", pieces: ["HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\nhello"], expect: "broken" },
  { name: "Content-Length with leading HTAB, trailing spaces and zeros", pieces: ["HTTP/1.1 200 OK\r\nContent-Length:\t005  \r\n\r\nhello"], expect: ok("hello") },
  { name: "304 with a Content-Length near 2^64", pieces: ["HTTP/1.1 304 Not Modified\r\nContent-Length: 18446744073709551615\r\n\r\n"], expect: ok("", 304) },

  // Transfer codings: the proxy drops Transfer-Encoding and re-chunks, so it takes only chunked.
  { name: "Transfer-Encoding: gzip, chunked", pieces: ["HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"], expect: "502", rule: TE_RULE },
  { name: "Transfer-Encoding: chunked, gzip", pieces: ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n"], expect: "502", rule: TE_RULE },
  { name: "Transfer-Encoding: identity", pieces: ["HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nhello"], expect: "502", rule: TE_RULE },
  { name: "Transfer-Encoding: chunked twice", pieces: ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"], expect: "502", rule: TE_RULE },
  { name: "Transfer-Encoding: chunked then gzip fields", pieces: ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n"], expect: "502", rule: TE_RULE },

  // Node reads this one until close, not as chunked; the proxy used to de-chunk it.
  { name: "Transfer-Encoding: chunked<HTAB>", pieces: ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t\r\n\r\n5\r\nhello\r\n0\r\n\r\n"], expect: "502", rule: TE_RULE },
  { name: "Transfer-Encoding: CHUNKED with spaces", pieces: ["HTTP/1.1 200 OK\r\nTransfer-Encoding:   CHUNKED  \r\n\r\n5\r\nhello\r\n0\r\n\r\n"], expect: ok("hello") },

  // Found by the fuzzer, shrunk: llhttp checks for a Content-Length on a Transfer-Encoding's name.
  { name: "an empty Transfer-Encoding after a Content-Length", pieces: ["HTTP/1.1 200 OK\r\nContent-Length: 4\r\nTransfer-Encoding: \r\n\r\n0\r\n\r\n"], expect: "502" },
  { name: "an empty Transfer-Encoding is ignored, as Node does", pieces: ["HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\nContent-Length: 5\r\n\r\nhello"], expect: ok("hello") },

  // Status lines the proxy used to misread: Number("2e2") is 200, and "1e2" made an interim answer.
  { name: "status 2e2", pieces: [`HTTP/1.1 2e2 OK\r\nContent-Length: 5\r\n\r\nhello`], expect: "502" },
  { name: "status 1e2 before a final answer", pieces: [`HTTP/1.1 1e2 X\r\n\r\n${CL5}hello`], expect: "502" },
  { name: "no space after the version", pieces: [`HTTP/1.1X200 OK\r\nContent-Length: 5\r\n\r\nhello`], expect: "502" },
  { name: "HTTP/1.5", pieces: [`HTTP/1.5 200 OK\r\nContent-Length: 5\r\n\r\nhello`], expect: "502" },

  // Node takes these; Node's server would not write them, so the proxy answered 502.
  { name: "a reason phrase with control characters", pieces: [`HTTP/1.1 200 O\x01K\x7f\r\nContent-Length: 5\r\n\r\nhello`], expect: ok("hello") },
  { name: "a reason phrase with NUL", pieces: [`HTTP/1.1 404 \x00\r\nContent-Length: 5\r\n\r\nhello`], expect: ok("hello", 404) },

  // Node skips empty lines before a status line; the proxy answered 502.
  { name: "an empty line before the status line", pieces: [`\r\n${CL5}hello`], expect: ok("hello") },
  { name: "LF and CR LF between 100 Continue and the answer", pieces: ["HTTP/1.1 100 Continue\r\n\r\n", `\n\r\n${CL5}hello`], expect: ok("hello") },

  // Field syntax, hop-by-hop fields included: the proxy left those to Node's server, which never sees them.
  { name: "a bare LF inside a Connection field", pieces: ["HTTP/1.1 200 OK\r\nConnection: close\nX: y\r\nContent-Length: 5\r\n\r\nhello"], expect: "502" },
  { name: "a control character in a Keep-Alive field", pieces: ["HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\x01\r\nContent-Length: 5\r\n\r\nhello"], expect: "502" },
  { name: "NUL in a Transfer-Encoding field", pieces: ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\x00\r\n\r\n5\r\nhello\r\n0\r\n\r\n"], expect: "502" },
  { name: "a bare CR inside a field value", pieces: ["HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 5\r\n\r\nhello"], expect: "502" },
  { name: "an invalid field name", pieces: ["HTTP/1.1 200 OK\r\nX(a): b\r\nContent-Length: 5\r\n\r\nhello"], expect: "502" },
  { name: "a field without a colon", pieces: ["HTTP/1.1 200 OK\r\ngarbage\r\nContent-Length: 5\r\n\r\nhello"], expect: "502" },
  { name: "an invalid field in a 100 Continue", pieces: [`HTTP/1.1 100 Continue\r\nX Y: z\r\n\r\n${CL5}hello`], expect: "502" },

  // Interim answers were skipped unread.
  { name: "a 100 Continue with both framings", pieces: [`HTTP/1.1 100 Continue\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n${CL5}hello`], expect: "502" },
  { name: "a 103 with an invalid Content-Length", pieces: [`HTTP/1.1 103 Early Hints\r\nContent-Length: x\r\n\r\n${CL5}hello`], expect: "502" },
  { name: "a 103 with Transfer-Encoding: gzip and no body", pieces: [`HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: gzip\r\n\r\n${CL5}hello`], expect: ok("hello") },

  // An interim answer that ends the connection, as Node reads Connection: what follows it is an
  // error. Found by the fuzzer, shrunk.
  { name: "an HTTP/1.0 100 Continue", pieces: [`HTTP/1.0 100 Continue\r\n\r\n${CL5}hello`], expect: "502" },
  { name: "a 103 with Connection: x, CLOSE", pieces: [`HTTP/1.1 103 Early Hints\r\nConnection: x, CLOSE\r\n\r\n${CL5}hello`], expect: "502" },
  { name: "an HTTP/1.0 100 Continue with Connection: keep-alive", pieces: [`HTTP/1.0 100 Continue\r\nConnection: keep-alive\r\n\r\n${CL5}hello`], expect: ok("hello") },
  // Node reads Proxy-Connection as Connection for close and keep-alive. Found by the fuzzer once it sent Proxy-Connection.
  { name: "an HTTP/1.0 100 Continue with Proxy-Connection: keep-alive", pieces: [`HTTP/1.0 100 Continue\r\nProxy-Connection: keep-alive\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n${CL5}hello`], expect: ok("hello") },
  { name: "a 103 with Proxy-Connection: close", pieces: [`HTTP/1.1 103 Early Hints\r\nProxy-Connection: close\r\n\r\n${CL5}hello`], expect: "502" },
  { name: "a 103 with Connection: closed, which is not close", pieces: [`HTTP/1.1 103 Early Hints\r\nConnection: closed\r\n\r\n${CL5}hello`], expect: ok("hello") },

  // Found by the fuzzer: the proxy relayed them.
  { name: "fields named by Connection are not relayed", pieces: ["HTTP/1.1 200 OK\r\nConnection: X-A, keep-alive\r\nX-A: v\r\nConnection: x-b\r\nX-B: w\r\nX-C: kept\r\nContent-Length: 5\r\n\r\nhello"], expect: ok("hello") },
  { name: "NBSP ending a field value is content, not whitespace", pieces: ["HTTP/1.1 200 OK\r\nX-A: a\xa0\r\nX-B:\t b\t \r\nContent-Length: 5\r\n\r\nhello"], expect: ok("hello") },

  // Bare line breaks, Node fails them at once; the proxy waited for a CR LF CR LF (or the upstream's close).
  { name: "bare LF line ends, the upstream keeping the connection", pieces: ["HTTP/1.1 200 OK\nContent-Length: 5\n\nhello"], keepOpen: true, expect: "502" },
  { name: "a bare LF ending the head, the upstream keeping the connection", pieces: ["HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\nhello"], keepOpen: true, expect: "502" },
  { name: "a bare CR in the status line, the upstream keeping the connection", pieces: ["HTTP/1.1 200 OK\rX: y\r\n"], keepOpen: true, expect: "502" },
  { name: "a malformed status line, the upstream keeping the connection", pieces: ["XTTP/1.1 200 OK\r\nContent-Length: 5\r\n"], keepOpen: true, expect: "502" },
  { name: "bare LF line ends, then the upstream's close", pieces: ["HTTP/1.1 200 OK\nContent-Length: 5\n\nhello"], expect: "502" },

  // Node's limit on a head is 16 KiB; the proxy's was 64 KiB.
  { name: "a 20 KiB field", pieces: [`HTTP/1.1 200 OK\r\nX: ${"a".repeat(20_000)}\r\nContent-Length: 5\r\n\r\nhello`], expect: "502" },
  { name: "a 20 KiB head over several reads", pieces: [`HTTP/1.1 200 OK\r\nX: ${"a".repeat(7_000)}`, "b".repeat(7_000), `${"c".repeat(6_000)}\r\nContent-Length: 5\r\n\r\nhello`], expect: "502" },
  { name: "a 20 KiB reason phrase", pieces: [`HTTP/1.1 200 ${"r".repeat(20_000)}\r\nContent-Length: 5\r\n\r\nhello`], expect: "502" },
  { name: "a 12 KiB head", pieces: [`HTTP/1.1 200 OK\r\nX: ${"a".repeat(6_000)}\r\nY: ${"b".repeat(6_000)}\r\nContent-Length: 5\r\n\r\nhello`], expect: ok("hello") },

  // Chunk-size lines: the size was its first 12 hex digits whatever followed, and a bare LF ended a line.
  { name: "chunk size 5g", pieces: [`${CHUNKED}5g\r\nhello\r\n0\r\n\r\n`], expect: "broken" },
  { name: "chunk size with 13 digits, leading zeros", pieces: [`${CHUNKED}0000000000005\r\nhello\r\n0\r\n\r\n`], expect: ok("hello") },
  { name: "chunk size with 1000 leading zeros", pieces: [`${CHUNKED}${"0".repeat(1_000)}5\r\nhello\r\n0\r\n\r\n`], expect: ok("hello") },
  { name: "chunk size with 20000 leading zeros", pieces: [`${CHUNKED}${"0".repeat(20_000)}5\r\nhello\r\n0\r\n\r\n`], expect: "broken", rule: "chunk-size line longer than 17 KiB" },
  { name: "chunk size of 17 hex digits", pieces: [`${CHUNKED}10000000000000000\r\nhello\r\n0\r\n\r\n`], expect: "broken" },
  { name: "chunk size ffffffffffffffff, then close", pieces: [`${CHUNKED}ffffffffffffffff\r\nhello\r\n0\r\n\r\n`], expect: "broken" },
  { name: "chunk size with a leading space", pieces: [`${CHUNKED} 5\r\nhello\r\n0\r\n\r\n`], expect: "broken" },
  { name: "chunk size with a trailing space", pieces: [`${CHUNKED}5 \r\nhello\r\n0\r\n\r\n`], expect: "broken" },
  { name: "chunk size with a space before the extension", pieces: [`${CHUNKED}5 ;a=b\r\nhello\r\n0\r\n\r\n`], expect: "broken" },
  { name: "chunk extension with a space after ;", pieces: [`${CHUNKED}5; a=b\r\nhello\r\n0\r\n\r\n`], expect: "broken" },
  { name: "chunk extension: a lone ;", pieces: [`${CHUNKED}5;\r\nhello\r\n0\r\n\r\n`], expect: "broken" },
  { name: "chunk extension value with a control character", pieces: [`${CHUNKED}5;a=\x01\r\nhello\r\n0\r\n\r\n`], expect: "broken" },
  { name: "chunk extension: an unterminated quoted string", pieces: [`${CHUNKED}5;a="x\r\nhello\r\n0\r\n\r\n`], expect: "broken" },
  { name: "chunk extensions Node takes", pieces: [`${CHUNKED}5;a=b;c;=d;;e="x\\"\xe9; y"\r\nhello\r\n0;!#$%&'*+-.^_\`|~=v"q"\r\n\r\n`], expect: ok("hello") },
  { name: "chunk extensions of 10 KiB", pieces: [`${CHUNKED}5;a=${"e".repeat(10_000)}\r\nhello\r\n0\r\n\r\n`], expect: ok("hello") },
  { name: "chunk extensions of 9 KiB on each of three chunks", pieces: [`${CHUNKED}5;a=${"e".repeat(9_000)}\r\nhello\r\n5;b=${"f".repeat(9_000)}\r\nworld\r\n0;c=${"g".repeat(9_000)}\r\n\r\n`], expect: ok("helloworld") },
  { name: "chunk extensions past 16 KiB on one chunk", pieces: [`${CHUNKED}5;a=${"e".repeat(17_000)}\r\nhello\r\n0\r\n\r\n`], expect: "broken" },
  { name: "a bare LF after a chunk size", pieces: [`${CHUNKED}5\nhello\r\n0\r\n\r\n`], expect: "broken" },
  { name: "a bare LF after chunk data", pieces: [`${CHUNKED}5\r\nhello\n0\r\n\r\n`], expect: "broken" },
  { name: "a bare LF after the last chunk", pieces: [`${CHUNKED}5\r\nhello\r\n0\n\r\n`], expect: "broken" },
  { name: "a bare LF ending the trailer section", pieces: [`${CHUNKED}5\r\nhello\r\n0\r\n\n`], expect: "broken" },
  { name: "chunk data without CR LF, the upstream keeping the connection", pieces: [`${CHUNKED}5\r\nhelloXX`], keepOpen: true, expect: "broken" },
  { name: "chunk data without CR LF", pieces: [`${CHUNKED}5\r\nhelloXX\r\n0\r\n\r\n`], expect: "broken" },
  { name: "CR LF after chunk data split over reads", pieces: [`${CHUNKED}5\r\nhello\r`, "\n0\r\n\r\n"], expect: ok("hello") },

  // Trailer fields were skipped unread.
  { name: "a trailer field with a space in its name", pieces: [`${CHUNKED}5\r\nhello\r\n0\r\nX T: 1\r\n\r\n`], expect: "broken" },
  { name: "a trailer line without a colon", pieces: [`${CHUNKED}5\r\nhello\r\n0\r\ngarbage\r\n\r\n`], expect: "broken" },
  { name: "a control character in a trailer field", pieces: [`${CHUNKED}5\r\nhello\r\n0\r\nX: a\x01\r\n\r\n`], expect: "broken" },
  { name: "an obs-fold trailer line", pieces: [`${CHUNKED}5\r\nhello\r\n0\r\nX: a\r\n b\r\n\r\n`], expect: "broken" },
  { name: "Content-Length in the trailers", pieces: [`${CHUNKED}5\r\nhello\r\n0\r\ncontent-length: 5\r\n\r\n`], expect: "broken" },
  { name: "a 17 KiB trailer field", pieces: [`${CHUNKED}5\r\nhello\r\n0\r\nX: ${"t".repeat(17_000)}\r\n\r\n`], expect: "broken" },
  { name: "a 10 KiB head and a 10 KiB trailer section", pieces: [`HTTP/1.1 200 OK\r\nX: ${"a".repeat(10_000)}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nY: ${"b".repeat(10_000)}\r\n\r\n`], expect: ok("hello") },
  { name: "Transfer-Encoding in the trailers is ignored, as Node does", pieces: [`${CHUNKED}5\r\nhello\r\n0\r\nTransfer-Encoding: gzip\r\n\r\n`], expect: ok("hello") },

  // Bodyless answers that announce a body, which comes after all: once the proxy has reused the
  // socket for the next request, it read that body as the next answer.
  { name: "HEAD answered with a Content-Length, then a smuggled answer", method: "HEAD", pieces: [`HTTP/1.1 200 OK\r\nContent-Length: 44\r\n\r\n`, "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsmuggle"], holdLast: true, expect: ok("") },
  { name: "HEAD answered as chunked, then a body", method: "HEAD", pieces: [CHUNKED, "5\r\nhello\r\n0\r\n\r\n"], holdLast: true, expect: ok("") },
  { name: "204 with a Content-Length, then a body", pieces: ["HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "hello"], holdLast: true, expect: ok("", 204) },
  { name: "304 with a Content-Length, then a smuggled answer", pieces: ["HTTP/1.1 304 Not Modified\r\nContent-Length: 44\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsmuggle"], holdLast: true, expect: ok("", 304) },
  { name: "HEAD with the body in the same packet", method: "HEAD", pieces: [`${CL5}hello`], expect: ok("") },
];

function show(r: ClientResponse): string {
  return r.kind === "broken" ? `broken (${r.detail})` : `${r.status} ${JSON.stringify(r.body.toString("latin1").slice(0, 100))}`;
}

describe("upstream parser corpus", { timeout: 120_000 }, () => {
  let rig: ParserRig;
  before(async () => {
    rig = await ParserRig.start();
  });
  after(async () => {
    await rig.close();
  });

  for (const row of CORPUS) {
    it(row.name, async () => {
      const script = { method: row.method ?? "GET", pieces: row.pieces, holdLast: row.holdLast };
      const { node, out, problems } = await rig.check(script, row.rule ? [row.rule] : [], row.keepOpen ? "never" : "auto");
      assert.deepEqual(problems, []);
      const first = out.first;
      const e = row.expect;
      if (typeof e === "object") {
        assert.equal(node.kind, "response");
        assert.ok(first.kind === "response" && first.status === e.status && first.body.toString("latin1") === e.body, show(first));
      } else {
        assert.equal(node.kind, row.rule ? "response" : "error", row.rule ? "Node accepts what the proxy refuses by rule" : "Node fails it too");
        assert.ok(e === "502" ? isProxyError(first) : first.kind === "broken", show(first));
      }
    });
  }
});
