/**
 * `platter serve` with real NBD clients: qemu-img, qemu-io, nbdinfo and nbdcopy
 * against the built CLI on a unix socket.
 */

import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openImageFile } from '../src/node/open.js';
import type { Extent } from '../src/core/image.js';
import { CLI, exitWithin, haveServeTool, makeServeTempDir, runTool, startServe, stopAllServes } from './helpers/serve-tools.js';
import { patternBytes } from './helpers/serve-images.js';
import { spawn, spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { connectUnix, TestNbdClient } from './helpers/serve-nbd-client.js';

const MiB = 1024 * 1024;
const temp = makeServeTempDir();
let socketCount = 0;
const nextSocket = () => join(temp.dir, `s${++socketCount}.sock`);

/** A raw image with data in a few places and zeros elsewhere. */
function makeRawImage(name: string, size = 8 * MiB): string {
  const path = join(temp.dir, name);
  const bytes = new Uint8Array(size);
  bytes.set(patternBytes(64 * 1024, 5), 0);
  bytes.set(patternBytes(300_000, 9), 3 * MiB + 123);
  bytes.set(patternBytes(4096, 11), size - 4096);
  writeFileSync(path, bytes);
  return path;
}

/** Platter's own block status of a whole image, for comparison with what clients see. */
async function platterExtents(path: string): Promise<Extent[]> {
  const image = await openImageFile(path);
  try {
    return await image.blockStatus(0, image.size);
  } finally {
    await image.close();
  }
}

/** Extents as (start, length, data) runs with neighbours of the same kind merged. */
function mergedRuns(runs: { start: number; length: number; data: boolean }[]): string[] {
  const merged: { start: number; length: number; data: boolean }[] = [];
  for (const run of runs) {
    const last = merged[merged.length - 1];
    if (last && last.data === run.data && last.start + last.length === run.start) last.length += run.length;
    else merged.push({ ...run });
  }
  return merged.map((run) => `${run.start}+${run.length}:${run.data ? 'data' : 'zero'}`);
}

beforeAll(() => {
  expect(existsSync(CLI)).toBe(true);
});
afterEach(stopAllServes);
afterAll(() => temp.cleanup());

describe.runIf(haveServeTool('qemu-img'))('qemu-img as the client', () => {
  it('converts the export to the same bytes, and the server leaves after its client', async () => {
    const image = makeRawImage('convert.raw');
    const served = await startServe(image, nextSocket());
    const out = join(temp.dir, 'convert-out.raw');
    runTool('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', served.uri, out]);
    expect(Buffer.compare(readFileSync(out), readFileSync(image))).toBe(0);
    expect(await exitWithin(served, 10_000)).toBe(0);
    expect(existsSync(served.socket)).toBe(false);
  });

  it('maps the export as platter sees the image', async () => {
    const image = makeRawImage('map.raw');
    const served = await startServe(image, nextSocket());
    const map = JSON.parse(runTool('qemu-img', ['map', '--output=json', '-f', 'raw', served.uri])) as {
      start: number;
      length: number;
      data: boolean;
      zero: boolean;
    }[];
    const expected = (await platterExtents(image)).map((extent) => ({ ...extent, data: extent.kind === 'data' }));
    expect(mergedRuns(map)).toEqual(mergedRuns(expected));
    for (const entry of map) expect(entry.zero).toBe(!entry.data);
    // A fully allocated raw file: qemu-img maps the file itself the same way.
    const dense = join(temp.dir, 'dense.raw');
    writeFileSync(dense, patternBytes(2 * MiB, 3));
    const denseServed = await startServe(dense, nextSocket());
    const viaNbd = JSON.parse(runTool('qemu-img', ['map', '--output=json', '-f', 'raw', denseServed.uri]));
    const direct = JSON.parse(runTool('qemu-img', ['map', '--output=json', '-f', 'raw', dense]));
    expect(mergedRuns(viaNbd)).toEqual(mergedRuns(direct));
  });
});

describe.runIf(haveServeTool('qemu-io'))('qemu-io as the client', () => {
  it('writes through a --writable export into the image', async () => {
    const image = makeRawImage('write.raw');
    const before = readFileSync(image);
    const served = await startServe(image, nextSocket(), ['--writable']);
    runTool('qemu-io', ['-f', 'raw', served.uri, '-c', 'write -P 0x5a 1M 64k']);
    expect(await exitWithin(served, 10_000)).toBe(0);
    const after = readFileSync(image);
    expect(after.subarray(MiB, MiB + 65536).every((byte) => byte === 0x5a)).toBe(true);
    expect(Buffer.compare(after.subarray(0, MiB), before.subarray(0, MiB))).toBe(0);
    expect(Buffer.compare(after.subarray(MiB + 65536), before.subarray(MiB + 65536))).toBe(0);
  });

  it('refuses writes on a read-only export and leaves the image alone', async () => {
    const image = makeRawImage('readonly.raw');
    const before = readFileSync(image);
    const served = await startServe(image, nextSocket());
    const result = spawnSync('qemu-io', ['-f', 'raw', served.uri, '-c', 'write -P 0x5a 0 4k'], { encoding: 'utf8', timeout: 30_000 });
    expect(`${result.stdout}${result.stderr}`).toMatch(/Permission denied|read-only|Operation not permitted/i);
    await served.stop();
    expect(Buffer.compare(readFileSync(image), before)).toBe(0);
  });
});

