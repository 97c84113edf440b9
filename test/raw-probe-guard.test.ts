/**
 * A raw image whose format was probed, not given, refuses a write that would
 * make its first sector probe as another format, as qemu refuses it: commit
 * into such a base, and NBD writes to such an export, fail and leave the
 * file as it was, as they do in qemu-img and qemu-io; with the format named,
 * or with a first sector that still probes as raw, the writes go through.
 * resize warns of the guard, as qemu-img does.
 */

import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { RawImage } from '../formats/raw/index.js';
import { MemoryDevice } from '../src/core/device.js';
import { formats } from '../src/engine/formats.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';
import { startServe, stopAllServes } from './helpers/serve-tools.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
afterEach(() => stopAllServes());

/** The first sector of a new qcow2 image: it probes as qcow2. */
function qcow2Sector(): Uint8Array {
  const path = tmp.path('header.qcow2');
  run('qemu-img', ['create', '-q', '-f', 'qcow2', path, '1M']);
  return readFileSync(path).subarray(0, 512);
}

/**
 * A raw base and an overlay that names it without recording its format (as
 * images made by older tools do), whose first 4 KiB hold `head` then zeros.
 */
function chainWithHead(name: string, head: Uint8Array): { base: string; top: string } {
  const base = tmp.path(`${name}-base.raw`);
  const top = tmp.path(`${name}-top.qcow2`);
  writeFileSync(base, new Uint8Array(4 << 20).fill(0x5a, 4096, 8192));
  run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'raw', top, '4M']);
  forgetBackingFormat(top);
  const data = tmp.path(`${name}-head.bin`);
  const block = new Uint8Array(4096);
  block.set(head);
  writeFileSync(data, block);
  run('qemu-io', ['-f', 'qcow2', '-c', `write -s ${data} 0 4k`, top]);
  return { base, top };
}

/** Turns the overlay's backing format extension into an unknown one, which qemu and platter skip. */
function forgetBackingFormat(path: string): void {
  const bytes = readFileSync(path);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = view.getUint32(100); view.getUint32(at) !== 0; at += 8 + Math.ceil(view.getUint32(at + 4) / 8) * 8) {
    if (view.getUint32(at) === 0xe2792aca) view.setUint32(at, 0x706c7400);
  }
  writeFileSync(path, bytes);
}

describe.skipIf(!hasTool('qemu-img') || !hasTool('qemu-io'))('a probed raw image guards its first sector', () => {
  it('commit that would write a qcow2 header into a probed raw base fails in both tools; the base stays raw and unchanged', () => {
    const { base, top } = chainWithHead('hostile', qcow2Sector());
    const theirs = chainWithHead('hostile-qemu', qcow2Sector());
    const before = readFileSync(base);
    expect(() => run('qemu-img', ['commit', theirs.top])).toThrow(/Operation not permitted/);
    expect(readFileSync(theirs.base).equals(before)).toBe(true);
    const result = platter(['commit', top]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`platter: ${base}: write to the first sector refused`);
    expect(readFileSync(base).equals(before)).toBe(true);
    expect(run('qemu-img', ['info', '--output=json', base])).toContain('"format": "raw"');
  });

  it('commit of a first sector that still probes as raw (a partition table) goes through, as in qemu-img', () => {
    const mbr = new Uint8Array(512);
    mbr.set([0x80, 0, 2, 0, 0x83, 0xfe, 0xff, 0xff, 0, 8, 0, 0, 0, 0x18, 0, 0], 446);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    const ours = chainWithHead('mbr', mbr);
    const theirs = chainWithHead('mbr-qemu', mbr);
    run('qemu-img', ['commit', theirs.top]);
    const result = platter(['commit', ours.top]);
    expect(result.status).toBe(0);
    expect(readFileSync(ours.base).equals(readFileSync(theirs.base))).toBe(true);
  });

  it('with the format named, the same commit writes the header (the guard is for probed images only)', () => {
    const { base, top } = chainWithHead('named', qcow2Sector());
    run('qemu-img', ['rebase', '-u', '-b', base, '-F', 'raw', top]);
    expect(platter(['commit', top]).status).toBe(0);
    expect(run('qemu-img', ['info', '--output=json', base])).toContain('"format": "qcow2"');
  });

  it('NBD: a write of a qcow2 header to a probed raw export is refused (EPERM), other writes land; with -f raw it lands', async () => {
    const header = tmp.path('nbd-header.bin');
    writeFileSync(header, qcow2Sector());
    for (const [named, refused] of [[false, true], [true, false]] as const) {
      const disk = tmp.path(`nbd-${named}.raw`);
      writeFileSync(disk, new Uint8Array(1 << 20));
      const served = await startServe(disk, tmp.path(`nbd-${named}.sock`), ['--writable', '--persistent', ...(named ? ['-f', 'raw'] : [])]);
      const write = (command: string) => spawnSync('qemu-io', ['-f', 'raw', '-c', command, served.uri], { encoding: 'utf8' });
      const header0 = write(`write -s ${header} 0 512`);
      expect(header0.status).toBe(refused ? 1 : 0);
      if (refused) expect(header0.stdout + header0.stderr).toContain('write failed: Operation not permitted');
      expect(write('write -P 0x77 512 512').status).toBe(0);
      await served.stop();
      const bytes = readFileSync(disk);
      expect(bytes.subarray(0, 4).equals(Buffer.from('QFI\xfb', 'latin1'))).toBe(!refused);
      expect(bytes.subarray(512, 1024).every((byte) => byte === 0x77)).toBe(true);
    }
  });
});

