/**
 * Reading and checking everything an open qcow2 image keeps in memory: the
 * header, extensions, backing file name, active L1 table, snapshot table and
 * bitmap list (qemu's qcow2_do_open, read side). Nothing here opens other files.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { CorruptImageError } from '../../src/core/errors.js';
import { readBitmapDirectory, type BitmapInfo } from './bitmaps.js';
import type { ClusterGeometry } from './clusters.js';
import { readEncryptionInfo } from './encryption.js';
import { parseExtensions, readBackingFileName, type HeaderExtensions } from './extensions.js';
import {
  AUTOCLEAR_BITMAPS,
  HEADER_V3_BYTES,
  checkIncompatibleFeatures,
  clusterSizeOf,
  hasDataFile,
  hasExtendedL2,
  l2EntriesOf,
  parseHeader,
  validateTableOffset,
  type Qcow2Header,
} from './header.js';
import { MAX_L1_BYTES } from './limits.js';
import { readSnapshotTable, type Qcow2Snapshot } from './snapshots.js';

/** What an open image knows about itself. */
export interface Qcow2Metadata {
  header: Qcow2Header;
  extensions: HeaderExtensions;
  clusterSize: number;
  geometry: ClusterGeometry;
  backingFileName?: string;
  /** The active L1 table. */
  l1: DataView;
  snapshots: Qcow2Snapshot[];
  bitmaps: BitmapInfo[];
  /** An encrypted image (opened only to be described): qemu-img info's `encrypt` object. */
  encrypt?: Record<string, unknown>;
}

/**
 * Reads and validates the metadata of the qcow2 image on `device`. An
 * encrypted image is refused unless `describeEncrypted` (for info): then its
 * encryption header is read too (`encrypt`). `forCheck` opens what qemu opens
 * for a check only: tables past the end of the file (read as zeros there, for
 * the check to report) and no refcount table.
 */
export async function readMetadata(device: BlockDevice, options: { describeEncrypted?: boolean; forCheck?: boolean } = {}): Promise<Qcow2Metadata> {
  const describeEncrypted = options.describeEncrypted === true;
  const forCheck = options.forCheck === true;
  const cluster0 = await readCluster0(device, describeEncrypted, forCheck);
  const header = parseHeader(cluster0, forCheck ? undefined : device.size, describeEncrypted, forCheck);
  const extensions = parseExtensions(cluster0, header);
  checkIncompatibleFeatures(header, extensions.featureNames);
  const clusterSize = clusterSizeOf(header);
  const geometry: ClusterGeometry = {
    clusterBits: header.clusterBits,
    clusterSize,
    l2Entries: l2EntriesOf(header),
    extendedL2: hasExtendedL2(header),
    dataFile: hasDataFile(header),
    zeroFlag: header.version >= 3,
  };
  const l1 = await readL1Table(device, header.l1TableOffset, header.l1Size, clusterSize, 'L1 table', forCheck);
  const snapshots = await readSnapshotTable(
    device,
    { snapshotsOffset: header.snapshotsOffset, nbSnapshots: header.nbSnapshots, clusterSize },
    header.size,
  );
  // A writer unaware of bitmaps clears the autoclear bit; the extension is stale then (qemu ignores it).
  const bitmapsValid = extensions.bitmaps !== undefined && (header.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n;
  const bitmaps = bitmapsValid ? await readBitmapDirectory(device, extensions.bitmaps!, { clusterSize, diskSize: header.size }) : [];
  const metadata: Qcow2Metadata = { header, extensions, clusterSize, geometry, l1, snapshots, bitmaps };
  const encrypt = await readEncryptionInfo(device, header, extensions);
  if (encrypt) metadata.encrypt = encrypt;
  const backingFileName = readBackingFileName(cluster0, header);
  if (backingFileName !== undefined) metadata.backingFileName = backingFileName;
  return metadata;
}

/** Reads cluster 0 (or the whole file when it is shorter): header, extensions and backing name. */
async function readCluster0(device: BlockDevice, describeEncrypted: boolean, forCheck: boolean): Promise<Uint8Array> {
  const head = await device.read(0, Math.min(device.size, HEADER_V3_BYTES));
  const { clusterBits } = parseHeader(head, undefined, describeEncrypted, forCheck);
  return device.read(0, Math.min(device.size, 2 ** clusterBits));
}

/** Reads an L1 table of `entries` entries, after the offset and size checks qemu makes. */
export async function readL1Table(
  device: BlockDevice,
  offset: number,
  entries: number,
  clusterSize: number,
  what = 'L1 table',
  zerosPastEnd = false,
): Promise<DataView> {
  if (entries > MAX_L1_BYTES / 8) throw new CorruptImageError(`${what} too large (${entries} entries)`);
  // With `zerosPastEnd` (a check) the part past the end of the file reads as zeros, as qemu reads it.
  validateTableOffset(offset, entries * 8, clusterSize, zerosPastEnd ? undefined : device.size, what, offset);
  const length = entries * 8;
  const stored = Math.max(0, Math.min(length, device.size - offset));
  // A table wholly in the file (always, but for a check) is the read itself; only a cut one is copied into zeros.
  let bytes = stored > 0 ? await device.read(offset, stored) : new Uint8Array(0);
  if (stored < length) {
    const padded = new Uint8Array(length);
    padded.set(bytes);
    bytes = padded;
  }
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
