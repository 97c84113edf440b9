/**
 * Converting into qcow2 (platter convert -O qcow2 [-c], and the library op): qemu-img compare calls
 * the result equal to the source, qemu-img check calls it clean, and compressed
 * output is no more than 5% larger than qemu-img convert -c's.
 */

import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileDevice } from '../src/node/file-device.js';
import { nodeHost } from '../src/node/host.js';
import { openImageFile } from '../src/node/open.js';
import { convertToQcow2 } from '../src/ops/convert-qcow2.js';
import { qcow2TempDir, qcow2ToolAvailable, sh, shStatus } from './helpers/qcow2-oracle.js';
import { platter } from './helpers/tools.js';
import { MAX_RSS_BYTES, runCliMeasured } from './helpers/hostile-child.js';

const haveQemu = qcow2ToolAvailable('qemu-img') && qcow2ToolAvailable('qemu-io');
const temp = qcow2TempDir();
afterAll(() => temp.cleanup());
const at = (name: string) => join(temp.dir, name);

/** A 12 MiB source: text-like data (compresses), random data (does not), zeros, and holes. */
function makeSource(): void {
  const size = 12 << 20;
  const bytes = new Uint8Array(size);
  const text = new TextEncoder().encode(readFileSync(new URL('../formats/qcow2/write.ts', import.meta.url), 'utf8'));
  for (let offset = 0; offset < 4 << 20; offset += text.length) bytes.set(text.subarray(0, Math.min(text.length, (4 << 20) - offset)), offset);
  let seed = 12345;
  for (let i = 6 << 20; i < 7 << 20; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    bytes[i] = seed >>> 24;
  }
  bytes.fill(0x41, (9 << 20) + 1000, (9 << 20) + 5000);
  writeFileSync(at('source.raw'), bytes);
  sh(temp.dir, 'qemu-img', ['convert', '-O', 'qcow2', 'source.raw', 'source.qcow2']);
}

async function convert(source: string, target: string, options: Record<string, string>, compress: boolean): Promise<void> {
  const image = await openImageFile(at(source));
  const device = await FileDevice.open(at(target), { create: true });
  try {
    await convertToQcow2(image, device, { options: new Map(Object.entries(options)), compress, host: nodeHost() });
  } finally {
    await device.close();
    await image.close();
  }
}

beforeAll(() => {
  if (haveQemu) makeSource();
});

