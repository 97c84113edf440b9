/**
 * The malformed qcow2 corpus (qemu-iotests 060/080 style pokes, truncations,
 * hostile backing chains). Every case runs in a child process twice: through the
 * library (open, info, block status and a read of every extent and snapshot) and
 * through `platter info --backing-chain` (and `platter convert` when info reads
 * too little to notice) and `platter check`. Each must answer with the expected
 * error code and message (or a safe answer), within 2 s, under 200 MiB peak RSS,
 * without changing the file.
 */

import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { qcow2Corpus, type HostileCase, type RunnerResult } from './helpers/hostile-corpus.js';
import { expectInTime, runCliMeasured, runLibraryBatch, MAX_RSS_BYTES, type CliMeasured } from './helpers/hostile-child.js';
import { tempDir } from './helpers/tools.js';

const corpus = qcow2Corpus();
const tmp = tempDir('platter-hostile-');
const paths = new Map<string, string>();
const library = new Map<string, RunnerResult>();
const cli = new Map<string, CliMeasured>();
const converted = new Map<string, CliMeasured>();
const checked = new Map<string, CliMeasured>();
const hashesBefore = new Map<string, string>();
const batchRss: number[] = [];

/** Cases per child: small enough that one runaway case would show in the batch's peak RSS. */
const BATCH = 12;

beforeAll(async () => {
  corpus.forEach((entry, index) => {
    const dir = join(tmp.dir, `case${index}`);
    mkdirSync(dir);
    paths.set(entry.name, entry.make(dir));
    hashesBefore.set(entry.name, hashOf(paths.get(entry.name)!));
  });
  const entryOf = (c: HostileCase) => ({ name: c.name, path: paths.get(c.name)!, options: c.options });
  const shared = corpus.filter((c) => !c.alone);
  const batches = corpus.filter((c) => c.alone).map((c) => [entryOf(c)]);
  for (let start = 0; start < shared.length; start += BATCH) batches.push(shared.slice(start, start + BATCH).map(entryOf));
  const manifests = batches.map((batch, index) => {
    const manifest = join(tmp.dir, `batch${index}.json`);
    writeFileSync(manifest, JSON.stringify(batch));
    return manifest;
  });
  const runs = await inPool(manifests, (manifest) => runLibraryBatch(manifest));
  for (const run of runs) {
    batchRss.push(run.maxRssBytes);
    for (const result of run.results) library.set(result.name, result);
  }
  const measured = await inPool(corpus, (c) => runCliMeasured(cliArgs(c, paths.get(c.name)!)));
  corpus.forEach((c, index) => cli.set(c.name, measured[index]!));
  // Cases that `info` answers without reading L2 tables are also converted: that reads every cluster.
  const deep = corpus.filter((c) => c.info === 'ok');
  const outputs = await inPool(deep, (c) => runCliMeasured(['convert', '-O', 'raw', paths.get(c.name)!, join(tmp.dir, `out-${deep.indexOf(c)}.raw`)]));
  deep.forEach((c, index) => converted.set(c.name, outputs[index]!));
  // check walks the refcount structures, which nothing else reads; where the image
  // does not even open, check stops at the same place info does.
  const opening = corpus.filter(opens);
  const checks = await inPool(opening, (c) => runCliMeasured(['check', '--output=json', paths.get(c.name)!]));
  opening.forEach((c, index) => checked.set(c.name, checks[index]!));
}, 180_000);

afterAll(() => tmp.cleanup());

/** Maps with at most two children at a time: the CI machine has two cores, and timings must stay honest. */
async function inPool<T, R>(items: readonly T[], task: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await task(items[index]!);
    }
  };
  await Promise.all([worker(), worker()]);
  return results;
}

/** True when the image opens (info answers), so check has structures to walk. */
function opens(entry: HostileCase): boolean {
  return entry.info === 'ok' || !('code' in entry.expect);
}

