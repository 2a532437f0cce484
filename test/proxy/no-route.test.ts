// The proxy's 404: its routes for a client on this machine, nothing of them for anyone else.
import assert from "node:assert/strict";
import type net from "node:net";
import { describe, it } from "node:test";
import type { Route } from "../../src/proxy/contract.js";
import { NO_ROUTE_LISTED_MAX, isLoopback, noRouteBody } from "../../src/proxy/no-route.js";

const route = (service: string, host: string | undefined, pathPrefix: string): Route => ({ service, pathPrefix, poolId: `${service}/blue/v1/x`, upstreams: [], ...(host ? { host } : {}) });
const ROUTES = [route("books", "books.example.com", "/"), route("api", undefined, "/api")];
const NO_FORWARDING = { xForwardedFor: undefined, xRealIp: undefined, forwarded: undefined };
/** Only the peer's address is read: a socket as the data plane would hand it over. */
const peer = (remoteAddress: string) => ({ remoteAddress }) as net.Socket;

describe("no route", () => {
  it("lists the routes and says how a host route matches, to a loopback peer", () => {
    for (const address of ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"]) {
      const body = noRouteBody(ROUTES, "127.0.0.1:8080", "/", peer(address), NO_FORWARDING);
      assert.deepEqual(body.routes, ["books.example.com/ (books)", "*/api (api)"], address);
      assert.match(String(body.hint), /no route matches host 127\.0\.0\.1:8080 and path \/.*Host/);
    }
  });

  it("says nothing of the routes to any other peer", () => {
    for (const address of ["203.0.113.9", "198.51.100.1", "::ffff:192.0.2.1", "2001:db8::1", "", "128.0.0.1"]) {
      assert.deepEqual(noRouteBody(ROUTES, "example.com", "/x", peer(address), NO_FORWARDING), { error: "no route", host: "example.com", path: "/x" }, address);
    }
  });

  it("says nothing of them to a loopback peer that forwards for someone else", () => {
    for (const head of [{ ...NO_FORWARDING, xForwardedFor: "203.0.113.9" }, { ...NO_FORWARDING, xRealIp: "203.0.113.9" }, { ...NO_FORWARDING, forwarded: "for=203.0.113.9" }]) {
      assert.deepEqual(Object.keys(noRouteBody(ROUTES, undefined, "/", peer("127.0.0.1"), head)), ["error", "host", "path"]);
    }
  });

  it("stays small with a huge table, and says when there is none yet", () => {
    const many = Array.from({ length: 5_000 }, (_, i) => route(`s${i}`, `s${i}.example.com`, "/"));
    const body = noRouteBody(many, "x", "/", peer("127.0.0.1"), NO_FORWARDING);
    assert.equal((body.routes as string[]).length, NO_ROUTE_LISTED_MAX + 1);
    assert.equal((body.routes as string[]).at(-1), `... and ${5_000 - NO_ROUTE_LISTED_MAX} more`);
    assert.ok(JSON.stringify(body).length < 4_096);
    const none = noRouteBody([], "x", "/", peer("::1"), NO_FORWARDING);
    assert.deepEqual(none.routes, []);
    assert.match(String(none.hint), /no routes yet: deploy a release/);
  });

  it("knows loopback when it sees it", () => {
    assert.deepEqual(["127.0.0.1", "::1", "::ffff:127.0.0.2", "198.51.100.1", "::", "0.0.0.0", "1127.0.0.1"].map(isLoopback), [true, true, true, false, false, false, false]);
  });
});