describe.runIf(haveServeTool('nbdinfo'))('nbdinfo as the client', () => {
  it('shows base:allocation matching the image block status', async () => {
    const image = makeRawImage('nbdinfo.raw');
    const served = await startServe(image, nextSocket());
    const lines = runTool('nbdinfo', ['--map', served.uri]).trim().split('\n');
    const runs = lines.map((line) => {
      const [start, length, flags] = line.trim().split(/\s+/).map(Number) as [number, number, number];
      return { start, length, data: (flags & 1) === 0 };
    });
    const expected = (await platterExtents(image)).map((extent) => ({ ...extent, data: extent.kind === 'data' }));
    expect(mergedRuns(runs)).toEqual(mergedRuns(expected));
  });

  it('lists the export by name and size', async () => {
    const image = makeRawImage('named.raw', 4 * MiB);
    const served = await startServe(image, nextSocket(), ['--export-name', 'disk0']);
    expect(served.uri).toMatch(/\/disk0\?socket=/);
    const info = JSON.parse(runTool('nbdinfo', ['--json', served.uri])) as { exports: { 'export-name': string; 'export-size': number; is_read_only: boolean }[] };
    expect(info.exports[0]).toMatchObject({ 'export-name': 'disk0', 'export-size': 4 * MiB, is_read_only: true });
  });

  it('sees multi-conn offered with --shared above 1 (as qemu-nbd -e offers it), and not with one client', async () => {
    const image = makeRawImage('shared.raw', 4 * MiB);
    for (const [shared, status] of [[1, 2], [3, 0]] as const) {
      const served = await startServe(image, nextSocket(), ['--writable', '--shared', String(shared)]);
      // nbdinfo --can exits 0 when the server offers the feature, 2 when it does not.
      expect(spawnSync('nbdinfo', ['--can', 'multi-conn', served.uri]).status, `--shared ${shared}`).toBe(status);
      await served.stop();
    }
  });
});

describe.runIf(haveServeTool('nbdcopy'))('nbdcopy as the client', () => {
  it('copies a raw file into a --writable export', async () => {
    const target = makeRawImage('copy-target.raw');
    const source = join(temp.dir, 'copy-source.raw');
    const bytes = new Uint8Array(8 * MiB);
    bytes.set(patternBytes(2 * MiB, 13), MiB);
    bytes.set(patternBytes(5000, 17), 6 * MiB + 1);
    writeFileSync(source, bytes);
    const served = await startServe(target, nextSocket(), ['--writable']);
    runTool('nbdcopy', [source, served.uri]);
    expect(await exitWithin(served, 10_000)).toBe(0);
    expect(Buffer.compare(readFileSync(target), readFileSync(source))).toBe(0);
  });
});

