/**
 * The internal snapshot table (qcow2.rst, "Snapshots"): entries of a 40-byte
 * fixed part, extra data, id and name, each entry 8-byte aligned. Parsing mirrors
 * qemu's qcow2_read_snapshots, including its limits.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { alignUp, u64ToNumber } from '../../src/core/bytes.js';
import { CorruptImageError, LimitExceededError } from '../../src/core/errors.js';
import { defineStruct, u16be, u32be, u64be, type Decoded } from '../../src/core/struct.js';
import type { SnapshotInfo } from '../../src/core/image.js';
import { MAX_SNAPSHOT_EXTRA_DATA, MAX_SNAPSHOT_TABLE_BYTES } from './limits.js';

/** The fixed part of a snapshot table entry (40 bytes). */
export const SnapshotHeader = defineStruct('qcow2 snapshot entry', 40, {
  l1TableOffset: [0, u64be],
  l1Size: [8, u32be],
  idSize: [12, u16be],
  nameSize: [14, u16be],
  dateSec: [16, u32be],
  dateNsec: [20, u32be],
  vmClockNsec: [24, u64be],
  vmStateSize: [32, u32be],
  extraDataSize: [36, u32be],
});

/** The extra data qemu writes after the fixed part (24 bytes; older images have less). */
export const SnapshotExtraData = defineStruct('qcow2 snapshot extra data', 24, {
  vmStateSizeLarge: [0, u64be],
  diskSize: [8, u64be],
  icount: [16, u64be],
});

/** One decoded snapshot table entry. */
export interface Qcow2Snapshot {
  l1TableOffset: number;
  l1Size: number;
  id: string;
  name: string;
  dateSec: number;
  dateNsec: number;
  /** The guest clock: a bigint, as it passes 2^53 ns after 104 days of guest time. */
  vmClockNsec: bigint;
  vmStateSize: number;
  /** Virtual disk size when the snapshot was taken (the current size when not recorded). */
  diskSize: number;
  /** Instruction count, absent when not recorded (qemu stores -1); a bigint like the clock. */
  icount?: bigint;
  /** The raw extra data bytes, kept whole for rewriting. */
  extraData: Uint8Array;
  /**
   * The id and name as stored, byte for byte (qemu takes any bytes; `id` and
   * `name` are their UTF-8 readings). Absent for a snapshot made here.
   */
  idBytes?: Uint8Array;
  nameBytes?: Uint8Array;
}

const utf8 = new TextDecoder();

/**
 * The snapshot table's bytes, read on demand in growing chunks: a table is
 * usually a few hundred bytes, but may be up to MAX_SNAPSHOT_TABLE_BYTES.
 * Bytes past the end of the file read as zeros, as qemu reads them (its block
 * layer fills a read past the end with zeros): a table cut short by a
 * truncated file still opens, and check reports its zeroed entries.
 */
class TableBytes {
  bytes: Uint8Array = new Uint8Array(0);

  constructor(
    private readonly device: BlockDevice,
    readonly base: number,
  ) {}

  /** Makes bytes [0, end) of the table available; throws when they are over the limit. */
  async ensure(end: number): Promise<void> {
    if (end <= this.bytes.length) return;
    if (end > MAX_SNAPSHOT_TABLE_BYTES) {
      throw new LimitExceededError(`snapshot table is larger than ${MAX_SNAPSHOT_TABLE_BYTES} bytes`);
    }
    const length = Math.min(Math.max(end, this.bytes.length * 2, 4096), MAX_SNAPSHOT_TABLE_BYTES);
    const inFile = Math.min(length, Math.max(0, this.device.size - this.base));
    const bytes = new Uint8Array(length);
    if (inFile > 0) bytes.set(await this.device.read(this.base, inFile));
    this.bytes = bytes;
  }
}

/** Reads the table: where it is and how many entries; `currentSize` fills missing disk sizes. */
export async function readSnapshotTable(
  device: BlockDevice,
  table: { snapshotsOffset: number; nbSnapshots: number; clusterSize: number },
  currentSize: number,
): Promise<Qcow2Snapshot[]> {
  const snapshots: Qcow2Snapshot[] = [];
  const bytes = new TableBytes(device, table.snapshotsOffset);
  let offset = 0;
  for (let index = 0; index < table.nbSnapshots; index++) {
    offset = alignUp(offset, 8);
    await bytes.ensure(offset + SnapshotHeader.size);
    const fixed = SnapshotHeader.decode(bytes.bytes, offset);
    if (fixed.extraDataSize > MAX_SNAPSHOT_EXTRA_DATA) {
      throw new CorruptImageError(
        `too much extra data in snapshot table entry ${index} (${fixed.extraDataSize} bytes)`,
        bytes.base + offset + 36,
      );
    }
    const entryEnd = offset + SnapshotHeader.size + fixed.extraDataSize + fixed.idSize + fixed.nameSize;
    await bytes.ensure(entryEnd);
    snapshots.push(decodeEntry(bytes.bytes, offset, fixed, bytes.base, currentSize));
    offset = entryEnd;
  }
  return snapshots;
}

/** Nothing, shared: a table of 65536 empty entries would otherwise hold 196,608 empty buffers (about 40 MiB more peak RSS). */
const NO_BYTES = new Uint8Array(0);

