/**
 * amend -o compat=0.10 against qemu-img: zero clusters are written out
 * (unallocated without a backing file, new zeroed clusters with one, zeroed
 * in place when allocated), in the active L1 table and in every snapshot's;
 * a zstd compression type with no compressed cluster is dropped; what
 * version 2 cannot hold is refused with qemu-img's message before anything
 * changes. Files are byte for byte qemu-img's, but where clusters are shared
 * with snapshots: there qemu-img zeroes a cluster a snapshot still reads,
 * which platter leaves to the snapshot.
 */

import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { shStatus } from './helpers/qcow2-oracle.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';
import { CrashingDevice } from './helpers/qcow2-writer.js';
import { nodeHost } from '../src/node/host.js';
import { amendImage } from '../src/ops/amend.js';
import { MemoryDevice } from '../src/core/device.js';
import { PlatterError } from '../src/core/errors.js';
import fc from 'fast-check';

const tmp = tempDir('platter-downgrade-');
afterAll(() => tmp.cleanup());
let made = 0;

/** Runs qemu-io commands on `image`. */
function io(image: string, ...commands: string[]): void {
  run('qemu-io', commands.flatMap((command) => ['-c', command]).concat(image));
}

/** A new image (made by `make`), downgraded by both tools on copies: each tool's outcome and file. */
function downgradeBoth(make: (image: string) => void, args: string[] = ['-o', 'compat=0.10']) {
  const source = tmp.path(`source-${made++}.qcow2`);
  make(source);
  const outcome = (tool: 'platter' | 'qemu-img') => {
    const image = `${source}.${tool}`;
    copyFileSync(source, image);
    const line = ['amend', ...args, image];
    const result = tool === 'platter' ? platter(line) : shStatus(tmp.dir, 'qemu-img', line);
    return { ...result, image, bytes: readFileSync(image) };
  };
  return { source, mine: outcome('platter'), qemu: outcome('qemu-img') };
}

/** A version 3 image of `size` with `options`, over `backing` (qcow2) when given. */
function create(image: string, size: string, options: string[] = [], backing?: string): void {
  const chain = backing === undefined ? [] : ['-b', backing, '-F', 'qcow2'];
  run('qemu-img', ['create', '-q', '-f', 'qcow2', ...options, ...chain, image, size]);
}

/** Data, a zero cluster over data, zero clusters with no data, and an unmapped zero cluster. */
function zeroClusters(image: string): void {
  io(image, 'write -P 1 0 192k', 'write -z 64k 64k', 'write -z 1M 128k', 'write -z -u 2M 64k');
}

/** A base holding data under the overlay's zero clusters. */
function backed(image: string): void {
  const base = `${image}.base`;
  create(base, '8M');
  io(base, 'write -P 7 0 4M');
  create(image, '8M', [], base);
}

/** The image's guest contents, and each snapshot's. */
function contents(image: string, snapshots: string[] = []): Buffer[] {
  return [undefined, ...snapshots].map((snapshot) => {
    const out = `${image}.${snapshot ?? 'active'}.raw`;
    run('qemu-img', ['convert', ...(snapshot ? ['-l', snapshot] : []), '-O', 'raw', image, out]);
    return readFileSync(out);
  });
}

