// Dashboard sessions: a signed-in token becomes a random session id in an HttpOnly, SameSite=Strict
// cookie, kept server-side with its scope, its CSRF token and its expiry. The token itself is
// never stored, echoed or put in the page; a session ends when it expires, on sign-out, or when
// the read token it came from is revoked.
import crypto from "node:crypto";
import { tokenIdentity, type Scope } from "../auth/scopes.js";

export const SESSION_COOKIE = "tq_session";
/** A working shift: long enough not to sign out mid-incident, short enough that a forgotten tab does not stay signed in for days. */
export const DEFAULT_SESSION_TTL_MS = 8 * 60 * 60_000;
/** Live sessions kept at most: signing in again and again cannot grow the agent's memory. */
export const MAX_SESSIONS = 1_000;
/** Live sessions of one token at most (the admin token, or one read token): its own oldest goes first, so signing in with one token never ends another's sessions. */
export const MAX_SESSIONS_PER_TOKEN = 100;
/** The scopes that may sign in: the admin token, or a read token for a read-only view. */
export type SessionScope = Extract<Scope, { kind: "admin" } | { kind: "read" }>;

export interface Session {
  id: string;
  csrf: string;
  scope: SessionScope;
  createdAt: number;
  expiresAt: number;
}

export interface SessionOptions {
  ttlMs?: number;
  /** The clock: tests move it past an expiry instead of waiting. */
  now?: () => number;
  /** Whether the token a session came from still grants it: a revoked read token ends its sessions. */
  stillGranted?: (scope: SessionScope) => boolean;
  /** Called once as a session ends before its time (signed out, pushed out by a cap, its token revoked) or is swept expired: what it holds open ends with it. */
  onEnded?: (session: Session, why: string) => void;
}

const SESSION_ID = /^[A-Za-z0-9_-]{43}$/;

export class Sessions {
  private readonly byId = new Map<string, Session>();
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(private readonly opts: SessionOptions = {}) {
    this.ttlMs = opts.ttlMs ?? DEFAULT_SESSION_TTL_MS;
    this.now = opts.now ?? Date.now;
  }

  /** Live and not yet swept sessions: what the agent holds. */
  get size(): number {
    return this.byId.size;
  }

  create(scope: SessionScope): Session {
    const now = this.now();
    this.sweep(now);
    const own = [...this.byId.values()].filter((x) => tokenIdentity(x.scope) === tokenIdentity(scope));
    if (own.length >= MAX_SESSIONS_PER_TOKEN) this.drop(own[0]!, `its token signed in ${MAX_SESSIONS_PER_TOKEN} times since: its oldest session ends`);
    // Past the overall cap (many read tokens), the token holding the most sessions gives up its oldest.
    while (this.byId.size >= MAX_SESSIONS) this.drop(this.oldestOfBusiestToken()!, `the agent holds ${MAX_SESSIONS} sessions: the oldest of the busiest token ends`);
    const session: Session = { id: randomId(), csrf: randomId(), scope, createdAt: now, expiresAt: now + this.ttlMs };
    this.byId.set(session.id, session);
    return session;
  }

  /** The live session a Cookie header names, or undefined for none, a forged, an expired or a revoked one. */
  fromCookie(header: string | undefined): Session | undefined {
    const id = cookieValue(header, SESSION_COOKIE);
    if (!id || !SESSION_ID.test(id)) return undefined;
    const s = this.byId.get(id);
    if (!s) return undefined;
    if (s.expiresAt <= this.now()) return void this.drop(s, "the session expired");
    if (!(this.opts.stillGranted?.(s.scope) ?? true)) return void this.drop(s, "the token it signed in with was revoked");
    return s;
  }

  /** Whether a session is still one this holds, unexpired: a request that waited re-checks the one it came with. */
  live(session: Session): boolean {
    return this.byId.get(session.id) === session && session.expiresAt > this.now();
  }

  /** Signs a session out. */
  end(session: Session): void {
    this.drop(session, "signed out");
  }

  private drop(session: Session, why: string): void {
    if (!this.byId.delete(session.id)) return;
    this.opts.onEnded?.(session, why);
  }

  /** Constant-time check of the X-CSRF-Token header against the session's. */
  csrfMatches(session: Session, header: string | string[] | undefined): boolean {
    const given = typeof header === "string" ? header : "";
    const digest = (text: string) => crypto.createHash("sha256").update(text).digest();
    return given.length > 0 && crypto.timingSafeEqual(digest(given), digest(session.csrf));
  }

  /** The Set-Cookie value for a session; Secure when the page came over TLS. */
  cookie(session: Session, secure: boolean): string {
    const maxAge = Math.max(0, Math.floor((session.expiresAt - this.now()) / 1000));
    return `${SESSION_COOKIE}=${session.id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAge}${secure ? "; Secure" : ""}`;
  }

  private oldestOfBusiestToken(): Session | undefined {
    const byToken = new Map<string, Session[]>();
    for (const x of this.byId.values()) {
      const list = byToken.get(tokenIdentity(x.scope));
      if (list) list.push(x);
      else byToken.set(tokenIdentity(x.scope), [x]);
    }
    return [...byToken.values()].sort((a, b) => b.length - a.length)[0]?.[0];
  }

  private sweep(now: number): void {
    for (const s of [...this.byId.values()]) if (s.expiresAt <= now) this.drop(s, "the session expired");
  }
}

/**
 * Whether a browser's request comes from the dashboard's own origin: no Origin header (not a
 * browser, or a same-origin GET), or one equal to the address it was sent to. A page on another
 * port of the same host is same-site, so SameSite=Strict still sends it the cookie: this refuses it.
 */
export function fromOwnOrigin(headers: { origin?: string | undefined; host?: string | undefined }): boolean {
  const origin = headers.origin;
  if (origin === undefined) return true;
  // Host and port only, not the scheme: behind a proxy that ends TLS the page is https and the agent hears http.
  try {
    return headers.host !== undefined && /^https?:$/.test(new URL(origin).protocol) && new URL(origin).host === headers.host.toLowerCase();
  } catch {
    return false; // "null" (a sandboxed frame, a file), or garbage
  }
}

/** The cookie that clears a session's. */
export function clearedCookie(secure: boolean): string {
  return `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0${secure ? "; Secure" : ""}`;
}

function randomId(): string {
  return crypto.randomBytes(32).toString("base64url");
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
