// Real certificates for the TLS tests and benchmarks: a throwaway CA and leaves it signs, made by
// openssl with P-256 keys (a few milliseconds each), written as PEM files in a temp directory.

import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";

export interface TestCertificate {
  certFile: string;
  keyFile: string;
  certPem: string;
  keyPem: string;
  /** SHA-256 of the leaf, as Node's peer certificates show it (fingerprint256). */
  fingerprint: string;
}

export interface TestCa {
  dir: string;
  /** The CA certificate, PEM: what a test client trusts. */
  pem: string;
  /** A leaf for hosts (DNS names, "*.example.test" too, IP addresses), valid for `days` (1) from now; `name` names its files. */
  issue(name: string, hosts: string[], opts?: { days?: number }): Promise<TestCertificate>;
  close(): Promise<void>;
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

/** A new CA in a temp directory. */
export async function createTestCa(): Promise<TestCa> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "turquoise-ca-"));
  openssl(["req", "-x509", ...EC, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Turquoise Test CA"], dir);
  const pem = await readFile(path.join(dir, "ca.pem"), "utf8");
  return {
    dir,
    pem,
    issue: async (name, hosts, opts = {}) => {
      const certFile = path.join(dir, `${name}.pem`);
      const keyFile = path.join(dir, `${name}.key`);
      const san = hosts.map((h) => (net.isIP(h) ? `IP:${h}` : `DNS:${h}`)).join(",");
      openssl(
        ["req", "-x509", "-CA", "ca.pem", "-CAkey", "ca.key", ...EC, "-keyout", keyFile, "-out", certFile, "-days", String(opts.days ?? 1), "-subj", `/CN=${hosts[0]}`, "-addext", `subjectAltName=${san}`, "-addext", "basicConstraints=CA:FALSE"],
        dir,
      );
      const certPem = await readFile(certFile, "utf8");
      return { certFile, keyFile, certPem, keyPem: await readFile(keyFile, "utf8"), fingerprint: new X509Certificate(certPem).fingerprint256 };
    },
    close: () => rm(dir, { recursive: true, force: true }),
  };
}
