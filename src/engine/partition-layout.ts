/**
 * Turning a parsed sfdisk script into a partition table for a given disk:
 * type aliases, partition numbers, default starts (aligned to 1 MiB as sfdisk
 * does) and default sizes (the rest of the free area).
 */

import { UsageError } from '../core/errors.js';
import { MAX_EBR_CHAIN, MBR_SECTOR_BYTES, parseDiskId, type EbrPlacement } from '../../formats/mbr/index.js';
import { MAX_SCRIPT_PARTITIONS } from '../core/limits.js';
import { DEFAULT_ENTRY_SIZE, GPT_SECTOR_SIZES, MAX_ENTRY_ARRAY_BYTES, gptGeometry, randomGuid } from '../../formats/gpt/index.js';
import { isExtendedType, type PartitionRecord, type PartitionTable } from '../../formats/partition-table/model.js';
import { SCRIPTABLE_ATTRIBUTE_MASK, parseAttributesText } from './gpt-attributes.js';
import { resolveType } from './partition-types.js';
import { alignInRange, firstFree, freeAreas, lastFree, lastFreeBefore, nearestInRange, type Span } from './partition-space.js';
import type { Script, ScriptEntry } from './sfdisk-script.js';

/** Default alignment: 1 MiB, as fdisk and sfdisk place partitions. */
const GRAIN_BYTES = 1024 * 1024;

/**
 * The default alignment in sectors: 1 MiB, or one sector on disks of at most
 * 4 MiB (as fdisk does). It is also where the first partition may start.
 */
function grainOf(totalSectors: number, sectorSize: number): number {
  return totalSectors * sectorSize <= 4 * GRAIN_BYTES ? 1 : Math.max(1, GRAIN_BYTES / sectorSize);
}

/** A script's `grain:` in sectors, as libfdisk takes it: at least one sector, whatever the disk's size. */
function scriptGrain(bytes: number, sectorSize: number): number {
  return Math.floor(Math.max(bytes, sectorSize) / sectorSize);
}

function randomDiskId(): string {
  const bytes = new Uint32Array(1);
  globalThis.crypto.getRandomValues(bytes);
  return `0x${bytes[0]!.toString(16).padStart(8, '0')}`;
}

interface Region {
  start: number;
  /** Exclusive end. */
  end: number;
}

/** Places partitions one by one, tracking what is used in each region. */
class Placer {
  readonly placed: PartitionRecord[] = [];
  /** Where each logical partition's EBR goes, by number (the writer puts the first at the extended start). */
  readonly ebrs = new Map<number, number>();
  /** The same partitions in disk order, kept so as each one is placed. */
  private readonly byStart: PartitionRecord[] = [];
  private readonly taken = new Set<number>();
  private lowestFree = 1;
  private extended: PartitionRecord | undefined;
  private nextLogical = 5;
  /**
   * libfdisk's first LBA: an EBR goes this many sectors before its logical
   * partition. It starts at the lead and drops to 1 for good once a given start
   * lies closer than that to the disk's or the extended partition's start.
   */
  private firstLba: number;

  constructor(
    private readonly label: 'dos' | 'gpt',
    private readonly disk: Region,
    private readonly grain: number,
    /** Sectors before a partition's start in its area (1 MiB): where a logical partition's EBR goes. */
    private readonly lead: number,
  ) {
    this.firstLba = lead;
  }

