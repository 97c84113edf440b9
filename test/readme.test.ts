/**
 * The README's examples really run: every `$ platter ...` line of a ```sh block runs,
 * in order, in a scratch directory holding a copy of fixtures/; output shown under a
 * command must match it (a line `...` matches any run of lines; `disk size:` lines match any size, since a copy of a
 * fixture is not sparse the way the original is). A command whose
 * expected status is not 0 says so with a trailing `# exit status N`.
 */

import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, tempDir } from './helpers/tools.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface Example {
  command: string;
  expectedStatus: number;
  output: string[];
}

/** Extracts the examples of every ```sh block, each block's examples in order. */
export function readmeExamples(markdown: string): Example[] {
  const examples: Example[] = [];
  const blocks = markdown.match(/```sh\n[\s\S]*?```/g) ?? [];
  for (const block of blocks) {
    let current: Example | undefined;
    for (const line of block.split('\n').slice(1, -1)) {
      if (line.startsWith('$ ')) {
        const status = /\s+#\s*exit status (\d+)\s*$/.exec(line);
        current = { command: line.slice(2).replace(/\s+#.*$/, ''), expectedStatus: status ? Number(status[1]) : 0, output: [] };
        examples.push(current);
      } else if (current && line.trim() !== '') {
        current.output.push(line);
      }
    }
  }
  return examples;
}

/** True when `actual` matches `expected`, where a `...` line stands for any lines. */
function matchesOutput(actual: string[], expected: string[]): boolean {
  if (expected.length === 0) return true;
  const [first = '', ...rest] = expected;
  if (first === '...') {
    for (let skip = 0; skip <= actual.length; skip++) if (matchesOutput(actual.slice(skip), rest)) return true;
    return false;
  }
  const same = first.startsWith('disk size: ') ? actual[0]?.startsWith('disk size: ') : actual[0] === first;
  return same === true && matchesOutput(actual.slice(1), rest);
}

const examples = readmeExamples(readFileSync(join(ROOT, 'README.md'), 'utf8'));
const scratch = tempDir('platter-readme-');
afterAll(() => scratch.cleanup());

describe('README examples', () => {
  const bin = join(scratch.dir, 'bin');
  const work = join(scratch.dir, 'work');
  mkdirSync(bin);
  mkdirSync(work);
  cpSync(join(ROOT, 'fixtures'), join(work, 'fixtures'), { recursive: true });
  writeFileSync(join(bin, 'platter'), `#!/bin/sh\nexec "${process.execPath}" "${CLI}" "$@"\n`);
  chmodSync(join(bin, 'platter'), 0o755);

  it('has examples', () => {
    expect(examples.length).toBeGreaterThan(3);
  });

  it.each(examples.map((example, index) => [index + 1, example.command, example] as const))(
    '#%d: %s',
    (_index, _command, example) => {
      const result = spawnSync('sh', ['-c', example.command], {
        cwd: work,
        encoding: 'utf8',
        env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, PLATTER_DEBUG: '' },
        timeout: 60_000,
      });
      expect(result.status, result.stderr).toBe(example.expectedStatus);
      const actual = result.stdout.split('\n').filter((line) => line.trim() !== '');
      expect(matchesOutput(actual, example.output), `output was:\n${result.stdout}`).toBe(true);
    },
  );
});
