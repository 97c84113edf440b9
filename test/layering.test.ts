/** The runtime-agnostic layers must stay free of Node: that is what keeps them usable in a browser. */

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const AGNOSTIC_DIRS = ['formats', 'src/core', 'src/engine'];

/** Patterns that mean "this file needs Node". Comments are stripped first. */
const FORBIDDEN: [RegExp, string][] = [
  [/from\s+['"]node:/, 'imports node:*'],
  [/import\(\s*['"]node:/, 'imports node:*'],
  [/from\s+['"](fs|path|os|net|zlib|child_process|worker_threads|crypto|buffer|util)(\/[^'"]*)?['"]/, 'imports a Node built-in'],
  [/\brequire\s*\(/, 'uses require'],
  [/\bBuffer\b/, 'uses Buffer'],
  [/\bprocess\b/, 'uses process'],
];

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...sourceFiles(path));
    else if (/\.(ts|js|mjs)$/.test(name)) out.push(path);
  }
  return out;
}

function stripComments(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
}

/** Every problem found in the runtime-agnostic directories. */
export function layeringViolations(): string[] {
  const problems: string[] = [];
  for (const dir of AGNOSTIC_DIRS) {
    for (const file of sourceFiles(join(ROOT, dir))) {
      const code = stripComments(readFileSync(file, 'utf8'));
      for (const [pattern, what] of FORBIDDEN) {
        if (pattern.test(code)) problems.push(`${relative(ROOT, file)} ${what}`);
      }
    }
  }
  return problems;
}

describe('layering', () => {
  it('formats/, src/core/ and src/engine/ never touch Node', () => {
    expect(layeringViolations()).toEqual([]);
  });

  it('the check catches a violation', () => {
    const code = "import { open } from 'node:fs';\nconst b = Buffer.from('x');";
    const hits = FORBIDDEN.filter(([pattern]) => pattern.test(stripComments(code)));
    expect(hits.length).toBeGreaterThanOrEqual(2);
  });
});