describe.skipIf(!hasTool('qemu-img') || !hasTool('qemu-io'))('amend -o compat=0.10 against qemu-img', () => {
  it.each<[string, (image: string) => void]>([
    [
      'zero clusters, no backing file',
      (image) => {
        create(image, '8M');
        zeroClusters(image);
      },
    ],
    [
      'zero clusters over a backing file',
      (image) => {
        backed(image);
        zeroClusters(image);
      },
    ],
    [
      'zstd compression type, zero clusters, no compressed cluster',
      (image) => {
        create(image, '8M', ['-o', 'compression_type=zstd']);
        zeroClusters(image);
      },
    ],
    [
      '4 KiB clusters, lazy refcounts',
      (image) => {
        create(image, '8M', ['-o', 'cluster_size=4k,lazy_refcounts=on']);
        zeroClusters(image);
      },
    ],
  ])('%s: the same file as qemu-img, reading the same', (_, make) => {
    const { source, mine, qemu } = downgradeBoth(make);
    expect(mine.stderr).toBe('');
    expect([mine.status, qemu.status]).toEqual([0, 0]);
    expect(mine.bytes.equals(qemu.bytes)).toBe(true);
    expect(contents(mine.image)[0]!.equals(contents(source)[0]!)).toBe(true);
    expect(run('qemu-img', ['info', '--output=json', mine.image])).toContain('"compat": "0.10"');
  });

  it('zero clusters in tables and clusters shared with snapshots: every state reads as before, and the image checks clean', () => {
    // qemu-img writes zeros into a cluster that a snapshot still reads (s1 loses its data at 3 MiB) and marks shared clusters COPIED.
    const { source, mine } = downgradeBoth((image) => {
      backed(image);
      io(image, 'write -z 1M 128k', 'write -P 3 3M 64k');
      run('qemu-img', ['snapshot', '-c', 's1', image]);
      io(image, 'write -z 3M 64k', 'write -P 4 5M 64k');
      run('qemu-img', ['snapshot', '-c', 's2', image]);
      io(image, 'write -z 5M 64k', 'write -z 1M 64k');
    });
    expect(mine.status).toBe(0);
    const states = ['s1', 's2'];
    const before = contents(source, states);
    contents(mine.image, states).forEach((state, index) => expect(state.equals(before[index]!)).toBe(true));
    expect(shStatus(tmp.dir, 'qemu-img', ['check', mine.image])).toMatchObject({ status: 0 });
    expect(run('qemu-img', ['info', '--output=json', mine.image])).toContain('"compat": "0.10"');
  });

  it.each<[string, (image: string) => void, string[], string]>([
    ['refcount_bits=1', (image) => create(image, '1M', ['-o', 'refcount_bits=1']), [], 'compat=0.10 requires refcount_bits=16'],
    ['a data file', (image) => create(image, '1M', ['-o', `data_file=${image}.data`]), [], 'Cannot downgrade an image with a data file'],
    ['extended L2 entries', (image) => create(image, '1M', ['-o', 'extended_l2=on']), [], 'Cannot downgrade an image with incompatible features 0x10 set'],
    [
      'zstd compressed clusters',
      (image) => {
        create(image, '1M', ['-o', 'compression_type=zstd']);
        io(image, 'write -z 0 64k', 'write -c -P 5 64k 64k');
      },
      [],
      'Cannot downgrade an image with zstd compression type and existing compressed clusters',
    ],
    [
      'a snapshot of another size',
      (image) => {
        create(image, '1M');
        io(image, 'write -z 0 64k');
        run('qemu-img', ['snapshot', '-c', 'small', image]);
        run('qemu-img', ['resize', '-q', image, '2M']);
      },
      [],
      'Internal snapshots prevent downgrade of image',
    ],
  ])('%s: refused with qemu-img\'s message, and platter changes nothing', (_, make, extra, message) => {
    const { source, mine, qemu } = downgradeBoth(make, ['-o', 'compat=0.10', ...extra]);
    expect([mine.status, qemu.status]).toEqual([1, 1]);
    expect(qemu.stderr).toContain(message);
    expect(mine.stderr).toBe(`platter: ${message}\n`);
    expect(mine.bytes.equals(readFileSync(source))).toBe(true);
  });

  it('a size that would leave a snapshot of another size is refused before the image is resized', () => {
    const image = tmp.path('resized.qcow2');
    create(image, '1M');
    run('qemu-img', ['snapshot', '-c', 'kept', image]);
    const before = readFileSync(image);
    const result = platter(['amend', '-o', 'compat=0.10,size=2M', image]);
    expect(result.stderr).toBe('platter: Internal snapshots prevent downgrade of image\n');
    expect(readFileSync(image).equals(before)).toBe(true);
  });

  it('cut off after any write, a downgrade leaves an image without corruption whose every state reads as before', async () => {
    const source = tmp.path('crash.qcow2');
    backed(source);
    io(source, 'write -z 1M 128k', 'write -P 3 3M 64k', 'write -P 6 6M 64k', 'write -z 6M 64k');
    run('qemu-img', ['snapshot', '-c', 's1', source]);
    io(source, 'write -z 3M 64k', 'write -z -u 7M 64k');
    const states = contents(source, ['s1']);
    const base = new Uint8Array(readFileSync(source));
    const downgrade = (device: CrashingDevice) => amendImage(device, 'qcow2', new Map([['compat', '0.10']]), nodeHost());
    const full = new CrashingDevice(base, Number.MAX_SAFE_INTEGER);
    await downgrade(full);
    expect(full.writes).toBeGreaterThan(4);
    for (let budget = 0; budget <= full.writes; budget++) {
      const device = new CrashingDevice(base, budget);
      await downgrade(device);
      // Beside the source, so the backing file name resolves.
      const file = tmp.path(`crash-${budget}.qcow2`);
      writeFileSync(file, device.contents());
      const check = shStatus(tmp.dir, 'qemu-img', ['check', '--output=json', file]);
      expect(JSON.parse(check.stdout).corruptions ?? 0, `${file}: ${check.stdout}`).toBe(0);
      contents(file, ['s1']).forEach((state, index) => expect(state.equals(states[index]!), `${file}, state ${index}`).toBe(true));
    }
  }, 60_000);

  /** A 1 MiB image whose zero cluster at guest 64 KiB (data once) points at `hostOffset` instead. */
  function damagedZeroCluster(hostOffset: (header: DataView) => bigint): string {
    const image = tmp.path(`damaged-${made++}.qcow2`);
    create(image, '1M');
    io(image, 'write -P 9 64k 64k', 'write -z 64k 64k');
    const bytes = readFileSync(image);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const l2 = Number(view.getBigUint64(Number(view.getBigUint64(40))) & 0x00fffffffffffe00n);
    view.setBigUint64(l2 + 8, hostOffset(view) | 1n);
    writeFileSync(image, bytes);
    return image;
  }

  it('a damaged zero cluster whose host cluster lies far past the end of the file gets a new cluster; nothing is written there', () => {
    const image = damagedZeroCluster(() => 1n << 40n);
    const size = readFileSync(image).length;
    const result = platter(['amend', '-o', 'compat=0.10', image]);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(readFileSync(image).length).toBeLessThan(size + 4 * 65536);
    expect(contents(image)[0]!.every((byte) => byte === 0)).toBe(true);
    expect(run('qemu-img', ['info', '--output=json', image])).toContain('"compat": "0.10"');
  });

  it('a damaged zero cluster whose host cluster is the L1 table is refused, as qemu refuses writes onto metadata, and the table stays', () => {
    const image = damagedZeroCluster((header) => header.getBigUint64(40));
    const l1 = Number(readFileSync(image).readBigUInt64BE(40));
    const l1Before = readFileSync(image).subarray(l1, l1 + 65536);
    const result = platter(['amend', '-o', 'compat=0.10', image]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/^platter: .*overlaps the active L1 table/);
    expect(readFileSync(image).subarray(l1, l1 + 65536).equals(l1Before)).toBe(true);
    expect(contents(image)[0]!.every((byte) => byte === 0)).toBe(true);
  });

  it('hostile tables: a downgrade of an image with random entries poked in succeeds or fails with a PlatterError, in bounded space', async () => {
    const source = tmp.path('hostile.qcow2');
    backed(source);
    io(source, 'write -P 2 0 256k', 'write -z 64k 64k', 'write -z 1M 128k');
    run('qemu-img', ['snapshot', '-c', 's1', source]);
    io(source, 'write -z 128k 64k');
    const base = new Uint8Array(readFileSync(source));
    const header = new DataView(base.buffer);
    const cluster = (offset: bigint) => Number(offset & 0x00fffffffffffe00n);
    // The clusters the downgrade walks: both L1 tables, their L2 tables, the refcount table.
    const l1s = [cluster(header.getBigUint64(40)), cluster(header.getBigUint64(Number(header.getBigUint64(64))))];
    const l2s = l1s.map((l1) => cluster(header.getBigUint64(l1))).filter((offset) => offset !== 0);
    const targets = [...l1s, ...l2s, cluster(header.getBigUint64(48))];
    const outcomes = new Set<string>();
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            table: fc.constantFrom(...targets),
            entry: fc.nat(63),
            value: fc.oneof(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: 0n, max: 1n << 24n }).map((offset) => (offset << 9n) | 1n)),
          }),
          { minLength: 1, maxLength: 4 },
        ),
        async (pokes) => {
          const bytes = base.slice();
          const view = new DataView(bytes.buffer);
          for (const { table, entry, value } of pokes) view.setBigUint64(table + entry * 8, value);
          const device = new MemoryDevice(bytes, { name: 'hostile.qcow2' });
          try {
            await amendImage(device, 'qcow2', new Map([['compat', '0.10']]), nodeHost());
            outcomes.add('done');
          } catch (error) {
            expect(error, String(error)).toBeInstanceOf(PlatterError);
            outcomes.add('refused');
          }
          expect(device.size).toBeLessThan(base.length + (64 << 20));
        },
      ),
      { numRuns: 150 },
    );
    expect(outcomes).toEqual(new Set(['done', 'refused']));
  }, 60_000);
});
