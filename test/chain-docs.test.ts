/** docs/readme-chains.md's shell examples really run, with the exit status and output shown. */

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, hasTool, tempDir } from './helpers/tools.js';

const doc = readFileSync(new URL('../docs/readme-chains.md', import.meta.url), 'utf8');
const enabled = hasTool('qemu-io');

interface ChainDocExample {
  command: string;
  status: number;
  output: string[];
}

/** Splits a command line into words, honouring single and double quotes. */
function chainDocWords(command: string): string[] {
  return (command.match(/'[^']*'|"[^"]*"|\S+/g) ?? []).map((word) => (/^['"]/.test(word) ? word.slice(1, -1) : word));
}

function chainDocExamples(): ChainDocExample[] {
  const found: ChainDocExample[] = [];
  for (const block of doc.match(/```sh\n[\s\S]*?```/g) ?? []) {
    let current: ChainDocExample | undefined;
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

describe.skipIf(!enabled)('docs/readme-chains.md', () => {
  const scratch = tempDir('platter-chain-docs-');
  afterAll(() => scratch.cleanup());

  it('every example runs in order with the exit status and output shown', () => {
    const all = chainDocExamples();
    expect(all.length).toBeGreaterThan(15);
    for (const example of all) {
      const [tool, ...args] = chainDocWords(example.command);
      const result =
        tool === 'platter'
          ? spawnSync(process.execPath, [CLI, ...args], { cwd: scratch.dir, encoding: 'utf8' })
          : spawnSync(tool!, args, { cwd: scratch.dir, encoding: 'utf8' });
      expect(result.status, `${example.command}\n${result.stderr}`).toBe(example.status);
      if (example.output.length > 0) expect(result.stdout.trimEnd(), example.command).toBe(example.output.join('\n'));
    }
  });
});
