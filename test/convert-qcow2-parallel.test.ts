/**
 * convert -O qcow2 -c compresses many clusters at once: streams that finish
 * out of order are still stored in guest order (the image compares equal and
 * checks clean), the number of compressions in flight stays bounded, and a
 * compressor failure surfaces as the error of the convert.
 */

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ImageHost } from '../src/core/image.js';
import { FileDevice } from '../src/node/file-device.js';
import { nodeCodecs } from '../src/node/codecs.js';
import { nodeHost } from '../src/node/host.js';
import { openImageFile } from '../src/node/open.js';
import { convertToQcow2 } from '../src/ops/convert-qcow2.js';
import { qcow2TempDir, qcow2ToolAvailable, shStatus } from './helpers/qcow2-oracle.js';

const haveQemu = qcow2ToolAvailable('qemu-img');
const temp = qcow2TempDir();
afterAll(() => temp.cleanup());
const at = (name: string) => join(temp.dir, name);

/** 6 MiB + 1000 bytes of distinct compressible clusters, with a hole in the middle and a partial last cluster. */
function writeSource(): void {
  const bytes = new Uint8Array((6 << 20) + 1000);
  for (let i = 0; i < bytes.length; i++) bytes[i] = 0x41 + ((i >> 16) % 26) + ((i & 0x3f) === 0 ? 1 : 0);
  bytes.fill(0, 2 << 20, 3 << 20);
  writeFileSync(at('source.raw'), bytes);
}

/** A host whose deflate answers after a delay that shrinks with each call, so later clusters finish first. */
function shufflingHost(stats: { inFlight: number; peak: number; calls: number }, failAt = -1): ImageHost {
  const host = nodeHost();
  return {
    ...host,
    codecs: {
      ...nodeCodecs,
      async deflateRaw(input) {
        const call = stats.calls++;
        stats.inFlight++;
        stats.peak = Math.max(stats.peak, stats.inFlight);
        try {
          await new Promise((resolve) => setTimeout(resolve, Math.max(0, 40 - (call % 40))));
          if (call === failAt) throw new Error('compressor broke');
          return await nodeCodecs.deflateRaw!(input);
        } finally {
          stats.inFlight--;
        }
      },
    },
  };
}

async function convert(target: string, host: ImageHost): Promise<void> {
  const image = await openImageFile(at('source.raw'), { format: 'raw' });
  const device = await FileDevice.open(at(target), { create: true });
  try {
    await convertToQcow2(image, device, { options: new Map(), compress: true, host });
  } finally {
    await device.close();
    await image.close();
  }
}

describe.skipIf(!haveQemu)('convert -O qcow2 -c in parallel', () => {
  it('stores streams in guest order whatever order they finish in, with a bounded number in flight', async () => {
    writeSource();
    const stats = { inFlight: 0, peak: 0, calls: 0 };
    await convert('out.qcow2', shufflingHost(stats));
    expect(shStatus(temp.dir, 'qemu-img', ['compare', '-f', 'raw', 'source.raw', 'out.qcow2']).status).toBe(0);
    const check = shStatus(temp.dir, 'qemu-img', ['check', '--output=json', 'out.qcow2']);
    expect(check.status, check.stdout).toBe(0);
    expect(JSON.parse(check.stdout)['compressed-clusters']).toBe(stats.calls);
    // 5 MiB + 1000 bytes of data in 64 KiB clusters; the zero MiB is never compressed.
    expect(stats.calls).toBe(81);
    expect(stats.peak).toBeGreaterThan(1);
    // Two 2 MiB chunks ahead of the one being written, 32 clusters each.
    expect(stats.peak).toBeLessThanOrEqual(3 * 32);
  });

  it('a compressor failure is the error of the convert', async () => {
    writeSource();
    const stats = { inFlight: 0, peak: 0, calls: 0 };
    await expect(convert('broken.qcow2', shufflingHost(stats, 50))).rejects.toThrow(/compressor broke/);
  });
});
