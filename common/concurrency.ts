// Bounded parallelism: enough to keep disks and the network busy, never thousands of operations
// (and their buffers) at once.

/** Run `fn` over `items` with at most `limit` in flight; rejects with the first error after all settled. */
export async function forEachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let firstError: { err: unknown } | undefined;
  const lane = async (): Promise<void> => {
    while (next < items.length && !firstError) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (err) {
        firstError ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  if (firstError) throw firstError.err;
}

/** Like `Promise.all(items.map(fn))`, with at most `limit` calls in flight; results in input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  const indexed = items.map((item, index) => ({ item, index }));
  await forEachLimit(indexed, limit, async ({ item, index }) => {
    out[index] = await fn(item, index);
  });
  return out;
}
