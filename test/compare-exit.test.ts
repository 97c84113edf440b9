/**
 * compare's exit statuses for images that cannot be read, against qemu-img
 * compare: 2 when an image cannot be opened, 3 when its allocation cannot be
 * found (a corrupt L2 entry), 4 when its data cannot be read (a compressed
 * cluster that does not decode).
 */

import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const enabled = hasTool('qemu-img') && hasTool('qemu-io');

/** The first L2 entry of a qcow2 image with one L2 table: its file offset and value. */
function firstL2Entry(bytes: Buffer): { at: number; entry: bigint } {
  const l1Offset = Number(bytes.readBigUInt64BE(40));
  const l2Offset = Number(bytes.readBigUInt64BE(l1Offset) & 0x00ff_ffff_ffff_fe00n);
  return { at: l2Offset, entry: bytes.readBigUInt64BE(l2Offset) };
}

describe.skipIf(!enabled)('compare exit statuses for unreadable images, as qemu-img compare', () => {
  const temp = tempDir('platter-compare-exit-');
  const at = (name: string) => join(temp.dir, name);

  beforeAll(() => {
    run('qemu-img', ['create', '-q', '-f', 'raw', at('guest.raw'), '1M']);
    run('qemu-io', ['-f', 'raw', '-c', 'write -P 7 0 1M', at('guest.raw')]);
    // An L2 entry that points one sector into its cluster: qemu calls the image corrupt when it looks the cluster up.
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', at('guest.raw'), at('unaligned.qcow2')]);
    const unaligned = readFileSync(at('unaligned.qcow2'));
    const { at: entryAt, entry } = firstL2Entry(unaligned);
    unaligned.writeBigUInt64BE(entry + 512n, entryAt);
    writeFileSync(at('unaligned.qcow2'), unaligned);
    // A compressed cluster whose stream starts with an invalid deflate block type.
    run('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', at('guest.raw'), at('garbled.qcow2')]);
    const garbled = readFileSync(at('garbled.qcow2'));
    const compressed = firstL2Entry(garbled).entry;
    const streamAt = Number(compressed & ((1n << 54n) - 1n));
    garbled.fill(0xff, streamAt, streamAt + 64);
    writeFileSync(at('garbled.qcow2'), garbled);
  });
  afterAll(() => temp.cleanup());

  for (const [what, image, status] of [
    ['a missing image', 'missing.qcow2', 2],
    ['an L2 entry that is not cluster-aligned', 'unaligned.qcow2', 3],
    ['a compressed cluster that does not decode', 'garbled.qcow2', 4],
  ] as const) {
    it(`${what}: exit status ${status}`, () => {
      const qemu = spawnSync('qemu-img', ['compare', '-f', 'raw', at('guest.raw'), at(image)], { encoding: 'utf8' });
      expect(qemu.status).toBe(status);
      const ours = platter(['compare', '-f', 'raw', at('guest.raw'), at(image)]);
      expect(ours.status).toBe(status);
      expect(ours.stderr).toMatch(new RegExp(`^platter: ${at(image).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
      expect(ours.stdout).toBe('');
    });
  }

  it.each([[['one.raw']], [['one.raw', 'two.raw', 'three.raw']], [['-x', 'one.raw', 'two.raw']]])(
    'a command line it cannot parse (%j) exits 1, as qemu-img compare does, not 2',
    (args) => {
      const qemu = spawnSync('qemu-img', ['compare', ...args], { cwd: temp.dir, encoding: 'utf8' });
      expect(qemu.status).toBe(1);
      expect(platter(['compare', ...args], { cwd: temp.dir }).status).toBe(1);
    },
  );
});
