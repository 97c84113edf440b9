/** Persistent dirty bitmaps as qemu sees them: their dirty map through qemu-nbd. */

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { run } from './tools.js';

/**
 * The dirty map of `bitmap` in the qcow2 image `image` (in `dir`), as
 * `qemu-img map` prints it for qemu-nbd's export of the bitmap: dirty runs
 * show as `"data": false`.
 */
export async function dirtyMap(dir: string, image: string, bitmap: string): Promise<string> {
  const socket = join(dir, `${image}-${bitmap}.sock`);
  const server = spawn('qemu-nbd', ['-r', '-f', 'qcow2', '-B', bitmap, '-k', socket, join(dir, image)], { stdio: 'ignore' });
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        return run('qemu-img', ['map', '--output=json', '--image-opts', `driver=nbd,server.type=unix,server.path=${socket},x-dirty-bitmap=qemu:dirty-bitmap:${bitmap}`]);
      } catch (error) {
        if (attempt > 50) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  } finally {
    server.kill();
  }
}
