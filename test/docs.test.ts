/**
 * The examples in README.md and docs/*.md really run. In every ```sh block, each
 * `$ ` line runs, in order, in a scratch directory of its own page that holds a copy
 * of fixtures/, with `platter` on PATH. Output shown under a command must match:
 * a line `...` matches any run of lines, dates and `disk size:` values match any
 * (they belong to the run, and a copied fixture is not sparse the way the original
 * is). A command whose expected status is not 0 says so with `# exit status N`.
 */

import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, tempDir } from './helpers/tools.js';

const LIBRARY = fileURLToPath(new URL('../dist/index.js', import.meta.url));

const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface Example {
  command: string;
  expectedStatus: number;
  output: string[];
}

/** Extracts the examples of every ```sh block, in order. */
export function docExamples(markdown: string): Example[] {
  const examples: Example[] = [];
  for (const block of markdown.match(/```sh\n[\s\S]*?```/g) ?? []) {
    let current: Example | undefined;
    for (const line of block.split('\n').slice(1, -1)) {
      if (line.startsWith('$ ')) {
        const status = /\s+#\s*exit status (\d+)\s*$/.exec(line);
        current = { command: line.slice(2).replace(/\s+#[^'"]*$/, ''), expectedStatus: status ? Number(status[1]) : 0, output: [] };
        examples.push(current);
      } else if (current && line.trim() !== '') {
        current.output.push(line);
      }
    }
  }
  return examples;
}

/** What depends on the run rather than on platter: dates, and how much disk a copy takes. */
function normalized(line: string): string {
  return line
    .replace(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/g, 'DATE')
    .replace(/"date-(n?sec)": \d+/g, '"date-$1": N')
    .replace(/^disk size: .*/, 'disk size: N');
}

/** True when `actual` matches `expected`, where a `...` line stands for any lines. */
function matchesOutput(actual: string[], expected: string[]): boolean {
  if (expected.length === 0) return true;
  const [first = '', ...rest] = expected;
  if (first === '...') {
    for (let skip = 0; skip <= actual.length; skip++) if (matchesOutput(actual.slice(skip), rest)) return true;
    return false;
  }
  return actual[0] !== undefined && normalized(actual[0]) === normalized(first) && matchesOutput(actual.slice(1), rest);
}

const pages = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((name) => name.endsWith('.md')).map((name) => `docs/${name}`)];
const scratch = tempDir('platter-docs-');
afterAll(() => scratch.cleanup());

const bin = join(scratch.dir, 'bin');
mkdirSync(bin);
writeFileSync(join(bin, 'platter'), `#!/bin/sh\nexec "${process.execPath}" "${CLI}" "$@"\n`);
chmodSync(join(bin, 'platter'), 0o755);

describe.each(pages)('%s', (page) => {
  const examples = docExamples(readFileSync(join(ROOT, page), 'utf8'));
  const work = join(scratch.dir, page.replace(/\W/g, '_'));
  mkdirSync(work);
  cpSync(join(ROOT, 'fixtures'), join(work, 'fixtures'), { recursive: true });

  // Pages whose examples need files the reader has (```console blocks) have no `$ ` lines to run.
  it.runIf(page === 'README.md')('has examples', () => {
    expect(examples.length).toBeGreaterThan(40);
  });

  it.skipIf(examples.length === 0).each(examples.map((example, index) => [index + 1, example.command, example] as const))('#%d: %s', (_index, _command, example) => {
    // timeout(1) ends the shell's whole process group, so a hung platter under it does not outlive the test.
    const result = spawnSync('timeout', ['-k', '5', '60', 'sh', '-c', example.command], {
      cwd: work,
      encoding: 'utf8',
      env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, PLATTER_DEBUG: '' },
      timeout: 75_000,
    });
    expect(result.status, result.stderr).toBe(example.expectedStatus);
    const actual = result.stdout.split('\n').filter((line) => line.trim() !== '');
    expect(matchesOutput(actual, example.output), `output was:\n${result.stdout}`).toBe(true);
  });
});

describe('README library examples', () => {
  const blocks = (readFileSync(join(ROOT, 'README.md'), 'utf8').match(/```ts\n[\s\S]*?```/g) ?? []).map((block) => block.slice(6, -3));
  const work = join(scratch.dir, 'library');
  mkdirSync(work);
  const disk = new Uint8Array(8 << 20);
  disk.fill(0x5a, 1 << 20, 3 << 20);
  writeFileSync(join(work, 'disk.raw'), disk);

  it('has examples', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(2);
  });

  it.each(blocks.map((code, index) => [index + 1, code] as const))('#%d runs', (index, code) => {
    expect(spawnSync(process.execPath, [CLI, 'convert', '-O', 'qcow2', 'disk.raw', 'disk.qcow2'], { cwd: work }).status).toBe(0);
    const file = join(work, `example-${index}.mjs`);
    writeFileSync(file, code.replace(/from 'platter'/g, `from '${LIBRARY}'`));
    const result = spawnSync(process.execPath, [file], { cwd: work, encoding: 'utf8', timeout: 60_000 });
    expect(result.status, result.stderr).toBe(0);
    expect(result.stderr).toBe('');
  });
});
