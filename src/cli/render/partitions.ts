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
  return GPT_TYPE_NAMES.get(type) ?? type;
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

/** Renders the listing. */
export function renderPartitions(listing: PartitionListing): string {
  const table = listing.table;
  const lines = diskHeader(listing, table?.sectorSize ?? 512);
  if (!table) {
    const whole = listing.wholeDisk ? `; the whole disk holds ${filesystemCell(listing.wholeDisk)}` : '';
    return [...lines, '', `No partition table${whole}.`].join('\n') + '\n';
  }
  lines.push(`Disklabel type: ${table.label}`, `Disk identifier: ${table.id}`);
  if (table.label === 'gpt') lines.push(`First usable LBA: ${table.firstLba}`, `Last usable LBA: ${table.lastLba}`);
  if (listing.partitions.length === 0) return lines.join('\n') + '\n';
  const numbers: Column[] = [{ header: 'Start', right: true }, { header: 'End', right: true }, { header: 'Sectors', right: true }, { header: 'Size', right: true }];
  const columns: Column[] =
    table.label === 'dos'
      ? [{ header: 'Device' }, { header: 'Boot' }, ...numbers, { header: 'Id', right: true }, { header: 'Type' }, { header: 'Filesystem' }]
      : [{ header: 'Device' }, ...numbers, { header: 'Type' }, { header: 'Filesystem' }];
  lines.push('', ...renderColumns(columns, listing.partitions.map((partition) => row(table.label, partition))));
  return lines.join('\n') + '\n';
}
