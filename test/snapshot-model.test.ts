/**
 * Internal snapshots against a model: random interleavings of guest writes and
 * snapshot create / apply / delete on images with random options (v2 and v3,
 * refcount widths, extended L2, compressed clusters, a backing file). Every
 * sequence: the active disk and every snapshot read back as the model says,
 * and platter's own check finds no corruption and no leak. Every sequence is
 * then written out and checked by qemu-img check (0 errors, 0 leaks) after the
 * property, four at a time; every tenth also has each snapshot compared by
 * qemu-img convert -l against the model.
 */

import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { checkAll, expectQemuCheckClean, layoutCreateOptions, modelPattern, qcow2Layout, runQemuImg, writeSequenceDir, type Qcow2Layout } from './helpers/qcow2-layout.js';
import { afterAll, describe, expect, it } from 'vitest';
import { checkQcow2 } from '../formats/qcow2/check.js';
import { readMetadata } from '../formats/qcow2/metadata.js';
import { openSnapshotView } from '../formats/qcow2/snapshot-view.js';
import { nodeCodecs } from '../src/node/codecs.js';
import { snapshot } from '../src/ops/snapshot.js';
import { firstDifference, qcow2TempDir, qcow2ToolAvailable, readWholeImage } from './helpers/qcow2-oracle.js';
import { WRITER_BACKING_NAME, createQcow2InMemory, openReadOnly, openWritable } from './helpers/qcow2-writer.js';
import type { Qcow2Image } from '../formats/qcow2/image.js';

const haveQemu = qcow2ToolAvailable('qemu-img');
const temp = qcow2TempDir();
afterAll(() => temp.cleanup());

type RawOp = { kind: 'write' | 'create' | 'apply' | 'delete'; a: number; b: number; seed: number };

interface Scenario extends Qcow2Layout {
  compressedClusters: number;
  ops: RawOp[];
}

/** Snapshots at once in a sequence: with 4-bit refcounts (max 15) there is room to spare. */
const MAX_SNAPSHOTS_AT_ONCE = 6;
/** Names drawn from a small set so duplicates happen; '1' and '2' also look like ids. */
const NAMES = ['a', 'b', '1', '2', 'snap'];

const scenario: fc.Arbitrary<Scenario> = fc
  .record({
    layout: qcow2Layout({ minRefcountOrder: 2, maxSectors: 512, maxBackingSectors: 600 }),
    compressedClusters: fc.integer({ min: 0, max: 4 }),
    ops: fc.array(
      fc.record({
        kind: fc.constantFrom<RawOp['kind']>('write', 'write', 'write', 'create', 'create', 'apply', 'delete'),
        a: fc.double({ min: 0, max: 1, noNaN: true }),
        b: fc.double({ min: 0, max: 1, noNaN: true }),
        seed: fc.integer({ min: 1, max: 255 }),
      }),
      { minLength: 1, maxLength: 14 },
    ),
  })
  .map(({ layout, ...rest }) => ({ ...layout, ...rest }));


/** A compressible cluster (runs of one byte), so its deflate stream is shorter than the cluster. */
function compressible(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (seed + (i >> 6)) & 0xff;
  return out;
}

interface ModelSnapshot {
  id: string;
  name: string;
  disk: Uint8Array;
}

/** The disk as the guest sees it, and the snapshots with their contents, looked up as qemu-img does. */
class SnapshotModel {
  snapshots: ModelSnapshot[] = [];
  constructor(public disk: Uint8Array) {}

  create(name: string): void {
    const max = Math.max(0, ...this.snapshots.map((s) => Number(s.id)));
    this.snapshots.push({ id: String(max + 1), name, disk: this.disk.slice() });
  }

  /** -a: by id first, then the first with that name. */
  find(idOrName: string): ModelSnapshot | undefined {
    return this.snapshots.find((s) => s.id === idOrName) ?? this.snapshots.find((s) => s.name === idOrName);
  }

