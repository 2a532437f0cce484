// Which instances the health monitor checks at each sync, and that it reads each slot record once.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Records } from "../../src/deploy/records.js";
import { checkedInstances } from "../../src/heal/monitor.js";
import type { InstanceInfo, Slot } from "../../src/runtime/contract.js";
import { MemoryStore } from "../../src/state/memory.js";

const inst = (service: string, slot: Slot, release: string, n: number): InstanceInfo => ({
  id: `${service}-${slot}-${release}-${n}`, service, slot, release, host: "127.0.0.1", port: 1000 + n, ref: String(1000 + n), startedAt: 0,
});

test("live and warm instances of their slot's release are checked, a preview, another release and an unready one are not; each slot record is read once", async () => {
  const records = new Records(new MemoryStore());
  await records.setSlot("books", { slot: "blue", release: "v1", poolId: "books/blue/v1", state: "live", startedAt: 1 });
  await records.setSlot("books", { slot: "green", release: "v2", poolId: "books/green/v2", state: "preview", startedAt: 2 });
  await records.setSlot("films", { slot: "green", release: "v7", poolId: "films/green/v7", state: "warm", startedAt: 3 });
  const all = [
    ...[1, 2, 3, 4].map((n) => inst("books", "blue", "v1", n)),
    ...[1, 2].map((n) => inst("books", "green", "v2", n)),
    ...[1, 2, 3].map((n) => inst("films", "green", "v7", n)),
    inst("films", "green", "v6", 9),
    inst("films", "blue", "v8", 1),
  ];
  const unready = new Set([all[3]!.id]);
  let reads = 0;
  const counted = { slot: (svc: string, slot: Slot) => (reads++, records.slot(svc, slot)) };
  const checked = await checkedInstances(all, { isReady: (id) => !unready.has(id) }, counted);
  assert.deepEqual(checked.map((i) => i.id), [...[1, 2, 3].map((n) => `books-blue-v1-${n}`), ...[1, 2, 3].map((n) => `films-green-v7-${n}`)]);
  assert.equal(reads, 4, "one read per service and slot, not one per instance");
});
