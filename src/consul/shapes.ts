// Turquoise's registry in Consul's JSON shapes: an instance as a catalog entry, a health entry
// and its check; a user key as a KV entry with its value in base64. Pure, so tables test them.
import type { CatalogInstance } from "../api/catalog.js";
import type { KeyValue } from "../state/contract.js";

/** Where the entries say they live: Consul's node and datacenter. */
export interface ConsulPlace {
  node: string;
  datacenter: string;
}

/** An instance's tags: its role (live, warm, preview) and its slot, so a client filters with ?tag=live. */
export function serviceTags(i: CatalogInstance): string[] {
  return [i.role, i.slot];
}

function serviceMeta(i: CatalogInstance): Record<string, string> {
  return { role: i.role, slot: i.slot, release: i.release };
}

/** Whether an instance carries every tag asked for (Consul's ?tag=, repeated: all must match). */
export function hasTags(i: CatalogInstance, tags: string[]): boolean {
  const own = serviceTags(i);
  return tags.every((t) => own.includes(t));
}

/** GET /v1/catalog/services: each service that has instances, with the union of their tags. */
export function catalogServices(instances: CatalogInstance[]): Record<string, string[]> {
  const out: Record<string, Set<string>> = {};
  for (const i of instances) for (const t of serviceTags(i)) (out[i.service] ??= new Set()).add(t);
  return Object.fromEntries(Object.keys(out).sort().map((name) => [name, [...out[name]!].sort()]));
}

/** One element of GET /v1/catalog/service/<name>. Its indexes are the answer's: Turquoise keeps none per instance. */
export function catalogEntry(i: CatalogInstance, place: ConsulPlace, index: number): Record<string, unknown> {
  return {
    Node: place.node,
    Address: i.address,
    Datacenter: place.datacenter,
    TaggedAddresses: { lan: i.address, wan: i.address },
    NodeMeta: {},
    ServiceID: i.id,
    ServiceName: i.service,
    ServiceTags: serviceTags(i),
    ServiceAddress: i.address,
    ServicePort: i.port,
    ServiceMeta: serviceMeta(i),
    ServiceWeights: { Passing: 1, Warning: 1 },
    ServiceEnableTagOverride: false,
    CreateIndex: index,
    ModifyIndex: index,
  };
}

/** An instance's one check, as GET /v1/health/checks/<name> and health entries show it. */
export function checkEntry(i: CatalogInstance, place: ConsulPlace, type: "http" | "tcp", index: number): Record<string, unknown> {
  return {
    Node: place.node,
    CheckID: `service:${i.id}`,
    Name: `Service '${i.service}' check`,
    Status: i.health.status,
    Notes: "",
    Output: i.health.output,
    ServiceID: i.id,
    ServiceName: i.service,
    ServiceTags: serviceTags(i),
    Type: type,
    CreateIndex: index,
    ModifyIndex: index,
  };
}

/** One element of GET /v1/health/service/<name>: the node, the service instance, its checks. */
export function healthEntry(i: CatalogInstance, place: ConsulPlace, type: "http" | "tcp", index: number): Record<string, unknown> {
  return {
    Node: {
      Node: place.node,
      Address: i.address,
      Datacenter: place.datacenter,
      TaggedAddresses: { lan: i.address, wan: i.address },
      Meta: {},
      CreateIndex: index,
      ModifyIndex: index,
    },
    Service: {
      ID: i.id,
      Service: i.service,
      Tags: serviceTags(i),
      Address: i.address,
      Meta: serviceMeta(i),
      Port: i.port,
      Weights: { Passing: 1, Warning: 1 },
      EnableTagOverride: false,
      CreateIndex: index,
      ModifyIndex: index,
    },
    Checks: [checkEntry(i, place, type, index)],
  };
}

/** A user key as Consul's KV shows it: the value in base64, null when empty (as Consul's empty value). */
export function kvEntry(kv: KeyValue): Record<string, unknown> {
  return {
    LockIndex: 0,
    Key: kv.key,
    Flags: 0,
    Value: kv.value === "" ? null : Buffer.from(kv.value, "utf8").toString("base64"),
    CreateIndex: kv.createRevision,
    ModifyIndex: kv.modRevision,
  };
}

/**
 * ?keys: the keys under a prefix, sorted; with a separator, a key that has one after the prefix
 * is cut just past it and listed once (Consul's folders: "config/books/").
 */
export function kvKeys(keys: string[], prefix: string, separator?: string): string[] {
  const out = new Set<string>();
  for (const key of keys) {
    const at = separator ? key.indexOf(separator, prefix.length) : -1;
    out.add(at === -1 ? key : key.slice(0, at + separator!.length));
  }
  return [...out].sort();
}
