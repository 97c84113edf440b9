/** Internal snapshot views: lookup by id or name, sizing, and errors. */

import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSnapshotView, type Qcow2Image } from '../formats/qcow2/index.js';
import { openImageFile } from '../src/node/open.js';
import { firstDifference, qcow2TempDir, qcow2ToolAvailable, qemuRawBytes, readWholeImage, sh } from './helpers/qcow2-oracle.js';

const haveQemu = qcow2ToolAvailable('qemu-img') && qcow2ToolAvailable('qemu-io');

describe.skipIf(!haveQemu)('qcow2 snapshot views', () => {
  const temp = qcow2TempDir();
  let image: Qcow2Image;
  afterAll(async () => {
    await image?.close();
    temp.cleanup();
  });
  beforeAll(async () => {
    sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'img.qcow2', '2M']);
    sh(temp.dir, 'qemu-io', ['-c', 'write -P 1 0 1M', 'img.qcow2']);
    sh(temp.dir, 'qemu-img', ['snapshot', '-c', 'before', 'img.qcow2']);
    sh(temp.dir, 'qemu-img', ['resize', '-q', 'img.qcow2', '3M']);
    sh(temp.dir, 'qemu-io', ['-c', 'write -P 2 512k 2M', 'img.qcow2']);
    // A second snapshot whose name is the first one's id: ids win, as in qemu.
    sh(temp.dir, 'qemu-img', ['snapshot', '-c', '1', 'img.qcow2']);
    image = (await openImageFile(join(temp.dir, 'img.qcow2'))) as Qcow2Image;
  });

  it('records the disk size of each snapshot', () => {
    expect(image.metadata.snapshots.map((s) => [s.id, s.name, s.diskSize])).toEqual([
      ['1', 'before', 2 << 20],
      ['2', '1', 3 << 20],
    ]);
  });

  it('finds a snapshot by id before name', async () => {
    const view = await openSnapshotView(image, '1');
    const expected = qemuRawBytes(temp.dir, 'img.qcow2', 'before');
    expect(firstDifference(await readWholeImage(view), expected)).toBe(-1);
    await view.close();
  });

  it('can take the size recorded with the snapshot', async () => {
    const view = await openSnapshotView(image, 'before', { size: 'snapshot' });
    expect(view.size).toBe(2 << 20);
    const expected = qemuRawBytes(temp.dir, 'img.qcow2', 'before').subarray(0, 2 << 20);
    expect(firstDifference(await readWholeImage(view), expected)).toBe(-1);
    await view.close();
    // Closing a view leaves the image open.
    expect((await image.read(0, 4))[0]).toBe(1);
  });

  it('reports an unknown snapshot as not found', async () => {
    await expect(openSnapshotView(image, 'nope')).rejects.toMatchObject({ code: 'ENOTFOUND' });
  });
});
