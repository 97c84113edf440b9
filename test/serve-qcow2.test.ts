/**
 * `platter serve` of qcow2 images (backing chain, zero and compressed clusters,
 * internal snapshots), checked against qemu-img reading the same images.
 */

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CLI, exitWithin, haveServeTool, makeServeTempDir, runTool, startServe, stopAllServes } from './helpers/serve-tools.js';

const temp = makeServeTempDir();
const file = (name: string) => join(temp.dir, name);
let sockets = 0;
const nextSocket = () => file(`q${++sockets}.sock`);

afterEach(stopAllServes);
afterAll(() => temp.cleanup());

interface MapEntry {
  start: number;
  length: number;
  data: boolean;
  zero: boolean;
  offset?: number;
}

/** Map entries as merged (start, length, data, zero) runs: what survives NBD (depth and offsets do not). */
function allocation(entries: MapEntry[]): string[] {
  const merged: MapEntry[] = [];
  for (const entry of entries) {
    const last = merged[merged.length - 1];
    if (last && last.data === entry.data && last.zero === entry.zero && last.start + last.length === entry.start) last.length += entry.length;
    else merged.push({ start: entry.start, length: entry.length, data: entry.data, zero: entry.zero });
  }
  return merged.map((entry) => `${entry.start}+${entry.length}:${entry.data ? 'data' : '-'}${entry.zero ? ',zero' : ''}`);
}

/** qemu-img map's entries, each saying whether it has a host offset (not which): what this image stores, and where it keeps a cluster. */
function hostMap(image: string) {
  return (JSON.parse(runTool('qemu-img', ['map', '--output=json', '-f', 'qcow2', image])) as MapEntry[]).map((entry) => ({ ...entry, offset: entry.offset !== undefined }));
}

const qemu = haveServeTool('qemu-img') && haveServeTool('qemu-io');

