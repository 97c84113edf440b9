/** `info`: what an image is — format, sizes, backing file, format-specific facts. */

import type { Image, SnapshotInfo } from '../core/image.js';

/** qemu-img info's JSON object for one image (keys in qemu's spelling). */
export interface ImageInfo {
  'virtual-size': number;
  filename: string;
  format: string;
  'actual-size'?: number;
  'cluster-size'?: number;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  'dirty-flag': boolean;
  'format-specific'?: { type: string; data: Record<string, unknown> };
  encrypted?: boolean;
  snapshots?: SnapshotJson[];
}

/** One snapshot as qemu-img prints it. */
export interface SnapshotJson {
  id: string;
  name: string;
  'vm-state-size': number;
  'date-sec': number;
  'date-nsec': number;
  'vm-clock-sec': number;
  'vm-clock-nsec': number;
  /** A number, or a bigint past 2^53 (which JSON.stringify refuses; the CLI prints it whole). */
  icount?: number | bigint;
}

/**
 * The order qemu-img 7.2 prints keys in (its JSON objects come from a hash
 * table, so the order is fixed but not alphabetical). Matching it lets text
 * diffs against qemu-img stay clean.
 */
const INFO_KEY_ORDER = [
  'backing-filename-format',
  'snapshots',
  'virtual-size',
  'filename',
  'cluster-size',
  'format',
  'actual-size',
  'format-specific',
  'full-backing-filename',
  'encrypted',
  'backing-filename',
  'dirty-flag',
];
const SNAPSHOT_KEY_ORDER = ['icount', 'vm-clock-nsec', 'name', 'date-sec', 'date-nsec', 'vm-clock-sec', 'id', 'vm-state-size'];

/** A copy of `object` with its keys in `order` (keys not listed keep their place at the end). */
function ordered<T extends object>(object: T, order: readonly string[]): T {
  const source = object as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const key of order) if (key in source) out[key] = source[key];
  for (const key of Object.keys(source)) if (!(key in out)) out[key] = source[key];
  return out as T;
}

const NS_PER_SEC = 1_000_000_000n;

/** `value` as a number when that is exact, else as it is. */
function exactNumber(value: bigint): number | bigint {
  return value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
}

/** Converts a snapshot record to qemu-img's JSON shape. */
export function snapshotJson(snapshot: SnapshotInfo): SnapshotJson {
  const json: SnapshotJson = {
    id: snapshot.id,
    name: snapshot.name,
    'vm-state-size': snapshot.vmStateSize,
    'date-sec': snapshot.dateSec,
    'date-nsec': snapshot.dateNsec,
    'vm-clock-sec': Number(snapshot.vmClockNsec / NS_PER_SEC),
    'vm-clock-nsec': Number(snapshot.vmClockNsec % NS_PER_SEC),
  };
  if (snapshot.icount !== undefined) json.icount = exactNumber(snapshot.icount);
  return ordered(json, SNAPSHOT_KEY_ORDER);
}

/** The info of one opened image (not its backing chain). */
export async function imageInfo(image: Image): Promise<ImageInfo> {
  const described = image.describe();
  const info: ImageInfo = {
    'virtual-size': image.size,
    filename: image.device.name,
    format: image.format,
    'dirty-flag': described.dirty ?? false,
  };
  const actual = await image.device.allocatedBytes?.();
  if (actual !== undefined) info['actual-size'] = actual;
  if (described.clusterSize !== undefined) info['cluster-size'] = described.clusterSize;
  if (described.backingFilename !== undefined) {
    info['backing-filename'] = described.backingFilename;
    if (described.fullBackingFilename !== undefined) info['full-backing-filename'] = described.fullBackingFilename;
    if (described.backingFormat !== undefined) info['backing-filename-format'] = described.backingFormat;
  }
  if (described.formatSpecific) info['format-specific'] = described.formatSpecific;
  if (described.encrypted) info.encrypted = true;
  if (described.snapshots && described.snapshots.length > 0) info.snapshots = described.snapshots.map(snapshotJson);
  return ordered(info, INFO_KEY_ORDER);
}

/** The info of an image and, with `backingChain`, of every image below it (top first). */
export async function info(image: Image, options: { backingChain?: boolean } = {}): Promise<ImageInfo[]> {
  const chain: ImageInfo[] = [];
  for (let layer: Image | undefined = image; layer; layer = options.backingChain ? layer.backing : undefined) {
    chain.push(await imageInfo(layer));
  }
  return chain;
}
