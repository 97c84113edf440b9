/**
 * platter's runtime-agnostic build (dist/core.js) runs in a browser: headless
 * Chromium loads it as an ES module from a local server and runs
 * test/browser/scenario.mjs on the demo overlay and its backing file, held in
 * memory, and on a zlib-compressed image decoded by platter's portable codecs.
 * The page's answers must equal Node's for the same scenario, and the raw
 * disks it converts must hash as qemu-img's conversions do.
 */

import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { hasTool, tempDir } from './helpers/tools.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DEMO = join(ROOT, 'fixtures/demo');
const tmp = tempDir();
afterAll(() => tmp.cleanup());

/** The demo images, and a zlib-compressed copy of the base (2 MiB clusters) made here by qemu-img. */
const fixturePath = (name: string) => (name === 'compressed.qcow2' ? tmp.path(name) : join(DEMO, name));

const PAGE = `<!doctype html>
<meta charset="utf-8">
<script type="module">
  const load = async (name) => new Uint8Array(await (await fetch('/fixtures/' + name)).arrayBuffer());
  let report;
  try {
    // Imported here, not statically: a module that fails to load is then reported too.
    const platter = await import('/dist/core.js');
    const { scenario } = await import('/scenario.mjs');
    report = { ok: true, result: await scenario(platter, load), nodeless: typeof process === 'undefined' && typeof Buffer === 'undefined' };
  } catch (error) {
    report = { ok: false, error: String(error && error.stack || error) };
  }
  await fetch('/result', { method: 'POST', body: JSON.stringify(report) });
</script>`;

const TYPES: Record<string, string> = { '.js': 'text/javascript', '.mjs': 'text/javascript' };

/** Serves the page, the built files, the scenario and the demo images; resolves with the page's report. */
function serve(): { server: Server; report: Promise<unknown>; url: Promise<string> } {
  let deliver!: (report: unknown) => void;
  const report = new Promise<unknown>((resolve) => (deliver = resolve));
  const server = createServer((request, response) => {
    const path = new URL(request.url ?? '/', 'http://localhost').pathname;
    if (request.method === 'POST' && path === '/result') {
      let body = '';
      request.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
      request.on('end', () => {
        response.end();
        deliver(JSON.parse(body));
      });
      return;
    }
    if (path === '/') {
      response.writeHead(200, { 'content-type': 'text/html' }).end(PAGE);
      return;
    }
    const file =
      path === '/scenario.mjs' ? join(ROOT, 'test/browser/scenario.mjs')
      : path.startsWith('/dist/') ? join(ROOT, normalize(path))
      : path.startsWith('/fixtures/') ? fixturePath(normalize(path.slice('/fixtures/'.length)))
      : undefined;
    try {
      if (file === undefined) throw new Error('not served');
      const body = readFileSync(file);
      response.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  const url = new Promise<string>((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`)));
  return { server, report, url };
}

/** Runs headless Chromium on `url` until `done` settles or the time-out (a hang) passes. */
async function inChromium(url: string, done: Promise<unknown>): Promise<unknown> {
  const browser = spawn(
    'chromium',
    ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', `--user-data-dir=${tmp.path('profile')}`, url],
    // Its own process group: Chromium's helper processes go with it.
    { stdio: 'ignore', detached: true },
  );
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([done, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('the page sent no report within 60 s')), 60_000)))]);
  } finally {
    clearTimeout(timer);
    await new Promise<void>((resolve) => {
      if (browser.exitCode !== null || browser.pid === undefined) return resolve();
      browser.once('exit', () => resolve());
      process.kill(-browser.pid, 'SIGKILL');
    });
  }
}

describe.skipIf(!hasTool('chromium') || !hasTool('qemu-img'))('platter/core in a browser', () => {
  it('opens, describes, maps, lists, converts and checks a qcow2 overlay with its backing file, and a compressed image, as in Node', async () => {
    expect(spawnSync('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', 'cluster_size=2M', join(DEMO, 'base.qcow2'), fixturePath('compressed.qcow2')]).status).toBe(0);
    const { server, report, url } = serve();
    try {
      const page = (await inChromium(await url, report)) as { ok: boolean; error?: string; result?: unknown; nodeless?: boolean };
      expect(page.error).toBeUndefined();
      expect(page.nodeless).toBe(true);

      const platter = await import(pathToFileURL(join(ROOT, 'dist/core.js')).href);
      const { scenario } = await import(pathToFileURL(join(ROOT, 'test/browser/scenario.mjs')).href);
      const inNode = await scenario(platter, async (name: string) => new Uint8Array(readFileSync(fixturePath(name))));
      expect(page.result).toEqual(inNode);

      const converted = tmp.path('qemu.raw');
      expect(spawnSync('qemu-img', ['convert', '-O', 'raw', join(DEMO, 'overlay.qcow2'), converted]).status).toBe(0);
      const expected = createHash('sha256').update(readFileSync(converted)).digest('hex');
      expect((page.result as { rawSha256: string }).rawSha256).toBe(expected);
      expect((page.result as { partitions: { partitions: unknown[] } }).partitions.partitions.length).toBeGreaterThan(0);
      // The compressed copy of the base reads as the base does (qemu-img's own conversion of the base).
      expect(spawnSync('qemu-img', ['convert', '-O', 'raw', join(DEMO, 'base.qcow2'), converted]).status).toBe(0);
      expect((page.result as { compressedSha256: string }).compressedSha256).toBe(createHash('sha256').update(readFileSync(converted)).digest('hex'));
    } finally {
      server.close();
    }
  }, 90_000);
});
