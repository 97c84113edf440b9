/**
 * `platter serve -A` (qemu:allocation-depth) checked against qemu-nbd -A:
 * nbdinfo --map of both, over chains of one to three layers, raw images,
 * zero and compressed clusters, extended L2 subclusters, odd sizes, a
 * backing file shorter than its overlay, snapshots and a partition window;
 * `-B` (qemu:dirty-bitmap:NAME) against qemu-nbd -B: bits read from the
 * file, live bits of a writable export, what is refused; and the contexts
 * both list.
 */

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CLI, haveServeTool, makeServeTempDir, runTool, startServe, stopAllServes } from './helpers/serve-tools.js';
import { listedContexts, viaPlatter, viaQemuNbd, type NbdinfoQuery } from './helpers/serve-meta.js';

const temp = makeServeTempDir();
const file = (name: string) => join(temp.dir, name);
let sockets = 0;
const nextSocket = () => file(`m${++sockets}.sock`);

afterEach(stopAllServes);
afterAll(() => temp.cleanup());

const tools = haveServeTool('qemu-img') && haveServeTool('qemu-io') && haveServeTool('qemu-nbd') && haveServeTool('nbdinfo');

const qemuIo = (format: string, image: string, ...commands: string[]) =>
  runTool('qemu-io', ['-f', format, file(image), ...commands.flatMap((command) => ['-c', command])]);
const create = (format: string, image: string, size: string, ...options: string[]) =>
  runTool('qemu-img', ['create', '-q', '-f', format, ...options, file(image), size]);

/** Both servers' answers to one query, with the same export options. */
async function both(image: string, args: string[], query: NbdinfoQuery, qemuArgs = args) {
  return {
    platter: await viaPlatter(file(image), nextSocket(), args, query),
    qemu: await viaQemuNbd(file(image), nextSocket(), ['-r', ...qemuArgs], query),
  };
}

/** nbdinfo --map lines as [start, length, value]. */
function depthRuns(map: string): [number, number, number][] {
  return map.trim().split('\n').map((line) => line.trim().split(/\s+/).slice(0, 3).map(Number) as [number, number, number]);
}

/** The runs over [from, to), shifted to start at 0. */
function clipRuns(runs: [number, number, number][], from: number, to: number): [number, number, number][] {
  return runs.flatMap(([start, length, value]) => {
    const first = Math.max(start, from);
    const last = Math.min(start + length, to);
    return last > first ? [[first - from, last - first, value] as [number, number, number]] : [];
  });
}

