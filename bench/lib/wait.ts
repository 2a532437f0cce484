// Waiting on a condition in a benchmark: how long from t0 until it held, polled, bounded.

/** Milliseconds from t0 until done() resolved true; throws after maxWaitMs. A done() that throws counts as false. */
export async function timeUntil(t0: number, done: () => Promise<boolean>, opts: { maxWaitMs: number; pollMs: number }): Promise<number> {
  for (;;) {
    if (await done().catch(() => false)) return performance.now() - t0;
    if (performance.now() - t0 > opts.maxWaitMs) throw new Error(`not reached within ${opts.maxWaitMs}ms`);
    await sleep(opts.pollMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
