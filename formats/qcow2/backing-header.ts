/**
 * Changing the backing file an image names (qemu-img rebase's header update):
 * cluster 0 is rewritten in one write with the new name and backing-format
 * extension; every other extension, known or not, is kept in its order.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { UnsupportedFeatureError, UsageError } from '../../src/core/errors.js';
import { EXT_BACKING_FORMAT, encodeExtensions, type RawExtension } from './extensions.js';
import { encodeHeader, isDataFileRaw } from './header.js';
import { MAX_BACKING_FILE_NAME } from './limits.js';
import type { Qcow2Metadata } from './metadata.js';

/** The backing file an image should name: none when `file` is undefined. */
export interface BackingReference {
  file?: string;
  format?: string;
}

/**
 * The extension records with the backing-format record replaced: it goes first,
 * where qemu writes it; it is dropped without a backing file or a format.
 */
export function withBackingFormat(records: readonly RawExtension[], reference: BackingReference): RawExtension[] {
  const rest = records.filter((record) => record.type !== EXT_BACKING_FORMAT);
  if (reference.file === undefined || reference.format === undefined) return rest;
  return [{ type: EXT_BACKING_FORMAT, data: new TextEncoder().encode(reference.format) }, ...rest];
}

/** Where the parts of cluster 0 go; throws when the name is too long or does not fit. */
function layoutCluster0(metadata: Qcow2Metadata, reference: BackingReference) {
  const name = reference.file === undefined ? new Uint8Array(0) : new TextEncoder().encode(reference.file);
  if (name.length > MAX_BACKING_FILE_NAME) throw new UsageError(`backing file name is too long (${name.length} bytes, at most ${MAX_BACKING_FILE_NAME})`);
  const records = withBackingFormat(metadata.extensions.all, reference);
  const extensions = encodeExtensions(records);
  const nameAt = metadata.header.headerLength + extensions.length;
  if (name.length > metadata.clusterSize - nameAt) {
    throw new UsageError(`the backing file name does not fit in the header cluster (${metadata.clusterSize} bytes)`);
  }
  return { name, records, extensions, nameAt };
}

/** Throws, changing nothing, when cluster 0 cannot name `reference`: check before doing work that depends on it. */
export function checkBackingReference(metadata: Qcow2Metadata, reference: BackingReference): void {
  // The raw data file is the whole disk, so nothing may show through from below (qemu: EINVAL).
  if (reference.file !== undefined && isDataFileRaw(metadata.header)) {
    throw new UnsupportedFeatureError(`Could not change the backing file to '${reference.file}': an image whose data file is raw (data_file_raw) cannot have a backing file`);
  }
  layoutCluster0(metadata, reference);
}

/**
 * Encodes cluster 0 naming `reference` as the backing file, updating
 * `metadata.header` (and the cached name and format) in place so that later
 * header writes by an open writer agree with it.
 */
export function encodeBackingCluster0(metadata: Qcow2Metadata, reference: BackingReference): Uint8Array {
  const { header, clusterSize } = metadata;
  const { name, records, extensions, nameAt } = layoutCluster0(metadata, reference);
  header.backingFileOffset = name.length > 0 ? nameAt : 0;
  header.backingFileSize = name.length;
  metadata.extensions.all = records;
  metadata.extensions.backingFormat = name.length > 0 ? reference.format : undefined;
  metadata.backingFileName = name.length > 0 ? reference.file : undefined;
  // The whole cluster, zero-padded: no stale name bytes stay behind a shorter one.
  const cluster = new Uint8Array(clusterSize);
  cluster.set(encodeHeader(header), 0);
  cluster.set(extensions, header.headerLength);
  cluster.set(name, nameAt);
  return cluster;
}

/** Rewrites cluster 0 of the qcow2 image on `device` to name `reference` as its backing file. */
export async function writeBackingReference(device: BlockDevice, metadata: Qcow2Metadata, reference: BackingReference): Promise<void> {
  const cluster = encodeBackingCluster0(metadata, reference);
  await device.flush?.();
  await device.write!(0, cluster);
  await device.flush?.();
}
