/** docs/readme-snapshots.md's examples really run, with the output shown (dates masked: they are the run's own). */

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, tempDir } from './helpers/tools.js';

const doc = readFileSync(new URL('../docs/readme-snapshots.md', import.meta.url), 'utf8');
const scratch = tempDir('platter-snapshot-docs-');
afterAll(() => scratch.cleanup());

interface SnapshotDocExample {
  command: string;
  status: number;
  output: string[];
}

function examples(): SnapshotDocExample[] {
  const found: SnapshotDocExample[] = [];
  for (const block of doc.match(/```sh\n[\s\S]*?```/g) ?? []) {
    let current: SnapshotDocExample | undefined;
    for (const line of block.split('\n').slice(1, -1)) {
      if (line.startsWith('$ ')) {
        const status = /#\s*exit status (\d+)\s*$/.exec(line);
        current = { command: line.slice(2).replace(/\s+#.*$/, ''), status: status ? Number(status[1]) : 0, output: [] };
        found.push(current);
      } else if (current && line.trim() !== '') current.output.push(line);
    }
  }
  return found;
}

/** Replaces what depends on the clock: table dates, JSON date fields. */
function undated(text: string): string {
  return text
    .replace(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/g, 'DATE')
    .replace(/"date-sec": \d+/g, '"date-sec": N')
    .replace(/"date-nsec": \d+/g, '"date-nsec": N');
}

describe('docs/readme-snapshots.md', () => {
  it('every example runs with the exit status and output shown', () => {
    const all = examples();
    expect(all.length).toBeGreaterThan(8);
    for (const example of all) {
      const args = example.command.split(/\s+/).slice(1);
      const result = spawnSync(process.execPath, [CLI, ...args], { cwd: scratch.dir, encoding: 'utf8' });
      expect(result.status, `${example.command}\n${result.stderr}`).toBe(example.status);
      if (example.output.length > 0) expect(undated(result.stdout.trimEnd()), example.command).toBe(undated(example.output.join('\n')));
    }
  });
});
