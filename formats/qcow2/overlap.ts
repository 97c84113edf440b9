/**
 * The writer's guard against laying guest data over metadata (qemu's
 * pre-write overlap check). A damaged or hostile image can have an L2 entry
 * point at a refcount block, an L2 table or the header, or give a metadata
 * cluster a refcount of 0 so that it looks free: a guest write would then
 * overwrite metadata and corrupt the image further. Before an in-place data
 * write and before a free cluster is reused, the host range is compared with
 * where the metadata is now: header, active L1 and L2 tables, refcount table
 * and blocks, snapshot table and the snapshots' L1 tables (inactive L2 tables
 * are not tracked, as qemu does not by default: finding them means reading
 * every snapshot's L1).
 */

import { CorruptImageError } from '../../src/core/errors.js';
import { l1EntryL2Offset } from './entries.js';
import type { Qcow2Metadata } from './metadata.js';
import type { Refcounts } from './refcount.js';
import { snapshotTableBytes, type Qcow2Snapshot } from './snapshots.js';

/** What a metadata cluster holds, for messages. */
export type MetadataKind =
  | 'header'
  | 'active L1 table'
  | 'active L2 table'
  | 'refcount table'
  | 'refcount block'
  | 'snapshot table'
  | 'snapshot L1 table';

/** Where an image's metadata lies, asked before data goes to a host range. */
export class MetadataOverlap {
  /** How many active L1 entries point at each L2 table offset, built from the L1 table the first time it is needed. */
  private l2Tables?: Map<number, number>;
  /** The L1 table the counts were built from: a new one (resize, snapshot revert) means building them again. */
  private builtFrom?: DataView;
  private snapshotBytes?: { of: readonly Qcow2Snapshot[]; bytes: number };

  constructor(
    private readonly metadata: Qcow2Metadata,
    private readonly refcounts: Refcounts,
  ) {}

  /**
   * Records that an active L1 entry now points at `newOffset` instead of
   * `oldOffset` (0: no table), as the writer changes it: kept exact, so that a
   * table given up is free for reuse at once.
   */
  l1EntryChanged(oldOffset: number, newOffset: number): void {
    const tables = this.activeL2Tables();
    if (oldOffset !== 0) {
      const count = (tables.get(oldOffset) ?? 0) - 1;
      if (count > 0) tables.set(oldOffset, count);
      else tables.delete(oldOffset);
    }
    if (newOffset !== 0) tables.set(newOffset, (tables.get(newOffset) ?? 0) + 1);
  }

  /** The metadata in host range [offset, offset+length), if any; `ignore` names a kind not looked for (the table being written). */
  find(offset: number, length: number, ignore?: MetadataKind): MetadataKind | undefined {
    const { header, clusterSize, snapshots } = this.metadata;
    const overlaps = (kind: MetadataKind, start: number, bytes: number) => kind !== ignore && bytes > 0 && start < offset + length && offset < start + bytes;
    if (overlaps('header', 0, clusterSize)) return 'header';
    if (overlaps('active L1 table', header.l1TableOffset, header.l1Size * 8)) return 'active L1 table';
    if (overlaps('refcount table', this.refcounts.tableOffset, this.refcounts.tableClusters * clusterSize)) return 'refcount table';
    if (overlaps('snapshot table', header.snapshotsOffset, this.snapshotTableBytes())) return 'snapshot table';
    for (const snapshot of snapshots) {
      if (overlaps('snapshot L1 table', snapshot.l1TableOffset, snapshot.l1Size * 8)) return 'snapshot L1 table';
    }
    const l2Tables = this.activeL2Tables();
    const first = Math.floor(offset / clusterSize) * clusterSize;
    for (let cluster = first; cluster < offset + length; cluster += clusterSize) {
      if (ignore !== 'refcount block' && this.refcounts.holdsBlockAt(cluster)) return 'refcount block';
      if (ignore !== 'active L2 table' && l2Tables.has(cluster)) return 'active L2 table';
    }
    return undefined;
  }

  /** Throws CorruptImageError when guest data bound for the host range would land on metadata. */
  check(offset: number, length: number, guestOffset: number): void {
    const kind = this.find(offset, length);
    if (kind === undefined) return;
    throw new CorruptImageError(
      `refusing a write at guest offset ${guestOffset}: its cluster at host offset ${offset} overlaps the ${kind} (run 'platter check')`,
      offset,
    );
  }

  /** The snapshot table's size, worked out again only when the table changed. */
  private snapshotTableBytes(): number {
    const { snapshots } = this.metadata;
    if (this.snapshotBytes?.of !== snapshots) this.snapshotBytes = { of: snapshots, bytes: snapshotTableBytes(snapshots) };
    return this.snapshotBytes.bytes;
  }

  private activeL2Tables(): Map<number, number> {
    const { l1, header } = this.metadata;
    if (!this.l2Tables || this.builtFrom !== l1) {
      this.l2Tables = new Map();
      for (let index = 0; index < header.l1Size; index++) {
        const offset = entryOrZero(() => l1EntryL2Offset(l1, index, header.l1TableOffset));
        if (offset !== 0) this.l2Tables.set(offset, (this.l2Tables.get(offset) ?? 0) + 1);
      }
      this.builtFrom = l1;
    }
    return this.l2Tables;
  }
}

/** qemu's name for each kind, as its "Preventing invalid write on metadata" message gives it. */
const QEMU_METADATA_NAMES: Record<MetadataKind, string> = {
  header: 'qcow2_header',
  'active L1 table': 'active L1 table',
  'active L2 table': 'active L2 table',
  'refcount table': 'refcount table',
  'refcount block': 'refcount block',
  'snapshot table': 'snapshot table',
  'snapshot L1 table': 'inactive L1 table',
};

/** How qemu names metadata of `kind` in its messages. */
export function qemuMetadataName(kind: MetadataKind): string {
  return QEMU_METADATA_NAMES[kind];
}

/** An entry's offset, or 0 for an entry too broken to read (a write that reaches it fails there). */
function entryOrZero(read: () => number): number {
  try {
    return read();
  } catch {
    return 0;
  }
}
