/**
 * A bounded prepare-then-store pipeline: items are prepared several at a time
 * (reads, compression) and stored one at a time (writes that must not
 * interleave), either in the items' order or as their preparations finish.
 */

/** How a pipeline runs. */
export interface PipelineOptions {
  /** Items being prepared at once. */
  ahead: number;
  /** True: store in the items' order; false: as preparations finish. */
  ordered: boolean;
}

/**
 * Runs `prepare` on up to `ahead` items of `items` at once and `store` on
 * their results one at a time. A failed preparation is reported when it would
 * have been stored (never left unhandled meanwhile); on failure, preparations
 * still running settle before this returns, so the caller may close what they read.
 */
export async function pipeline<T, P>(
  items: AsyncIterator<T>,
  options: PipelineOptions,
  prepare: (item: T) => Promise<P>,
  store: (prepared: P) => Promise<void>,
): Promise<void> {
  const running = new Map<number, Promise<P>>();
  let nextId = 0;
  const fill = async () => {
    while (running.size < options.ahead) {
      const next = await items.next();
      if (next.done) return;
      const prepared = prepare(next.value);
      prepared.catch(() => {});
      running.set(nextId++, prepared);
    }
  };
  try {
    await fill();
    while (running.size > 0) {
      const id = options.ordered ? running.keys().next().value! : await firstSettled(running);
      const prepared = running.get(id)!;
      running.delete(id);
      const value = await prepared;
      await fill();
      await store(value);
    }
  } finally {
    await Promise.allSettled(running.values());
  }
}

/** The id of the first of `running` to settle, fulfilled or rejected. */
function firstSettled<P>(running: Map<number, Promise<P>>): Promise<number> {
  return Promise.race(
    [...running].map(([id, promise]) =>
      promise.then(
        () => id,
        () => id,
      ),
    ),
  );
}