describe.runIf(tools)('serve -A: qemu:allocation-depth as qemu-nbd -A exports it', () => {
  beforeAll(() => {
    create('qcow2', 'base.qcow2', '8M');
    qemuIo('qcow2', 'base.qcow2', 'write -P 0x11 0 2M', 'write -z 3M 512k', 'write -P 0x12 6M 1M');
    create('qcow2', 'mid.qcow2', '8M', '-b', 'base.qcow2', '-F', 'qcow2');
    qemuIo('qcow2', 'mid.qcow2', 'write -P 0x21 1M 512k', 'write -z 6M 256k', 'write -P 0x22 7M 64k');
    create('qcow2', 'top.qcow2', '8M', '-b', 'mid.qcow2', '-F', 'qcow2');
    qemuIo('qcow2', 'top.qcow2', 'write -P 0x31 1536k 64k', 'write -z 0 64k', 'write -P 0x32 5M 100k');
    // A backing file shorter than its overlay: qemu counts the tail as held by the backing file.
    create('qcow2', 'short.qcow2', '3M');
    qemuIo('qcow2', 'short.qcow2', 'write -P 0x41 0 64k');
    create('qcow2', 'long.qcow2', '6M', '-b', 'short.qcow2', '-F', 'qcow2');
    qemuIo('qcow2', 'long.qcow2', 'write -P 0x42 4M 64k');
    create('raw', 'odd.raw', '1000000');
    qemuIo('raw', 'odd.raw', 'write -P 0x51 4096 8192');
    runTool('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', file('odd.raw'), file('compressed.qcow2')]);
    create('qcow2', 'odd.qcow2', '1000000');
    qemuIo('qcow2', 'odd.qcow2', 'write -P 0x52 950272 4096');
    create('qcow2', 'sub.qcow2', '4M', '-o', 'extended_l2=on,cluster_size=64k', '-b', 'base.qcow2', '-F', 'qcow2');
    qemuIo('qcow2', 'sub.qcow2', 'write -P 0x61 8k 4k', 'write -z 40k 8k', 'write -P 0x62 3M 2k');
    create('qcow2', 'snap.qcow2', '4M', '-b', 'base.qcow2', '-F', 'qcow2');
    qemuIo('qcow2', 'snap.qcow2', 'write -P 0x71 1M 1M');
    runTool('qemu-img', ['snapshot', '-c', 'before', file('snap.qcow2')]);
    qemuIo('qcow2', 'snap.qcow2', 'write -P 0x72 2M 1M', 'write -z 1M 64k');
  });

  for (const image of ['base.qcow2', 'mid.qcow2', 'top.qcow2', 'long.qcow2', 'odd.raw', 'compressed.qcow2', 'odd.qcow2', 'sub.qcow2', 'snap.qcow2']) {
    it(`maps ${image} as qemu-nbd -A does`, async () => {
      const { platter, qemu } = await both(image, ['-A'], { map: 'qemu:allocation-depth' });
      expect(platter).toBe(qemu);
      expect(platter.trim().split('\n').length).toBeGreaterThan(0);
    });
  }

  it('maps every layer of a three-layer chain to its depth', async () => {
    const { platter } = await both('top.qcow2', ['-A'], { map: 'qemu:allocation-depth' });
    const depths = new Set(platter.trim().split('\n').map((line) => Number(line.trim().split(/\s+/)[2])));
    expect([...depths].sort()).toEqual([0, 1, 2, 3]);
  });

  it('maps an internal snapshot as qemu-nbd -l -A does', async () => {
    const { platter, qemu } = await both('snap.qcow2', ['-A', '-l', 'before'], { map: 'qemu:allocation-depth' });
    expect(platter).toBe(qemu);
  });

  // Not against qemu-nbd -o: its offset node stands above the chain, and qemu then reports the top image's allocation alone.
  it.runIf(haveServeTool('sfdisk'))("maps a partition as qemu-nbd -A maps that range of the whole disk", async () => {
    runTool('qemu-img', ['convert', '-f', 'qcow2', '-O', 'qcow2', '-B', 'base.qcow2', '-F', 'qcow2', file('top.qcow2'), file('parted.qcow2')]);
    runTool('qemu-img', ['create', '-q', '-f', 'raw', file('table.raw'), '8M']);
    const made = spawnSync('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', file('table.raw')], { input: 'label: dos\nstart=2048, type=83\n', encoding: 'utf8' });
    expect(made.status).toBe(0);
    // The table's sector goes into the overlay: a partition to the disk's end, over the chain.
    const mbr = spawnSync('sh', ['-c', `dd if=${file('table.raw')} bs=512 count=1 status=none | qemu-io -f qcow2 ${file('parted.qcow2')} -c 'write -s /dev/stdin 0 512'`], { encoding: 'utf8' });
    expect(mbr.status).toBe(0);
    const partition = await viaPlatter(file('parted.qcow2'), nextSocket(), ['-A', '-P', '1'], { map: 'qemu:allocation-depth' });
    const whole = await viaQemuNbd(file('parted.qcow2'), nextSocket(), ['-r', '-A'], { map: 'qemu:allocation-depth' });
    expect(depthRuns(partition)).toEqual(clipRuns(depthRuns(whole), 1024 * 1024, 8 * 1024 * 1024));
  });

  it('lists qemu:allocation-depth beside base:allocation, as qemu-nbd -A does', async () => {
    const { platter, qemu } = await both('top.qcow2', ['-A'], { json: true });
    expect(listedContexts(platter)).toEqual(listedContexts(qemu));
    expect(listedContexts(platter)).toEqual(['base:allocation', 'qemu:allocation-depth']);
    // Without -A neither offers it.
    const plain = await both('top.qcow2', [], { json: true });
    expect(listedContexts(plain.platter)).toEqual(['base:allocation']);
    expect(listedContexts(plain.qemu)).toEqual(['base:allocation']);
  });

  it('keeps base:allocation as it was with -A', async () => {
    const { platter, qemu } = await both('top.qcow2', ['-A'], { map: 'base:allocation' });
    expect(platter).toBe(qemu);
  });
});

/** Sets the in-use flag of the first bitmap in the directory of `image`: what a writer that crashed leaves. */
function markFirstBitmapInUse(image: string): void {
  const bytes = readFileSync(image);
  let at = bytes.readUInt32BE(100);
  for (;;) {
    const type = bytes.readUInt32BE(at);
    const length = bytes.readUInt32BE(at + 4);
    if (type === 0) throw new Error('no bitmaps extension');
    if (type === 0x23852875) break;
    at += 8 + Math.ceil(length / 8) * 8;
  }
  const directory = Number(bytes.readBigUInt64BE(at + 24));
  bytes.writeUInt32BE(bytes.readUInt32BE(directory + 12) | 1, directory + 12);
  writeFileSync(image, bytes);
}

