/**
 * `-r RATE` (convert, commit): the leaky bucket that holds guest writes to a
 * rate, on a clock that only moves when a write sleeps or the test says so.
 * Whatever the writes and the pauses between them, no write goes while more
 * than a tenth of a second's worth is in the bucket, and none waits longer
 * than it must; writes go in the order they asked. Every guest byte a convert
 * or commit writes passes through the limit. From the command line: -r as
 * qemu-img parses it, and a copy that cannot be faster than the rate allows.
 */

import { readFileSync, writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../src/core/device.js';
import { convertToRaw } from '../src/ops/convert.js';
import { convertToQcow2 } from '../src/ops/convert-qcow2.js';
import { nodeHost } from '../src/node/host.js';
import { parseRateLimit, RateLimit, type RateClock, type WriteLimit } from '../src/ops/rate-limit.js';
import { ScriptedImage } from './helpers/convert-fake-image.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

/** A clock that moves only by sleeping or by `pass`. */
function fakeClock(): RateClock & { pass(milliseconds: number): void; slept: number[] } {
  let time = 0;
  const slept: number[] = [];
  return {
    slept,
    now: () => time,
    pass: (milliseconds) => void (time += milliseconds),
    sleep: async (milliseconds) => {
      slept.push(milliseconds);
      time += milliseconds;
    },
  };
}

const RATE = 1 << 20;
const BURST = RATE / 10;

describe('the rate limit', () => {
  it('holds the bucket at its burst when a write goes, and waits no longer than it must', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ bytes: fc.integer({ min: 1, max: 4 * RATE }), pauseMs: fc.nat({ max: 3000 }) }), { minLength: 1, maxLength: 20 }),
        async (writes) => {
          const clock = fakeClock();
          const limit = new RateLimit(RATE, clock);
          const admitted: Array<{ at: number; bytes: number }> = [];
          for (const { bytes, pauseMs } of writes) {
            clock.pass(pauseMs);
            const sleeps = clock.slept.length;
            const asked = clock.now();
            await limit.take(bytes);
            // The bucket at admission: what went before, drained at the rate since, never below empty.
            let level = 0;
            let last = 0;
            for (const earlier of admitted) {
              level = Math.max(0, level - ((earlier.at - last) / 1000) * RATE) + earlier.bytes;
              last = earlier.at;
            }
            level = Math.max(0, level - ((clock.now() - last) / 1000) * RATE);
            expect(level).toBeLessThanOrEqual(BURST + 1e-6);
            // It waited only when the bucket was over its burst, and then exactly down to it.
            if (clock.slept.length > sleeps) expect(level).toBeCloseTo(BURST, 3);
            else expect(clock.now()).toBe(asked);
            admitted.push({ at: clock.now(), bytes });
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('a long copy takes its size over the rate, less the burst and the last write', async () => {
    const clock = fakeClock();
    const limit = new RateLimit(RATE, clock);
    for (let write = 0; write < 10; write++) await limit.take(2 * RATE);
    // Nine writes of two seconds' worth wait for the bucket to drain to its burst.
    expect(clock.now()).toBeCloseTo(9 * 2000 - 100, 6);
  });

  it('writes asked for at once go in the order they asked, each after the one before', async () => {
    const clock = fakeClock();
    const limit = new RateLimit(RATE, clock);
    const order: number[] = [];
    await Promise.all([0, 1, 2, 3].map((index) => limit.take(RATE).then(() => order.push(index))));
    expect(order).toEqual([0, 1, 2, 3]);
    // The second waits for the first second's worth to drain to the burst, the others for one second each.
    expect(clock.now()).toBeCloseTo(900 + 1000 + 1000, 6);
  });

  it('-r: suffixes as qemu-img takes them, 0 for no limit, anything else refused in its words', () => {
    expect(parseRateLimit('0')).toBeUndefined();
    expect(parseRateLimit('1M')!.bytesPerSecond).toBe(RATE);
    expect(parseRateLimit('512k')!.bytesPerSecond).toBe(512 * 1024);
    expect(parseRateLimit('4096')!.bytesPerSecond).toBe(4096);
    for (const bad of ['-5', 'abc', '1X', '']) {
      expect(() => parseRateLimit(bad)).toThrow(/^Invalid rate limit specified\. You may use k, M, G, T, P or E suffixes for kilobytes/);
    }
  });

  it('a raw convert asks the limit for every byte it writes, and for nothing it leaves as a hole', async () => {
    const source = new ScriptedImage([
      { kind: 'data', length: 3 << 20, fill: 7 },
      { kind: 'zero', length: 1 << 20 },
      { kind: 'unallocated', length: 2 << 20 },
      { kind: 'data', length: 70_000, fill: 9 },
    ]);
    let asked = 0;
    const limit: WriteLimit = { take: async (bytes) => void (asked += bytes) };
    const result = await convertToRaw(source, new MemoryDevice(0), { limit });
    expect(asked).toBe(result.bytesWritten);
    expect(asked).toBe((3 << 20) + 70_000);
  });

  it.each([false, true])('a qcow2 convert (compressed: %s) asks the limit for the guest bytes of its data clusters', async (compress) => {
    const source = new ScriptedImage([
      { kind: 'data', length: 3 << 20, fill: 7 },
      { kind: 'unallocated', length: 3 << 20 },
      { kind: 'data', length: 70_000, fill: 9 },
    ]);
    let asked = 0;
    const limit: WriteLimit = { take: async (bytes) => void (asked += bytes) };
    await convertToQcow2(source, new MemoryDevice(0), { options: new Map(), compress, host: nodeHost(), limit });
    expect(asked).toBe((3 << 20) + 70_000);
  });
});

describe.skipIf(!hasTool('qemu-img') || !hasTool('qemu-io'))('-r on the command line', () => {
  const tmp = tempDir('platter-rate-');
  afterAll(() => tmp.cleanup());
  const at = tmp.path;
  const qemuIo = (image: string, command: string) => run('qemu-io', ['-f', 'qcow2', '-c', command, image]);

  it('convert -r 2M of four runs of 512 KiB: the same output as without, and not sooner than the rate allows', () => {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', at('data.qcow2'), '16M']);
    for (let index = 0; index < 4; index++) qemuIo(at('data.qcow2'), `write -P ${0x30 + index} ${index * 4}M 512k`);
    for (const format of ['raw', 'qcow2']) {
      const started = performance.now();
      const result = platter(['convert', '-r', '2M', '-O', format, at('data.qcow2'), at(`limited.${format}`)]);
      const seconds = (performance.now() - started) / 1000;
      expect(result.stderr).toBe('');
      expect(result.status).toBe(0);
      // In whatever order the runs are written, the first goes at once and the other three wait: (3 * 512 KiB - 0.2 MiB) / 2 MiB/s.
      expect(seconds).toBeGreaterThanOrEqual(0.6);
      expect(run('qemu-img', ['compare', at('data.qcow2'), at(`limited.${format}`)])).toContain('Images are identical');
    }
  });

  it('commit -r: the base gets the data, not sooner than the rate allows', () => {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', at('base.qcow2'), '16M']);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', at('top.qcow2')]);
    qemuIo(at('top.qcow2'), 'write -P 0x55 0 1M');
    qemuIo(at('top.qcow2'), 'write -P 0x66 4M 1M');
    writeFileSync(at('expected.raw'), new Uint8Array(16 << 20).fill(0x55, 0, 1 << 20).fill(0x66, 4 << 20, 5 << 20));
    const started = performance.now();
    const result = platter(['commit', '-r', '2M', at('top.qcow2')]);
    expect(result.status).toBe(0);
    expect((performance.now() - started) / 1000).toBeGreaterThanOrEqual(0.4);
    run('qemu-img', ['convert', '-O', 'raw', at('base.qcow2'), at('base.raw')]);
    expect(readFileSync(at('base.raw')).equals(readFileSync(at('expected.raw')))).toBe(true);
  });

  it.each([['convert', '-O', 'raw', 'data.qcow2', 'out.raw'], ['commit', 'top.qcow2']])('%s -r with a bad rate: refused before anything is opened', (...args) => {
    const [command, ...rest] = args;
    const result = platter([command!, '-r', '12Q', ...rest.map((name) => (name.includes('.') ? at(`missing-${name}`) : name))]);
    expect(result.stderr).toBe(
      'platter: Invalid rate limit specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.\n',
    );
    expect(result.status).toBe(1);
  });
});
