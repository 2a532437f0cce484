// Turquoise's registry in Consul's JSON shapes: the fields Consul clients read, with their values.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import type { CatalogInstance } from "../../src/api/catalog.js";
import { catalogEntry, catalogServices, hasTags, healthEntry, kvEntry, kvKeys } from "../../src/consul/shapes.js";

const place = { node: "vm1", datacenter: "dc1" };

function instance(id: string, over: Partial<CatalogInstance> = {}): CatalogInstance {
  return { id, service: "books", address: "127.0.0.1", port: 40_000, slot: "blue", release: "v3", role: "live", health: { status: "passing", output: "HTTP 200 OK" }, ...over };
}

describe("Consul shapes", () => {
  it("a catalog entry carries the service's address, port, tags and metadata as Consul names them", () => {
    const e = catalogEntry(instance("books-blue-1", { port: 41_234 }), place, 77);
    assert.deepEqual(
      { Node: e.Node, Address: e.Address, Datacenter: e.Datacenter, ServiceID: e.ServiceID, ServiceName: e.ServiceName, ServiceAddress: e.ServiceAddress, ServicePort: e.ServicePort, ServiceTags: e.ServiceTags, ServiceMeta: e.ServiceMeta, ModifyIndex: e.ModifyIndex },
      { Node: "vm1", Address: "127.0.0.1", Datacenter: "dc1", ServiceID: "books-blue-1", ServiceName: "books", ServiceAddress: "127.0.0.1", ServicePort: 41_234, ServiceTags: ["live", "blue"], ServiceMeta: { role: "live", slot: "blue", release: "v3" }, ModifyIndex: 77 },
    );
  });

  it("a health entry has the node, the service and one check with the monitor's status and output", () => {
    const e = healthEntry(instance("books-green-2", { slot: "green", role: "warm", health: { status: "critical", output: "HTTP 500" } }), place, "http", 9) as {
      Node: Record<string, unknown>; Service: Record<string, unknown>; Checks: Array<Record<string, unknown>>;
    };
    assert.equal(e.Node.Node, "vm1");
    assert.deepEqual([e.Service.ID, e.Service.Service, e.Service.Port, e.Service.Tags], ["books-green-2", "books", 40_000, ["warm", "green"]]);
    assert.deepEqual(e.Checks.map((c) => [c.CheckID, c.Name, c.Status, c.Output, c.ServiceID, c.Type]), [["service:books-green-2", "Service 'books' check", "critical", "HTTP 500", "books-green-2", "http"]]);
  });

  it("the services map unions the tags of each service's instances, and lists no service without instances", () => {
    assert.deepEqual(catalogServices([instance("a"), instance("b", { slot: "green", role: "preview" }), instance("c", { service: "authors" })]), {
      authors: ["blue", "live"],
      books: ["blue", "green", "live", "preview"],
    });
    assert.deepEqual(catalogServices([]), {});
  });

  it("?tag= matches an instance only when it carries every tag asked for", () => {
    assert.equal(hasTags(instance("a"), []), true);
    assert.equal(hasTags(instance("a"), ["live"]), true);
    assert.equal(hasTags(instance("a"), ["live", "blue"]), true);
    assert.equal(hasTags(instance("a"), ["live", "green"]), false);
  });

  it("a KV entry has its value in base64 (UTF-8), null when empty, and the store's revisions as indexes", () => {
    assert.deepEqual(kvEntry({ key: "config/b", value: "héllo ✓", createRevision: 3, modRevision: 8 }), {
      LockIndex: 0, Key: "config/b", Flags: 0, Value: Buffer.from("héllo ✓").toString("base64"), CreateIndex: 3, ModifyIndex: 8,
    });
    assert.equal(kvEntry({ key: "k", value: "", createRevision: 1, modRevision: 1 }).Value, null);
  });

  it("?keys folds keys at the separator after the prefix, once each, sorted", () => {
    const keys = ["config/books/banner", "config/books/color", "config/authors/banner", "config/top"];
    assert.deepEqual(kvKeys(keys, "config/"), ["config/authors/banner", "config/books/banner", "config/books/color", "config/top"]);
    assert.deepEqual(kvKeys(keys, "config/", "/"), ["config/authors/", "config/books/", "config/top"]);
    assert.deepEqual(kvKeys(keys, "", "/"), ["config/"]);
  });
});
