// Releases for canary demos, tests and bench:canary: a small HTTP app that answers like
// books-service's GET (200, X-Release) and can fail every Nth request with a 500 or answer slower,
// so a canary has something to catch. Written out as releases/<name>/server.mjs.
import fs from "node:fs";
import path from "node:path";

export interface CanaryRelease {
  /** Every Nth request that is not a health check gets a 500; 0 for none. */
  failEvery?: number;
  /** Added to each answer that is not a health check. */
  delayMs?: number;
}

export function canaryReleaseSource(name: string, r: CanaryRelease = {}): string {
  return `import http from "node:http";
const NAME = ${JSON.stringify(name)}, FAIL_EVERY = ${r.failEvery ?? 0}, DELAY_MS = ${r.delayMs ?? 0};
let n = 0;
const server = http.createServer((req, res) => {
  if (req.url === "/health") return res.end("ok");
  req.resume();
  const fail = FAIL_EVERY > 0 && ++n % FAIL_EVERY === 0;
  const answer = () => {
    res.writeHead(fail ? 500 : 200, { "content-type": "application/json", "x-release": NAME });
    res.end(fail ? '{"error":"injected failure"}' : "[]");
  };
  if (DELAY_MS > 0) setTimeout(answer, DELAY_MS);
  else answer();
});
server.keepAliveTimeout = 65_000;
server.listen(Number(process.env.PORT), "127.0.0.1");
process.on("SIGTERM", () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
`;
}

/** Writes each release's server.mjs under dir/<name>/. */
export function writeCanaryReleases(dir: string, releases: Record<string, CanaryRelease>): void {
  for (const [name, r] of Object.entries(releases)) {
    fs.mkdirSync(path.join(dir, name), { recursive: true });
    fs.writeFileSync(path.join(dir, name, "server.mjs"), canaryReleaseSource(name, r));
  }
}
