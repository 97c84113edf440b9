/**
 * The partition table model shared by the MBR and GPT readers and writers.
 * Positions are in logical sectors of the table's own sector size.
 */

/** One partition as a table describes it. */
export interface PartitionRecord {
  /** 1-based number: MBR slots 1–4, logical partitions 5, 6, … in chain order; GPT entry index + 1. */
  number: number;
  /** First sector. */
  start: number;
  /** Length in sectors. */
  size: number;
  /** MBR: the type byte as lower-case hex without padding ("83", "5"); GPT: the upper-case type GUID. */
  type: string;
  /** MBR: the boot flag (status 0x80). */
  bootable?: boolean;
  /** GPT: the unique partition GUID. */
  uuid?: string;
  /** GPT: the partition name. */
  name?: string;
  /** GPT: all 64 attribute bits, unknown ones included, so a rewrite keeps them. */
  attributes?: bigint;
}

/** Which kind of table. Names follow sfdisk's `label:` values. */
export type TableLabel = 'dos' | 'gpt';

/** A parsed partition table. */
export interface PartitionTable {
  label: TableLabel;
  /** MBR: the disk signature as `0x%08x`; GPT: the disk GUID. */
  id: string;
  sectorSize: number;
  /** GPT: first and last usable LBA. */
  firstLba?: number;
  lastLba?: number;
  /** GPT: number of entries in the array. */
  entryCount?: number;
  partitions: PartitionRecord[];
  /** What was wrong but survivable (a broken chain, a corrupt primary GPT). */
  warnings: string[];
}

/** One write a table encoder asks for: `data` at byte `offset` of the disk. */
export interface SectorWrite {
  offset: number;
  data: Uint8Array;
}

/** MBR type bytes of extended partitions (DOS 0x05, Windows LBA 0x0F, Linux 0x85). */
export const EXTENDED_TYPES: ReadonlySet<number> = new Set([0x05, 0x0f, 0x85]);

/** The MBR type of a GPT's protective entry (and of a hybrid MBR's GPT entry). */
export const GPT_PROTECTIVE_TYPE = 0xee;

/** True when an MBR type string names an extended partition. */
export function isExtendedType(type: string): boolean {
  return EXTENDED_TYPES.has(parseInt(type, 16));
}