describe('the first-sector guard of a probed raw image', () => {
  const probedRaw = (bytes: Uint8Array) => new RawImage(new MemoryDevice(bytes, { writable: true, name: 'disk.raw' }), (head) => formats.nameOf(head));

  it('resize of a probed raw image warns about the guard, as qemu-img resize does; with -f raw it does not', () => {
    if (!hasTool('qemu-img')) return;
    for (const [who, command] of [['qemu', 'qemu-img'], ['platter', undefined]] as const) {
      for (const format of [[], ['-f', 'raw']]) {
        const path = tmp.path(`resized-${who}-${format.length}.raw`);
        writeFileSync(path, new Uint8Array(1 << 20));
        const args = ['resize', ...format, path, '+1M'];
        const result = command ? spawnSync(command, args, { encoding: 'utf8' }) : platter(args);
        expect(result.status, `${who} ${args.join(' ')}`).toBe(0);
        expect(/probing guessed raw/.test(result.stderr), `${who} ${args.join(' ')}: ${result.stderr}`).toBe(format.length === 0);
      }
    }
  });

  it('refuses exactly the writes that leave a first sector probing as another format, at any offset and length', async () => {
    const magic = Uint8Array.from([0x51, 0x46, 0x49, 0xfb]);
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 1024, maxLength: 1024 }),
        fc.oneof(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 700 })),
        fc.uint8Array({ minLength: 1, maxLength: 300 }),
        fc.boolean(),
        async (initial, offset, data, completesMagic) => {
          // The bytes before the write begin a qcow2 magic, and the write's first bytes end it.
          if (completesMagic && offset < magic.length) {
            initial.set(magic.subarray(0, offset), 0);
            data.set(magic.subarray(offset, offset + Math.min(data.length, magic.length - offset)), 0);
          }
          const written = data.subarray(0, Math.min(data.length, initial.length - offset));
          const image = probedRaw(initial.slice());
          const after = initial.slice();
          after.set(written, offset);
          const refused = formats.nameOf(after.subarray(0, 512)) !== 'raw';
          if (refused) await expect(image.write(offset, written)).rejects.toThrow(/first sector refused/);
          else await image.write(offset, written);
          const stored = await image.read(0, initial.length);
          expect(Buffer.from(stored).equals(Buffer.from(refused ? initial : after))).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('an image opened with its format given takes any first sector', async () => {
    const image = new RawImage(new MemoryDevice(new Uint8Array(1024), { writable: true }));
    await image.write(0, Uint8Array.from([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]));
    expect((await image.read(0, 4))[3]).toBe(0xfb);
  });
});
