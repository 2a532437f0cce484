// What a TLS server negotiates with a Node client (its TLS 1.3 suites and groups in OpenSSL's
// default order, which wrk offers too): version, cipher suite, key exchange group and ALPN.
// bench:tls compares them across the servers it measures, so that a ratio never comes from one
// side doing cheaper cryptography than the other.

import tls from "node:tls";

export interface NegotiatedTls {
  protocol: string;
  cipher: string;
  /** The ephemeral key exchange: "X25519", "ECDH P-256"... */
  group: string;
  /** The ALPN protocol chosen, or "none". */
  alpn: string;
}

/** One handshake with 127.0.0.1:port for servername, trusting ca; what was agreed. */
export function negotiatedTls(port: number, servername: string, ca: string, timeoutMs = 10_000): Promise<NegotiatedTls> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port, servername, ca, ALPNProtocols: ["http/1.1"] }, () => {
      const key = socket.getEphemeralKeyInfo();
      const group = key && "type" in key ? (key.type === "ECDH" ? (key.name ?? "ECDH") : key.type) : "none";
      resolve({ protocol: socket.getProtocol() ?? "none", cipher: socket.getCipher().standardName, group, alpn: socket.alpnProtocol || "none" });
      socket.end();
    });
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no TLS handshake with 127.0.0.1:${port} within ${timeoutMs} ms`)));
    socket.once("error", reject);
  });
}

/** Throws, naming the server and the field, unless every server negotiated the same as the first. */
export function assertSameTls(byServer: Readonly<Record<string, NegotiatedTls>>): void {
  const entries = Object.entries(byServer);
  const [firstName, first] = entries[0]!;
  for (const [name, got] of entries.slice(1)) {
    for (const field of ["protocol", "cipher", "group", "alpn"] as const) {
      if (got[field] !== first[field]) throw new Error(`${name} negotiated ${field} ${got[field]} where ${firstName} negotiated ${first[field]}: the comparison would not be like for like`);
    }
  }
}

/** "TLSv1.3 TLS_AES_256_GCM_SHA384 X25519 alpn http/1.1". */
export function formatNegotiated(n: NegotiatedTls): string {
  return `${n.protocol} ${n.cipher} ${n.group} alpn ${n.alpn}`;
}
