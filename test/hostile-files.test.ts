/**
 * Files that are not image files, named on the command line: a FIFO or a socket
 * must be refused at once (a blocking open would hang forever), with one line.
 */

import { execFileSync } from 'node:child_process';
import { createServer } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { runCliMeasured, MAX_CASE_MS } from './helpers/hostile-child.js';
import { tempDir } from './helpers/tools.js';

const tmp = tempDir('platter-hostile-files-');
afterAll(() => tmp.cleanup());

describe('special files named on the command line', () => {
  it('a FIFO is refused without blocking', async () => {
    const fifo = tmp.path('pipe');
    execFileSync('mkfifo', [fifo]);
    const run = await runCliMeasured(['info', fifo]);
    expect(run.status).toBe(1);
    expect(run.stderr.trimEnd()).toBe(`platter: ${fifo}: is a FIFO or socket, not an image file`);
    expect(run.ms).toBeLessThan(MAX_CASE_MS * 2);
  });

  it('a Unix socket is refused', async () => {
    const path = tmp.path('sock');
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(path, resolve));
    try {
      const run = await runCliMeasured(['info', '--output=json', path]);
      expect(run.status).toBe(1);
      expect(JSON.parse(run.stdout).error.code).toBe('EIO');
      // Linux refuses to open a socket (ENXIO); elsewhere the open succeeds and the type check refuses it.
      expect(run.stderr).toMatch(/: (Could not open: No such device or address|is a FIFO or socket, not an image file)$/m);
    } finally {
      server.close();
    }
  });
});
