/**
 * What platter's writes do to persistent dirty bitmaps it does not update.
 * Before the first write the enabled bitmaps are marked in use, in place (the
 * first thing written, so a crash cannot leave a bitmap that missed a write
 * looking valid); disabled ones stay valid and unchanged. Afterwards qemu-img
 * check is clean, qemu lists the flags, removes an in-use bitmap and goes on
 * writing. A resize keeps every bitmap valid, fitted to the new size, as
 * qemu-img resize does, and is refused while one is in use. snapshot -a is refused on an
 * image with bitmaps, with qemu-img's words, the file left as it was.
 */

import { spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { openQcow2 } from '../formats/qcow2/index.js';
import { FileDevice } from '../src/node/file-device.js';
import { RecordingDevice } from './helpers/convert-fake-image.js';
import { writerTestHost } from './helpers/qcow2-writer.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';
import { dirtyMap as dirtyMapIn } from './helpers/bitmap-oracle.js';

type Flags = Record<string, string[]>;

describe.skipIf(!hasTool('qemu-img') || !hasTool('qemu-io') || !hasTool('qemu-nbd'))('platter writes to an image with bitmaps', () => {
  const tmp = tempDir('platter-bitmaps-in-use-');
  afterAll(() => tmp.cleanup());
  const at = tmp.path;
  const dirtyMap = (image: string, bitmap: string) => dirtyMapIn(tmp.dir, image, bitmap);
  const qemuImg = (...args: string[]) => run('qemu-img', args, { cwd: tmp.dir });
  const qemuIo = (image: string, command: string) => run('qemu-io', ['-f', 'qcow2', '-c', command, at(image)]);
  const flagsOf = (image: string): Flags =>
    Object.fromEntries(
      ((JSON.parse(qemuImg('info', '--output=json', image))['format-specific'].data.bitmaps ?? []) as { name: string; flags: string[] }[]).map((bitmap) => [bitmap.name, bitmap.flags]),
    );

  // An image with an enabled bitmap and a disabled one, each with dirty bits; a raw file to write into it.
  qemuImg('create', '-q', '-f', 'qcow2', 'base.qcow2', '16M');
  qemuImg('bitmap', '--add', 'base.qcow2', 'enabled');
  qemuImg('bitmap', '--add', 'base.qcow2', 'frozen');
  qemuIo('base.qcow2', 'write -P 1 0 128k');
  qemuImg('bitmap', '--disable', 'base.qcow2', 'frozen');
  qemuIo('base.qcow2', 'write -P 2 1M 64k');
  qemuImg('create', '-q', '-f', 'raw', 'data.raw', '16M');
  run('qemu-io', ['-f', 'raw', '-c', 'write -P 3 4M 64k', at('data.raw')]);
  const frozenBefore = dirtyMap('base.qcow2', 'frozen');

  it('convert -n: enabled bitmaps in use, disabled ones unchanged; check clean; qemu removes one and writes on', async () => {
    copyFileSync(at('base.qcow2'), at('convert-n.qcow2'));
    const result = platter(['convert', '-n', '-O', 'qcow2', 'data.raw', 'convert-n.qcow2'], { cwd: tmp.dir });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(flagsOf('convert-n.qcow2')).toEqual({ enabled: ['in-use', 'auto'], frozen: [] });
    expect(qemuImg('check', 'convert-n.qcow2')).toContain('No errors were found on the image.');
    expect(await dirtyMap('convert-n.qcow2', 'frozen')).toBe(await frozenBefore);
    qemuImg('bitmap', '--remove', 'convert-n.qcow2', 'enabled');
    qemuIo('convert-n.qcow2', 'write -P 4 0 64k');
    expect(qemuImg('check', 'convert-n.qcow2')).toContain('No errors were found on the image.');
  });

  it.each([
    ['resize --shrink', ['resize', '--shrink'], ['8M']],
    ['resize --shrink past the dirty bits', ['resize', '--shrink'], ['96k']],
    ['resize (grow)', ['resize'], ['32M']],
    ['resize (grow) with full preallocation', ['resize', '--preallocation=full'], ['20M']],
  ] as const)('%s keeps every bitmap as qemu-img resize keeps it: same flags and dirty bits, check clean', async (name, command, size) => {
    const image = `${name.replace(/\W+/g, '-')}.qcow2`;
    const oracle = `${name.replace(/\W+/g, '-')}-qemu.qcow2`;
    copyFileSync(at('base.qcow2'), at(image));
    copyFileSync(at('base.qcow2'), at(oracle));
    qemuImg(...command, oracle, ...size);
    const result = platter([...command, image, ...size], { cwd: tmp.dir });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(flagsOf(image)).toEqual({ enabled: ['auto'], frozen: [] });
    expect(flagsOf(image)).toEqual(flagsOf(oracle));
    for (const bitmap of ['enabled', 'frozen']) expect({ bitmap, map: await dirtyMap(image, bitmap) }).toEqual({ bitmap, map: await dirtyMap(oracle, bitmap) });
    expect(qemuImg('check', image)).toContain('No errors were found on the image.');
    qemuIo(image, 'write -P 4 0 64k');
    expect(qemuImg('check', image)).toContain('No errors were found on the image.');
  });

  it.each([
    ['to the same size', [], '+0', 0],
    ['to a size in part sectors', [], '+1000', 1],
    ['shrinking to a size in part sectors', ['--shrink'], '-511', 1],
    ['to the same size with preallocation', ['--preallocation=full'], '+0', 1],
  ] as const)('resize %s leaves the file as it was, bitmaps included, as qemu-img does', (name, flags, size, status) => {
    const image = `unchanged-${name.replace(/\W+/g, '-')}.qcow2`;
    const oracle = `unchanged-${name.replace(/\W+/g, '-')}-qemu.qcow2`;
    copyFileSync(at('base.qcow2'), at(image));
    copyFileSync(at('base.qcow2'), at(oracle));
    const theirs = spawnSync('qemu-img', ['resize', ...flags, oracle, '--', size], { cwd: tmp.dir, encoding: 'utf8' });
    const ours = platter(['resize', ...flags, image, '--', size], { cwd: tmp.dir });
    expect([ours.status, theirs.status]).toEqual([status, status]);
    expect(flagsOf(image)).toEqual({ enabled: ['auto'], frozen: [] });
    expect(readFileSync(at(image)).equals(readFileSync(at('base.qcow2')))).toBe(true);
  });

  it('amend -o size= keeps the bitmaps as qemu-img amend does', async () => {
    copyFileSync(at('base.qcow2'), at('amend.qcow2'));
    copyFileSync(at('base.qcow2'), at('amend-qemu.qcow2'));
    qemuImg('amend', '-o', 'size=8M', 'amend-qemu.qcow2');
    const result = platter(['amend', '-o', 'size=8M', 'amend.qcow2'], { cwd: tmp.dir });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(flagsOf('amend.qcow2')).toEqual(flagsOf('amend-qemu.qcow2'));
    for (const bitmap of ['enabled', 'frozen']) expect(await dirtyMap('amend.qcow2', bitmap)).toBe(await dirtyMap('amend-qemu.qcow2', bitmap));
    expect(qemuImg('check', 'amend.qcow2')).toContain('No errors were found on the image.');
  });

  it('resize of an image with a bitmap in use is refused, as qemu-img refuses it; the file is left as it was', () => {
    copyFileSync(at('base.qcow2'), at('inconsistent.qcow2'));
    expect(platter(['convert', '-n', '-O', 'qcow2', 'data.raw', 'inconsistent.qcow2'], { cwd: tmp.dir }).status).toBe(0);
    expect(() => qemuImg('resize', 'inconsistent.qcow2', '32M')).toThrow(/Bitmap 'enabled' is inconsistent and cannot be used/);
    const bytes = readFileSync(at('inconsistent.qcow2'));
    const result = platter(['resize', 'inconsistent.qcow2', '32M'], { cwd: tmp.dir });
    expect(result.stderr).toBe("platter: inconsistent.qcow2: Bitmap 'enabled' is inconsistent and cannot be used\nTry 'bitmap --remove' to delete this bitmap from disk\n");
    expect(result.status).toBe(1);
    expect(readFileSync(at('inconsistent.qcow2')).equals(bytes)).toBe(true);
  });

  it('a write after a resize, through the same open image, marks the enabled bitmap in use again', async () => {
    copyFileSync(at('base.qcow2'), at('resize-write.qcow2'));
    const device = await FileDevice.open(at('resize-write.qcow2'), { writable: true });
    const image = await openQcow2(device, { host: writerTestHost(), writable: true });
    await image.resize(32 << 20);
    expect(image.metadata.bitmaps.map((bitmap) => bitmap.flags)).toEqual([['auto'], []]);
    await image.write(20 << 20, new Uint8Array(65536).fill(7));
    await image.close();
    expect(flagsOf('resize-write.qcow2')).toEqual({ enabled: ['in-use', 'auto'], frozen: [] });
    expect(qemuImg('check', 'resize-write.qcow2')).toContain('No errors were found on the image.');
  });

  it('commit into a base with bitmaps: the base bitmaps in use, check clean', () => {
    copyFileSync(at('base.qcow2'), at('commit-base.qcow2'));
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'commit-base.qcow2', '-F', 'qcow2', 'commit-top.qcow2');
    qemuIo('commit-top.qcow2', 'write -P 5 2M 64k');
    expect(platter(['commit', 'commit-top.qcow2'], { cwd: tmp.dir }).status).toBe(0);
    expect(flagsOf('commit-base.qcow2')).toEqual({ enabled: ['in-use', 'auto'], frozen: [] });
    expect(qemuImg('check', 'commit-base.qcow2')).toContain('No errors were found on the image.');
  });

  it('the in-use flag is the first thing written: no write of the disk can land before it', async () => {
    const device = new RecordingDevice(new Uint8Array(readFileSync(at('base.qcow2'))), { name: 'base.qcow2' });
    const image = await openQcow2(device, { host: writerTestHost(), writable: true });
    const bitmap = image.metadata.bitmaps.find((entry) => entry.name === 'enabled')!;
    const flagsAt = image.metadata.extensions.bitmaps!.directoryOffset + bitmap.entryOffset + 12;
    await image.write(8 << 20, new Uint8Array(65536).fill(9));
    await image.close();
    expect(device.writes[0]).toEqual({ offset: flagsAt, length: 4 });
    expect(device.writes.filter((write) => write.offset === flagsAt)).toHaveLength(1);
  });

  it('snapshot -a is refused on an image with bitmaps, as qemu-img refuses it; the file is left as it was', () => {
    copyFileSync(at('base.qcow2'), at('snap.qcow2'));
    qemuImg('snapshot', '-c', 'before', 'snap.qcow2');
    const bytes = readFileSync(at('snap.qcow2'));
    const result = platter(['snapshot', '-a', 'before', 'snap.qcow2'], { cwd: tmp.dir });
    expect(result.stderr).toBe("platter: snap.qcow2: Could not apply snapshot 'before': Device has active dirty bitmaps\n");
    expect(result.status).toBe(1);
    expect(readFileSync(at('snap.qcow2')).equals(bytes)).toBe(true);
  });
});