/** A copy of bytes [from, to), owned by the entry (the table's buffer is dropped once read). */
function copyOf(bytes: Uint8Array, from: number, to: number): Uint8Array {
  return from === to ? NO_BYTES : bytes.slice(from, to);
}

function decodeEntry(
  bytes: Uint8Array,
  offset: number,
  fixed: Decoded<typeof SnapshotHeader.fields>,
  base: number,
  currentSize: number,
): Qcow2Snapshot {
  const where = base + offset;
  const l1TableOffset = u64ToNumber(fixed.l1TableOffset, 'snapshot L1 table offset', where);
  const extraAt = offset + SnapshotHeader.size;
  const extraData = copyOf(bytes, extraAt, extraAt + fixed.extraDataSize);
  const extra = decodeExtra(extraData, where + SnapshotHeader.size);
  const idAt = extraAt + fixed.extraDataSize;
  const nameAt = idAt + fixed.idSize;
  const snapshot: Qcow2Snapshot = {
    l1TableOffset,
    l1Size: fixed.l1Size,
    id: utf8.decode(bytes.subarray(idAt, nameAt)),
    name: utf8.decode(bytes.subarray(nameAt, nameAt + fixed.nameSize)),
    idBytes: copyOf(bytes, idAt, nameAt),
    nameBytes: copyOf(bytes, nameAt, nameAt + fixed.nameSize),
    dateSec: fixed.dateSec,
    dateNsec: fixed.dateNsec,
    vmClockNsec: fixed.vmClockNsec,
    vmStateSize: extra.vmStateSizeLarge ?? fixed.vmStateSize,
    diskSize: extra.diskSize ?? currentSize,
    extraData,
  };
  if (extra.icount !== undefined) snapshot.icount = extra.icount;
  return snapshot;
}

function decodeExtra(extra: Uint8Array, where: number): { vmStateSizeLarge?: number; diskSize?: number; icount?: bigint } {
  const padded = new Uint8Array(SnapshotExtraData.size);
  padded.set(extra.subarray(0, SnapshotExtraData.size));
  const decoded = SnapshotExtraData.decode(padded);
  const result: { vmStateSizeLarge?: number; diskSize?: number; icount?: bigint } = {};
  if (extra.length >= 8) result.vmStateSizeLarge = u64ToNumber(decoded.vmStateSizeLarge, 'snapshot vm state size', where);
  if (extra.length >= 16) result.diskSize = u64ToNumber(decoded.diskSize, 'snapshot disk size', where + 8);
  // icount of all ones means "not recorded".
  if (extra.length >= 24 && decoded.icount !== 0xffffffffffffffffn) result.icount = decoded.icount;
  return result;
}

/** The snapshot as the core's SnapshotInfo (what `info` shows). */
export function snapshotInfo(snapshot: Qcow2Snapshot): SnapshotInfo {
  const info: SnapshotInfo = {
    id: snapshot.id,
    name: snapshot.name,
    vmStateSize: snapshot.vmStateSize,
    dateSec: snapshot.dateSec,
    dateNsec: snapshot.dateNsec,
    vmClockNsec: snapshot.vmClockNsec,
    diskSize: snapshot.diskSize,
  };
  if (snapshot.icount !== undefined) info.icount = snapshot.icount;
  return info;
}

/**
 * Which snapshot: a bare word (an id first, then a name, as qemu looks it up),
 * or an id and/or a name that must both match (qemu's snapshot.id= and snapshot.name=).
 */
export type SnapshotRef = string | { id?: string; name?: string };

/** Finds a snapshot the way qemu does (see SnapshotRef). */
export function findSnapshot(snapshots: readonly Qcow2Snapshot[], ref: SnapshotRef): Qcow2Snapshot | undefined {
  if (typeof ref === 'string') return snapshots.find((s) => s.id === ref) ?? snapshots.find((s) => s.name === ref);
  if (ref.id === undefined && ref.name === undefined) return undefined;
  return snapshots.find((s) => (ref.id === undefined || s.id === ref.id) && (ref.name === undefined || s.name === ref.name));
}

/** A SnapshotRef as messages name it. */
export function describeSnapshotRef(ref: SnapshotRef): string {
  if (typeof ref === 'string') return `'${ref}'`;
  const parts = [ref.id === undefined ? '' : `id '${ref.id}'`, ref.name === undefined ? '' : `name '${ref.name}'`];
  return `with ${parts.filter(Boolean).join(' and ') || 'neither id nor name'}`;
}

/** Bytes the snapshot table of `snapshots` takes in the file (each entry starts on an 8-byte boundary). */
export function snapshotTableBytes(snapshots: readonly Qcow2Snapshot[]): number {
  // As qemu's snapshots_size: each entry starts 8-aligned; the last one's end is not rounded up.
  let total = 0;
  for (const snapshot of snapshots) {
    total = alignUp(total, 8) + SnapshotHeader.size + snapshot.extraData.length + storedId(snapshot).length + storedName(snapshot).length;
  }
  return total;
}

const utf8Encoder = new TextEncoder();

/** The id as it is (or will be) stored in the table. */
export function storedId(snapshot: Qcow2Snapshot): Uint8Array {
  return snapshot.idBytes ?? utf8Encoder.encode(snapshot.id);
}

/** The name as it is (or will be) stored in the table. */
export function storedName(snapshot: Qcow2Snapshot): Uint8Array {
  return snapshot.nameBytes ?? utf8Encoder.encode(snapshot.name);
}
