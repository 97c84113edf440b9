/** The runtime-agnostic layers must stay free of Node: that is what keeps them usable in a browser. */

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
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

/** The source files `entry` loads, following relative imports (type-only imports load nothing). */
function importGraph(entry: string): string[] {
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const code = stripComments(readFileSync(file, 'utf8'));
    for (const match of code.matchAll(/(?:^|\n)\s*(import|export)\s+(?!type\s)[^;]*?from\s+['"](\.[^'"]+)['"]/g)) {
      visit(resolve(dirname(file), match[2]!.replace(/\.js$/, '.ts')));
    }
  };
  visit(entry);
  return [...seen];
}

describe('layering', () => {
  it('formats/, src/core/ and src/engine/ never touch Node', () => {
    expect(layeringViolations()).toEqual([]);
  });

  it('platter/core loads no Node module, and offers the image operations', async () => {
    const files = importGraph(join(ROOT, 'src/core.ts'));
    expect(files.length).toBeGreaterThan(20);
    const problems = files.flatMap((file) =>
      FORBIDDEN.filter(([pattern]) => pattern.test(stripComments(readFileSync(file, 'utf8')))).map(([, what]) => `${relative(ROOT, file)} ${what}`),
    );
    expect(problems).toEqual([]);
    const core = await import('../src/core.js');
    for (const name of ['convertToRaw', 'convertToQcow2', 'createImage', 'checkImage', 'measure', 'resizeImage', 'amendImage', 'compareImages', 'snapshot']) {
      expect(typeof (core as Record<string, unknown>)[name], name).toBe('function');
    }
  });

  it('the check catches a violation', () => {
    const code = "import { open } from 'node:fs';\nconst b = Buffer.from('x');";
    const hits = FORBIDDEN.filter(([pattern]) => pattern.test(stripComments(code)));
    expect(hits.length).toBeGreaterThanOrEqual(2);
  });
});