  place(entry: ScriptEntry, sectorSize: number): PartitionRecord {
    const given = entry.start ?? (entry.startBytes === undefined ? undefined : Math.floor(entry.startBytes / sectorSize));
    const logical = this.isLogical(entry, given);
    if (this.label === 'dos' && given !== undefined) this.followGivenStart(given, logical);
    const number = entry.number ?? (logical ? this.nextLogical : this.lowestFreeNumber());
    if (number > 4) this.nextLogical = Math.max(this.nextLogical, number + 1);
    if (this.taken.has(number)) throw new UsageError(`partition ${number} is given twice`);
    const region = this.label === 'dos' && number > 4 ? this.extendedRegion(number) : this.disk;
    // sfdisk's test before a primary partition it numbers itself (unless a given start places it next to the extended one).
    if (this.label === 'dos' && !logical && entry.number === undefined && (given === undefined || !this.extended) && !this.primaryHasRoom()) {
      throw new UsageError('no free area of a grain (1 MiB) is left for another primary partition');
    }
    const start = given ?? this.defaultStart(region, number > 4 && this.label === 'dos', this.wantedSectors(entry, sectorSize));
    const size = this.sizeOf(entry, start, region, sectorSize);
    if (size < 1 || start < region.start || start >= region.end || size > region.end - start) {
      const where = region === this.disk ? `the disk's usable sectors ${region.start}–${region.end - 1}` : 'the extended partition';
      throw new UsageError(`partition ${number} (start ${start}, ${size} sectors) does not fit inside ${where}`);
    }
    // A size larger than the free area is refused (sfdisk would shrink it), naming what is in the way.
    const next = this.placed.find((partition) => partition.start > start && partition.start < start + size && partition !== this.extended);
    if (next) throw new UsageError(`partition ${number} (sectors ${start}–${start + size - 1}) runs into partition ${next.number} at sector ${next.start}`);
    const partition: PartitionRecord = { number, start, size, type: resolveType(this.label, entry.type) };
    if (this.label === 'dos' && isExtendedType(partition.type)) this.extended = partition;
    if (this.label === 'dos' && number > 4) this.ebrs.set(number, this.ebrSector(start));
    this.placed.push(partition);
    this.taken.add(number);
    let at = this.byStart.length;
    while (at > 0 && this.byStart[at - 1]!.start > start) at--;
    this.byStart.splice(at, 0, partition);
    return partition;
  }

  /** sfdisk's first LBA drops to 1 for a start given below it, on the disk or in the extended partition. */
  private followGivenStart(given: number, logical: boolean): void {
    if (logical && !this.extended) return;
    const base = logical ? this.extended!.start : 0;
    if (given >= Math.max(base, 1) && given < base + this.firstLba) this.firstLba = 1;
  }

  /** Where sfdisk puts the EBR of a logical partition (other than the first): the first LBA before it, never on the first EBR. */
  private ebrSector(start: number): number {
    const sector = start - this.firstLba;
    return sector === this.extended!.start ? sector + 1 : sector;
  }

  private isLogical(entry: ScriptEntry, start: number | undefined): boolean {
    if (this.label !== 'dos') return false;
    if (entry.number !== undefined) return entry.number > 4;
    const ext = this.extended;
    if (ext && start !== undefined) return start > ext.start && start < ext.start + ext.size;
    if (this.lowestFreeNumber() > 4) return true;
    // Like sfdisk: with no room left outside the extended partition, the next one is logical.
    return ext !== undefined && !this.primaryHasRoom();
  }

  /**
   * libfdisk's test for room for another primary partition: a grain free
   * before a primary one or after the last, the primaries taken in number order.
   */
  private primaryHasRoom(): boolean {
    let last = this.lead;
    for (const partition of this.placed.filter((placed) => placed.number <= 4).sort((a, b) => a.number - b.number)) {
      if (last + this.grain <= partition.start) return true;
      last = partition.start + partition.size;
    }
    return last + this.grain < this.disk.end - 1;
  }

  /** sfdisk's number for a line that gives none (on an MBR, a primary one): the lowest not taken. */
  private lowestFreeNumber(): number {
    // Numbers are only ever taken, so the lowest free one only moves up.
    while (this.taken.has(this.lowestFree)) this.lowestFree++;
    return this.lowestFree;
  }

  /** The sectors a line asks for, when it gives a size. */
  private wantedSectors(entry: ScriptEntry, sectorSize: number): number | undefined {
    return entry.size ?? (entry.sizeBytes === undefined ? undefined : Math.floor(entry.sizeBytes / sectorSize));
  }

  private extendedRegion(number: number): Region {
    if (!this.extended) throw new UsageError(`logical partition ${number} needs an extended partition before it`);
    return { start: this.extended.start, end: this.extended.start + this.extended.size };
  }

  /**
   * sfdisk's default start. On a GPT: the start of the largest free area,
   * aligned. On an MBR: the first free sector from 1 MiB in (for a logical
   * partition, 1 MiB into the extended one and past each logical one's EBR
   * room), aligned, in the first free area that holds the size asked for.
   */
  private defaultStart(region: Region, logical: boolean, wanted: number | undefined): number {
    if (this.label === 'gpt') return this.gptDefaultStart();
    return this.dosDefaultStart(region, logical, wanted);
  }

