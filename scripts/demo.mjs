// The main jobs of platter on the bundled fixtures, each shown with its command:
// inspect a qcow2 overlay and its backing chain, find a partition's offset,
// convert the whole chain to a sparse raw disk, and check the copy.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), 'platter-demo-'));
const raw = join(scratch, 'disk.raw');
const image = 'fixtures/demo/overlay.qcow2';

const steps = [
  ['info', '--backing-chain', image],
  ['map', image],
  ['partitions', image],
  ['mount-offset', image, '5'],
  ['convert', '-O', 'raw', image, raw],
  ['info', raw],
  ['compare', image, raw],
  ['mount-offset', raw, '5'],
];

try {
  for (const args of steps) {
    process.stdout.write(`\n$ platter ${args.join(' ')}\n`);
    const result = spawnSync(process.execPath, ['dist/cli.cjs', ...args], { cwd: root, stdio: 'inherit' });
    if (result.status !== 0) process.exitCode = result.status ?? 1;
    if (result.status !== 0) break;
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
