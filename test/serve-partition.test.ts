/** `platter serve --partition`: one partition's bytes and size, as clients see them. */

import { spawnSync } from 'node:child_process';
import { openSync, readFileSync, writeSync, closeSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { patternBytes } from './helpers/serve-images.js';
import { CLI, exitWithin, haveServeTool, makeServeTempDir, runTool, startServe, stopAllServes } from './helpers/serve-tools.js';

const MiB = 1024 * 1024;
const temp = makeServeTempDir();

afterEach(stopAllServes);
afterAll(() => temp.cleanup());

interface SfdiskPartition {
  node: string;
  start: number;
  size: number;
}

/**
 * A 64 MiB raw disk partitioned by sfdisk (primary 1, extended 2, logical 5
 * and 6), each partition filled with its own pattern. Returns where sfdisk
 * says each partition lies, in bytes.
 */
function makePartitionedDisk(name: string): { image: string; partitions: Map<number, { start: number; length: number }> } {
  const image = join(temp.dir, name);
  writeFileSync(image, new Uint8Array(0));
  spawnSync('truncate', ['-s', `${64 * MiB}`, image]);
  const script = 'label: dos\nstart=2048, size=20480, type=83\nstart=22528, size=100000, type=5\nstart=24576, size=16384, type=83\nstart=43008, size=16384, type=83\n';
  const made = spawnSync('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', image], { input: script, encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`sfdisk failed: ${made.stderr}`);
  const table = JSON.parse(runTool('sfdisk', ['--json', image])).partitiontable as { sectorsize: number; partitions: SfdiskPartition[] };
  const partitions = new Map<number, { start: number; length: number }>();
  const fd = openSync(image, 'r+');
  try {
    for (const entry of table.partitions) {
      const number = Number(/(\d+)$/.exec(entry.node)![1]);
      const place = { start: entry.start * table.sectorsize, length: entry.size * table.sectorsize };
      partitions.set(number, place);
      // The extended partition holds the EBR chain: leave it alone.
      if (number !== 2) writeSync(fd, patternBytes(place.length, number * 17), 0, place.length, place.start);
    }
  } finally {
    closeSync(fd);
  }
  return { image, partitions };
}

describe.runIf(haveServeTool('sfdisk') && haveServeTool('qemu-img'))('serve --partition', () => {
  it('exports exactly the bytes and size of logical partition 5', async () => {
    const { image, partitions } = makePartitionedDisk('logical.raw');
    const five = partitions.get(5)!;
    const served = await startServe(image, join(temp.dir, 'p5.sock'), ['--partition', '5']);
    const out = join(temp.dir, 'p5.raw');
    runTool('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', served.uri, out]);
    await exitWithin(served, 10_000);
    const exported = readFileSync(out);
    expect(exported.length).toBe(five.length);
    expect(Buffer.compare(exported, readFileSync(image).subarray(five.start, five.start + five.length))).toBe(0);
  });

  it.runIf(haveServeTool('qemu-io'))('writes into the partition only', async () => {
    const { image, partitions } = makePartitionedDisk('write-partition.raw');
    const before = readFileSync(image);
    const six = partitions.get(6)!;
    const served = await startServe(image, join(temp.dir, 'p6.sock'), ['--partition', '6', '--writable']);
    const info = spawnSync('qemu-io', ['-f', 'raw', served.uri, '-c', `write -P 0x77 ${six.length - 65536} 64k`, '-c', `write -P 0x77 ${six.length} 512`], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(info.stdout + info.stderr).toMatch(/wrote 65536\/65536 bytes/);
    // The write past the partition's end is refused, not spilled into the next bytes.
    expect(info.stdout + info.stderr).toMatch(/No space left on device|Input\/output error|Invalid argument/);
    await exitWithin(served, 10_000);
    const after = readFileSync(image);
    const end = six.start + six.length;
    expect(after.subarray(end - 65536, end).every((byte) => byte === 0x77)).toBe(true);
    expect(Buffer.compare(after.subarray(0, end - 65536), before.subarray(0, end - 65536))).toBe(0);
    expect(Buffer.compare(after.subarray(end), before.subarray(end))).toBe(0);
  });

  it('refuses a partition that does not exist', () => {
    const { image } = makePartitionedDisk('missing.raw');
    const result = spawnSync(process.execPath, [CLI, 'serve', '-k', join(temp.dir, 'none.sock'), '--partition', '9', image], { encoding: 'utf8', timeout: 20_000 });
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/^platter: .*missing\.raw: no partition or logical volume matches '9'/m);
  });
});
