/**
 * Persistent dirty bitmaps follow platter's writes as qemu's follow its own.
 * Before the first write the enabled bitmaps are marked in use, in place (the
 * first thing written, so a crash cannot leave a bitmap that missed a write
 * looking valid; qemu marks the disabled ones too); when the image is closed
 * they are stored again with a bit for every range written, zeroed or
 * discarded, and the mark goes. Disabled ones keep their bits. The files are
 * qemu's byte for byte where the same writes reach them through qemu-nbd and
 * platter serve, but for the flags left in the old, freed directory; commit
 * leaves the map, bits and check report qemu-img commit leaves; the bits the same as qemu-img rebase sets. A resize keeps
 * every bitmap valid, fitted to the new size, as qemu-img resize does, and is
 * refused while one is in use. snapshot -a is refused on an image with
 * bitmaps, with qemu-img's words, the file left as it was.
 */

import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { openQcow2 } from '../formats/qcow2/index.js';
import { FileDevice } from '../src/node/file-device.js';
import { RecordingDevice } from './helpers/convert-fake-image.js';
import { leaveBitmapsInUse, writerTestHost } from './helpers/qcow2-writer.js';
import { CLI, hasTool, platter, run, tempDir } from './helpers/tools.js';
import { dirtyMap as dirtyMapIn } from './helpers/bitmap-oracle.js';
import { findExtension } from './helpers/qcow2-cases.js';

type Flags = Record<string, string[]>;