describe.skipIf(!haveQemu)('convert -O qcow2', () => {
  for (const compression of ['zlib', 'zstd']) {
    it(`-c with ${compression}: equal to the source, clean, within 5% of qemu-img convert -c`, async () => {
      const options: Record<string, string> = compression === 'zstd' ? { compression_type: 'zstd' } : {};
      const cli = platter(['convert', '-c', '-O', 'qcow2', ...Object.entries(options).flatMap(([k, v]) => ['-o', `${k}=${v}`]), at('source.qcow2'), at(`mine-${compression}.qcow2`)]);
      expect(cli.status, cli.stderr).toBe(0);
      sh(temp.dir, 'qemu-img', ['convert', '-c', '-O', 'qcow2', ...(compression === 'zstd' ? ['-o', 'compression_type=zstd'] : []), 'source.qcow2', `theirs-${compression}.qcow2`]);
      expect(shStatus(temp.dir, 'qemu-img', ['compare', 'source.raw', `mine-${compression}.qcow2`]).status).toBe(0);
      const check = shStatus(temp.dir, 'qemu-img', ['check', '--output=json', `mine-${compression}.qcow2`]);
      expect(check.status, check.stdout).toBe(0);
      expect(JSON.parse(check.stdout)['compressed-clusters']).toBeGreaterThan(0);
      const mine = statSync(at(`mine-${compression}.qcow2`)).size;
      const theirs = statSync(at(`theirs-${compression}.qcow2`)).size;
      expect(mine).toBeLessThanOrEqual(theirs * 1.05);
    });
  }

  it('without -c: equal to the source, clean, and zero ranges allocate nothing', async () => {
    const cli = platter(['convert', '-O', 'qcow2', '-o', 'cluster_size=4096', at('source.raw'), at('plain.qcow2')]);
    expect(cli.status, cli.stderr).toBe(0);
    expect(shStatus(temp.dir, 'qemu-img', ['compare', 'source.raw', 'plain.qcow2']).status).toBe(0);
    const check = JSON.parse(shStatus(temp.dir, 'qemu-img', ['check', '--output=json', 'plain.qcow2']).stdout) as Record<string, number>;
    expect(check['corruptions'] ?? 0).toBe(0);
    expect(check['leaks'] ?? 0).toBe(0);
    // 4 MiB text + 1 MiB random + 2 partly written clusters.
    expect(check['allocated-clusters']).toBe((5 << 20) / 4096 + 2);
    // Chunks are read ahead but written in guest order: host offsets grow with guest offsets.
    const map = JSON.parse(shStatus(temp.dir, 'qemu-img', ['map', '--output=json', 'plain.qcow2']).stdout) as Array<{ offset?: number }>;
    const hostOffsets = map.flatMap((extent) => (extent.offset === undefined ? [] : [extent.offset]));
    expect(hostOffsets.length).toBeGreaterThan(1);
    expect(hostOffsets).toEqual([...hostOffsets].sort((a, b) => a - b));
  });

  for (const flags of [['-W'], ['-W', '-c']]) {
    it(`${flags.join(' ')}: out-of-order writes give an equal, clean image`, () => {
      const name = `unordered${flags.join('')}.qcow2`;
      const cli = platter(['convert', ...flags, '-O', 'qcow2', '-o', 'cluster_size=4096', at('source.raw'), at(name)]);
      expect(cli.status, cli.stderr).toBe(0);
      expect(shStatus(temp.dir, 'qemu-img', ['compare', 'source.raw', name]).status).toBe(0);
      expect(shStatus(temp.dir, 'qemu-img', ['check', name]).status).toBe(0);
    });
  }

  it.each([
    [['-S', '0']],
    [['-S', '0', '-o', 'cluster_size=4096']],
    // Extended L2: zero runs of whole subclusters inside a data cluster stay unallocated (the file ends at the last data).
    [['-o', 'extended_l2=on']],
    [['-o', 'extended_l2=on,cluster_size=32k', '-S', '8k']],
    // Clusters smaller than -S: a block of the sparse size holding any data is written whole, zero clusters and all.
    [['-o', 'cluster_size=512']],
    [['-o', 'cluster_size=1k', '-S', '1536']],
    [['-o', 'cluster_size=4k', '-S', '16k']],
    [['-o', 'cluster_size=64k', '-S', '128k']],
  ])(
    '%j: the same file as qemu-img convert writes, byte for byte',
    (flags) => {
      const name = `same${flags.join('')}.qcow2`.replace(/[^\w.-]/g, '_');
      const mine = platter(['convert', '-O', 'qcow2', ...flags, 'source.qcow2', `mine-${name}`], { cwd: temp.dir });
      expect(mine.status, mine.stderr).toBe(0);
      sh(temp.dir, 'qemu-img', ['convert', '-O', 'qcow2', ...flags, 'source.qcow2', `theirs-${name}`]);
      expect(readFileSync(at(`mine-${name}`)).equals(readFileSync(at(`theirs-${name}`)))).toBe(true);
    },
  );

  it.each(['cluster_size=512', 'cluster_size=512,refcount_bits=64'])(
    '-o %s with more data than the first refcount table counts: the table grows where qemu grows it, the same file',
    (options) => {
      // 8 MiB of 512-byte clusters fill the one-cluster refcount table; the data runs on past it.
      sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'raw', 'full12.raw', '12M']);
      sh(temp.dir, 'qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 12M', 'full12.raw']);
      const name = `grown-${options.replace(/\W/g, '_')}.qcow2`;
      const mine = platter(['convert', '-O', 'qcow2', '-o', options, 'full12.raw', `mine-${name}`], { cwd: temp.dir });
      expect(mine.status, mine.stderr).toBe(0);
      sh(temp.dir, 'qemu-img', ['convert', '-O', 'qcow2', '-o', options, 'full12.raw', `theirs-${name}`]);
      expect(readFileSync(at(`mine-${name}`)).equals(readFileSync(at(`theirs-${name}`)))).toBe(true);
    },
  );

  it.each([
    [['-o', 'extended_l2=on']],
    [['-o', 'extended_l2=on,cluster_size=32k', '-S', '8k']],
    [['-o', 'cluster_size=16k']],
  ])('from a source whose block status has zero subclusters, %j: the same file as qemu-img writes', (flags) => {
    // 16 KiB clusters of 512-byte subclusters: data and zeros that start and end inside clusters.
    sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=16k,extended_l2=on', 'subclusters.qcow2', '8M']);
    sh(temp.dir, 'qemu-io', ['-c', 'write -P 5 2k 3k', '-c', 'write -P 6 100k 1k', '-c', 'write -z 300k 40k', '-c', 'write -P 7 1000k 70k', 'subclusters.qcow2']);
    const name = `sub${flags.join('')}.qcow2`.replace(/[^\w.-]/g, '_');
    const mine = platter(['convert', '-O', 'qcow2', ...flags, 'subclusters.qcow2', `mine-${name}`], { cwd: temp.dir });
    expect(mine.status, mine.stderr).toBe(0);
    sh(temp.dir, 'qemu-img', ['convert', '-O', 'qcow2', ...flags, 'subclusters.qcow2', `theirs-${name}`]);
    expect(readFileSync(at(`mine-${name}`)).equals(readFileSync(at(`theirs-${name}`)))).toBe(true);
  });

  it('-S 0 -c compresses every cluster, zeros included, as qemu-img does; compressed files end on a whole sector', () => {
    for (const flags of [['-c'], ['-c', '-S', '0']]) {
      const name = `sector${flags.join('')}.qcow2`;
      const mine = platter(['convert', '-O', 'qcow2', ...flags, 'source.qcow2', `mine-${name}`], { cwd: temp.dir });
      expect(mine.status, mine.stderr).toBe(0);
      sh(temp.dir, 'qemu-img', ['convert', '-O', 'qcow2', ...flags, 'source.qcow2', `theirs-${name}`]);
      // node:zlib and qemu's zlib may pick other matches: the streams, not the layout, may differ.
      expect(statSync(at(`mine-${name}`)).size % 512).toBe(0);
      const check = (file: string) => JSON.parse(shStatus(temp.dir, 'qemu-img', ['check', '--output=json', file]).stdout) as Record<string, number>;
      const [ours, theirs] = [check(`mine-${name}`), check(`theirs-${name}`)];
      expect([ours['allocated-clusters'], ours['compressed-clusters']]).toEqual([theirs['allocated-clusters'], theirs['compressed-clusters']]);
      expect(shStatus(temp.dir, 'qemu-img', ['compare', 'source.raw', `mine-${name}`]).status).toBe(0);
    }
  });

  it('-o backing_file=NAME,backing_fmt=FMT is -B NAME -F FMT, as in qemu-img', () => {
    // A base that already holds the source's first 4 MiB: -B leaves those clusters out.
    sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'part-base.qcow2', '12M']);
    sh(temp.dir, 'qemu-img', ['dd', '-f', 'raw', '-O', 'qcow2', 'bs=1M', 'count=4', 'if=source.raw', 'of=part-base.qcow2']);
    const viaOptions = platter(['convert', '-O', 'qcow2', '-o', 'backing_file=part-base.qcow2,backing_fmt=qcow2', 'source.qcow2', 'over-o.qcow2'], { cwd: temp.dir });
    const viaFlag = platter(['convert', '-O', 'qcow2', '-B', 'part-base.qcow2', '-F', 'qcow2', 'source.qcow2', 'over-b.qcow2'], { cwd: temp.dir });
    expect([viaOptions.status, viaFlag.status]).toEqual([0, 0]);
    expect(readFileSync(at('over-o.qcow2')).equals(readFileSync(at('over-b.qcow2')))).toBe(true);
    expect(shStatus(temp.dir, 'qemu-img', ['info', 'over-o.qcow2']).stdout).toMatch(/backing file: part-base.qcow2\nbacking file format: qcow2/);
    expect(shStatus(temp.dir, 'qemu-img', ['compare', 'source.raw', 'over-o.qcow2']).status).toBe(0);
    const allocated = JSON.parse(shStatus(temp.dir, 'qemu-img', ['check', '--output=json', 'over-o.qcow2']).stdout)['allocated-clusters'];
    expect(allocated).toBe((1 << 20) / 65536 + 1);
  });

  it('-t writeback: the same image, flushed before exit', () => {
    const cli = platter(['convert', '-t', 'writeback', '-O', 'qcow2', at('source.raw'), at('flushed.qcow2')]);
    expect(cli.status, cli.stderr).toBe(0);
    expect(shStatus(temp.dir, 'qemu-img', ['compare', 'source.raw', 'flushed.qcow2']).status).toBe(0);
    expect(shStatus(temp.dir, 'qemu-img', ['check', 'flushed.qcow2']).status).toBe(0);
  });

  it('an empty 1 TiB image converts without reading or allocating anything', async () => {
    sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'huge.qcow2', '1T']);
    await convert('huge.qcow2', 'huge-copy.qcow2', {}, true);
    expect(statSync(at('huge-copy.qcow2')).size).toBeLessThan(1 << 20);
    expect(shStatus(temp.dir, 'qemu-img', ['check', 'huge-copy.qcow2']).status).toBe(0);
  });
});

