/**
 * L2 entries and tables on the write side (qemu's get_cluster_table and
 * l2_allocate): finding an entry's slot, creating a missing L2 table, copying
 * a table shared with a snapshot before it changes, and writing entries back.
 * A new table is written before the L1 entry that points at it.
 */

import { CorruptImageError } from '../../src/core/errors.js';
import { COPIED_HI, l1EntryCopied, l1EntryL2Offset, l2EntryPosition } from './entries.js';
import type { WriterHost } from './write.js';

const TWO_POW_32 = 0x100000000;


/** One L2 entry's place: its table and index. */
export interface L2Slot {
  table: DataView;
  tableOffset: number;
  index: number;
}

/** Encodes an offset with flag bits in the high word into an 8-byte entry. */
export function setEntry(view: DataView, at: number, offset: number, hiFlags: number, loFlags = 0): void {
  view.setUint32(at, (hiFlags | Math.floor(offset / TWO_POW_32)) >>> 0);
  view.setUint32(at + 4, ((offset % TWO_POW_32) | loFlags) >>> 0);
}

/** The L2 side of a writer. */
export class L2Tables {
  constructor(private readonly host: WriterHost) {}

  /** Points the L2 entry at `hostOffset` (COPIED), with a subcluster bitmap for extended L2. */
  setDataEntry(slot: L2Slot, hostOffset: number, allocated: number, zero: number): Promise<void> {
    return this.setDataRun(slot, 1, hostOffset, allocated, zero);
  }

  /**
   * Points `count` entries from the slot's on at host clusters one after
   * another from `hostOffset` (COPIED; with extended L2, each with the given
   * subcluster bitmap: none allocated by default, as preallocation leaves
   * them), written with one write.
   */
  async setDataRun(slot: L2Slot, count: number, hostOffset: number, allocated = 0, zero = 0): Promise<void> {
    const { extendedL2 } = this.host.metadata.geometry;
    const clusterSize = this.host.metadata.clusterSize;
    for (let i = 0; i < count; i++) {
      const at = l2EntryPosition(slot.index + i, extendedL2);
      setEntry(slot.table, at, hostOffset + i * clusterSize, COPIED_HI);
      if (extendedL2) {
        slot.table.setUint32(at + 8, zero);
        slot.table.setUint32(at + 12, allocated);
      }
    }
    const from = l2EntryPosition(slot.index, extendedL2);
    const to = l2EntryPosition(slot.index + count, extendedL2);
    await this.host.device.write!(slot.tableOffset + from, new Uint8Array(slot.table.buffer, slot.table.byteOffset + from, to - from).slice());
  }

  /** Writes an extended entry's subcluster bitmap. */
  async writeBitmap(slot: L2Slot, allocated: number, zero: number): Promise<void> {
    const at = l2EntryPosition(slot.index, true);
    slot.table.setUint32(at + 8, zero);
    slot.table.setUint32(at + 12, allocated);
    await this.host.device.write!(slot.tableOffset + at + 8, new Uint8Array(slot.table.buffer, slot.table.byteOffset + at + 8, 8).slice());
  }

  /** Writes one L2 entry (8 or 16 bytes) from the cached table to the file. */
  async writeEntry(slot: L2Slot): Promise<void> {
    const bytes = this.host.metadata.geometry.extendedL2 ? 16 : 8;
    const at = l2EntryPosition(slot.index, this.host.metadata.geometry.extendedL2);
    await this.host.device.write!(slot.tableOffset + at, new Uint8Array(slot.table.buffer, slot.table.byteOffset + at, bytes).slice());
  }

  /**
   * The L2 entry for the cluster at `clusterStart`. With `allocate`, a missing
   * L2 table is created and a shared one (L1 entry without COPIED) is copied
   * first; without, a missing table gives undefined.
   */
  async slot(clusterStart: number, allocate: true): Promise<L2Slot>;
  async slot(clusterStart: number, allocate: boolean): Promise<L2Slot | undefined>;
  async slot(clusterStart: number, allocate: boolean): Promise<L2Slot | undefined> {
    const { l2Entries } = this.host.metadata.geometry;
    const clusterIndex = Math.floor(clusterStart / this.host.metadata.clusterSize);
    const l1Index = Math.floor(clusterIndex / l2Entries);
    const index = clusterIndex % l2Entries;
    const l1 = this.host.metadata.l1;
    if (l1Index >= this.host.metadata.header.l1Size) throw new CorruptImageError(`guest offset ${clusterStart} is outside the L1 table`);
    let tableOffset = l1EntryL2Offset(l1, l1Index, this.host.metadata.header.l1TableOffset);
    if (tableOffset === 0) {
      if (!allocate) return undefined;
      tableOffset = await this.newL2Table(l1Index, new Uint8Array(this.host.metadata.clusterSize), 0);
    } else if (allocate && !l1EntryCopied(l1, l1Index)) {
      const shared = await this.host.l2Cache.get(tableOffset);
      const copy = new Uint8Array(shared.buffer, shared.byteOffset, shared.byteLength).slice();
      const oldOffset = tableOffset;
      tableOffset = await this.newL2Table(l1Index, copy, oldOffset);
      await this.host.allocator.release(oldOffset, this.host.metadata.clusterSize);
    }
    return { table: await this.host.l2Cache.get(tableOffset), tableOffset, index };
  }

  /** Allocates and writes an L2 table with `contents`, then points L1 entry `l1Index` at it instead of at `replaced` (0: none). */
  private async newL2Table(l1Index: number, contents: Uint8Array, replaced: number): Promise<number> {
    const offset = await this.host.allocator.allocate();
    await this.host.device.write!(offset, contents);
    this.host.l2Cache.put(offset, new DataView(contents.buffer, contents.byteOffset, contents.byteLength));
    const l1 = this.host.metadata.l1;
    this.host.overlap.l1EntryChanged(replaced, offset);
    setEntry(l1, l1Index * 8, offset, COPIED_HI);
    await this.host.device.write!(this.host.metadata.header.l1TableOffset + l1Index * 8, new Uint8Array(l1.buffer, l1.byteOffset + l1Index * 8, 8).slice());
    return offset;
  }

}
