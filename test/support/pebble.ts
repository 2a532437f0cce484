// A real ACME server for tests: Debian's pebble (scripts/ensure-pebble.sh installs it, so these
// tests never skip), with pebble-challtestsrv as its DNS server answering 127.0.0.1 for every
// name, all on loopback. Pebble's validation really fetches the HTTP-01 token from `httpPort`:
// the proxy's plain listener. Its own HTTPS uses a certificate from a test CA (Debian ships none),
// which the ACME client must be told to trust.

import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { writeFile } from "node:fs/promises";
import https from "node:https";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "../../src/util/net.js";
import { createTestCa, type TestCa } from "../../bench/lib/certs.js";

const ENSURE_PEBBLE = fileURLToPath(new URL("../../../scripts/ensure-pebble.sh", import.meta.url));

export interface TestPebble {
  /** The ACME directory. */
  directoryUrl: string;
  /** The CA behind pebble's own HTTPS (the ACME client's ca_file). */
  caFile: string;
  /** The root pebble issues from: what a client trusts to accept the certificates it issued. */
  issuingRoot(): Promise<string>;
  stop(): Promise<void>;
}

export function ensurePebble(): void {
  execFileSync("bash", [ENSURE_PEBBLE], { stdio: ["ignore", "ignore", "inherit"] });
}

/** Starts pebble validating HTTP-01 on 127.0.0.1:httpPort, and waits until its directory answers. */
export async function startPebble(httpPort: number): Promise<TestPebble> {
  ensurePebble();
  const ca: TestCa = await createTestCa();
  const cert = await ca.issue("pebble", ["localhost", "127.0.0.1"]);
  const caFile = path.join(ca.dir, "ca.pem");
  const [acmePort, managementPort, dnsPort, dnsManagementPort, tlsPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const config = {
    pebble: {
      listenAddress: `127.0.0.1:${acmePort}`,
      managementListenAddress: `127.0.0.1:${managementPort}`,
      certificate: cert.certFile,
      privateKey: cert.keyFile,
      httpPort,
      // Nothing listens there: this test answers HTTP-01 only.
      tlsPort,
      ocspResponderURL: "",
      externalAccountBindingRequired: false,
    },
  };
  const configFile = path.join(ca.dir, "pebble-config.json");
  await writeFile(configFile, JSON.stringify(config, null, 2));
  const children: ChildProcess[] = [];
  const output: string[] = [];
  const run = (cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env.PATH, ...env } });
    const keep = (d: Buffer): void => {
      output.push(d.toString());
      if (output.length > 200) output.shift();
    };
    child.stdout!.on("data", keep);
    child.stderr!.on("data", keep);
    children.push(child);
    return child;
  };
  const stop = async (): Promise<void> => {
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            c.once("exit", () => resolve());
            c.kill("SIGTERM");
            setTimeout(() => c.kill("SIGKILL"), 5_000).unref();
          }),
      ),
    );
    await ca.close();
  };
  // Every name resolves to 127.0.0.1 (no AAAA), and nothing else of it listens.
  run("pebble-challtestsrv", ["-dns01", `127.0.0.1:${dnsPort}`, "-http01", "", "-https01", "", "-tlsalpn01", "", "-management", `127.0.0.1:${dnsManagementPort}`, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]);
  // No sleeps before validations; every order validates afresh (no authorization reuse), as a renewal after months would.
  run("pebble", ["-config", configFile, "-dnsserver", `127.0.0.1:${dnsPort}`, "-strict", "false"], { PEBBLE_VA_NOSLEEP: "1", PEBBLE_AUTHZREUSE: "0" });
  const directoryUrl = `https://127.0.0.1:${acmePort}/dir`;
  const get = (url: string): Promise<string> =>
    new Promise((resolve, reject) => {
      https
        .get(url, { ca: ca.pem, timeout: 5_000 }, (res) => {
          let body = "";
          res.on("data", (d: Buffer) => (body += d.toString()));
          res.on("end", () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`${url}: ${res.statusCode} ${body}`))));
        })
        .on("error", reject);
    });
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await get(directoryUrl);
      break;
    } catch (e) {
      if (Date.now() > deadline || children.some((c) => c.exitCode !== null)) {
        await stop();
        throw new Error(`pebble did not start: ${(e as Error).message}\n${output.join("").slice(-2_000)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    directoryUrl,
    caFile,
    issuingRoot: () => get(`https://127.0.0.1:${managementPort}/roots/0`),
    stop,
  };
}
