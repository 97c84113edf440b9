/**
 * Work running in the background, bounded in count and bytes: an NBD
 * connection's requests, convert's chunks being written. A piece of work that
 * fails fails the next wait, so the loop that starts them stops instead of
 * going on. One caller waits at a time (the loop), so one waiter slot is enough.
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

  /** Waits until work of `bytes` fits (one piece always fits when nothing runs); throws an earlier failure. */
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

  /** Waits for all work to end; rethrows the first failure. */
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
