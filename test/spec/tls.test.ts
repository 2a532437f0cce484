// proxy.tls in turquoise.yml: how it is normalized, and every way a certificate file or the TLS
// settings can be wrong, each said at its key before the proxy meets it. Real files from a test CA.

import assert from "node:assert/strict";
import { copyFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { loadSpecText } from "../../src/spec/loader.js";
import type { SpecProblem } from "../../src/spec/types.js";
import { createTestCa, type TestCa } from "../../bench/lib/certs.js";

function only(problems: SpecProblem[]): SpecProblem {
  assert.equal(problems.length, 1, JSON.stringify(problems, null, 2));
  return problems[0]!;
}

describe("spec: proxy.tls", () => {
  let ca: TestCa;
  let file: string;
  const load = (...tlsLines: string[]) =>
    loadSpecText(
      ["version: 1", "proxy:", "  listen: 127.0.0.1:8080", ...tlsLines.map((l) => `  ${l}`), "services:", "  books:", "    command: [node, s.js]", "    cwd: 'releases/{release}'", "    route: { host: books.example.com }", "    health: { http: /health }", ""].join("\n"),
      file,
    );

  before(async () => {
    ca = await createTestCa();
    file = path.join(ca.dir, "turquoise.yml");
    await ca.issue("books", ["books.example.com", "*.books.example.com"], { days: 90 });
    await ca.issue("short", ["books.example.com"], { days: 1 });
    const other = await ca.issue("other", ["books.example.com"], { days: 90 });
    await copyFile(other.keyFile, path.join(ca.dir, "other-pair.key"));
    await writeFile(path.join(ca.dir, "garbage.pem"), "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n");
    await writeFile(path.join(ca.dir, "empty.pem"), "just text\n");
  });
  after(() => ca.close());

  it("normalizes paths against the spec's directory, and defaults redirect_http on and Let's Encrypt as the CA", () => {
    const { spec, errors, warnings } = load(
      "tls:",
      "  listen: 127.0.0.1:8443",
      "  certificates:",
      "    - { hosts: [Books.Example.com, '*.books.example.com'], cert_file: books.pem, key_file: books.key }",
      "  acme: { email: ops@example.com, hosts: [shop.example.com] }",
      "  hsts: max-age=600",
    );
    assert.deepEqual([errors, warnings], [[], []]);
    assert.deepEqual(spec!.proxy.tls, { host: "127.0.0.1", port: 8443 });
    assert.deepEqual(spec!.proxy.settings.tls, {
      certificates: [{ hosts: ["books.example.com", "*.books.example.com"], certFile: path.join(ca.dir, "books.pem"), keyFile: path.join(ca.dir, "books.key") }],
      acme: { directoryUrl: "https://acme-v02.api.letsencrypt.org/directory", email: "ops@example.com", hosts: ["shop.example.com"] },
      redirectHttp: true,
      hsts: "max-age=600",
    });
  });

  it("names the file and the key for a certificate that cannot serve", () => {
    const cases: Array<[string, string, RegExp]> = [
      ["{ hosts: [books.example.com], cert_file: missing.pem, key_file: books.key }", "cert_file", /missing\.pem: cannot be read: ENOENT/],
      ["{ hosts: [books.example.com], cert_file: books.pem, key_file: missing.key }", "key_file", /missing\.key: cannot be read: ENOENT/],
      ["{ hosts: [books.example.com], cert_file: empty.pem, key_file: books.key }", "cert_file", /empty\.pem: holds no PEM certificate/],
      ["{ hosts: [books.example.com], cert_file: garbage.pem, key_file: books.key }", "cert_file", /garbage\.pem: its first certificate cannot be parsed/],
      ["{ hosts: [books.example.com], cert_file: books.pem, key_file: books.pem }", "key_file", /books\.pem: holds no PEM private key/],
      ["{ hosts: [books.example.com], cert_file: books.pem, key_file: other-pair.key }", "key_file", /other-pair\.key: its private key does not belong to the certificate in .*books\.pem/],
      ["{ hosts: [shop.example.com], cert_file: books.pem, key_file: books.key }", "cert_file", /does not name shop\.example\.com \(it names books\.example\.com, \*\.books\.example\.com\)/],
      ["{ hosts: ['*.example.com'], cert_file: books.pem, key_file: books.key }", "cert_file", /does not name \*\.example\.com/],
      ["{ hosts: [books.example.com], cert_file: ., key_file: books.key }", "cert_file", /is not a regular file/],
    ];
    for (const [entry, key, message] of cases) {
      const { errors } = load("tls:", "  listen: 127.0.0.1:8443", "  certificates:", `    - ${entry}`);
      const e = only(errors);
      assert.equal(e.path, `proxy.tls.certificates[0].${key}`, entry);
      assert.equal(e.line, 7);
      assert.match(e.message, message);
    }
  });

  it("warns of a certificate that expires within 14 days", () => {
    const { errors, warnings } = load("tls:", "  listen: 127.0.0.1:8443", "  certificates: [{ hosts: [books.example.com], cert_file: short.pem, key_file: short.key }]");
    assert.deepEqual(errors, []);
    const w = only(warnings);
    assert.equal(w.path, "proxy.tls.certificates[0].cert_file");
    assert.match(w.message, /the certificate for books\.example\.com expires on \d{4}-/);
  });

  it("refuses a host listed twice, a TLS listener on the plain port, TLS with nginx, an unreadable ca_file, a bad hsts", () => {
    const twice = load(
      "tls:",
      "  listen: 127.0.0.1:8443",
      "  certificates:",
      "    - { hosts: [books.example.com], cert_file: books.pem, key_file: books.key }",
      "    - { hosts: [books.example.com], cert_file: other.pem, key_file: other.key }",
    );
    assert.match(only(twice.errors).message, /books\.example\.com is served by certificates\[0\] already/);
    assert.equal(only(load("tls: { listen: '0.0.0.0:8080' }").errors).path, "proxy.tls.listen");
    assert.match(only(load("driver: nginx", "tls: { listen: '127.0.0.1:8443' }").errors).message, /proxy\.tls is the built-in proxy's/);
    const caFile = only(load("tls: { listen: '127.0.0.1:8443', acme: { directory_url: 'https://127.0.0.1:14000/dir', ca_file: nope.pem } }").errors);
    assert.deepEqual([caFile.path, /nope\.pem: cannot be read: ENOENT/.test(caFile.message)], ["proxy.tls.acme.ca_file", true]);
    assert.equal(only(load("tls: { listen: '127.0.0.1:8443', hsts: 'forever' }").errors).path, "proxy.tls.hsts");
    const ip = load("tls: { listen: '127.0.0.1:8443', certificates: [{ hosts: [198.51.100.5], cert_file: books.pem, key_file: books.key }] }").errors;
    assert.match(ip.find((e) => e.path === "proxy.tls.certificates[0].hosts[0]")!.message, /^198\.51\.100\.5: a client sends no SNI for an IP address/);
    const acmeHosts = load("tls: { listen: '127.0.0.1:8443', acme: { hosts: [shop.example.com, web.localhost, localhost] } }").errors;
    assert.deepEqual(acmeHosts.map((e) => e.path), ["proxy.tls.acme.hosts[1]", "proxy.tls.acme.hosts[2]"]);
  });

  it("warns when ACME has no host to get a certificate for", () => {
    const { errors, warnings } = load("tls:", "  listen: 127.0.0.1:8443", "  certificates: [{ hosts: [books.example.com], cert_file: books.pem, key_file: books.key }]", "  acme: {}");
    assert.deepEqual(errors, []);
    assert.match(only(warnings).message, /no host gets a certificate over ACME/);
  });
});
