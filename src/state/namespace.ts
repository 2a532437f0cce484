// The key space of a Store, split in two: the agent's own records under one reserved prefix, and
// the user's key/value store everywhere else. The KV API refuses the reserved prefix, so no API
// call can forge, corrupt or read what the agent acts on.

/** Every key the agent writes starts with this; no KV API call may name it. */
export const INTERNAL_PREFIX = "_turquoise/";

/** Whether a key lives in the agent's namespace. */
export function isInternalKey(key: string): boolean {
  return key.startsWith(INTERNAL_PREFIX);
}

/**
 * Whether a prefix listing would reach into the agent's namespace only: such a listing is
 * refused. A shorter prefix ("", "_", "_turq") is served with the agent's keys filtered out.
 */
export function isInternalPrefix(prefix: string): boolean {
  return prefix.startsWith(INTERNAL_PREFIX);
}

export function internalKey(relative: string): string {
  return INTERNAL_PREFIX + relative;
}
