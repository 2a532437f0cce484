// The user's key/value store as the API and watches see it: every key but the agent's own. A
// key or prefix inside the reserved namespace is refused (403) for every method, and a listing
// whose prefix merely covers it ("", "_") comes back without the agent's keys.
import { TurquoiseError } from "../errors.js";
import type { KeyValue, Store, WriteResult } from "../state/contract.js";
import { INTERNAL_PREFIX, isInternalKey, isInternalPrefix } from "../state/namespace.js";

function refuse(what: string): never {
  throw new TurquoiseError("FORBIDDEN", `${what} is in the reserved namespace "${INTERNAL_PREFIX}": it holds the agent's own records, which no API call reads or writes; use another key`);
}

export function checkUserKey(key: string): void {
  if (isInternalKey(key)) refuse(`the key "${key.slice(0, 200)}"`);
}

export function checkUserPrefix(prefix: string): void {
  if (isInternalPrefix(prefix)) refuse(`the prefix "${prefix.slice(0, 200)}"`);
}

export async function userGet(store: Store, key: string): Promise<KeyValue | undefined> {
  checkUserKey(key);
  return store.get(key);
}

export async function userList(store: Store, prefix: string): Promise<KeyValue[]> {
  checkUserPrefix(prefix);
  return (await store.list(prefix)).filter((kv) => !isInternalKey(kv.key));
}

export async function userPut(store: Store, key: string, value: string, opts: { prevRevision?: number }): Promise<WriteResult> {
  checkUserKey(key);
  return store.put(key, value, opts);
}

export async function userDelete(store: Store, key: string, opts: { prevRevision?: number }): Promise<WriteResult> {
  checkUserKey(key);
  return store.delete(key, opts);
}
