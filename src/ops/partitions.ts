/**
 * `partitions`: the partition table of an image's virtual disk, with what each
 * partition holds, in sfdisk's shapes; and writing a table from an sfdisk script.
 */

import type { Image } from '../core/image.js';
import type { FilesystemInfo } from '../../formats/fs-probe/index.js';
import { probeRange } from './mount-offset.js';
import { isExtendedType, type PartitionRecord, type PartitionTable } from '../../formats/partition-table/model.js';
import { partitionDisk, readPartitionTable, requireTableWritable, writePartitionTable } from '../engine/partition-table.js';
import { placeScript } from '../engine/partition-layout.js';
import { parseScript } from '../engine/sfdisk-script.js';
import { attributesText } from '../engine/gpt-attributes.js';

/** One partition with its device node name, byte range and contents. */
export interface ListedPartition extends PartitionRecord {
  /** sfdisk's node name: the device name plus the number (`p` between when it ends in a digit). */
  node: string;
  offset: number;
  bytes: number;
  /** What the partition holds (not probed inside extended partitions). */
  filesystem?: FilesystemInfo;
}

/** The listing of one disk. */
export interface PartitionListing {
  /** The name the disk is shown as (the image path as given). */
  device: string;
  diskSize: number;
  /** Undefined when the disk has no partition table. */
  table?: PartitionTable;
  partitions: ListedPartition[];
  /** When there is no table: what sits at offset 0 of the whole disk. */
  wholeDisk?: FilesystemInfo;
  warnings: string[];
}

/** sfdisk's node name for partition `number` of `device`. */
export function nodeName(device: string, number: number): string {
  return /[0-9]$/.test(device) ? `${device}p${number}` : `${device}${number}`;
}

/** Lists the partition table of `image` (any format: the virtual disk is read). */
export async function listPartitions(image: Image, options: { device?: string; probe?: boolean } = {}): Promise<PartitionListing> {
  const device = options.device ?? image.name;
  const disk = partitionDisk(image);
  const table = await readPartitionTable(disk);
  const listing: PartitionListing = { device, diskSize: disk.size, partitions: [], warnings: [...(table?.warnings ?? [])] };
  if (!table) {
    if (options.probe !== false) {
      const found = await probeRange(image, 0, image.size, listing.warnings);
      if (found) listing.wholeDisk = found;
    }
    return listing;
  }
  listing.table = table;
  for (const partition of table.partitions) {
    const listed: ListedPartition = {
      ...partition,
      node: nodeName(device, partition.number),
      offset: partition.start * table.sectorSize,
      bytes: partition.size * table.sectorSize,
    };
    const probeIt = options.probe !== false && !(table.label === 'dos' && isExtendedType(partition.type));
    if (probeIt) {
      const found = await probeRange(image, listed.offset, listed.bytes, listing.warnings);
      if (found) listed.filesystem = found;
    }
    listing.partitions.push(listed);
  }
  return listing;
}

/** One partition in `sfdisk --json`'s shape (plus `filesystem`, which sfdisk does not have). */
export interface SfdiskJsonPartition {
  node: string;
  start: number;
  size: number;
  type: string;
  bootable?: boolean;
  uuid?: string;
  name?: string;
  /** null where the attributes are set but none has a name (bits 3-47 only), as sfdisk prints them. */
  attrs?: string | null;
  filesystem?: FilesystemInfo;
}

/** `sfdisk --json`'s document. */
export interface SfdiskJson {
  partitiontable: {
    label: string;
    id: string;
    device: string;
    unit: 'sectors';
    'table-length'?: string;
    grain?: string;
    firstlba?: number;
    lastlba?: number;
    sectorsize: number;
    partitions: SfdiskJsonPartition[];
    warnings?: string[];
  };
}

function jsonPartition(partition: ListedPartition): SfdiskJsonPartition {
  const json: SfdiskJsonPartition = { node: partition.node, start: partition.start, size: partition.size, type: partition.type };
  if (partition.bootable) json.bootable = true;
  if (partition.uuid !== undefined) json.uuid = partition.uuid;
  if (partition.name !== undefined) json.name = partition.name;
  if (partition.attributes) {
    const attrs = attributesText(partition.attributes);
    json.attrs = attrs === '' ? null : attrs;
  }
  if (partition.filesystem) json.filesystem = partition.filesystem;
  return json;
}

/**
 * fdisk aligns to 1 MiB, except on disks of at most 4 MiB where it aligns to the
 * sector; sfdisk then reports that grain (in bytes). Undefined when it is the default.
 */
export function smallDiskGrain(listing: { diskSize: number; table?: PartitionTable }): number | undefined {
  const sectorSize = listing.table?.sectorSize ?? 512;
  return Math.floor(listing.diskSize / sectorSize) * sectorSize <= 4 * 1024 * 1024 ? sectorSize : undefined;
}

