// The main jobs of platter on the committed fixtures, each shown with its command.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const steps = [
  ['info', 'fixtures/mbr-small.raw'],
  ['info', '--output=json', 'fixtures/mbr-small.raw'],
];

for (const args of steps) {
  process.stdout.write(`\n$ platter ${args.join(' ')}\n`);
  const result = spawnSync(process.execPath, ['dist/cli.js', ...args], { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) process.exit(result.status ?? 1);
}