describe.runIf(haveServeTool('qemu-img'))('listening', () => {
  it('serves over TCP on 127.0.0.1 with --port', async () => {
    const image = makeRawImage('tcp.raw', 4 * MiB);
    const served = await startServe(image, null, ['--port', '0']);
    expect(served.uri).toMatch(/^nbd:\/\/127\.0\.0\.1:[1-9][0-9]*\/$/);
    const out = join(temp.dir, 'tcp-out.raw');
    runTool('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', served.uri, out]);
    expect(Buffer.compare(readFileSync(out), readFileSync(image))).toBe(0);
    expect(await exitWithin(served, 10_000)).toBe(0);
  });

  it('listens on a per-process socket in the temp directory by default', async () => {
    const image = makeRawImage('default.raw', 4 * MiB);
    const served = await startServe(image, null);
    expect(served.socket).toBe(join(tmpdir(), `platter-nbd-${served.process.pid}.sock`));
    expect(served.uri).toBe(`nbd+unix:///?socket=${served.socket}`);
    runTool('qemu-img', ['info', '-f', 'raw', served.uri]);
    expect(await exitWithin(served, 10_000)).toBe(0);
    expect(existsSync(served.socket)).toBe(false);
  });

  it('replaces a stale socket file left by a killed server, but not a live one', async () => {
    const image = makeRawImage('stale.raw', 4 * MiB);
    const socket = nextSocket();
    // A process that listens and dies without cleaning up leaves the socket file behind.
    spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(socket)}, () => process.exit(0))`]);
    expect(existsSync(socket)).toBe(true);
    const served = await startServe(image, socket, ['--persistent']);
    runTool('qemu-img', ['info', '-f', 'raw', served.uri]);
    const second = spawnSync(process.execPath, [CLI, 'serve', '-k', socket, image], { encoding: 'utf8', timeout: 20_000 });
    expect(second.status).toBe(1);
    expect(second.stderr).toMatch(/cannot listen on .*: address already in use/);
    expect(served.process.exitCode).toBeNull();
  });

  it('a second serve on the socket of a live one-client server leaves that server serving', async () => {
    // The check must not connect: a probe connection would be the server's one client, and end it.
    const image = makeRawImage('live.raw', 4 * MiB);
    const served = await startServe(image, nextSocket());
    const second = spawnSync(process.execPath, [CLI, 'serve', '-k', served.socket, image], { encoding: 'utf8', timeout: 20_000 });
    expect(second.status).toBe(1);
    expect(second.stderr).toMatch(/address already in use/);
    expect(served.process.exitCode).toBeNull();
    expect(runTool('qemu-img', ['info', '-f', 'raw', served.uri])).toMatch(/virtual size: 4 MiB/);
    expect(await exitWithin(served, 10_000)).toBe(0);
  });

  it.runIf(haveServeTool('qemu-io'))('flushes writes and exits 0 on SIGINT', async () => {
    const image = makeRawImage('sigint.raw', 4 * MiB);
    const served = await startServe(image, nextSocket(), ['--writable', '--persistent']);
    runTool('qemu-io', ['-f', 'raw', served.uri, '-c', 'write -P 0x3c 2M 4k']);
    served.process.kill('SIGINT');
    expect(await exitWithin(served, 10_000)).toBe(0);
    expect(readFileSync(image).subarray(2 * MiB, 2 * MiB + 4096).every((byte) => byte === 0x3c)).toBe(true);
  });

  it.runIf(haveServeTool('qemu-io') && haveServeTool('qemu-nbd'))('stops cleanly on SIGHUP, as qemu-nbd does: exit status 0, writes flushed, socket removed', async () => {
    const outcomes = [];
    for (const server of ['platter', 'qemu-nbd']) {
      const image = makeRawImage(`sighup-${server}.raw`, 4 * MiB);
      const socket = nextSocket();
      let exited: Promise<number | null>;
      let kill: () => void;
      if (server === 'platter') {
        const served = await startServe(image, socket, ['--writable', '--persistent']);
        exited = served.exited;
        kill = () => served.process.kill('SIGHUP');
      } else {
        const child = spawn('qemu-nbd', ['-t', '-f', 'raw', '-k', socket, image], { stdio: 'ignore' });
        exited = new Promise((done) => child.on('exit', (code) => done(code)));
        for (let waited = 0; !existsSync(socket) && waited < 10_000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
        kill = () => child.kill('SIGHUP');
      }
      runTool('qemu-io', ['-f', 'raw', `nbd+unix:///?socket=${socket}`, '-c', 'write -P 0x3d 1M 4k']);
      kill();
      const code = await exited;
      const flushed = readFileSync(image).subarray(MiB, MiB + 4096).every((byte) => byte === 0x3d);
      outcomes.push({ server, code, flushed, socketLeft: existsSync(socket) });
    }
    expect(outcomes[0]).toEqual({ server: 'platter', code: 0, flushed: true, socketLeft: false });
    expect({ ...outcomes[0], server: 'qemu-nbd' }).toEqual(outcomes[1]);
  });

  it('makes a second client wait for the slot of the first (--shared 1)', async () => {
    const image = makeRawImage('queue.raw', 4 * MiB);
    const served = await startServe(image, nextSocket(), ['--persistent']);
    const first = await connectUnix(served.socket);
    const firstClient = new TestNbdClient(first);
    await firstClient.connect();
    const second = new TestNbdClient(await connectUnix(served.socket));
    let greeted = false;
    const secondGreeting = second.greet().then(() => (greeted = true));
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(greeted).toBe(false);
    first.close();
    await secondGreeting;
    expect(greeted).toBe(true);
    second.io.close();
  });
});

describe('the serve command', () => {
  it('keeps serving with --persistent and stops cleanly on SIGTERM', async () => {
    const image = makeRawImage('persistent.raw', 4 * MiB);
    const served = await startServe(image, nextSocket(), ['--persistent']);
    if (haveServeTool('qemu-img')) {
      runTool('qemu-img', ['info', '-f', 'raw', served.uri]);
      runTool('qemu-img', ['info', '-f', 'raw', served.uri]);
    }
    expect(served.process.exitCode).toBeNull();
    expect(await served.stop()).toBe(0);
    expect(existsSync(served.socket)).toBe(false);
  });

  it('gives clear errors for what it cannot serve yet', () => {
    const image = makeRawImage('errors.raw', 4 * MiB);
    const run = (args: string[]) => spawnSync(process.execPath, [CLI, 'serve', '-k', nextSocket(), ...args, image], { encoding: 'utf8', timeout: 20_000 });
    const snapshot = run(['--snapshot', 'snap1']);
    expect(snapshot.status).toBe(1);
    expect(snapshot.stderr).toMatch(/raw images have no internal snapshots/);
    const both = run(['--port', '10809']);
    expect(both.status).toBe(1);
    expect(both.stderr).toMatch(/--socket and --port cannot be used together/);
  });
});