/** A GPT's entry count when it is not the default 128 (sfdisk shows it only then). */
function tableLength(table: PartitionTable): number | undefined {
  return table.label === 'gpt' && table.entryCount !== undefined && table.entryCount !== 128 ? table.entryCount : undefined;
}

/** The listing as `sfdisk --json` prints it; undefined when there is no table. */
export function sfdiskJson(listing: PartitionListing): SfdiskJson | undefined {
  const table = listing.table;
  if (!table) return undefined;
  const grain = smallDiskGrain(listing);
  // Key order follows sfdisk's: first/last LBA and table length (GPT), grain, sector size.
  const document: SfdiskJson = {
    partitiontable: {
      label: table.label,
      id: table.id,
      device: listing.device,
      unit: 'sectors',
      ...(table.label === 'gpt' ? { firstlba: table.firstLba, lastlba: table.lastLba } : {}),
      ...(tableLength(table) !== undefined ? { 'table-length': String(tableLength(table)) } : {}),
      ...(grain !== undefined ? { grain: String(grain) } : {}),
      sectorsize: table.sectorSize,
      partitions: listing.partitions.map(jsonPartition),
    },
  };
  // sfdisk leaves the key out when there are no partitions.
  if (listing.partitions.length === 0) delete (document.partitiontable as Partial<SfdiskJson['partitiontable']>).partitions;
  if (listing.warnings.length > 0) document.partitiontable.warnings = listing.warnings;
  return document;
}

/** The listing as an sfdisk script (`sfdisk -d`); undefined when there is no table. */
export function sfdiskScript(listing: PartitionListing): string | undefined {
  const table = listing.table;
  if (!table) return undefined;
  // Header order follows sfdisk -d: first/last LBA and table length (GPT), grain, sector size.
  const lines = [`label: ${table.label}`, `label-id: ${table.id}`, `device: ${listing.device}`, 'unit: sectors'];
  if (table.label === 'gpt') lines.push(`first-lba: ${table.firstLba}`, `last-lba: ${table.lastLba}`);
  const length = tableLength(table);
  if (length !== undefined) lines.push(`table-length: ${length}`);
  const grain = smallDiskGrain(listing);
  if (grain !== undefined) lines.push(`grain: ${grain}`);
  lines.push(`sector-size: ${table.sectorSize}`);
  if (listing.partitions.length > 0) lines.push('');
  for (const partition of listing.partitions) {
    const fields = [`start=${String(partition.start).padStart(12)}`, `size=${String(partition.size).padStart(12)}`, `type=${partition.type}`];
    if (partition.bootable) fields.push('bootable');
    if (partition.uuid !== undefined) fields.push(`uuid=${partition.uuid}`);
    if (partition.name !== undefined) fields.push(`name="${scriptQuoted(partition.name)}"`);
    // Attributes that are set print, even when none has a name (attrs=""), as in sfdisk -d.
    if (partition.attributes) fields.push(`attrs="${attributesText(partition.attributes)}"`);
    lines.push(`${partition.node} : ${fields.join(', ')}`);
  }
  return lines.join('\n') + '\n';
}

/** Writes the table an sfdisk script describes onto `image`; returns the table written. */
export async function writePartitions(image: Image, scriptText: string): Promise<PartitionTable> {
  requireTableWritable(image);
  const disk = partitionDisk(image);
  const old = await readPartitionTable(disk);
  const { table, ebrs } = placeScript(parseScript(scriptText), disk.size, old);
  await writePartitionTable(disk, table, ebrs);
  return table;
}

/**
 * Escapes a name as sfdisk -d does: every byte of its UTF-8 outside printable
 * ASCII, and a backslash or a quote, as `\xNN`. A lone UTF-16 surrogate (a
 * name cut inside a pair) is written as libfdisk converts it: its three-byte
 * encoding.
 */
function scriptQuoted(text: string): string {
  let quoted = '';
  for (const char of text) {
    const code = char.codePointAt(0)!;
    if (code >= 0x20 && code < 0x7f && char !== '\\' && char !== '"') quoted += char;
    else for (const byte of utf8Bytes(code)) quoted += `\\x${byte.toString(16).padStart(2, '0')}`;
  }
  return quoted;
}

/** The UTF-8 bytes of a code point, surrogates included (encoded as if they were characters). */
function utf8Bytes(code: number): number[] {
  if (code < 0x80) return [code];
  if (code < 0x800) return [0xc0 | (code >> 6), 0x80 | (code & 0x3f)];
  if (code < 0x10000) return [0xe0 | (code >> 12), 0x80 | ((code >> 6) & 0x3f), 0x80 | (code & 0x3f)];
  return [0xf0 | (code >> 18), 0x80 | ((code >> 12) & 0x3f), 0x80 | ((code >> 6) & 0x3f), 0x80 | (code & 0x3f)];
}
