/**
 * What platter's writes do to persistent dirty bitmaps it does not update.
 * Before the first write the enabled bitmaps are marked in use, in place (the
 * first thing written, so a crash cannot leave a bitmap that missed a write
 * looking valid); disabled ones stay valid and unchanged, unless the disk's
 * size changes. Afterwards qemu-img check is clean, qemu lists the flags,
 * removes an in-use bitmap and goes on writing. snapshot -a is refused on an
 * image with bitmaps, with qemu-img's words, the file left as it was.
 */

import { copyFileSync, readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { openQcow2 } from '../formats/qcow2/index.js';
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

  it.each([
    ['convert -n', (image: string) => ['convert', '-n', '-O', 'qcow2', 'data.raw', image], { enabled: ['in-use', 'auto'], frozen: [] }],
    ['resize --shrink', (image: string) => ['resize', '--shrink', image, '8M'], { enabled: ['in-use', 'auto'], frozen: ['in-use'] }],
    ['resize (grow)', (image: string) => ['resize', image, '32M'], { enabled: ['in-use', 'auto'], frozen: ['in-use'] }],
    ['amend -o size=', (image: string) => ['amend', '-o', 'size=8M', image], { enabled: ['in-use', 'auto'], frozen: ['in-use'] }],
  ] as const)('%s: enabled bitmaps in use, the rest as the size allows; check clean; qemu removes one and writes on', async (name, command, expected) => {
    const image = `${name.replace(/\W+/g, '-')}.qcow2`;
    copyFileSync(at('base.qcow2'), at(image));
    const result = platter([...command(image)], { cwd: tmp.dir });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(flagsOf(image)).toEqual(expected);
    expect(qemuImg('check', image)).toContain('No errors were found on the image.');
    if (expected.frozen.length === 0) expect(await dirtyMap(image, 'frozen')).toBe(await frozenBefore);
    qemuImg('bitmap', '--remove', image, 'enabled');
    qemuIo(image, 'write -P 4 0 64k');
    expect(qemuImg('check', image)).toContain('No errors were found on the image.');
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
