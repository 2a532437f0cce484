// Trusted peers: the table's trustedProxies (IPv4/IPv6 addresses and CIDR blocks) compiled once
// per table into numbers, so that asking whether a client address is trusted parses only that
// address, and costs nothing at all when the list is empty.

import net from "node:net";

interface V4Block {
  net: number;
  mask: number;
}

interface V6Block {
  /** The address as four 32-bit words, bits beyond the prefix cleared. */
  words: readonly number[];
  /** The prefix as four 32-bit masks. */
  masks: readonly number[];
}

/** The peers whose forwarding headers (X-Forwarded-*, X-Real-IP, Forwarded) the proxy believes. */
export class TrustedPeers {
  static readonly NONE = new TrustedPeers([]);
  /** True when nobody is trusted: the data path checks this before anything else. */
  readonly empty: boolean;
  private readonly v4: V4Block[] = [];
  private readonly v6: V6Block[] = [];

  /** Entries that are not addresses or blocks are skipped (the table's validation refuses them). */
  constructor(cidrs: readonly string[]) {
    for (const cidr of cidrs) {
      const slash = cidr.indexOf("/");
      const addr = slash === -1 ? cidr : cidr.slice(0, slash);
      const bitsText = slash === -1 ? undefined : cidr.slice(slash + 1);
      const v4 = parseIPv4(addr);
      if (v4 !== undefined) {
        const bits = bitsText === undefined ? 32 : Number(bitsText);
        if (!(Number.isInteger(bits) && bits >= 0 && bits <= 32)) continue;
        const mask = maskOf(bits);
        this.v4.push({ net: (v4 & mask) >>> 0, mask });
        continue;
      }
      const v6 = parseIPv6(addr);
      if (v6 === undefined) continue;
      const bits = bitsText === undefined ? 128 : Number(bitsText);
      if (!(Number.isInteger(bits) && bits >= 0 && bits <= 128)) continue;
      const masks = [0, 1, 2, 3].map((i) => maskOf(Math.max(0, Math.min(32, bits - 32 * i))));
      this.v6.push({ words: v6.map((w, i) => (w & masks[i]!) >>> 0), masks });
    }
    this.empty = this.v4.length === 0 && this.v6.length === 0;
  }

  /**
   * Whether `address` (a socket's remote address, IPv4, IPv6 or IPv4-mapped IPv6) is trusted.
   * An IPv4 peer also matches IPv6 blocks written for its mapped form (::ffff:a.b.c.d), and an
   * IPv4-mapped peer matches IPv4 blocks.
   */
  has(address: string): boolean {
    if (this.empty) return false;
    const v4 = parseIPv4(address);
    if (v4 !== undefined) return this.hasV4(v4) || this.hasV6([0, 0, 0xffff, v4]);
    const v6 = parseIPv6(address);
    if (v6 === undefined) return false;
    if (v6[0] === 0 && v6[1] === 0 && v6[2] === 0xffff && this.hasV4(v6[3]!)) return true;
    return this.hasV6(v6);
  }

  private hasV4(addr: number): boolean {
    for (const b of this.v4) if (((addr & b.mask) >>> 0) === b.net) return true;
    return false;
  }

  private hasV6(words: readonly number[]): boolean {
    for (const b of this.v6) {
      let match = true;
      for (let i = 0; i < 4 && match; i++) match = ((words[i]! & b.masks[i]!) >>> 0) === b.words[i];
      if (match) return true;
    }
    return false;
  }
}

function maskOf(bits: number): number {
  return bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
}

/** "198.18.1.2" → 0xc6120102, or undefined when not a dotted-quad IPv4 address. */
export function parseIPv4(text: string): number | undefined {
  if (!net.isIPv4(text)) return undefined;
  const parts = text.split(".");
  return ((Number(parts[0]) << 24) | (Number(parts[1]) << 16) | (Number(parts[2]) << 8) | Number(parts[3])) >>> 0;
}

/** "2001:db8::1", "::ffff:1.2.3.4", "fe80::1%eth0" → four 32-bit words, or undefined. */
export function parseIPv6(text: string): number[] | undefined {
  const zone = text.indexOf("%");
  const s = zone === -1 ? text : text.slice(0, zone);
  if (!net.isIPv6(s)) return undefined;
  const gap = s.indexOf("::");
  const front = gap === -1 ? s : s.slice(0, gap);
  const back = gap === -1 ? "" : s.slice(gap + 2);
  const head = groups(front);
  const tail = groups(back);
  const zeros = 8 - head.length - tail.length;
  if (zeros < 0 || (gap === -1 && zeros !== 0)) return undefined;
  const all = [...head, ...new Array<number>(zeros).fill(0), ...tail];
  return [0, 1, 2, 3].map((i) => ((all[2 * i]! << 16) | all[2 * i + 1]!) >>> 0);
}

/** "2001:db8" → [0x2001, 0xdb8]; a trailing dotted quad counts as two groups. */
function groups(text: string): number[] {
  if (text === "") return [];
  const out: number[] = [];
  for (const part of text.split(":")) {
    if (part.includes(".")) {
      const v4 = parseIPv4(part) ?? 0;
      out.push(v4 >>> 16, v4 & 0xffff);
    } else {
      out.push(parseInt(part, 16));
    }
  }
  return out;
}
