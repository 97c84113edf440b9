/**
 * check of an image whose header says it was not closed cleanly (the dirty
 * bit of lazy refcounts) or is corrupt: the same report and exit status as
 * qemu-img check, and no warning of the read-only open that finds the
 * files the image names (the check itself reports what is wrong).
 */

import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const enabled = hasTool('qemu-img') && hasTool('qemu-io');

/** Sets `bit` of the incompatible features (header bytes 72..79). */
function setIncompatibleBit(path: string, bit: bigint): void {
  const bytes = readFileSync(path);
  bytes.writeBigUInt64BE(bytes.readBigUInt64BE(72) | bit, 72);
  writeFileSync(path, bytes);
}

describe.skipIf(!enabled)('check of a dirty or corrupt-marked image, as qemu-img check', () => {
  const temp = tempDir('platter-check-flags-');
  const at = (name: string) => join(temp.dir, name);

  beforeAll(() => {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', at('lazy.qcow2'), '8M']);
    run('qemu-io', ['-c', 'write -P 1 0 64k', at('lazy.qcow2')]);
  });
  afterAll(() => temp.cleanup());

  for (const [what, bit] of [
    ['dirty', 1n],
    ['corrupt', 2n],
  ] as const) {
    for (const repair of [[], ['-r', 'all']]) {
      it(`${what}, check ${repair.join(' ')}`, () => {
        for (const who of ['qemu', 'platter']) {
          writeFileSync(at(`${who}.qcow2`), readFileSync(at('lazy.qcow2')));
          setIncompatibleBit(at(`${who}.qcow2`), bit);
        }
        const qemu = spawnSync('qemu-img', ['check', ...repair, 'qemu.qcow2'], { cwd: temp.dir, encoding: 'utf8' });
        const ours = platter(['check', ...repair, 'platter.qcow2'], { cwd: temp.dir });
        expect({ status: ours.status, stdout: ours.stdout, stderr: ours.stderr }).toEqual({
          status: qemu.status,
          stdout: qemu.stdout,
          stderr: qemu.stderr.replaceAll('qemu-img: ', 'platter: ').replaceAll('qemu.qcow2', 'platter.qcow2'),
        });
        expect(readFileSync(at('platter.qcow2')).readBigUInt64BE(72)).toBe(readFileSync(at('qemu.qcow2')).readBigUInt64BE(72));
      });
    }
  }
});