describe.runIf(tools)('serve -B: qemu:dirty-bitmap:NAME as qemu-nbd -B exports it', () => {
  beforeAll(() => {
    create('qcow2', 'bm.qcow2', '8M');
    runTool('qemu-img', ['bitmap', '--add', file('bm.qcow2'), 'b1']);
    runTool('qemu-img', ['bitmap', '--add', '-g', '128k', file('bm.qcow2'), 'b2']);
    qemuIo('qcow2', 'bm.qcow2', 'write -P 1 100k 300k', 'write -P 2 5M 4k');
    runTool('qemu-img', ['bitmap', '--disable', file('bm.qcow2'), 'b2']);
    qemuIo('qcow2', 'bm.qcow2', 'write -P 3 7M 4k', 'write -z 8000k 192k');
    // A large disk: a query reads only the table entries and bits it is about.
    create('qcow2', 'big.qcow2', '1T');
    runTool('qemu-img', ['bitmap', '--add', '-g', '64k', file('big.qcow2'), 'far']);
    qemuIo('qcow2', 'big.qcow2', 'write -P 4 1M 64k', 'write -P 5 900G 1M', 'write -P 6 1099511562240 512');
    // A bitmap in the backing file, found through the overlay, as qemu-nbd finds it.
    create('qcow2', 'over.qcow2', '8M', '-b', 'bm.qcow2', '-F', 'qcow2');
    qemuIo('qcow2', 'over.qcow2', 'write -P 7 2M 64k');
    create('raw', 'plain.raw', '1M');
  });

  for (const [image, name] of [['bm.qcow2', 'b1'], ['bm.qcow2', 'b2'], ['big.qcow2', 'far'], ['over.qcow2', 'b1']] as const) {
    it(`maps bitmap ${name} of ${image} as qemu-nbd does`, async () => {
      const { platter, qemu } = await both(image, ['-B', name], { map: `qemu:dirty-bitmap:${name}` });
      expect(platter).toBe(qemu);
      expect(platter).toMatch(/\sdirty$/m);
    });
  }

  it('lists the bitmaps after qemu:allocation-depth, the last -B first, as qemu-nbd does', async () => {
    const { platter, qemu } = await both('bm.qcow2', ['-A', '-B', 'b2', '-B', 'b1'], { json: true });
    expect(listedContexts(platter)).toEqual(listedContexts(qemu));
    expect(listedContexts(platter)).toEqual(['base:allocation', 'qemu:allocation-depth', 'qemu:dirty-bitmap:b1', 'qemu:dirty-bitmap:b2']);
    const second = await both('bm.qcow2', ['-A', '-B', 'b2', '-B', 'b1'], { map: 'qemu:dirty-bitmap:b2' });
    expect(second.platter).toBe(second.qemu);
  });

  it('refuses what qemu-nbd refuses, with its words and exit status 1', () => {
    const inUse = file('in-use.qcow2');
    writeFileSync(inUse, readFileSync(file('bm.qcow2')));
    markFirstBitmapInUse(inUse);
    for (const [image, name, message] of [
      ['bm.qcow2', 'nope', "Bitmap 'nope' is not found"],
      ['plain.raw', 'b1', "Bitmap 'b1' is not found"],
      ['in-use.qcow2', 'b1', "Bitmap 'b1' is inconsistent and cannot be used"],
    ] as const) {
      const qemu = spawnSync('qemu-nbd', ['-r', '-k', nextSocket(), '-B', name, file(image)], { encoding: 'utf8', timeout: 20_000 });
      expect(qemu.status, image).toBe(1);
      expect(qemu.stderr).toContain(message);
      const platter = spawnSync(process.execPath, [CLI, 'serve', '-k', nextSocket(), '-B', name, file(image)], { encoding: 'utf8', timeout: 20_000 });
      expect(platter.status, image).toBe(1);
      expect(platter.stderr).toBe(`platter: ${file(image)}: ${message}\n`);
    }
  });

  it('shows writes to a writable export in its enabled bitmaps at once, as qemu-nbd does', async () => {
    const maps: Record<string, string[]> = {};
    for (const server of ['qemu', 'platter']) {
      const image = file(`live-${server}.qcow2`);
      writeFileSync(image, readFileSync(file('bm.qcow2')));
      const socket = nextSocket();
      const args = ['-B', 'b1', '-B', 'b2'];
      const uri = `nbd+unix:///?socket=${socket}`;
      if (server === 'qemu') {
        const child = spawn('qemu-nbd', ['-t', '-k', socket, ...args, image], { stdio: 'ignore' });
        while (!existsSync(socket)) await new Promise((resolve) => setTimeout(resolve, 50));
        runTool('qemu-io', ['-f', 'raw', uri, '-c', 'write -P 9 3M 4k', '-c', 'write -z 6000k 100k']);
        maps[server] = ['b1', 'b2'].map((name) => runTool('nbdinfo', [`--map=qemu:dirty-bitmap:${name}`, uri]));
        child.kill();
        await new Promise((resolve) => child.on('exit', resolve));
      } else {
        const served = await startServe(image, socket, ['-t', '-w', ...args]);
        runTool('qemu-io', ['-f', 'raw', uri, '-c', 'write -P 9 3M 4k', '-c', 'write -z 6000k 100k']);
        maps[server] = ['b1', 'b2'].map((name) => runTool('nbdinfo', [`--map=qemu:dirty-bitmap:${name}`, uri]));
        await served.stop();
      }
    }
    expect(maps.platter).toEqual(maps.qemu);
    expect(maps.platter![0]).toMatch(/^\s+3145728\s+65536\s+1\s+dirty$/m);
    // Stored on close, the bitmap keeps them, and qemu reads the same bits from the file.
    const stored = await viaQemuNbd(file('live-platter.qcow2'), nextSocket(), ['-r', '-B', 'b1'], { map: 'qemu:dirty-bitmap:b1' });
    expect(stored).toBe(maps.qemu![0]);
  });
});
