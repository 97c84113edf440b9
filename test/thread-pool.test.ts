/** The CLI sizes libuv's thread pool to the machine, unless the user did. */

import { describe, expect, it } from 'vitest';
import { sizeThreadPool, threadPoolSize } from '../src/cli/thread-pool.js';

describe('thread pool size', () => {
  it('follows the core count between two and four threads', () => {
    expect([1, 2, 3, 4, 8, 64].map(threadPoolSize)).toEqual([2, 2, 3, 4, 4, 4]);
  });

  it('keeps a size the user set', () => {
    const env: NodeJS.ProcessEnv = { UV_THREADPOOL_SIZE: '16' };
    sizeThreadPool(env);
    expect(env.UV_THREADPOOL_SIZE).toBe('16');
  });

  it('sets one when none is set', () => {
    const env: NodeJS.ProcessEnv = {};
    sizeThreadPool(env);
    expect(Number(env.UV_THREADPOOL_SIZE)).toBeGreaterThanOrEqual(2);
    expect(Number(env.UV_THREADPOOL_SIZE)).toBeLessThanOrEqual(4);
  });
});
