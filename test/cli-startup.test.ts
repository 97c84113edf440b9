/** The CLI launcher: the bundle loads with the code cache the build made, and without it. */

import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import yargs from 'yargs';
import { platter, tempDir } from './helpers/tools.js';

const DIST = fileURLToPath(new URL('../dist/', import.meta.url));
const FIXTURE = fileURLToPath(new URL('../fixtures/mbr-small.raw', import.meta.url));
const LAUNCHER = ['cli.cjs', 'cli-loader.cjs'];
const BUNDLE = 'cli-bundle.cjs';
const tmp = tempDir();
afterAll(() => tmp.cleanup());

/** Copies the built launcher into a folder of its own, `name`, and returns the folder. */
function launcherCopy(name: string): string {
  const dir = tmp.path(name);
  mkdirSync(dir, { recursive: true });
  for (const file of LAUNCHER) copyFileSync(`${DIST}${file}`, `${dir}/${file}`);
  return dir;
}

/** Runs a copy of the launcher and bundle (with `cache` as its code cache, if any). */
function runCopy(name: string, cache: string | undefined, args: string[]): string {
  const dir = launcherCopy(name);
  copyFileSync(`${DIST}${BUNDLE}`, `${dir}/${BUNDLE}`);
  if (cache) copyFileSync(cache, `${dir}/cli-bundle.cache`);
  return execFileSync(process.execPath, [`${dir}/cli.cjs`, ...args], { encoding: 'utf8' });
}

describe('CLI start-up', () => {
  it('the build leaves a code cache that V8 accepts for the bundle', () => {
    expect(existsSync(`${DIST}cli-bundle.cache`)).toBe(true);
    const probe = `import('${DIST}cli-loader.cjs').then(({ loadCliBundle }) => console.log(loadCliBundle().script.cachedDataRejected))`;
    expect(execFileSync(process.execPath, ['-e', probe], { encoding: 'utf8' }).trim()).toBe('false');
  });

  it('runs the same without the cache, and with a cache that does not fit the bundle', () => {
    const expected = platter(['partitions', FIXTURE]);
    expect(expected.status).toBe(0);
    expect(runCopy('no-cache', undefined, ['partitions', FIXTURE])).toBe(expected.stdout);
    expect(runCopy('bad-cache', FIXTURE, ['partitions', FIXTURE])).toBe(expected.stdout);
  });

  it('fails when the command stops without finishing, instead of exiting with 0', () => {
    const dir = launcherCopy('unfinished');
    // A command whose work is lost: a promise nothing will ever settle, and nothing left to wait for.
    writeFileSync(`${dir}/${BUNDLE}`, '(function (exports) { exports.tuneOptimizer = () => {}; exports.runCli = () => new Promise(() => {}); });\n');
    const result = spawnSync(process.execPath, [`${dir}/cli.cjs`, 'info', FIXTURE], { encoding: 'utf8' });
    expect(result.status).toBe(13);
    expect(result.stderr).toBe('platter: internal error: the command stopped before it finished\n');
  });

  it('yargs still has the help-text cache that every run skips', () => {
    // run.ts replaces this internal hook; if yargs renames it, the skip stops working silently.
    const internal = yargs([]) as unknown as { getInternalMethods(): { getUsageInstance(): { cacheHelpMessage: unknown } } };
    expect(typeof internal.getInternalMethods().getUsageInstance().cacheHelpMessage).toBe('function');
  });
});