  private gptDefaultStart(): number {
    const areas = freeAreas(this.disk.start, this.disk.end - 1, this.busySpans(this.disk, false));
    // The first of the largest, as libfdisk's find_first_in_largest.
    const largest = areas.reduce<Span | undefined>((best, area) => (!best || area.end - area.start > best.end - best.start ? area : best), undefined);
    if (!largest || largest.end - largest.start + 1 < this.grain) throw new UsageError('no free area of at least 1 MiB is left for a partition');
    return nearestInRange(largest.start, largest.start, largest.end, this.grain);
  }

  /**
   * The spans a new partition in `region` must stay out of: on an MBR, the
   * partitions there (the extended one whole); inside the extended one, the
   * logical partitions with the EBR area before each.
   */
  private busySpans(region: Region, logical: boolean): Span[] {
    const ebr = logical ? this.lead : 0;
    return this.byStart
      .filter((partition) => !(logical && partition === this.extended) && partition.start >= region.start && partition.start < region.end)
      .map((partition) => ({ start: partition.start - ebr, end: partition.start + partition.size - 1 }));
  }

  private dosDefaultStart(region: Region, logical: boolean, wanted: number | undefined): number {
    const used = this.busySpans(region, logical);
    // A logical partition's start leaves room for its EBR after what it follows.
    const gap = logical ? this.lead : 0;
    // The last free sector of the area: the aligned start may not pass it.
    const limit = lastFreeBefore(region.end - 1, used);
    // An MBR's first partition goes no lower than 1 MiB in, whatever the grain.
    for (let start = logical ? region.start + this.lead : Math.max(region.start, this.lead); ; ) {
      start = firstFree(start, used, gap);
      if (start > limit) throw new UsageError('no free space is left for a partition');
      let candidate = start;
      let aligned: number;
      let before: number;
      do {
        before = candidate;
        aligned = nearestInRange(candidate, candidate, limit, this.grain);
        candidate = firstFree(aligned, used, gap);
        // Stop once the search no longer moves forward (libfdisk's loop would not end there).
      } while (candidate !== aligned && candidate > aligned && candidate < limit && candidate > before);
      if (candidate >= limit || candidate < start) candidate = start;
      if (wanted !== undefined) {
        const last = lastFree(candidate, used, limit);
        if (last - candidate + 1 < wanted) {
          start = last + 1;
          continue;
        }
      }
      return candidate;
    }
  }

  private sizeOf(entry: ScriptEntry, start: number, region: Region, sectorSize: number): number {
    if (entry.size !== undefined) return entry.size;
    const later = this.placed.filter((partition) => partition.start > start && partition.start < region.end);
    // Inside the extended partition the next logical one's EBR comes first.
    const ebr = this.label === 'dos' && region !== this.disk ? this.lead : 0;
    const freeEnd = Math.min(region.end, ...later.map((partition) => partition.start - ebr));
    // On GPT sfdisk ends a partition that runs to the last usable LBA on a grain boundary
    // when one is in reach, else one sector short of that LBA.
    const lastUsable = region.end - 1;
    const end = this.label === 'gpt' ? Math.min(alignInRange(lastUsable, start, lastUsable, this.grain), freeEnd) : freeEnd;
    if (entry.sizeBytes !== undefined) {
      const sectors = Math.floor(entry.sizeBytes / sectorSize);
      // Too large: left as asked, for place() to refuse.
      if (sectors > freeEnd - start) return sectors;
      return this.label === 'gpt' ? this.gptSizeOfBytes(start, sectors, end - 1) : this.dosSizeOfBytes(start, sectors, freeEnd - 1);
    }
    if (end <= start) throw new UsageError(`no free space for a partition at sector ${start}`);
    return end - start;
  }

