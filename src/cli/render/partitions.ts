/** `platter partitions` text: the layout of `sfdisk -l -uS` plus a filesystem column. */

import { MBR_TYPE_NAMES } from '../../../formats/mbr/index.js';
import { GPT_TYPE_NAMES } from '../../../formats/gpt/index.js';
import type { FilesystemInfo } from '../../../formats/fs-probe/index.js';
import type { ListedPartition, PartitionListing } from '../../ops/partitions.js';
import { humanSize, renderColumns, type Column } from './table.js';

/** A filesystem as one short cell: type, then the label in quotes. */
export function filesystemCell(info: FilesystemInfo | undefined): string {
  if (!info) return '';
  return info.label !== undefined ? `${info.type} "${info.label}"` : info.type;
}

function typeName(label: string, type: string): string {
  if (label === 'dos') return MBR_TYPE_NAMES.get(parseInt(type, 16)) ?? 'unknown';
  return GPT_TYPE_NAMES.get(type) ?? 'unknown';
}

function diskHeader(listing: PartitionListing, sectorSize: number): string[] {
  const sectors = Math.floor(listing.diskSize / sectorSize);
  return [
    `Disk ${listing.device}: ${humanSize(listing.diskSize, true)}, ${listing.diskSize} bytes, ${sectors} sectors`,
    `Units: sectors of 1 * ${sectorSize} = ${sectorSize} bytes`,
    `Sector size (logical/physical): ${sectorSize} bytes / ${sectorSize} bytes`,
    `I/O size (minimum/optimal): ${sectorSize} bytes / ${sectorSize} bytes`,
  ];
}

function row(label: string, partition: ListedPartition): string[] {
  const end = String(partition.start + partition.size - 1);
  const common = [String(partition.start), end, String(partition.size), humanSize(partition.bytes)];
  const fs = filesystemCell(partition.filesystem);
  if (label === 'dos') {
    return [partition.node, partition.bootable ? '*' : '', ...common, partition.type, typeName(label, partition.type), fs];
  }
  return [partition.node, ...common, typeName(label, partition.type), fs];
}

/** True when the partitions, in table order, also go up in start sector (sfdisk notes when not). */
function inDiskOrder(partitions: ListedPartition[]): boolean {
  return partitions.every((partition, index) => index === 0 || partition.start >= partitions[index - 1]!.start);
}

/** Renders the listing. */
export function renderPartitions(listing: PartitionListing): string {
  const table = listing.table;
  const lines = diskHeader(listing, table?.sectorSize ?? 512);
  if (!table) {
    const whole = listing.wholeDisk ? `; the whole disk holds ${filesystemCell(listing.wholeDisk)}` : '';
    return [...lines, '', `No partition table${whole}.`].join('\n') + '\n';
  }
  lines.push(`Disklabel type: ${table.label}`, `Disk identifier: ${table.id}`);
  if (listing.partitions.length === 0) return lines.join('\n') + '\n';
  // Width hints as libfdisk gives them: Device 10, numbers and Size 5, Id 2.
  const numbers: Column[] = ['Start', 'End', 'Sectors', 'Size'].map((header) => ({ header, right: true, minWidth: 5 }));
  const columns: Column[] =
    table.label === 'dos'
      ? [{ header: 'Device', minWidth: 10 }, { header: 'Boot' }, ...numbers, { header: 'Id', right: true, minWidth: 2 }, { header: 'Type' }, { header: 'Filesystem' }]
      : [{ header: 'Device', minWidth: 10 }, ...numbers, { header: 'Type' }, { header: 'Filesystem' }];
  let rows = listing.partitions.map((partition) => row(table.label, partition));
  // Without any filesystem found, the listing is exactly sfdisk's: no empty extra column.
  if (!listing.partitions.some((partition) => partition.filesystem)) {
    columns.pop();
    rows = rows.map((cells) => cells.slice(0, -1));
  }
  lines.push('', ...renderColumns(columns, rows));
  if (!inDiskOrder(listing.partitions)) lines.push('', 'Partition table entries are not in disk order.');
  return lines.join('\n') + '\n';
}