describe.runIf(qemu)('serving qcow2', () => {
  beforeAll(() => {
    // A qcow2 base, not raw: platter's raw block status cannot see a file's holes, qemu's can.
    runTool('qemu-img', ['create', '-q', '-f', 'qcow2', file('base.qcow2'), '8M']);
    runTool('qemu-io', ['-f', 'qcow2', file('base.qcow2'), '-c', 'write -P 0x11 0 2M', '-c', 'write -P 0x12 6M 1M']);
    runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', file('top.qcow2'), '8M']);
    runTool('qemu-io', ['-f', 'qcow2', file('top.qcow2'), '-c', 'write -P 0x22 1M 512k', '-c', 'write -z 3M 1M', '-c', 'write -z 6M 256k', '-c', 'write -P 0x33 5M 64k']);
    runTool('qemu-img', ['snapshot', '-c', 'snap1', file('top.qcow2')]);
    runTool('qemu-io', ['-f', 'qcow2', file('top.qcow2'), '-c', 'write -P 0x44 5M 64k', '-c', 'write -P 0x55 7M 100k']);
    runTool('qemu-img', ['create', '-q', '-f', 'raw', file('plain.raw'), '4M']);
    runTool('qemu-io', ['-f', 'raw', file('plain.raw'), '-c', 'write -P 0x66 64k 1M', '-c', 'write -P 0x67 3M 4k']);
    runTool('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', file('plain.raw'), file('compressed.qcow2')]);
  });

  for (const name of ['top.qcow2', 'compressed.qcow2']) {
    it(`serves ${name} with the bytes qemu-img reads from it`, async () => {
      const served = await startServe(file(name), nextSocket());
      runTool('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', served.uri, file(`${name}.via-nbd`)]);
      await exitWithin(served, 10_000);
      runTool('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', file(name), file(`${name}.direct`)]);
      expect(Buffer.compare(readFileSync(file(`${name}.via-nbd`)), readFileSync(file(`${name}.direct`)))).toBe(0);
    });

    it(`maps ${name} over NBD as qemu-img maps the file`, async () => {
      const served = await startServe(file(name), nextSocket());
      const viaNbd = JSON.parse(runTool('qemu-img', ['map', '--output=json', '-f', 'raw', served.uri])) as MapEntry[];
      const direct = JSON.parse(runTool('qemu-img', ['map', '--output=json', '-f', 'qcow2', file(name)])) as MapEntry[];
      expect(allocation(viaNbd)).toEqual(allocation(direct));
      expect(viaNbd.some((entry) => !entry.data)).toBe(true);
    });
  }

  it.runIf(haveServeTool('nbdinfo'))('shows base:allocation of a qcow2 chain in nbdinfo --map', async () => {
    const served = await startServe(file('top.qcow2'), nextSocket());
    const lines = runTool('nbdinfo', ['--map', served.uri]).trim().split('\n');
    const viaNbd = lines.map((line) => {
      const [start, length, flags] = line.trim().split(/\s+/).map(Number) as [number, number, number];
      return { start, length, data: (flags & 1) === 0, zero: (flags & 2) !== 0 };
    });
    const direct = JSON.parse(runTool('qemu-img', ['map', '--output=json', '-f', 'qcow2', file('top.qcow2')])) as MapEntry[];
    expect(allocation(viaNbd)).toEqual(allocation(direct));
  });

  it('serves an internal snapshot with --snapshot', async () => {
    const served = await startServe(file('top.qcow2'), nextSocket(), ['--snapshot', 'snap1']);
    runTool('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', served.uri, file('snap.via-nbd')]);
    await exitWithin(served, 10_000);
    runTool('qemu-img', ['convert', '-f', 'qcow2', '-l', 'snapshot.name=snap1', '-O', 'raw', file('top.qcow2'), file('snap.direct')]);
    const viaNbd = readFileSync(file('snap.via-nbd'));
    expect(Buffer.compare(viaNbd, readFileSync(file('snap.direct')))).toBe(0);
    // The snapshot predates the 0x44 write.
    expect(viaNbd[5 * 1024 * 1024]).toBe(0x33);
    // qemu-nbd's -l takes qemu's snapshot parameter too.
    for (const spec of ['snapshot.name=snap1', 'snapshot.id=1', 'snapshot.id=1,snapshot.name=snap1']) {
      const byParam = await startServe(file('top.qcow2'), nextSocket(), ['-l', spec]);
      runTool('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', byParam.uri, file('snap.by-param')]);
      await exitWithin(byParam, 10_000);
      expect(Buffer.compare(readFileSync(file('snap.by-param')), viaNbd), spec).toBe(0);
    }
  });

  it.runIf(haveServeTool('sfdisk'))('serves one partition of a qcow2 virtual disk', async () => {
    runTool('qemu-img', ['create', '-q', '-f', 'raw', file('parted.raw'), '32M']);
    const made = spawnSync('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', file('parted.raw')], {
      input: 'label: gpt\nstart=2048, size=8192, name=boot\nstart=10240, size=20480, name=root\n',
      encoding: 'utf8',
    });
    expect(made.status).toBe(0);
    runTool('qemu-io', ['-f', 'raw', file('parted.raw'), '-c', `write -P 0x71 ${10240 * 512} 3M`, '-c', `write -P 0x72 ${10240 * 512 + 9 * 1024 * 1024} 5k`]);
    runTool('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', file('parted.raw'), file('parted.qcow2')]);
    const served = await startServe(file('parted.qcow2'), nextSocket(), ['--partition', 'PARTLABEL=root']);
    runTool('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', served.uri, file('root.via-nbd')]);
    await exitWithin(served, 10_000);
    const root = readFileSync(file('parted.raw')).subarray(10240 * 512, (10240 + 20480) * 512);
    expect(Buffer.compare(readFileSync(file('root.via-nbd')), root)).toBe(0);
  });

  it('refuses a missing snapshot with a clear error', () => {
    const missing = spawnSync(process.execPath, [CLI, 'serve', '-k', nextSocket(), '--snapshot', 'nope', file('top.qcow2')], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/^platter: .*top\.qcow2: no snapshot 'nope'/m);
  });

  it.runIf(haveServeTool('nbdcopy'))('nbdcopy and qemu-io write into a --writable qcow2 export; qemu-img check finds it clean', async () => {
    const MiB = 1024 * 1024;
    const source = file('copy-source.raw');
    const bytes = new Uint8Array(16 * MiB);
    for (let i = 0; i < 3 * MiB; i++) bytes[2 * MiB + i] = (i * 7 + 3) & 0xff;
    bytes.fill(0x33, 9 * MiB + 512, 9 * MiB + 5000);
    writeFileSync(source, bytes);
    const target = file('copy-target.qcow2');
    runTool('qemu-img', ['create', '-q', '-f', 'qcow2', target, '16M']);
    const copied = await startServe(target, nextSocket(), ['--writable']);
    runTool('nbdcopy', [source, copied.uri]);
    expect(await exitWithin(copied, 10_000)).toBe(0);
    expect(spawnSync('qemu-img', ['check', target]).status).toBe(0);
    expect(spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', source, target]).status).toBe(0);

    const written = await startServe(target, nextSocket(), ['--writable']);
    runTool('qemu-io', ['-f', 'raw', written.uri, '-c', 'write -P 0x5a 1M 64k']);
    expect(await exitWithin(written, 10_000)).toBe(0);
    bytes.fill(0x5a, MiB, MiB + 65536);
    writeFileSync(source, bytes);
    expect(spawnSync('qemu-img', ['check', target]).status).toBe(0);
    expect(spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', source, target]).status).toBe(0);
  });
  it('WRITE_ZEROES over a qcow2 export leaves zero clusters, freed, or kept allocated when the client says NO_HOLE', async () => {
    const image = file('zeroed.qcow2');
    runTool('qemu-img', ['create', '-q', '-f', 'qcow2', image, '4M']);
    runTool('qemu-io', ['-f', 'qcow2', image, '-c', 'write -P 0x77 0 4M']);
    const served = await startServe(image, nextSocket(), ['--writable']);
    // qemu's NBD client sends NO_HOLE unless the write may unmap (-u).
    runTool('qemu-io', ['-f', 'raw', served.uri, '-c', 'write -z -u 0 1M', '-c', 'write -z 2M 1M']);
    expect(await exitWithin(served, 10_000)).toBe(0);
    const map = JSON.parse(runTool('qemu-img', ['map', '--output=json', '-f', 'qcow2', image])) as MapEntry[];
    expect(allocation(map)).toEqual(['0+1048576:-,zero', '1048576+1048576:data', '2097152+1048576:-,zero', '3145728+1048576:data']);
    // The NO_HOLE range keeps its host clusters (an offset beside the zero flag); the other is freed.
    expect(map.filter((entry) => entry.zero).map((entry) => entry.start + (entry.offset === undefined ? ':freed' : ':kept'))).toEqual(['0:freed', '2097152:kept']);
    const read = spawnSync('qemu-io', ['-f', 'qcow2', '-r', image, '-c', 'read -P 0 0 1M', '-c', 'read -P 0 2M 1M', '-c', 'read -P 0x77 3M 1M'], { encoding: 'utf8' });
    expect(read.status).toBe(0);
    expect(read.stdout).not.toMatch(/verification failed/);
    expect(spawnSync('qemu-img', ['check', image]).status).toBe(0);
  });
  it('WRITE_ZEROES stores what qemu stores: zero clusters, allocated ones kept with NO_HOLE (v3, extended L2), freed on v2', async () => {
    const zeroWrites = ['write -z 0 1M', 'write -z 1M 40k', 'write -z 8M 128k', 'write -z -u 2M 1M', 'write -P 0x99 5M 64k', 'write -z 5M 64k', 'write -z 12M 1M'];
    for (const [index, options] of ['compat=1.1', 'compat=0.10', 'extended_l2=on,cluster_size=128k'].entries()) {
      const original = file(`zeroes-${index}.qcow2`);
      runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', options, original, '16M']);
      runTool('qemu-io', ['-f', 'qcow2', original, '-c', 'write -P 0x11 0 4M', '-c', 'write -c -P 0x12 8M 128k']);
      const ours = file(`zeroes-${index}-platter.qcow2`);
      const theirs = file(`zeroes-${index}-qemu.qcow2`);
      writeFileSync(ours, readFileSync(original));
      writeFileSync(theirs, readFileSync(original));
      const served = await startServe(ours, nextSocket(), ['--writable']);
      // qemu-io's write -z sends NO_HOLE unless -u; straight on the file it is qemu's zero write without or with unmap.
      runTool('qemu-io', ['-f', 'raw', served.uri, ...zeroWrites.flatMap((command) => ['-c', command])]);
      expect(await exitWithin(served, 10_000)).toBe(0);
      runTool('qemu-io', ['-f', 'qcow2', theirs, ...zeroWrites.flatMap((command) => ['-c', command])]);
      const mapOf = (image: string) => allocation(JSON.parse(runTool('qemu-img', ['map', '--output=json', '-f', 'qcow2', image])) as MapEntry[]);
      expect(mapOf(ours), options).toEqual(mapOf(theirs));
      // The same clusters stay allocated in the file.
      const allocated = (image: string) => /\d+\/\d+ = [\d.]+% allocated/.exec(runTool('qemu-img', ['check', image]))?.[0];
      expect(allocated(ours), options).toBe(allocated(theirs));
    }
  });
  it('a write into a cluster zeroed with NO_HOLE reuses its host cluster, as qemu does: the file is byte for byte qemu-io\'s', async () => {
    // A whole cluster, a part of one, and one the range covers in part (written whole, not zeroed).
    const writes = ['write -z 0 64k', 'write -P 0x21 5000 300', 'write -z 1M 128k', 'write -P 0x22 1M 64k', 'write -P 0x23 1100k 1k', 'write -z 3M 100k', 'write -P 0x24 3136k 4k'];
    for (const [index, options] of ['compat=1.1', 'compat=1.1,cluster_size=4k'].entries()) {
      const original = file(`refill-${index}.qcow2`);
      runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', options, original, '4M']);
      runTool('qemu-io', ['-f', 'qcow2', original, '-c', 'write -P 0x11 0 4M']);
      const ours = file(`refill-${index}-platter.qcow2`);
      const theirs = file(`refill-${index}-qemu.qcow2`);
      writeFileSync(ours, readFileSync(original));
      writeFileSync(theirs, readFileSync(original));
      const commands = writes.flatMap((command) => ['-c', command]);
      const served = await startServe(ours, nextSocket(), ['--writable']);
      // Over NBD, qemu-io's write -z (no -u) is a zero write with NO_HOLE, as it is on the file.
      runTool('qemu-io', ['-f', 'raw', served.uri, ...commands]);
      expect(await exitWithin(served, 10_000)).toBe(0);
      runTool('qemu-io', ['-f', 'qcow2', theirs, ...commands]);
      expect(spawnSync('qemu-img', ['check', ours]).status, options).toBe(0);
      expect(hostMap(ours), options).toEqual(hostMap(theirs));
      expect(Buffer.compare(readFileSync(ours), readFileSync(theirs)), options).toBe(0);
    }
  });
  it('WRITE_ZEROES marks unwritten clusters zero, and FAST_ZERO zeroes only where metadata can, as qemu does', async () => {
    // -n is qemu's no-fallback zero write: FAST_ZERO over NBD (qemu's client refuses it itself unless offered).
    const zeroWrites = [
      'write -z 0 64k', // unwritten, no backing: marked zero all the same
      'write -z -n -u 128k 64k',
      'write -z -n 200k 4k', // part of an unwritten cluster: the cluster is marked zero
      'write -z -n 1M 4k', // part of a data cluster: refused (zeros would be written)
      'write -z -n 1M 2k', // extended L2: a whole subcluster
      'write -z -n 1500k 100', // part of a data subcluster: refused
      'write -z -n 8M 64k', // part of a compressed cluster
      'write -z -n 2M 1M',
      'write -z 4M 1M',
      'write -z -n -u 12M 256k',
    ];
    for (const [index, options] of ['compat=1.1', 'compat=0.10', 'extended_l2=on,cluster_size=128k', 'compat=1.1,backing_file=base.qcow2,backing_fmt=qcow2'].entries()) {
      const original = file(`fast-${index}.qcow2`);
      runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', options, original, '16M']);
      runTool('qemu-io', ['-f', 'qcow2', original, '-c', 'write -P 0x11 1M 1M', '-c', 'write -c -P 0x12 8M 128k']);
      const ours = file(`fast-${index}-platter.qcow2`);
      const theirs = file(`fast-${index}-qemu.qcow2`);
      writeFileSync(ours, readFileSync(original));
      writeFileSync(theirs, readFileSync(original));
      const commands = zeroWrites.flatMap((command) => ['-c', command]);
      const failures = (output: string) => output.split('\n').filter((line) => line.startsWith('write failed'));
      const served = await startServe(ours, nextSocket(), ['--writable']);
      const overNbd = spawnSync('qemu-io', ['-f', 'raw', served.uri, ...commands], { encoding: 'utf8' });
      expect(await exitWithin(served, 10_000)).toBe(0);
      const onFile = spawnSync('qemu-io', ['-f', 'qcow2', theirs, ...commands], { encoding: 'utf8' });
      expect(failures(overNbd.stdout + overNbd.stderr), options).toEqual(failures(onFile.stdout + onFile.stderr));
      expect(failures(onFile.stdout + onFile.stderr).length, options).toBeGreaterThan(0);
      // The whole map: which runs this image stores, as zero or data, and which keep a host cluster.
      expect(hostMap(ours), options).toEqual(hostMap(theirs));
      expect(spawnSync('qemu-img', ['check', ours]).status, options).toBe(0);
    }
  });
  it('qemu-nbd --list shows a writable export of platter serve as it shows one of qemu-nbd: flags, block sizes, description, contexts', async () => {
    if (!haveServeTool('qemu-nbd')) return;
    const image = file('listed.qcow2');
    runTool('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M']);
    const names = ['-x', 'disk0', '-D', 'the system disk'];
    const ours = await startServe(image, nextSocket(), ['--writable', ...names]);
    const listedByUs = runTool('qemu-nbd', ['-L', '-k', ours.socket]);
    await ours.stop();
    const socket = nextSocket();
    const qemuNbd = spawn('qemu-nbd', [...names, '-f', 'qcow2', '-k', socket, image], { stdio: 'ignore' });
    try {
      for (let tries = 0; !existsSync(socket) && tries < 200; tries++) await new Promise((done) => setTimeout(done, 25));
      expect(listedByUs).toBe(runTool('qemu-nbd', ['-L', '-k', socket]));
    } finally {
      qemuNbd.kill();
    }
    expect(listedByUs).toMatch(/fast-zero/);
  });
  it('TRIM frees qcow2 clusters with --discard=unmap, and is ignored by default, as in qemu-nbd', async () => {
    for (const mode of ['unmap', 'ignore']) {
      const image = file(`trimmed-${mode}.qcow2`);
      runTool('qemu-img', ['create', '-q', '-f', 'qcow2', image, '4M']);
      runTool('qemu-io', ['-f', 'qcow2', image, '-c', 'write -P 0x77 0 4M']);
      const served = await startServe(image, nextSocket(), ['--writable', `--discard=${mode}`]);
      runTool('qemu-io', ['-f', 'raw', served.uri, '-c', 'discard 1M 2M']);
      expect(await exitWithin(served, 10_000)).toBe(0);
      const map = JSON.parse(runTool('qemu-img', ['map', '--output=json', '-f', 'qcow2', image])) as MapEntry[];
      expect(allocation(map)).toEqual(mode === 'unmap' ? ['0+1048576:data', '1048576+2097152:-,zero', '3145728+1048576:data'] : ['0+4194304:data']);
      expect(spawnSync('qemu-img', ['check', image]).status).toBe(0);
    }
  });
  it('TRIM with --discard=unmap stores what qemu stores: zero clusters where a backing file or data would show, never older data', async () => {
    // Over data, part of a cluster (left alone), unwritten clusters, a compressed cluster, a zero cluster, the end.
    const discards = ['discard 0 1M', 'discard 1M 40k', 'discard 4M 1M', 'discard 8M 128k', 'discard 3M 64k', 'discard 12M 4M'];
    const kinds = ['compat=1.1', 'compat=0.10', 'extended_l2=on,cluster_size=128k'];
    for (const options of [...kinds, ...kinds.map((kind) => `${kind},backing_file=base.qcow2,backing_fmt=qcow2`)]) {
      const original = file('trim-original.qcow2');
      runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', options, original, '16M']);
      const zeroCluster = options.includes('0.10') ? [] : ['-c', 'write -z 3M 1M'];
      runTool('qemu-io', ['-f', 'qcow2', original, '-c', 'write -P 0x21 0 2M', ...zeroCluster, '-c', 'write -c -P 0x22 8M 128k', '-c', 'write -P 0x23 12M 4M']);
      const ours = file('trim-platter.qcow2');
      const theirs = file('trim-qemu.qcow2');
      writeFileSync(ours, readFileSync(original));
      writeFileSync(theirs, readFileSync(original));
      const served = await startServe(ours, nextSocket(), ['--writable', '--discard=unmap']);
      runTool('qemu-io', ['-f', 'raw', served.uri, ...discards.flatMap((command) => ['-c', command])]);
      expect(await exitWithin(served, 10_000)).toBe(0);
      // Straight on the file, qemu's discard request with unmap allowed (qemu-nbd --discard=unmap).
      runTool('qemu-io', ['-d', 'unmap', '-f', 'qcow2', theirs, ...discards.flatMap((command) => ['-c', command])]);
      expect(hostMap(ours), options).toEqual(hostMap(theirs));
      expect(spawnSync('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', ours, theirs]).status, options).toBe(0);
      expect(spawnSync('qemu-img', ['check', ours]).status, options).toBe(0);
    }
  });
});