  /**
   * sfdisk on MBR: a size with a unit ends on the nearest grain boundary (less
   * one sector) within the free area; one smaller than a grain is not aligned and,
   * as sfdisk leaves it, keeps one sector more than asked.
   */
  private dosSizeOfBytes(start: number, sectors: number, lastFree: number): number {
    const aligning = this.grain > 1;
    let stop = start + sectors;
    if (!aligning && stop > start) stop -= 1;
    stop = Math.min(stop, lastFree);
    if (aligning && stop - start >= this.grain && stop < lastFree) {
      stop = nearestInRange(stop, start, lastFree, this.grain);
      if (stop > start) stop -= 1;
      stop = Math.min(stop, lastFree);
    }
    return stop - start + 1;
  }

  /**
   * sfdisk on GPT: a size with a unit of more than a grain ends on the nearest
   * grain boundary (less one sector) before the default end; a smaller one is exact.
   */
  private gptSizeOfBytes(start: number, sectors: number, defaultLast: number): number {
    let last = start + sectors - 1;
    if (last !== defaultLast && this.grain > 1 && last - start > this.grain) {
      last = nearestInRange(last, start, defaultLast, this.grain);
      if (last > start) last -= 1;
    }
    return last - start + 1;
  }
}

function gptDetails(partition: PartitionRecord, entry: ScriptEntry, old: PartitionTable | undefined): void {
  partition.uuid = entry.uuid ?? randomGuid();
  if (entry.name !== undefined) partition.name = entry.name;
  const previous = old?.label === 'gpt' ? old.partitions.find((candidate) => candidate.number === partition.number) : undefined;
  // Bits 3–47 cannot be written in a script: keep the ones the old entry had.
  const kept = (previous?.attributes ?? 0n) & ~SCRIPTABLE_ATTRIBUTE_MASK;
  // The bits a script can name are the script's alone, as in sfdisk's new label.
  const given = entry.attrs !== undefined ? parseAttributesText(entry.attrs) : 0n;
  partition.attributes = kept | given;
}

function checkOverlaps(partitions: PartitionRecord[], label: 'dos' | 'gpt'): void {
  const extended = label === 'dos' ? partitions.find((partition) => isExtendedType(partition.type)) : undefined;
  const flat = partitions.filter((partition) => partition !== extended);
  const sorted = [...flat].sort((a, b) => a.start - b.start);
  for (let index = 1; index < sorted.length; index++) {
    const before = sorted[index - 1]!;
    const after = sorted[index]!;
    if (after.start < before.start + before.size) {
      throw new UsageError(`partitions ${before.number} and ${after.number} overlap`);
    }
  }
  // A primary partition lies outside the extended one, as logical ones lie inside it.
  const extendedEnd = extended ? extended.start + extended.size : 0;
  const clash = extended && flat.find((partition) => partition.number <= 4 && partition.start < extendedEnd && partition.start + partition.size > extended.start);
  if (clash) throw new UsageError(`primary partition ${clash.number} overlaps the extended partition ${extended.number}`);
}

/** Most entries a GPT written here has: what the reader takes (a 4 MiB array). */
const MAX_TABLE_LENGTH = MAX_ENTRY_ARRAY_BYTES / DEFAULT_ENTRY_SIZE;

/**
 * The sector size of the table a script makes. A GPT takes the script's (a
 * 4K-sector GPT is found at byte 4096 by any reader), else the old table's.
 * An MBR records none, and readers take 512: a script's other size is
 * recalculated to 512-byte sectors, as sfdisk recalculates it for a file.
 */
function tableSectorSize(script: Script, label: 'dos' | 'gpt', old: PartitionTable | undefined): number {
  const given = script.sectorSize;
  if (given !== undefined && !(GPT_SECTOR_SIZES as readonly number[]).includes(given)) {
    throw new UsageError(`sector-size ${given} is not supported (${GPT_SECTOR_SIZES.join(' or ')})`);
  }
  if (label === 'dos') return MBR_SECTOR_BYTES;
  return given ?? old?.sectorSize ?? MBR_SECTOR_BYTES;
}

/** The script's sector numbers in the table's sectors (sizes with a unit are bytes and need none). */
function inTableSectors(script: Script, sectorSize: number): ScriptEntry[] {
  const ratio = (script.sectorSize ?? sectorSize) / sectorSize;
  if (ratio === 1) return script.entries;
  return script.entries.map((entry) => ({
    ...entry,
    ...(entry.start === undefined ? {} : { start: entry.start * ratio }),
    ...(entry.size === undefined ? {} : { size: entry.size * ratio }),
  }));
}