  /** -d: the first with that name, then by id. */
  findForDelete(nameOrId: string): ModelSnapshot | undefined {
    return this.snapshots.find((s) => s.name === nameOrId) ?? this.snapshots.find((s) => s.id === nameOrId);
  }
}

/** Picks a snapshot key: a name or an id that exists (or, rarely, one that does not). */
function snapshotKey(model: SnapshotModel, raw: RawOp): string {
  if (model.snapshots.length === 0 || raw.seed % 11 === 0) return 'missing';
  const chosen = model.snapshots[Math.min(model.snapshots.length - 1, Math.floor(raw.a * model.snapshots.length))]!;
  return raw.seed % 2 === 0 ? chosen.id : chosen.name;
}

/**
 * True when the operation was refused because a refcount would overflow (host
 * clusters packed with several compressed streams reach 4-bit limits): the
 * image must then be unchanged, which the final comparison verifies.
 */
async function refusedForRefcounts(operation: Promise<unknown>): Promise<boolean> {
  try {
    await operation;
    return false;
  } catch (error) {
    if ((error as { code?: string }).code === 'ELIMIT') return true;
    throw error;
  }
}

async function applyOp(image: Qcow2Image, model: SnapshotModel, raw: RawOp, clusterSize: number): Promise<void> {
  if (raw.kind === 'write') {
    const offset = Math.floor(raw.a * image.size);
    const span = raw.seed % 2 === 0 ? Math.min(image.size - offset, 3 * clusterSize + 700) : Math.min(image.size - offset, 1500);
    const data = modelPattern(Math.floor(raw.b * span), raw.seed);
    await image.write(offset, data);
    model.disk.set(data, offset);
  } else if (raw.kind === 'create') {
    if (model.snapshots.length >= MAX_SNAPSHOTS_AT_ONCE) return;
    const name = NAMES[raw.seed % NAMES.length]!;
    if (await refusedForRefcounts(snapshot(image, { kind: 'create', name }))) return;
    model.create(name);
  } else {
    const key = snapshotKey(model, raw);
    const target = raw.kind === 'apply' ? model.find(key) : model.findForDelete(key);
    const action = raw.kind === 'apply' ? { kind: 'apply' as const, snapshot: key } : { kind: 'delete' as const, snapshot: key };
    if (!target) {
      await expect(snapshot(image, action)).rejects.toMatchObject({ code: 'ENOTFOUND' });
      return;
    }
    const pending = snapshot(image, action);
    if (raw.kind === 'apply' && (await refusedForRefcounts(pending))) return;
    const result = await pending;
    expect(result.snapshot?.id).toBe(target.id);
    if (raw.kind === 'apply') model.disk = target.disk.slice();
    else model.snapshots = model.snapshots.filter((s) => s !== target);
  }
}

/** Stores the first `count` clusters compressed (they are unallocated in a new image). */
async function writeCompressedClusters(image: Qcow2Image, model: SnapshotModel, count: number, clusterSize: number): Promise<void> {
  for (let cluster = 0; cluster < count && (cluster + 1) * clusterSize <= image.size; cluster++) {
    const data = compressible(clusterSize, cluster + 3);
    const stream = await nodeCodecs.deflateRaw!(data);
    if (stream.length >= clusterSize) continue;
    await image.writer!.writeCompressed(cluster * clusterSize, stream);
    model.disk.set(data, cluster * clusterSize);
  }
}

