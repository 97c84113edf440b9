/** Lending an owned resource (a device, an image) to code that closes what it is given. */

/** A view of `owned` whose close does nothing: the caller keeps ownership and closes it itself. */
export function borrowed<T extends object & { close(): Promise<void> }>(owned: T): T {
  return new Proxy(owned, {
    get(target, key) {
      if (key === 'close') return async () => {};
      const value = Reflect.get(target, key, target) as unknown;
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}
