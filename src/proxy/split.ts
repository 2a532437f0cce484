// The canary split: which slot a request of a route in canary goes to. Each user has a stable
// point in [0, 2^32): the one in the proxy's cookie, or else a hash of the client address; it goes
// to the new slot while its point is below the canary's share, so raising the share only ever
// moves users from the live slot to the new one. Every worker computes the same answer.

import { randomInt } from "node:crypto";

/** Why the nginx driver refuses a canary: the reason the planner gives too. */
export const NGINX_NO_CANARY = "the nginx driver cannot run a canary: it keeps no per-slot error and latency counts for the agent to judge each step by; use proxy.driver: builtin, or deploy without --canary";

/** The cookie the proxy sets on a route in canary: the user's point, 8 hex digits. */
export const CANARY_COOKIE = "turquoise_canary";
/** How long a browser keeps its side: longer than any rollout. */
export const CANARY_COOKIE_MAX_AGE_S = 7 * 24 * 3600;
/** A Cookie field longer than this is not searched for ours: the user counts as having none. */
export const MAX_COOKIE_SCAN = 8_192;
const SPAN = 0x1_0000_0000;

/** The point below which users go to the new slot, for a share in percent (0 to 100). */
export function shareThreshold(percent: number): number {
  return Math.round((Math.min(100, Math.max(0, percent)) / 100) * SPAN);
}

/** FNV-1a, 32 bits: a stable hash (the same in every worker and every run) of a client address. */
export function fnv1a32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  // FNV's low bits mix poorly for short, similar keys (addresses): one more avalanche round.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Our cookie's value in a request's header fields (names and values in turn), or undefined when
 * there is none or it is not one the proxy could have issued (garbage, forged length, too long).
 */
export function readCanaryCookie(fields: readonly string[]): number | undefined {
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i]!;
    if (name.length !== 6 || name.toLowerCase() !== "cookie") continue;
    const value = fields[i + 1]!;
    if (value.length > MAX_COOKIE_SCAN) continue;
    const at = value.indexOf(`${CANARY_COOKIE}=`);
    if (at === -1 || (at > 0 && value[at - 1] !== " " && value[at - 1] !== ";")) continue;
    const start = at + CANARY_COOKIE.length + 1;
    const text = value.slice(start, start + 9);
    if (text.length < 8 || (text.length === 9 && text[8] !== ";")) continue;
    const hex = text.slice(0, 8);
    if (!/^[0-9a-f]{8}$/.test(hex)) continue;
    return Number.parseInt(hex, 16);
  }
  return undefined;
}

export function canaryCookie(point: number): string {
  return `${CANARY_COOKIE}=${point.toString(16).padStart(8, "0")}; Path=/; Max-Age=${CANARY_COOKIE_MAX_AGE_S}; HttpOnly; SameSite=Lax`;
}

export interface SplitChoice {
  canary: boolean;
  /** The Set-Cookie value to answer with: the request carried no cookie of ours. */
  setCookie: string | undefined;
}

/**
 * Decides a request's side. Without our cookie the client address decides, and the cookie issued
 * is a fresh random point on that same side: the user stays where this request went, and users
 * behind one address spread over the shares of later steps.
 */
export function chooseSide(fields: readonly string[], address: string, threshold: number): SplitChoice {
  const point = readCanaryCookie(fields);
  if (point !== undefined) return { canary: point < threshold, setCookie: undefined };
  const canary = fnv1a32(address) < threshold;
  const fresh = canary ? randomPoint(0, threshold) : randomPoint(threshold, SPAN);
  return { canary, setCookie: canaryCookie(fresh) };
}

function randomPoint(from: number, to: number): number {
  if (to <= from) return from;
  // randomInt takes ranges below 2^48: the whole 32-bit span fits.
  return randomInt(from, to);
}
