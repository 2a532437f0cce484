// Trusted peers (CIDR blocks matched against IPv4, IPv6 and IPv4-mapped peers) and the other settings a compiled table works out once.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TrustedPeers, parseIPv6 } from "../../src/proxy/peers.js";
import { DEFAULT_PROXY_LIMITS, DEFAULT_PROXY_TIMEOUTS, isCidr, tableSettings } from "../../src/proxy/settings.js";
import { Router } from "../../src/proxy/table.js";

describe("trusted peers", () => {
  it("matches IPv4 and IPv6 addresses and blocks, IPv4-mapped IPv6 both ways", () => {
    const t = new TrustedPeers(["198.18.0.0/15", "198.51.100.3", "2001:db8::/32", "::1", "::ffff:192.0.2.0/120", "0.0.0.0/32"]);
    assert.equal(t.empty, false);
    for (const yes of ["198.18.0.1", "198.19.255.255", "198.51.100.3", "::ffff:198.51.100.3", "2001:db8::1", "2001:db8:ffff::", "::1", "192.0.2.77", "::ffff:192.0.2.1", "0.0.0.0", "2001:db8::1%eth0"]) {
      assert.equal(t.has(yes), true, yes);
    }
    for (const no of ["198.20.0.1", "198.51.100.4", "2001:db9::1", "::2", "192.0.3.1", "127.0.0.1", "", "not-an-ip", "::ffff:198.51.100.4"]) {
      assert.equal(t.has(no), false, no);
    }
    assert.equal(new TrustedPeers(["::/0"]).has("2001:db8::5"), true);
    assert.equal(new TrustedPeers(["0.0.0.0/0"]).has("203.0.113.1"), true);
    assert.equal(new TrustedPeers([]).empty, true);
    assert.equal(new TrustedPeers([]).has("127.0.0.1"), false);
  });

  it("parses IPv6 forms, and validates CIDR text", () => {
    assert.deepEqual(parseIPv6("::"), [0, 0, 0, 0]);
    assert.deepEqual(parseIPv6("2001:db8::1"), [0x20010db8, 0, 0, 1]);
    assert.deepEqual(parseIPv6("::ffff:1.2.3.4"), [0, 0, 0xffff, 0x01020304]);
    assert.deepEqual(parseIPv6("1:2:3:4:5:6:7:8"), [0x00010002, 0x00030004, 0x00050006, 0x00070008]);
    assert.equal(parseIPv6("1:2:3"), undefined);
    assert.equal(parseIPv6("1.2.3.4"), undefined);
    for (const ok of ["198.51.100.0/24", "::1", "2001:db8::/32", "::ffff:198.51.100.0/120", "0.0.0.0/0"]) assert.equal(isCidr(ok), true, ok);
    for (const bad of ["198.51.100.0/33", ":::", "1:2:3", "198.51.100/24", "::1/129", "198.51.100.0/24/1", "host.example"]) assert.equal(isCidr(bad), false, bad);
  });
});

describe("compiled table settings", () => {
  it("works out the settings, the trusted peers and each route's limits once per table", () => {
    const router = new Router();
    assert.equal(router.current.trusted.empty, true, "no table: nobody trusted");
    assert.equal(router.current.settings.limits.maxBodyBytes, DEFAULT_PROXY_LIMITS.maxBodyBytes);
    const settings = tableSettings({ timeouts: { ...DEFAULT_PROXY_TIMEOUTS, tunnelIdleMs: 5_000 }, trustedProxies: ["198.51.100.0/24"] });
    router.apply({
      version: 1,
      settings,
      routes: [
        { service: "a", pathPrefix: "/a", poolId: "a", upstreams: [], maxBodyBytes: 10, timeouts: { tunnelIdleMs: 1_000 } },
        { service: "b", pathPrefix: "/", poolId: "b", upstreams: [] },
      ],
    });
    const t = router.current;
    assert.equal(t.trusted.has("198.51.100.4"), true);
    assert.equal(t.trusted.has("127.0.0.1"), false);
    const a = t.lookup(undefined, "/a/x")!;
    const b = t.lookup(undefined, "/b")!;
    assert.equal(a.maxBodyBytes, 10);
    assert.equal(a.timeouts.tunnelIdleMs, 1_000);
    assert.equal(b.maxBodyBytes, DEFAULT_PROXY_LIMITS.maxBodyBytes);
    assert.equal(b.timeouts.tunnelIdleMs, 5_000);
    assert.equal(b.timeouts.upstreamResponseMs, DEFAULT_PROXY_TIMEOUTS.upstreamResponseMs);
  });
});
