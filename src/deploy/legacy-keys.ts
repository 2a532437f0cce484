// State files from before the reserved prefix kept the agent's records among the user's keys
// (services/<name>/color, instances/..., journal/...). On its first start with this version the
// agent moves them under the prefix, once: afterwards a user key named services/books/color is
// only a user key. Moved values are validated when read, like any record, so junk written
// through the old KV API ends up set aside, not acted on.
import type { Store } from "../state/contract.js";
import { internalKey } from "../state/namespace.js";
import { keys } from "./records.js";

/** The keys the old layout gave the agent's records. */
const LEGACY_KEYS: RegExp[] = [
  /^services\/[^/]+\/(color|previous|degraded)$/,
  /^services\/[^/]+\/slots\/[^/]+$/,
  /^instances\/[^/]+\/[^/]+$/,
  /^journal\/[^/]+$/,
  /^proxy\/table-version$/,
];
const LEGACY_PREFIXES = ["services/", "instances/", "journal/", "proxy/"];

/** The layout this version writes; the marker's value. */
export const LAYOUT_VERSION = "2";

/**
 * Moves old-layout records under the reserved prefix, unless that was done before. Idempotent: a
 * crash half-way leaves keys in one place or both, and the next run finishes (the moved copy wins).
 */
export async function moveLegacyKeys(store: Store): Promise<string[]> {
  if (await store.get(keys.layout())) return [];
  const moved: string[] = [];
  for (const prefix of LEGACY_PREFIXES) {
    for (const kv of await store.list(prefix)) {
      if (!LEGACY_KEYS.some((re) => re.test(kv.key))) continue;
      const target = internalKey(kv.key);
      if (!(await store.get(target))) await store.put(target, kv.value, { prevRevision: 0 });
      await store.delete(kv.key, { prevRevision: kv.modRevision });
      moved.push(kv.key);
    }
  }
  await store.put(keys.layout(), LAYOUT_VERSION);
  return moved;
}
