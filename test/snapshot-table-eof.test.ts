/**
 * Snapshot tables that run past the end of the file: a truncated image, or a
 * header that points the table elsewhere. qemu reads the missing bytes as
 * zeros and opens the image; platter does the same, and info, snapshot -l,
 * check and check -r all answer as qemu-img does (differential, qemu-img 7.2).
 */

import { copyFileSync, openSync, closeSync, readFileSync, statSync, truncateSync, writeSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shStatus } from './helpers/qcow2-oracle.js';
import { hasTool, platter, run, tempDir, type CliResult } from './helpers/tools.js';

const tmp = tempDir('platter-snapeof-');
afterAll(() => tmp.cleanup());

type Outcome = CliResult;
const qemuImg = (args: string[]) => shStatus(tmp.dir, 'qemu-img', args);
const platterCli = (args: string[]) => platter(args, { cwd: tmp.dir });

/** Writes big-endian `nbSnapshots` (u32 at 60) and `snapshotsOffset` (u64 at 64) into the header. */
function pointTable(path: string, nbSnapshots: number, snapshotsOffset: bigint): void {
  const field = Buffer.alloc(12);
  field.writeUInt32BE(nbSnapshots, 0);
  field.writeBigUInt64BE(snapshotsOffset, 4);
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, field, 0, field.length, 60);
  } finally {
    closeSync(fd);
  }
}

/**
 * The two files are the same, but for clusters that qemu discarded when it
 * freed them (it punches holes; platter only drops their refcounts), which read as zeros in `theirs`.
 */
function expectSameFileButDiscards(ours: string, theirs: string, clusterSize = 65536): void {
  const [mine, qemu] = [readFileSync(ours), readFileSync(theirs)];
  expect(mine.length).toBe(qemu.length);
  for (let at = 0; at < mine.length; at += clusterSize) {
    const [a, b] = [mine.subarray(at, at + clusterSize), qemu.subarray(at, at + clusterSize)];
    if (!a.equals(b)) expect(b.every((byte) => byte === 0), `cluster at ${at} differs and qemu's is not zeros`).toBe(true);
  }
}

/** The damaged images, by name: each a copy of a two-snapshot image made by qemu-img. */
const cases: Record<string, (path: string) => void> = {
  // The second entry loses its last 85 bytes, the first keeps all of it.
  'cut inside the table': (path) => truncateSync(path, statSync(path).size - 85),
  'the table at 1 GiB': (path) => pointTable(path, 2, 1n << 30n),
  // Many entries, all zeros (qemu-img's time grows with the square of the count: 1024, not 65536).
  '1024 entries at 16 MiB': (path) => pointTable(path, 1024, 16n << 20n),
};

describe.skipIf(!hasTool('qemu-img'))('snapshot tables past the end of the file, against qemu-img', () => {
  beforeAll(() => {
    const base = tmp.path('base.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', base, '16M']);
    run('qemu-io', ['-c', 'write -P 1 0 64k', base]);
    run('qemu-img', ['snapshot', '-c', 'first', base]);
    run('qemu-img', ['snapshot', '-c', 'second-with-a-longer-name', base]);
    for (const [name, damage] of Object.entries(cases)) {
      const path = tmp.path(`${name}.qcow2`);
      copyFileSync(base, path);
      damage(path);
    }
  });

  describe.each(Object.keys(cases))('%s', (name) => {
    const image = () => tmp.path(`${name}.qcow2`);

    it('info and snapshot -l list the same snapshots, zeroed entries included', () => {
      const json = (result: Outcome) => {
        const info = JSON.parse(result.stdout) as Record<string, unknown>;
        delete info['actual-size'];
        return info;
      };
      expect(json(platterCli(['info', '--output=json', image()]))).toEqual(json(qemuImg(['info', '--output=json', image()])));
      const list = platterCli(['snapshot', '-l', image()]);
      expect(list).toEqual(qemuImg(['snapshot', '-l', image()]));
      expect(list.stdout).toMatch(/1970-01-01 00:00:00/);
    });

    it('check gives the same report, messages and exit status', () => {
      for (const output of ['human', 'json']) {
        const args = ['check', `--output=${output}`, image()];
        expect(platterCli(args)).toEqual(qemuImg(args));
      }
    });

    it('check -r all repairs it as qemu-img does, and leaves nothing for qemu-img check', () => {
      const ours = tmp.path(`${name}-ours.qcow2`);
      const theirs = tmp.path(`${name}-theirs.qcow2`);
      copyFileSync(image(), ours);
      copyFileSync(image(), theirs);
      const mine = platterCli(['check', '-r', 'all', ours]);
      const qemu = qemuImg(['check', '-r', 'all', theirs]);
      expect(mine).toEqual(qemu);
      expectSameFileButDiscards(ours, theirs);
      expect(qemuImg(['check', ours]).status).toBe(0);
      expect(qemuImg(['snapshot', '-l', ours])).toEqual(qemuImg(['snapshot', '-l', theirs]));
    });

    it.each([
      ['grows', ['2G']],
      ['shrinks', ['--shrink', '8M']],
    ])('resize %s it as qemu-img resize does, zeroed entries and all', (_, size) => {
      const ours = tmp.path(`${name}-resized-ours.qcow2`);
      const theirs = tmp.path(`${name}-resized-theirs.qcow2`);
      copyFileSync(image(), ours);
      copyFileSync(image(), theirs);
      expect(platterCli(['resize', ours, ...size])).toEqual(qemuImg(['resize', theirs, ...size]));
      expectSameFileButDiscards(ours, theirs);
      expect(qemuImg(['check', ours])).toEqual(qemuImg(['check', theirs]));
    });

    it('reading leaves the file as it was', () => {
      const before = readFileSync(image());
      platterCli(['info', image()]);
      platterCli(['check', image()]);
      platterCli(['convert', '-O', 'raw', '-l', 'first', image(), tmp.path('first.raw')]);
      expect(readFileSync(image()).equals(before)).toBe(true);
    });
  });
});
