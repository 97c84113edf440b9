/**
 * The requests a connection is serving at once, bounded in count and bytes.
 * A request that fails in a way that ends the connection (a broken socket)
 * fails the next wait, so the connection loop stops instead of reading on.
 * One caller waits at a time (the connection's loop), so one waiter slot is enough.
 */

export class InFlight {
  private running = new Set<Promise<void>>();
  private bytes = 0;
  private failure: { error: unknown } | undefined;
  private changed: (() => void) | undefined;

  constructor(
    private readonly maxRequests: number,
    private readonly maxBytes: number,
  ) {}

  /** Waits until a request of `bytes` fits (one always fits when nothing runs). */
  async room(bytes: number): Promise<void> {
    while (this.running.size >= this.maxRequests || (this.running.size > 0 && this.bytes + bytes > this.maxBytes)) await this.settled();
    this.check();
  }

  /** Runs `work` alongside the others; it holds `bytes` until it ends. */
  start(bytes: number, work: () => Promise<void>): void {
    this.bytes += bytes;
    const running: Promise<void> = work()
      .catch((error: unknown) => {
        this.failure ??= { error };
      })
      .finally(() => {
        this.bytes -= bytes;
        this.running.delete(running);
        this.changed?.();
      });
    this.running.add(running);
  }

  /** Waits for every request to end; rethrows the first failure. */
  async drain(): Promise<void> {
    while (this.running.size > 0) await this.settled();
    this.check();
  }

  private settled(): Promise<void> {
    return new Promise((resolve) => {
      this.changed = () => {
        this.changed = undefined;
        resolve();
      };
    });
  }

  private check(): void {
    if (this.failure) throw this.failure.error;
  }
}
