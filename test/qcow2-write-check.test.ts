/**
 * platter check against qemu-img check: the same JSON, the same messages and
 * exit statuses on qemu-made images, on images with injected leaks and with
 * refcount and L2 corruption made by poking bytes; after platter's repairs
 * qemu-img check calls the images clean.
 */

import { copyFileSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { platter } from './helpers/tools.js';
import { qcow2TempDir, qcow2ToolAvailable, sh, shStatus } from './helpers/qcow2-oracle.js';

const haveQemu = qcow2ToolAvailable('qemu-img') && qcow2ToolAvailable('qemu-io');
const temp = qcow2TempDir();
afterAll(() => temp.cleanup());

const qemuImg = (...args: string[]) => sh(temp.dir, 'qemu-img', args);
const qemuIo = (image: string, ...commands: string[]) => sh(temp.dir, 'qemu-io', [...commands.flatMap((c) => ['-c', c]), image]);

/** Byte pokes on a qcow2 file, at places found through its own tables. */
class Poker {
  bytes: Uint8Array;
  view: DataView;
  constructor(readonly path: string) {
    this.bytes = new Uint8Array(readFileSync(path));
    this.view = new DataView(this.bytes.buffer);
  }
  get clusterSize(): number {
    return 2 ** this.view.getUint32(20);
  }
  u64(at: number): number {
    return Number(this.view.getBigUint64(at));
  }
  setU64(at: number, value: bigint): void {
    this.view.setBigUint64(at, value);
  }
  get refcountBlock0(): number {
    return this.u64(this.u64(48));
  }
  /** The file offset of L2 entry `index` of the first L2 table. */
  l2EntryAt(index: number): number {
    const l2 = this.u64(this.u64(40)) & 0x00fffffffffffe00;
    return l2 + index * 8;
  }
  setRefcount16(cluster: number, value: number): void {
    this.view.setUint16(this.refcountBlock0 + cluster * 2, value);
  }
  save(extraClusters = 0): void {
    const out = new Uint8Array(this.bytes.length + extraClusters * this.clusterSize);
    out.set(this.bytes);
    writeFileSync(this.path, out);
  }
}

function image(name: string, size: string, options = ''): string {
  const path = join(temp.dir, name);
  qemuImg('create', '-q', '-f', 'qcow2', ...(options ? ['-o', options] : []), path, size);
  return path;
}

/** A 16 MiB image with data in several clusters (cluster 0 of the disk included). */
function dataImage(name: string, options = ''): string {
  const path = image(name, '16M', options);
  qemuIo(path, 'write -P 1 0 100k', 'write -P 2 5M 64k', 'write -P 3 9M 1k', 'discard 5M 64k', 'write -P 4 12M 200k');
  return path;
}

const builders: Record<string, () => string> = {
  fresh: () => image('fresh.qcow2', '1G'),
  data: () => dataImage('data.qcow2'),
  v2: () => dataImage('v2.qcow2', 'compat=0.10'),
  refcount1: () => dataImage('rc1.qcow2', 'cluster_size=4096,refcount_bits=1'),
  extendedL2: () => {
    const path = image('ext.qcow2', '16M', 'extended_l2=on');
    qemuIo(path, 'write -P 5 4k 4k', 'write -P 6 1M 100k', 'write -z 2M 64k');
    return path;
  },
  compressed: () => {
    const raw = join(temp.dir, 'src.raw');
    qemuImg('create', '-q', '-f', 'raw', raw, '8M');
    qemuIo(raw, 'write -P 7 0 1M', 'write -P 8 3M 512k');
    const path = join(temp.dir, 'comp.qcow2');
    qemuImg('convert', '-c', '-O', 'qcow2', raw, path);
    return path;
  },
  snapshots: () => {
    const path = dataImage('snap.qcow2');
    qemuImg('snapshot', '-c', 'one', path);
    qemuIo(path, 'write -P 9 0 64k', 'write -P 10 7M 64k');
    qemuImg('snapshot', '-c', 'two', path);
    return path;
  },
  bitmaps: () => {
    const path = dataImage('bitmaps.qcow2');
    qemuImg('bitmap', '--add', path, 'b1');
    qemuImg('bitmap', '--add', '-g', '512k', path, 'b2');
    return path;
  },
  leakedCluster: () => {
    const path = dataImage('leak.qcow2');
    const poke = new Poker(path);
    poke.setRefcount16(poke.bytes.length / poke.clusterSize, 1);
    poke.save(1);
    return path;
  },
  doubleRefcount: () => {
    const path = dataImage('double.qcow2');
    const poke = new Poker(path);
    const data = poke.u64(poke.l2EntryAt(0)) & 0x00fffffffffffe00;
    poke.setRefcount16(data / poke.clusterSize, 2);
    poke.save();
    return path;
  },
  zeroRefcount: () => {
    const path = dataImage('zero-rc.qcow2');
    const poke = new Poker(path);
    const data = poke.u64(poke.l2EntryAt(1)) & 0x00fffffffffffe00;
    poke.setRefcount16(data / poke.clusterSize, 0);
    poke.save();
    return path;
  },
  unalignedL2Entry: () => {
    const path = dataImage('unaligned.qcow2');
    const poke = new Poker(path);
    poke.setU64(poke.l2EntryAt(1), poke.view.getBigUint64(poke.l2EntryAt(1)) + 0x200n);
    poke.save();
    return path;
  },
  copiedCleared: () => {
    const path = dataImage('copied.qcow2');
    const poke = new Poker(path);
    poke.setU64(poke.l2EntryAt(0), poke.view.getBigUint64(poke.l2EntryAt(0)) & ~(1n << 63n));
    poke.save();
    return path;
  },
  l1ReservedBits: () => {
    const path = dataImage('l1-reserved.qcow2');
    const poke = new Poker(path);
    const l1 = poke.u64(40);
    poke.setU64(l1, poke.view.getBigUint64(l1) | (1n << 60n) | 0x10n);
    poke.save();
    return path;
  },
  l2ReservedBits: () => {
    const path = dataImage('l2-reserved.qcow2');
    const poke = new Poker(path);
    poke.setU64(poke.l2EntryAt(0), poke.view.getBigUint64(poke.l2EntryAt(0)) | (1n << 57n));
    // An unallocated entry with only reserved bits is counted too.
    poke.setU64(poke.l2EntryAt(40), 0x100n);
    poke.save();
    return path;
  },
  extendedL2ReservedBits: () => {
    const path = image('ext-reserved.qcow2', '16M', 'extended_l2=on');
    qemuIo(path, 'write -P 5 4k 4k');
    const poke = new Poker(path);
    const l2 = poke.u64(poke.u64(40)) & 0x00fffffffffffe00;
    poke.setU64(l2, poke.view.getBigUint64(l2) | 0x2n);
    poke.save();
    return path;
  },
  refcountTableReservedBits: () => {
    const path = dataImage('reftable-reserved.qcow2');
    const poke = new Poker(path);
    const reftable = poke.u64(48);
    poke.setU64(reftable, poke.view.getBigUint64(reftable) | 0x1n);
    poke.save();
    return path;
  },
  refcountBlockUnaligned: () => {
    const path = dataImage('refblock-unaligned.qcow2');
    const poke = new Poker(path);
    const reftable = poke.u64(48);
    poke.setU64(reftable, poke.view.getBigUint64(reftable) + 0x200n);
    poke.save();
    return path;
  },
  refcountBlockPast2To53: () => {
    const path = dataImage('refblock-far.qcow2');
    const poke = new Poker(path);
    poke.setU64(poke.u64(48) + 8, 1n << 56n);
    poke.save();
    return path;
  },
  compressedPast2To53: () => {
    const path = join(temp.dir, 'far-compressed.qcow2');
    copyFileSync(builders.compressed!(), path);
    const poke = new Poker(path);
    // Host offset bits of a 64 KiB-cluster descriptor: 0..53; set bit 53.
    poke.setU64(poke.l2EntryAt(0), poke.view.getBigUint64(poke.l2EntryAt(0)) | (1n << 53n));
    poke.save();
    return path;
  },
  refcountBlockPastEnd: () => {
    const path = dataImage('refblock-past-end.qcow2');
    const poke = new Poker(path);
    // Refcount table entry 1 (no cluster of the file needs it) names a block three clusters past the end.
    poke.setU64(poke.u64(48) + 8, BigInt(poke.bytes.length + 3 * poke.clusterSize));
    poke.save();
    return path;
  },
  zeroClusterUnaligned: () => {
    const path = dataImage('zero-unaligned.qcow2');
    // A zero write without unmap keeps the host cluster: an allocated zero cluster, whose offset is then misaligned.
    qemuIo(path, 'write -z 0 64k');
    const poke = new Poker(path);
    poke.setU64(poke.l2EntryAt(0), poke.view.getBigUint64(poke.l2EntryAt(0)) + 0x200n);
    poke.save();
    return path;
  },
  refcountTableCut: () => {
    const path = dataImage('reftable-cut.qcow2');
    // The file ends 3 bytes into the refcount table: the rest of its first entry, and of the table, reads as zeros.
    truncateSync(path, new Poker(path).u64(48) + 3);
    return path;
  },
  cutTo512: () => {
    const path = dataImage('cut-to-512.qcow2');
    // Only the header is left: the refcount table lies wholly past the end and reads as zeros.
    truncateSync(path, 512);
    return path;
  },
  l1PastEnd: () => {
    const path = dataImage('l1-past-end.qcow2');
    const poke = new Poker(path);
    // The header's L1 table offset a cluster past the end: qemu opens it for a check and reads zeros there.
    poke.setU64(40, BigInt(poke.bytes.length + poke.clusterSize));
    poke.save();
    return path;
  },
  noRefcountTable: () => {
    const path = dataImage('no-reftable.qcow2');
    const poke = new Poker(path);
    // refcount_table_clusters 0: only a check opens such an image (every cluster then counts 0).
    poke.view.setUint32(56, 0);
    poke.save();
    return path;
  },
  l1EntryAtL1: () => {
    const path = dataImage('l1-at-l1.qcow2');
    const poke = new Poker(path);
    // L1 entry 0 names the L1 table itself as its L2 table (COPIED set, as for a table of its own).
    poke.setU64(poke.u64(40), (1n << 63n) | BigInt(poke.u64(40)));
    poke.save();
    return path;
  },
  sharedCluster: () => {
    const path = dataImage('shared.qcow2');
    const poke = new Poker(path);
    poke.setU64(poke.l2EntryAt(3), poke.view.getBigUint64(poke.l2EntryAt(0)));
    poke.save();
    return path;
  },
};

const paths: Record<string, string> = {};
beforeAll(() => {
  if (!haveQemu) return;
  for (const [name, build] of Object.entries(builders)) paths[name] = build();
});

/** Runs both checks on copies of `path`; returns both results. */
function bothChecks(path: string, repair?: 'leaks' | 'all') {
  const ours = `${path}.ours.qcow2`;
  const theirs = `${path}.theirs.qcow2`;
  copyFileSync(path, ours);
  copyFileSync(path, theirs);
  const flags = repair ? ['-r', repair] : [];
  const mine = platter(['check', '--output=json', ...flags, ours]);
  const qemu = shStatus(temp.dir, 'qemu-img', ['check', '--output=json', ...flags, theirs]);
  return { ours, theirs, mine, qemu };
}

/** stderr with the closing "Check failed" line told apart only by its program name (qemu-img's names no file). */
function withoutToolName(stderr: string): string {
  return stderr.replace(/^(qemu-img|platter: [^\n]*?): Check failed(: [^\n]*)?$/m, 'Check failed$2');
}

function withoutName(json: string): unknown {
  const parsed = JSON.parse(json) as Record<string, unknown>;
  delete parsed['filename'];
  return parsed;
}

describe.skipIf(!haveQemu)('qcow2 check', () => {
  for (const name of Object.keys(builders)) {
    it(`${name}: same JSON, messages and exit status as qemu-img check`, () => {
      const { mine, qemu } = bothChecks(paths[name]!);
      expect(withoutName(mine.stdout)).toEqual(withoutName(qemu.stdout));
      expect(withoutToolName(mine.stderr)).toBe(withoutToolName(qemu.stderr));
      expect(mine.status).toBe(qemu.status);
    });
  }

  for (const name of ['data', 'compressed', 'leakedCluster', 'zeroRefcount', 'cutTo512']) {
    it(`${name}: the text report equals qemu-img check's`, () => {
      const mine = platter(['check', paths[name]!]);
      const qemu = shStatus(temp.dir, 'qemu-img', ['check', paths[name]!]);
      expect(mine.stdout).toBe(qemu.stdout);
      expect(mine.status).toBe(qemu.status);
    });
  }

  it('injected problems are seen (the cases do differ from clean images)', () => {
    for (const name of ['leakedCluster', 'doubleRefcount', 'zeroRefcount', 'unalignedL2Entry', 'copiedCleared', 'refcountBlockPastEnd', 'zeroClusterUnaligned', 'l1EntryAtL1', 'l1PastEnd', 'refcountTableCut', 'cutTo512', 'noRefcountTable', 'sharedCluster', 'l1ReservedBits', 'l2ReservedBits', 'extendedL2ReservedBits', 'refcountTableReservedBits', 'refcountBlockUnaligned', 'refcountBlockPast2To53', 'compressedPast2To53']) {
      expect(platter(['check', paths[name]!]).status, name).not.toBe(0);
    }
  });

  for (const [name, repair] of [
    ['leakedCluster', 'leaks'],
    ['doubleRefcount', 'leaks'],
    ['zeroRefcount', 'all'],
    ['copiedCleared', 'all'],
    ['sharedCluster', 'all'],
    // qemu-img 7.2's own rebuild fails on these three (its overlap check refuses to write the new
    // refcount block, or the image is marked corrupt first); platter's must not.
    ['refcountTableReservedBits', 'all'],
    ['refcountBlockUnaligned', 'all'],
    ['refcountBlockPast2To53', 'all'],
    ['copiedCleared', 'leaks'],
    ['refcountBlockPastEnd', 'all'],
  ] as const) {
    it(`${name}: after -r ${repair}, qemu-img check calls the image clean`, () => {
      const { ours, mine } = bothChecks(paths[name]!, repair);
      expect(mine.status, mine.stderr).toBe(0);
      const after = shStatus(temp.dir, 'qemu-img', ['check', '--output=json', ours]);
      expect(after.status, after.stdout + after.stderr).toBe(0);
      expect(qemuRaw(ours)).toEqual(qemuRaw(paths[name]!));
    });
  }

  for (const [name, repair] of [
    ['leakedCluster', 'leaks'],
    ['doubleRefcount', 'leaks'],
    ['zeroRefcount', 'all'],
    ['copiedCleared', 'all'],
    ['l2ReservedBits', 'all'],
    // COPIED flags are repaired by -r leaks too when nothing else is wrong.
    ['copiedCleared', 'leaks'],
    // A refcount block past the end: reported by -r leaks; -r all grows the file to it, then rebuilds.
    ['refcountBlockPastEnd', 'leaks'],
    ['refcountBlockPastEnd', 'all'],
    // An allocated zero cluster at a misaligned offset becomes a plain zero cluster.
    ['zeroClusterUnaligned', 'all'],
    // Repairing the L1 entry would write into a table that is also an L2 table: refused, the image marked corrupt.
    ['l1EntryAtL1', 'all'],
    // Images that only a check opens, as qemu opens them for one.
    ['l1PastEnd', 'leaks'],
    ['l1PastEnd', 'all'],
    ['noRefcountTable', 'leaks'],
    ['noRefcountTable', 'all'],
  ] as const) {
    it(`${name}: -r ${repair} reports what qemu-img check -r ${repair} reports`, () => {
      const { ours, theirs, mine, qemu } = bothChecks(paths[name]!, repair);
      // A check that fails prints no report, in either tool.
      if (qemu.stdout === '') expect(mine.stdout).toBe('');
      else expect(withoutName(mine.stdout)).toEqual(withoutName(qemu.stdout));
      expect(withoutToolName(mine.stderr)).toBe(withoutToolName(qemu.stderr));
      expect(mine.status).toBe(qemu.status);
      // The same header flags (a corrupt mark included) and file size afterwards.
      expect(readFileSync(ours).readBigUInt64BE(72)).toBe(readFileSync(theirs).readBigUInt64BE(72));
      expect(readFileSync(ours).length).toBe(readFileSync(theirs).length);
    });
  }

  it.each([[[]], [['--output=json']]])('-r leaks on an image whose refcounts need rebuilding stops as qemu-img does: no report, "Check failed: Input/output error" (%j)', (output) => {
    const [ours, theirs] = ['ours', 'theirs'].map((who) => `${paths['zeroRefcount']!}.leaks-${who}.qcow2`);
    copyFileSync(paths['zeroRefcount']!, ours!);
    copyFileSync(paths['zeroRefcount']!, theirs!);
    const mine = platter(['check', ...output, '-r', 'leaks', ours!]);
    const qemu = shStatus(temp.dir, 'qemu-img', ['check', ...output, '-r', 'leaks', theirs!]);
    expect(qemu.stderr).toContain('Check failed: Input/output error');
    expect([mine.status, mine.stdout, withoutToolName(mine.stderr)]).toEqual([qemu.status, qemu.stdout, withoutToolName(qemu.stderr)]);
    expect(readFileSync(ours!)).toEqual(readFileSync(paths['zeroRefcount']!));
  });

  it('raw images have no check: exit status 63', () => {
    const raw = join(temp.dir, 'plain.raw');
    qemuImg('create', '-q', '-f', 'raw', raw, '1M');
    const result = platter(['check', raw]);
    expect(result.status).toBe(63);
    expect(result.stderr).toContain('does not support checks');
  });
});

/** Guest bytes as qemu reads them (a repair must not change them). */
function qemuRaw(path: string): string {
  const out = `${path}.${Math.random().toString(36).slice(2)}.raw`;
  qemuImg('convert', '-U', '-O', 'raw', path, out);
  const digest = readFileSync(out).toString('base64').length + ':' + readFileSync(out).reduce((a, b, i) => (a + b * ((i % 251) + 1)) % 1000000007, 0);
  return digest;
}
