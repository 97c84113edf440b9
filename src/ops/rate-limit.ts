/**
 * `-r RATE` of convert and commit: guest bytes written per second, held on
 * average as qemu's throttling holds them. A leaky bucket drains at RATE; a
 * write waits while the bucket holds more than a tenth of a second's worth
 * (qemu's default burst), then adds its bytes. So a short copy goes at once
 * and a long one takes about its size divided by the rate. Writes wait their
 * turn one after another, in the order they asked.
 */

import { UsageError } from '../core/errors.js';
import { parseSize } from '../core/size.js';

/** What a copy asks before each write: whether it may go yet. */
export interface WriteLimit {
  /** Resolves when a write of `bytes` may go. */
  take(bytes: number): Promise<void>;
}

/** Time as a rate limit sees it; injectable so tests need not wait. */
export interface RateClock {
  /** Milliseconds from any fixed point, never going back. */
  now(): number;
  sleep(milliseconds: number): Promise<void>;
}

/** The longest one timer waits (setTimeout fires at once, with a warning, past 2^31 - 1 ms). */
const LONGEST_TIMER_MS = 2 ** 30;

const systemClock: RateClock = {
  now: () => performance.now(),
  async sleep(milliseconds) {
    for (let left = milliseconds; left > 0; left -= LONGEST_TIMER_MS) {
      await new Promise((resolve) => setTimeout(resolve, Math.min(left, LONGEST_TIMER_MS)));
    }
  },
};

/** The bucket holds this fraction of a second's worth before writes wait (qemu's burst when none is set). */
const BURST_SECONDS = 0.1;

/** A rate that writes wait for. */
export class RateLimit implements WriteLimit {
  /** Bytes in the bucket at `drainedAt`. */
  private level = 0;
  private drainedAt: number;
  /** The turn of the last write to ask. */
  private turn: Promise<void> = Promise.resolve();

  constructor(
    readonly bytesPerSecond: number,
    private readonly clock: RateClock = systemClock,
  ) {
    if (!(bytesPerSecond > 0)) throw new RangeError(`a rate limit must be positive (${bytesPerSecond})`);
    this.drainedAt = clock.now();
  }

  take(bytes: number): Promise<void> {
    const mine = this.turn.then(() => this.admit(bytes));
    this.turn = mine;
    return mine;
  }

  private async admit(bytes: number): Promise<void> {
    this.drain();
    const excess = this.level - this.bytesPerSecond * BURST_SECONDS;
    if (excess > 0) {
      await this.clock.sleep((excess / this.bytesPerSecond) * 1000);
      this.drain();
    }
    this.level += bytes;
  }

  private drain(): void {
    const now = this.clock.now();
    this.level = Math.max(0, this.level - ((now - this.drainedAt) / 1000) * this.bytesPerSecond);
    this.drainedAt = now;
  }
}

/** Parses `-r`: bytes per second with qemu's suffixes; 0 is no limit (undefined), as in qemu-img. */
export function parseRateLimit(text: string): RateLimit | undefined {
  let bytesPerSecond: number;
  try {
    bytesPerSecond = parseSize(text, 'rate limit');
  } catch {
    throw new UsageError(
      'Invalid rate limit specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.',
    );
  }
  return bytesPerSecond === 0 ? undefined : new RateLimit(bytesPerSecond);
}
