/**
 * Size arithmetic for new qcow2 images (qemu's qcow2_calc_prealloc_size and
 * qcow2_refcount_metadata_size), used by `measure` and preallocation.
 */

/** Bytes per L1 entry and per refcount table entry. */
const TABLE_ENTRY_BYTES = 8;

/**
 * Refcount table and block bytes needed to count `clusters` clusters plus the
 * refcount structures themselves: the fixed point where no further block or
 * table cluster is needed.
 */
export function refcountMetadataBytes(clusters: number, clusterSize: number, refcountOrder: number): number {
  const { blocks, tableClusters } = refcountStructure(clusters, clusterSize, refcountOrder, false);
  return (blocks + tableClusters) * clusterSize;
}

/**
 * The refcount blocks and table clusters that count `clusters` clusters and
 * themselves. With `generous`, room for half the table again is counted once
 * more, as qemu sizes the structures it makes when its refcount table grows.
 */
export function refcountStructure(
  clusters: number,
  clusterSize: number,
  refcountOrder: number,
  generous: boolean,
): { blocks: number; tableClusters: number } {
  const blocksPerTableCluster = clusterSize / TABLE_ENTRY_BYTES;
  const refcountsPerBlock = (clusterSize * 8) / 2 ** refcountOrder;
  let table = 0;
  let blocks = 0;
  let total = 0;
  let last: number;
  do {
    last = total;
    blocks = Math.ceil((clusters + table + blocks) / refcountsPerBlock);
    table = Math.ceil(blocks / blocksPerTableCluster);
    total = clusters + blocks + table;
    if (total === last && generous) {
      clusters += Math.ceil(table / 2);
      total = 0;
      generous = false;
    }
  } while (total !== last);
  return { blocks, tableClusters: table };
}

/** Size of a fully allocated image of `virtualSize` bytes: header, every L2 table, the L1 table, refcounts and data. */
export function fullyAllocatedBytes(virtualSize: number, clusterSize: number, refcountOrder: number, extendedL2: boolean): number {
  const alignedSize = Math.ceil(virtualSize / clusterSize) * clusterSize;
  const l2EntryBytes = extendedL2 ? 16 : 8;
  let metadata = clusterSize; // the header cluster
  const l2Entries = roundUp(alignedSize / clusterSize, clusterSize / l2EntryBytes);
  metadata += l2Entries * l2EntryBytes;
  const l1Entries = roundUp((l2Entries * l2EntryBytes) / clusterSize, clusterSize / TABLE_ENTRY_BYTES);
  metadata += l1Entries * TABLE_ENTRY_BYTES;
  metadata += refcountMetadataBytes((metadata + alignedSize) / clusterSize, clusterSize, refcountOrder);
  return metadata + alignedSize;
}

/** Bytes persistent bitmaps would take in a new image (qemu's qcow2_measure, bitmaps part). */
export function bitmapBytes(bitmaps: readonly { name: string; granularity: number }[], virtualSize: number, clusterSize: number): number {
  let directory = 0;
  let total = 0;
  for (const bitmap of bitmaps) {
    const bits = Math.ceil(virtualSize / bitmap.granularity);
    const clusters = Math.ceil(bits / (clusterSize * 8));
    // Directory entry: 24 fixed bytes plus the name, padded to 8.
    directory += Math.ceil((24 + new TextEncoder().encode(bitmap.name).length) / 8) * 8;
    total += roundUp(clusters * TABLE_ENTRY_BYTES, clusterSize) + clusters * clusterSize;
  }
  return total + roundUp(directory, clusterSize);
}

function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}