describe.skipIf(!haveQemu)('convert -c with small clusters', () => {
  it('keeps memory bounded: deflate calls in flight are capped, not one per cluster of the chunks ahead', async () => {
    // 2 MiB of incompressible bytes in 512-byte clusters: 4096 clusters a chunk, each a deflate state of its own.
    const bytes = new Uint8Array(2 << 20);
    for (let at = 0; at < bytes.length; at++) bytes[at] = (Math.imul(at, 2654435761) >>> 13) & 0xff;
    writeFileSync(at('small-clusters.raw'), bytes);
    const run = await runCliMeasured(['convert', '-c', '-O', 'qcow2', '-o', 'cluster_size=512', at('small-clusters.raw'), at('small-clusters.qcow2')]);
    expect([run.status, run.stderr]).toEqual([0, '']);
    // 780 MB before the cap.
    if (run.maxRssBytes > 0) expect(run.maxRssBytes).toBeLessThan(MAX_RSS_BYTES);
    expect(shStatus(temp.dir, 'qemu-img', ['compare', 'small-clusters.raw', 'small-clusters.qcow2']).status).toBe(0);
    expect(shStatus(temp.dir, 'qemu-img', ['check', 'small-clusters.qcow2']).status).toBe(0);
  });
});

describe.skipIf(!haveQemu)('convert -c with narrow refcounts', () => {
  it.each([1, 2, 4])('refcount_bits=%i: a cluster at the refcount maximum takes no more streams, as in qemu-img', (bits) => {
    sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'raw', 'letters.raw', '8M']);
    sh(temp.dir, 'qemu-io', ['-f', 'raw', '-c', 'write -P 0x41 0 8M', 'letters.raw']);
    const flags = ['convert', '-c', '-O', 'qcow2', '-o', `refcount_bits=${bits}`, 'letters.raw'];
    const mine = platter([...flags, `narrow-${bits}-mine.qcow2`], { cwd: temp.dir });
    expect([mine.status, mine.stderr]).toEqual([0, '']); // 'refcount 2 of cluster 5 does not fit in 1 bits' before
    sh(temp.dir, 'qemu-img', [...flags, `narrow-${bits}-qemu.qcow2`]);
    expect(shStatus(temp.dir, 'qemu-img', ['check', `narrow-${bits}-mine.qcow2`]).status).toBe(0);
    expect(shStatus(temp.dir, 'qemu-img', ['compare', 'letters.raw', `narrow-${bits}-mine.qcow2`]).status).toBe(0);
    // Streams packed as qemu packs them: as many per cluster as the refcount width allows.
    expect(statSync(at(`narrow-${bits}-mine.qcow2`)).size).toBe(statSync(at(`narrow-${bits}-qemu.qcow2`)).size);
  });
});