/** SHA-256 of a file, in chunks (some corpus files are large and sparse). */
function hashOf(path: string): string {
  const hash = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const chunk = Buffer.alloc(1 << 20);
    for (let read; (read = readSync(fd, chunk, 0, chunk.length, null)) > 0; ) hash.update(chunk.subarray(0, read));
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

function cliArgs(entry: HostileCase, path: string): string[] {
  const args = ['info', '--backing-chain', '--output=json'];
  if (entry.options?.format) args.push('-f', entry.options.format);
  if (entry.options?.noBacking) args.push('--no-backing');
  return [...args, path];
}

describe('hostile qcow2 corpus', () => {
  it('has at least 60 cases with distinct names', () => {
    expect(corpus.length).toBeGreaterThanOrEqual(60);
    expect(new Set(corpus.map((c) => c.name)).size).toBe(corpus.length);
  });

  it('every library batch stays under 200 MiB peak RSS', () => {
    expect(batchRss.length).toBeGreaterThan(0);
    for (const rss of batchRss) expect(rss).toBeLessThan(MAX_RSS_BYTES);
  });

  describe.each(corpus.map((c) => [c.name, c] as const))('%s', (name, entry) => {
    it('library: expected answer, in time, file unchanged', () => {
      const result = library.get(name);
      expect(result, 'the runner reported this case').toBeDefined();
      expect(result!.foreign, 'a non-PlatterError escaped').toBeUndefined();
      if ('code' in entry.expect) {
        expect({ ok: result!.ok, code: result!.code }).toEqual({ ok: false, code: entry.expect.code });
        expect(result!.message).toMatch(entry.expect.message);
      } else {
        expect(result!.message, 'expected success').toBeUndefined();
        expect(result!.ok).toBe(true);
        entry.expect.check?.(result!);
      }
      expectInTime(result!);
      expect(result!.unchanged, 'the file was modified').toBe(true);
    });

    if (entry.info === 'ok') it('CLI convert: the same answer as the library, in time and memory', () => {
      const run = converted.get(name)!;
      expect(run.stderr).not.toMatch(/internal error|\n\s+at /);
      expectInTime(run);
      expect(run.maxRssBytes).toBeLessThan(MAX_RSS_BYTES);
      // convert reads the active disk, not the snapshots: a broken snapshot table does not stop it.
      const expectError = 'code' in entry.expect && !/snapshot/.test(entry.expect.message.source);
      if (expectError && 'code' in entry.expect) {
        expect(run.status).not.toBe(0);
        expect(run.stderr.trimEnd().split('\n').pop()).toMatch(entry.expect.message);
      } else {
        expect(run.status, run.stderr).toBe(0);
      }
    });

    if (opens(entry)) it('CLI check: a qemu-img check status, in time and memory, file unchanged', () => {
      const run = checked.get(name)!;
      expect(run.stderr).not.toMatch(/internal error|\n\s+at /);
      expect([0, 1, 2, 3, 63]).toContain(run.status);
      expectInTime(run);
      expect(run.maxRssBytes).toBeLessThan(MAX_RSS_BYTES);
      // After every run of every tool on it, the file is what the case made.
      expect(hashOf(paths.get(name)!)).toBe(hashesBefore.get(name));
    });

    it('CLI info: one clear line or a JSON answer, in time and memory', () => {
      const run = cli.get(name)!;
      expect(run.stderr).not.toMatch(/internal error|\n\s+at /);
      expectInTime(run);
      expect(run.maxRssBytes).toBeLessThan(MAX_RSS_BYTES);
      const lastLine = run.stderr.trimEnd().split('\n').pop() ?? '';
      const refusal = typeof entry.info === 'object' ? entry.info : entry.info === 'same' && 'code' in entry.expect ? entry.expect : undefined;
      if (refusal) {
        expect(run.status).not.toBe(0);
        expect(JSON.parse(run.stdout).error.code).toBe(refusal.code);
        expect(lastLine).toMatch(/^platter: /);
        expect(lastLine).toMatch(refusal.message);
      } else {
        expect(run.status, run.stderr).toBe(0);
        expect(Array.isArray(JSON.parse(run.stdout))).toBe(true);
      }
    });
  });
});