describe.skipIf(!hasTool('qemu-img') || !hasTool('qemu-io') || !hasTool('qemu-nbd'))('platter writes to an image with bitmaps', () => {
  const tmp = tempDir('platter-bitmaps-in-use-');
  afterAll(() => tmp.cleanup());
  const at = tmp.path;
  const dirtyMap = (image: string, bitmap: string) => dirtyMapIn(tmp.dir, image, bitmap);
  const qemuImg = (...args: string[]) => run('qemu-img', args, { cwd: tmp.dir });
  const qemuIo = (image: string, command: string) => run('qemu-io', ['-f', 'qcow2', '-c', command, at(image)]);
  /**
   * The bytes of `image`, but for the bitmap directory `original` had: freed
   * once the bitmaps are stored again, it keeps the flags marked in place
   * (qemu marks every bitmap in use when it opens an image for writing,
   * platter only the enabled ones, so a crash loses no disabled bitmap).
   */
  const bytesApartFromOldDirectory = (image: string, original: string) => {
    const extension = findExtension(at(original), 0x23852875) + 8;
    const header = readFileSync(at(original));
    const size = Number(header.readBigUInt64BE(extension + 8));
    const offset = Number(header.readBigUInt64BE(extension + 16));
    return readFileSync(at(image)).fill(0, offset, offset + size);
  };
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

  it('convert -n: the enabled bitmap gains the ranges written (as qemu sets them for the same writes), the disabled one keeps its bits; check clean', async () => {
    copyFileSync(at('base.qcow2'), at('convert-n.qcow2'));
    copyFileSync(at('base.qcow2'), at('convert-n-qemu.qcow2'));
    const result = platter(['convert', '-n', '-O', 'qcow2', 'data.raw', 'convert-n.qcow2'], { cwd: tmp.dir });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    // What the copy changes: the base's data at 0 and 1M become zeros, the raw file's data lands at 4M.
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -z 0 128k', '-c', 'write -z 1M 64k', '-c', 'write -P 3 4M 64k', at('convert-n-qemu.qcow2')]);
    expect(flagsOf('convert-n.qcow2')).toEqual({ enabled: ['auto'], frozen: [] });
    expect(await dirtyMap('convert-n.qcow2', 'enabled')).toBe(await dirtyMap('convert-n-qemu.qcow2', 'enabled'));
    expect(await dirtyMap('convert-n.qcow2', 'frozen')).toBe(await frozenBefore);
    expect(qemuImg('compare', 'convert-n.qcow2', 'data.raw')).toContain('Images are identical.');
    expect(qemuImg('check', 'convert-n.qcow2')).toContain('No errors were found on the image.');
    qemuIo('convert-n.qcow2', 'write -P 4 0 64k');
    expect(qemuImg('check', 'convert-n.qcow2')).toContain('No errors were found on the image.');
  });

  it('writes, zero writes and discards through platter serve leave the file qemu-nbd leaves for the same requests, byte for byte', async () => {
    qemuImg('create', '-q', '-f', 'qcow2', 'served.qcow2', '64M');
    qemuImg('bitmap', '--add', 'served.qcow2', 'enabled');
    qemuImg('bitmap', '--add', '--disable', 'served.qcow2', 'frozen');
    qemuImg('bitmap', '--add', '-g', '512', 'served.qcow2', 'fine');
    copyFileSync(at('served.qcow2'), at('served-before.qcow2'));
    copyFileSync(at('served.qcow2'), at('served-qemu.qcow2'));
    const requests = ['write -P 1 100k 10', 'write -z 1M 128k', 'discard 4M 64k', 'write -P 7 60M 3M', 'write -P 2 2M 1536'];
    const through = async (server: string, args: string[], image: string) => {
      const socket = at(`${image}.sock`);
      const child = spawn(server, [...args, '-k', socket, at(image)], { stdio: 'ignore' });
      const exited = new Promise((resolve) => child.on('exit', resolve));
      const io = ['-f', 'raw', ...requests.flatMap((request) => ['-c', request]), `nbd+unix:///?socket=${socket}`];
      for (let attempt = 0; spawnSync('qemu-io', io).status !== 0; attempt++) {
        if (attempt > 50) throw new Error(`${server} did not serve ${image}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      // Both serve one client and exit when it leaves, closing the image.
      await exited;
    };
    await through('qemu-nbd', ['-f', 'qcow2', '--discard=unmap'], 'served-qemu.qcow2');
    await through(process.execPath, [CLI, 'serve', '--writable', '--discard=unmap'], 'served.qcow2');
    expect(flagsOf('served.qcow2')).toEqual({ enabled: ['auto'], frozen: [], fine: ['auto'] });
    for (const bitmap of ['enabled', 'frozen', 'fine']) expect({ bitmap, map: await dirtyMap('served.qcow2', bitmap) }).toEqual({ bitmap, map: await dirtyMap('served-qemu.qcow2', bitmap) });
    expect(bytesApartFromOldDirectory('served.qcow2', 'served-before.qcow2').equals(bytesApartFromOldDirectory('served-qemu.qcow2', 'served-before.qcow2'))).toBe(true);
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

  it('resize of an image with a bitmap in use is refused, as qemu-img refuses it; the file is left as it was', async () => {
    copyFileSync(at('base.qcow2'), at('inconsistent.qcow2'));
    await leaveBitmapsInUse(at('inconsistent.qcow2'));
    expect(flagsOf('inconsistent.qcow2')).toEqual({ enabled: ['in-use', 'auto'], frozen: [] });
    expect(() => qemuImg('resize', 'inconsistent.qcow2', '32M')).toThrow(/Bitmap 'enabled' is inconsistent and cannot be used/);
    const bytes = readFileSync(at('inconsistent.qcow2'));
    const result = platter(['resize', 'inconsistent.qcow2', '32M'], { cwd: tmp.dir });
    expect(result.stderr).toBe("platter: inconsistent.qcow2: Bitmap 'enabled' is inconsistent and cannot be used\nTry 'bitmap --remove' to delete this bitmap from disk\n");
    expect(result.status).toBe(1);
    expect(readFileSync(at('inconsistent.qcow2')).equals(bytes)).toBe(true);
  });

  it('writes before and after a resize, through the same open image, all reach the enabled bitmap', async () => {
    copyFileSync(at('base.qcow2'), at('resize-write.qcow2'));
    copyFileSync(at('base.qcow2'), at('resize-write-qemu.qcow2'));
    const device = await FileDevice.open(at('resize-write.qcow2'), { writable: true });
    const image = await openQcow2(device, { host: writerTestHost(), writable: true });
    await image.write(6 << 20, new Uint8Array(512).fill(6));
    await image.resize(32 << 20);
    expect(image.metadata.bitmaps.map((bitmap) => bitmap.flags)).toEqual([['auto'], []]);
    await image.write(20 << 20, new Uint8Array(65536).fill(7));
    await image.close();
    qemuIo('resize-write-qemu.qcow2', 'write -P 6 6M 512');
    qemuImg('resize', 'resize-write-qemu.qcow2', '32M');
    qemuIo('resize-write-qemu.qcow2', 'write -P 7 20M 64k');
    expect(flagsOf('resize-write.qcow2')).toEqual({ enabled: ['auto'], frozen: [] });
    for (const bitmap of ['enabled', 'frozen']) expect({ bitmap, map: await dirtyMap('resize-write.qcow2', bitmap) }).toEqual({ bitmap, map: await dirtyMap('resize-write-qemu.qcow2', bitmap) });
    expect(qemuImg('check', 'resize-write.qcow2')).toContain('No errors were found on the image.');
  });

  it('commit into a base with bitmaps: the base has the map, bits and check report qemu-img commit leaves', async () => {
    for (const suffix of ['', '-qemu']) {
      copyFileSync(at('base.qcow2'), at(`commit-base${suffix}.qcow2`));
      qemuImg('create', '-q', '-f', 'qcow2', '-b', `commit-base${suffix}.qcow2`, '-F', 'qcow2', `commit-top${suffix}.qcow2`);
      qemuIo(`commit-top${suffix}.qcow2`, 'write -P 5 2M 100k');
      qemuIo(`commit-top${suffix}.qcow2`, 'write -z 10M 1M');
    }
    qemuImg('commit', '-q', 'commit-top-qemu.qcow2');
    expect(platter(['commit', 'commit-top.qcow2'], { cwd: tmp.dir }).status).toBe(0);
    expect(flagsOf('commit-base.qcow2')).toEqual({ enabled: ['auto'], frozen: [] });
    expect(await dirtyMap('commit-base.qcow2', 'enabled')).toBe(await dirtyMap('commit-base-qemu.qcow2', 'enabled'));
    // Not byte for byte: qemu punches a hole where it frees a bitmap's data cluster, platter leaves the old bits in the free cluster.
    expect(qemuImg('map', '--output=json', 'commit-base.qcow2')).toBe(qemuImg('map', '--output=json', 'commit-base-qemu.qcow2'));
    expect(qemuImg('check', 'commit-base.qcow2')).toBe(qemuImg('check', 'commit-base-qemu.qcow2'));
  });

  it('rebase onto another backing file: the overlay bitmaps gain what qemu-img rebase sets', async () => {
    qemuImg('create', '-q', '-f', 'qcow2', 'old-backing.qcow2', '16M');
    qemuIo('old-backing.qcow2', 'write -P 1 0 8M');
    qemuImg('create', '-q', '-f', 'qcow2', 'new-backing.qcow2', '16M');
    qemuIo('new-backing.qcow2', 'write -P 1 0 4M');
    qemuIo('new-backing.qcow2', 'write -P 5 6M 100k');
    for (const suffix of ['', '-qemu']) {
      qemuImg('create', '-q', '-f', 'qcow2', '-b', 'old-backing.qcow2', '-F', 'qcow2', `rebased${suffix}.qcow2`);
      qemuIo(`rebased${suffix}.qcow2`, 'write -P 3 2M 64k');
      qemuImg('bitmap', '--add', `rebased${suffix}.qcow2`, 'enabled');
      qemuImg('bitmap', '--add', '-g', '512', `rebased${suffix}.qcow2`, 'fine');
    }
    qemuImg('rebase', '-b', 'new-backing.qcow2', '-F', 'qcow2', 'rebased-qemu.qcow2');
    expect(platter(['rebase', '-b', 'new-backing.qcow2', '-F', 'qcow2', 'rebased.qcow2'], { cwd: tmp.dir }).status).toBe(0);
    expect(flagsOf('rebased.qcow2')).toEqual(flagsOf('rebased-qemu.qcow2'));
    for (const bitmap of ['enabled', 'fine']) expect({ bitmap, map: await dirtyMap('rebased.qcow2', bitmap) }).toEqual({ bitmap, map: await dirtyMap('rebased-qemu.qcow2', bitmap) });
    expect(qemuImg('check', 'rebased.qcow2')).toContain('No errors were found on the image.');
  });

  it('convert --bitmaps -n into an image with bitmaps of its own: they stay, follow the copy, and the copied ones come after them, as qemu-img adds them', async () => {
    qemuImg('create', '-q', '-f', 'qcow2', 'beside-source.qcow2', '16M');
    qemuImg('bitmap', '--add', 'beside-source.qcow2', 'copied');
    qemuIo('beside-source.qcow2', 'write -P 8 5M 64k');
    qemuImg('create', '-q', '-f', 'qcow2', 'beside.qcow2', '16M');
    qemuImg('bitmap', '--add', 'beside.qcow2', 'own');
    qemuImg('bitmap', '--add', '--disable', '-g', '4k', 'beside.qcow2', 'kept');
    const result = platter(['convert', '--bitmaps', '-n', '-O', 'qcow2', 'beside-source.qcow2', 'beside.qcow2'], { cwd: tmp.dir });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(Object.entries(flagsOf('beside.qcow2'))).toEqual([['own', ['auto']], ['kept', []], ['copied', ['auto']]]);
    const written = await dirtyMap('beside-source.qcow2', 'copied');
    for (const bitmap of ['own', 'copied']) expect({ bitmap, map: await dirtyMap('beside.qcow2', bitmap) }).toEqual({ bitmap, map: written });
    expect(await dirtyMap('beside.qcow2', 'kept')).not.toContain('"data": false');
    expect(qemuImg('check', 'beside.qcow2')).toContain('No errors were found on the image.');
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
