// The proxy's timeouts, limits and trusted peers: their defaults (one home, which the spec's
// schema and the docs quote), their validation inside a route table, and a route's effective values.

import net from "node:net";
import type { ProxyLimits, ProxySettings, ProxyTimeouts, Route, RouteTimeouts } from "./contract.js";
import { validateTlsSettings } from "./tls-settings.js";

export const DEFAULT_PROXY_TIMEOUTS: Readonly<ProxyTimeouts> = Object.freeze({
  clientHeaderMs: 10_000,
  clientIdleMs: 60_000,
  upstreamConnectMs: 5_000,
  upstreamResponseMs: 30_000,
  upstreamIdleMs: 60_000,
  tunnelIdleMs: 600_000,
});

export const DEFAULT_PROXY_LIMITS: Readonly<ProxyLimits> = Object.freeze({
  maxConnections: 8_192,
  maxUpstreamConnections: 512,
  upstreamQueueMs: 1_000,
  maxHeaderBytes: 16 * 1_024,
  maxBodyBytes: 100 * 1_048_576,
});

export function defaultProxySettings(): ProxySettings {
  return { timeouts: { ...DEFAULT_PROXY_TIMEOUTS }, limits: { ...DEFAULT_PROXY_LIMITS }, trustedProxies: [] };
}

/** The settings a table asks for, with defaults for what it leaves out. */
export function tableSettings(settings: Partial<ProxySettings> | undefined): ProxySettings {
  return {
    timeouts: { ...DEFAULT_PROXY_TIMEOUTS, ...settings?.timeouts },
    limits: { ...DEFAULT_PROXY_LIMITS, ...settings?.limits },
    trustedProxies: [...(settings?.trustedProxies ?? [])],
    ...(settings?.tls ? { tls: settings.tls } : {}),
  };
}

/** A route's upstream timeouts: its own where it sets them, the table's otherwise. */
export function routeTimeouts(route: Route, settings: ProxySettings): RouteTimeouts {
  const t = settings.timeouts;
  const own = route.timeouts;
  return {
    upstreamConnectMs: own?.upstreamConnectMs ?? t.upstreamConnectMs,
    upstreamResponseMs: own?.upstreamResponseMs ?? t.upstreamResponseMs,
    upstreamIdleMs: own?.upstreamIdleMs ?? t.upstreamIdleMs,
    tunnelIdleMs: own?.tunnelIdleMs ?? t.tunnelIdleMs,
  };
}

export function routeMaxBodyBytes(route: Route, settings: ProxySettings): number {
  return route.maxBodyBytes ?? settings.limits.maxBodyBytes;
}

const TIMEOUT_KEYS = Object.keys(DEFAULT_PROXY_TIMEOUTS) as (keyof ProxyTimeouts)[];
const ROUTE_TIMEOUT_KEYS: (keyof RouteTimeouts)[] = ["upstreamConnectMs", "upstreamResponseMs", "upstreamIdleMs", "tunnelIdleMs"];
const LIMIT_KEYS = Object.keys(DEFAULT_PROXY_LIMITS) as (keyof ProxyLimits)[];
/** Timers beyond ~24.8 days overflow to 1 ms in Node. */
const MAX_MS = 2_147_483_647;

/** What is wrong with a table's settings, or undefined. */
export function validateSettings(value: unknown, at = "settings"): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "object" || value === null) return `${at} must be an object`;
  const s = value as Record<string, unknown>;
  const problem = checkNumbers(s.timeouts, `${at}.timeouts`, TIMEOUT_KEYS, 1, MAX_MS) ?? checkNumbers(s.limits, `${at}.limits`, LIMIT_KEYS, 1, Number.MAX_SAFE_INTEGER);
  if (problem) return problem;
  if (s.trustedProxies !== undefined) {
    if (!Array.isArray(s.trustedProxies)) return `${at}.trustedProxies must be an array`;
    for (let i = 0; i < s.trustedProxies.length; i++) {
      const cidr = s.trustedProxies[i];
      if (typeof cidr !== "string" || !isCidr(cidr)) return `${at}.trustedProxies[${i}] must be an IP address or CIDR block, got ${JSON.stringify(cidr)}`;
    }
  }
  return validateTlsSettings(s.tls, `${at}.tls`);
}

/** What is wrong with a route's own timeouts and body limit, or undefined. */
export function validateRouteSettings(r: Record<string, unknown>, at: string): string | undefined {
  const problem = checkNumbers(r.timeouts, `${at}.timeouts`, ROUTE_TIMEOUT_KEYS, 1, MAX_MS);
  if (problem) return problem;
  if (r.maxBodyBytes !== undefined && !isPositiveInteger(r.maxBodyBytes, Number.MAX_SAFE_INTEGER)) return `${at}.maxBodyBytes must be a positive integer`;
  return undefined;
}

function checkNumbers(value: unknown, at: string, keys: readonly string[], min: number, max: number): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "object" || value === null) return `${at} must be an object`;
  for (const [k, v] of Object.entries(value)) {
    if (!keys.includes(k)) return `${at}.${k} is not a known setting (known: ${keys.join(", ")})`;
    if (!isPositiveInteger(v, max) || (v as number) < min) return `${at}.${k} must be an integer from ${min} to ${max}`;
  }
  return undefined;
}

function isPositiveInteger(v: unknown, max: number): boolean {
  return typeof v === "number" && Number.isInteger(v) && v >= 1 && v <= max;
}

/** "198.18.0.1", "198.18.0.0/15", "::1", "2001:db8::/32", "::ffff:198.18.0.0/111". */
export function isCidr(text: string): boolean {
  const [addr, bits, extra] = text.split("/");
  if (extra !== undefined || addr === undefined) return false;
  const v4 = net.isIPv4(addr);
  if (!v4 && !net.isIPv6(addr)) return false;
  if (bits === undefined) return true;
  if (!/^\d{1,3}$/.test(bits)) return false;
  return Number(bits) <= (v4 ? 32 : 128);
}