/** Refuses a script with more partitions than the table can hold (or than is placed in reasonable time). */
function checkCount(script: Script, label: 'dos' | 'gpt', entryCount: number | undefined): void {
  const count = script.entries.length;
  if (count > MAX_SCRIPT_PARTITIONS) throw new UsageError(`the script has ${count} partitions; at most ${MAX_SCRIPT_PARTITIONS} are written`);
  // An MBR's logical partitions are read back along an EBR chain of at most MAX_EBR_CHAIN links.
  const capacity = label === 'gpt' ? entryCount! : 4 + MAX_EBR_CHAIN;
  if (count > capacity) throw new UsageError(`the script has ${count} partitions; the ${label === 'gpt' ? 'GPT' : 'MBR'} holds at most ${capacity}`);
}

/** Builds the table a script describes for a disk of `diskSize` bytes; `old` is the table it replaces. */
export function layoutScript(script: Script, diskSize: number, old?: PartitionTable): PartitionTable {
  return placeScript(script, diskSize, old).table;
}

/** The table a script describes, and where sfdisk would put the EBRs of its logical partitions. */
export function placeScript(script: Script, diskSize: number, old?: PartitionTable): { table: PartitionTable; ebrs: EbrPlacement } {
  const label = script.label ?? old?.label ?? 'dos';
  const sectorSize = tableSectorSize(script, label, old);
  const totalSectors = Math.floor(diskSize / sectorSize);
  // Like sfdisk, a script makes a new label: what its header leaves out takes the defaults, not the old table's.
  const table: PartitionTable = { label, id: script.labelId ?? (label === 'gpt' ? randomGuid() : randomDiskId()), sectorSize, partitions: [], warnings: [] };
  let disk: Region = { start: 1, end: totalSectors };
  if (label === 'gpt') {
    table.entryCount = script.tableLength ?? 128;
    if (table.entryCount < 1 || table.entryCount > MAX_TABLE_LENGTH) throw new UsageError(`table-length ${table.entryCount} is out of range (1 to ${MAX_TABLE_LENGTH})`);
    const geometry = gptGeometry(totalSectors, sectorSize, table.entryCount);
    if (geometry.firstUsable > geometry.lastUsable) throw new UsageError(`the disk is too small for a GPT of ${table.entryCount} entries`);
    // As sfdisk: a usable area reaching into the headers or entry arrays is refused, not moved.
    for (const [key, value] of [['first-lba', script.firstLba], ['last-lba', script.lastLba]] as const) {
      if (value !== undefined && (value < geometry.firstUsable || value > geometry.lastUsable)) {
        throw new UsageError(`${key} ${value} is out of range (${geometry.firstUsable} to ${geometry.lastUsable} for ${table.entryCount} entries)`);
      }
    }
    // A new GPT from sfdisk starts its usable area at the first grain boundary (LBA 2048 on 512-byte disks).
    table.firstLba = script.firstLba ?? Math.max(geometry.firstUsable, grainOf(totalSectors, sectorSize));
    table.lastLba = script.lastLba ?? geometry.lastUsable;
    disk = { start: table.firstLba, end: table.lastLba + 1 };
  } else {
    parseDiskId(table.id);
  }
  checkCount(script, label, table.entryCount);
  const lead = grainOf(totalSectors, sectorSize);
  const placer = new Placer(label, disk, script.grain === undefined ? lead : scriptGrain(script.grain, sectorSize), lead);
  for (const entry of inTableSectors(script, sectorSize)) {
    const partition = placer.place(entry, sectorSize);
    if (label === 'dos' && entry.bootable) partition.bootable = true;
    if (label === 'gpt') gptDetails(partition, entry, old);
  }
  table.partitions = placer.placed.sort((a, b) => a.number - b.number);
  const logicals = table.partitions.filter((partition) => label === 'dos' && partition.number > 4).length;
  if (logicals > MAX_EBR_CHAIN) throw new UsageError(`${logicals} logical partitions: an MBR's EBR chain is read to ${MAX_EBR_CHAIN} at most`);
  checkOverlaps(table.partitions, label);
  return { table, ebrs: placer.ebrs };
}