async function runScenario(s: Scenario, index: number): Promise<void> {
  const clusterSize = 2 ** s.clusterBits;
  const backing = s.backingSize === undefined ? undefined : modelPattern(s.backingSize, 99);
  const device = await createQcow2InMemory(s.size, layoutCreateOptions(s), backing);
  const image = await openWritable(device, backing);
  const initial = new Uint8Array(s.size);
  if (backing) initial.set(backing.subarray(0, Math.min(s.size, backing.length)));
  const model = new SnapshotModel(initial);
  await writeCompressedClusters(image, model, s.compressedClusters, clusterSize);
  for (const raw of s.ops) await applyOp(image, model, raw, clusterSize);
  await image.close();
  const label = JSON.stringify(s);
  const reopened = await openReadOnly(device, backing);
  expect(firstDifference(await readWholeImage(reopened), model.disk), `active disk ${label}`).toBe(-1);
  expect(reopened.metadata.snapshots.map((sn) => [sn.id, sn.name])).toEqual(model.snapshots.map((sn) => [sn.id, sn.name]));
  for (const expected of model.snapshots) {
    const view = await openSnapshotView(reopened, expected.id);
    expect(firstDifference(await readWholeImage(view), expected.disk), `snapshot ${expected.id} ${label}`).toBe(-1);
  }
  const report = await checkQcow2(device, await readMetadata(device));
  expect({ corruptions: report.corruptions, leaks: report.leaks, checkErrors: report.checkErrors }, `${report.messages.join('\n')}\n${label}`).toEqual({
    corruptions: 0,
    leaks: 0,
    checkErrors: 0,
  });
  if (haveQemu) writeOut(device.contents(), model, backing, index, s);
}

/** One finished sequence, written out for the qemu checks that run after the property. */
interface Written {
  dir: string;
  scenario: Scenario;
  snapshots: string[];
}
const written: Written[] = [];

function writeOut(file: Uint8Array, model: SnapshotModel, backing: Uint8Array | undefined, index: number, s: Scenario): void {
  const dir = writeSequenceDir(temp.dir, index, file, backing, WRITER_BACKING_NAME);
  // Only every tenth sequence has its snapshots compared by qemu-img convert -l (time).
  const compared = index % 10 === 0 ? model.snapshots : [];
  for (const sn of compared) writeFileSync(join(dir, `snapshot-${sn.id}.raw`), sn.disk);
  written.push({ dir, scenario: s, snapshots: compared.map((sn) => sn.id) });
}


/** qemu-img check (no errors, no leaks); snapshots converted by qemu-img equal the model's. */
async function qemuAgrees({ dir, scenario, snapshots }: Written): Promise<void> {
  const label = JSON.stringify(scenario);
  await expectQemuCheckClean(dir, label);
  for (const id of snapshots) {
    const out = join(dir, `qemu-${id}.raw`);
    const convert = await runQemuImg(dir, ['convert', '-O', 'raw', '-l', `snapshot.id=${id}`, 'image.qcow2', out]);
    expect(convert.status, `${convert.stderr}\n${label}`).toBe(0);
    const expected = new Uint8Array(readFileSync(join(dir, `snapshot-${id}.raw`)));
    expect(firstDifference(new Uint8Array(readFileSync(out)), expected), `qemu snapshot ${id} ${label}`).toBe(-1);
    rmSync(out);
  }
}

/** Four compressed streams in one host cluster and three snapshots: a 4-bit refcount would reach 16, so the third is refused. */
const PACKED_COMPRESSED: Scenario = {
  clusterBits: 9,
  compat: '1.1',
  refcountBits: 4,
  extendedL2: false,
  lazy: false,
  size: 2048,
  backingSize: undefined,
  compressedClusters: 4,
  ops: [
    { kind: 'create', a: 0, b: 0, seed: 1 },
    { kind: 'create', a: 0, b: 0, seed: 1 },
    { kind: 'create', a: 0, b: 0, seed: 1 },
    { kind: 'write', a: 0, b: 0, seed: 1 },
  ],
};

describe('internal snapshots against a model', () => {
  it('random writes and snapshot create/apply/delete read back like the model, and check clean', async () => {
    let index = 0;
    await fc.assert(
      fc.asyncProperty(scenario, async (s) => {
        await runScenario(s, index++);
      }),
      { numRuns: 200, examples: [[PACKED_COMPRESSED]] },
    );
  }, 120_000);

  it.skipIf(!haveQemu)('every sequence passes qemu-img check; qemu-img convert -l reads the snapshots as the model says', async () => {
    expect(written.length).toBeGreaterThanOrEqual(200);
    await checkAll(written, 4, qemuAgrees);
  }, 120_000);
});
