// The request path's one call into the canary split: a route's match, or its new slot's, for a
// request (split.ts decides; this picks the match and the cookie to answer with).
import type net from "node:net";
import { clientAddress } from "./http.js";
import { chooseSide } from "./split.js";
import type { Match } from "./table.js";

export function splitMatch(found: Match, fields: readonly string[], socket: net.Socket): { match: Match; setCookie: string | undefined } {
  const c = found.canary!;
  const side = chooseSide(fields, clientAddress(socket), c.threshold);
  return { match: side.canary ? c.match : found, setCookie: side.setCookie };
}
