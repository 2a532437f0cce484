// Loopback ports for a server to listen on next, picked where the kernel hands none out on its own.
import fs from "node:fs";
import net from "node:net";

/** The lowest port freePort hands out: above the registered ports most services use. */
export const PICKED_PORT_FLOOR = 20_000;
/** A range narrower than this (an ephemeral range that starts low) is not worth picking from: the OS picks then. */
const MIN_PICK_RANGE = 1_000;
const PICK_TRIES = 64;
const EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range";

/**
 * The ports freePort picks from: below the kernel's ephemeral range (ip_local_port_range), where
 * nothing that listens on port 0 or connects out is ever given a port. A port the OS itself picked
 * is from that range: between the pick and the listen of whoever gets it, any other listen(0) on
 * the machine could take it (a busy test run once lost a proxy's port that way). Undefined where
 * the range cannot be read or leaves too little room below it.
 */
export function pickRange(rangeText: string | undefined): { low: number; high: number } | undefined {
  const low = Number(rangeText?.trim().split(/\s+/)[0]);
  if (!Number.isInteger(low) || low - PICKED_PORT_FLOOR < MIN_PICK_RANGE) return undefined;
  return { low: PICKED_PORT_FLOOR, high: low - 1 };
}

/** The kernel's ephemeral range as it states it ("32768\t60999"), or undefined off Linux. */
export function readEphemeralRange(): string | undefined {
  try {
    return fs.readFileSync(EPHEMERAL_RANGE_FILE, "utf8");
  } catch {
    return undefined;
  }
}

/** Listens on port (0: the OS picks) and closes again: the port it got, or undefined when that port is taken. */
function tryPort(host: string, port: number): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", (e: NodeJS.ErrnoException) => (port !== 0 && (e.code === "EADDRINUSE" || e.code === "EACCES") ? resolve(undefined) : reject(e)));
    srv.listen({ port, host, exclusive: true }, () => {
      const got = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(got));
    });
  });
}

/**
 * A loopback port that was free a moment ago, for a server to listen on next: a random one below
 * the kernel's ephemeral range when there is room there (see pickRange), else one the OS picks.
 */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  const range = pickRange(readEphemeralRange());
  if (range) {
    for (let i = 0; i < PICK_TRIES; i++) {
      const port = await tryPort(host, range.low + Math.floor(Math.random() * (range.high - range.low + 1)));
      if (port !== undefined) return port;
    }
  }
  return (await tryPort(host, 0))!;
}
