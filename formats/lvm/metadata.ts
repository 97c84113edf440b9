/**
 * The volume group model read from LVM2 metadata text, and where each logical
 * volume lies on a physical volume. Sizes in the text are 512-byte sectors.
 */

import { CorruptImageError } from '../../src/core/errors.js';
import { sectionOf, type ConfigSection, type ConfigValue } from './config.js';

/** LVM metadata counts in 512-byte sectors whatever the device's sector size. */
export const LVM_SECTOR = 512;

/** One segment of a logical volume. */
export interface LvSegment {
  startExtent: number;
  extentCount: number;
  /** "striped" (linear when one stripe), "mirror", "thin", "raid1", ... */
  type: string;
  /** Each stripe: the PV name in the metadata (pv0, pv1…) and its first physical extent. */
  stripes: { pv: string; extent: number }[];
  /** For a snapshot segment: the LV holding its copy-on-write store, and the LV it is a snapshot of. */
  cowStore?: string;
  origin?: string;
}

/** One logical volume. */
export interface LogicalVolume {
  name: string;
  /** Shown by lvs (status VISIBLE); hidden ones are the parts of others (raid images, thin pool data, snapshots). */
  visible: boolean;
  /** Set when this LV is a snapshot's copy-on-write store: the LV the snapshot is of ('' when the metadata names none). */
  cowStoreOf?: string;
  segments: LvSegment[];
}

/** One physical volume listed in the metadata. */
export interface PhysicalVolumeEntry {
  /** The name the metadata uses for it (pv0, pv1, …). */
  key: string;
  /** The PV UUID, dashed as lvm2 prints it. */
  id: string;
  /** Sector where extent 0 starts. */
  peStart: number;
  peCount: number;
}

/** A volume group as one PV's metadata describes it. */
export interface VolumeGroup {
  name: string;
  /** The VG UUID ('' when the text has none). */
  id: string;
  /** The metadata's sequence number: the highest is the newest copy. */
  seqno: number;
  /** Extent size in 512-byte sectors. */
  extentSize: number;
  physicalVolumes: PhysicalVolumeEntry[];
  logicalVolumes: LogicalVolume[];
}

function num(section: ConfigSection, key: string, where: string): number {
  const value = section[key];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new CorruptImageError(`LVM metadata: ${where} has no valid '${key}'`);
  }
  return value;
}

function sections(value: ConfigValue | undefined): [string, ConfigSection][] {
  const section = sectionOf(value);
  if (!section) return [];
  return Object.entries(section).flatMap(([key, child]) => {
    const nested = sectionOf(child);
    return nested ? [[key, nested] as [string, ConfigSection]] : [];
  });
}

function segmentOf(section: ConfigSection, where: string): LvSegment {
  const type = typeof section.type === 'string' ? section.type : 'unknown';
  const stripes: { pv: string; extent: number }[] = [];
  const list = Array.isArray(section.stripes) ? section.stripes : [];
  for (let index = 0; index + 1 < list.length; index += 2) {
    const pv = list[index];
    const extent = list[index + 1];
    if (typeof pv !== 'string' || typeof extent !== 'number') continue;
    if (!Number.isSafeInteger(extent) || extent < 0) throw new CorruptImageError(`LVM metadata: ${where} starts a stripe at extent ${extent}`);
    stripes.push({ pv, extent });
  }
  const segment: LvSegment = { startExtent: num(section, 'start_extent', where), extentCount: num(section, 'extent_count', where), type, stripes };
  if (typeof section.cow_store === 'string') segment.cowStore = section.cow_store;
  if (typeof section.origin === 'string') segment.origin = section.origin;
  return segment;
}

/**
 * Snapshots as lvs shows them (lvm2's lv_is_visible): a snapshot's own LV is
 * hidden and its copy-on-write store is shown in its place, as visible as the
 * origin it is a snapshot of, and marked as that store.
 */
function showAsLvs(volumes: LogicalVolume[]): void {
  const visible = new Map(volumes.map((lv) => [lv.name, lv.visible]));
  for (const lv of volumes) {
    const snapshot = lv.segments.find((segment) => segment.type === 'snapshot');
    if (!snapshot) continue;
    lv.visible = false;
    const cow = volumes.find((other) => other.name === snapshot.cowStore);
    if (!cow) continue;
    cow.visible = visible.get(snapshot.origin ?? '') ?? false;
    cow.cowStoreOf = snapshot.origin ?? '';
  }
}

/** Builds the volume group from parsed metadata text (the one top-level section). */
export function volumeGroupOf(config: ConfigSection): VolumeGroup {
  const top = Object.entries(config).find(([, value]) => sectionOf(value));
  if (!top) throw new CorruptImageError('LVM metadata holds no volume group');
  const [name, vg] = [top[0], sectionOf(top[1])!];
  const physicalVolumes = sections(vg.physical_volumes).map(([key, pv]) => ({
    key,
    id: typeof pv.id === 'string' ? pv.id : '',
    peStart: num(pv, 'pe_start', `PV ${key}`),
    peCount: num(pv, 'pe_count', `PV ${key}`),
  }));
  const logicalVolumes = sections(vg.logical_volumes).map(([lvName, lv]) => ({
    name: lvName,
    visible: Array.isArray(lv.status) && lv.status.includes('VISIBLE'),
    segments: sections(lv)
      .filter(([key]) => /^segment\d+$/.test(key))
      .map(([key, segment]) => segmentOf(segment, `LV ${lvName} ${key}`))
      .sort((a, b) => a.startExtent - b.startExtent),
  }));
  showAsLvs(logicalVolumes);
  const extentSize = num(vg, 'extent_size', `VG ${name}`);
  if (extentSize === 0) throw new CorruptImageError(`LVM metadata: VG ${name} has an extent size of 0`);
  return { name, id: typeof vg.id === 'string' ? vg.id : '', seqno: typeof vg.seqno === 'number' ? vg.seqno : 0, extentSize, physicalVolumes, logicalVolumes };
}

/** Where an LV lies on one PV, or why it cannot be given as one byte range. */
export type LvPlacement =
  | { contiguous: true; pv: string; offset: number; size: number }
  | { contiguous: false; reason: string };

function linearStripe(segment: LvSegment): { pv: string; extent: number } | undefined {
  return (segment.type === 'striped' || segment.type === 'linear') && segment.stripes.length === 1 ? segment.stripes[0] : undefined;
}

/**
 * The byte range of `lv` relative to the start of its PV when it is linear and its
 * segments follow each other on one PV; otherwise the reason it is not.
 */
export function lvPlacement(vg: VolumeGroup, lv: LogicalVolume): LvPlacement {
  if (lv.segments.length === 0) return { contiguous: false, reason: 'it has no segments' };
  if (lv.cowStoreOf !== undefined) return { contiguous: false, reason: `it is the copy-on-write store of a snapshot of ${lv.cowStoreOf || 'another LV'}, not a filesystem` };
  const first = linearStripe(lv.segments[0]!);
  if (!first) return { contiguous: false, reason: `its segment type is ${lv.segments[0]!.type} (not linear)` };
  let expectedExtent = first.extent;
  let expectedLe = lv.segments[0]!.startExtent;
  let extents = 0;
  for (const segment of lv.segments) {
    const stripe = linearStripe(segment);
    if (!stripe) return { contiguous: false, reason: `a segment is ${segment.type} with ${segment.stripes.length} stripes (not linear)` };
    if (stripe.pv !== first.pv) return { contiguous: false, reason: 'it spans more than one physical volume' };
    if (stripe.extent !== expectedExtent || segment.startExtent !== expectedLe) {
      return { contiguous: false, reason: 'its extents are not contiguous on the physical volume' };
    }
    expectedExtent += segment.extentCount;
    expectedLe += segment.extentCount;
    extents += segment.extentCount;
  }
  const pv = vg.physicalVolumes.find((entry) => entry.key === first.pv);
  if (!pv) return { contiguous: false, reason: `its segment names ${first.pv}, which the metadata does not list` };
  return {
    contiguous: true,
    pv: pv.id,
    offset: (pv.peStart + first.extent * vg.extentSize) * LVM_SECTOR,
    size: extents * vg.extentSize * LVM_SECTOR,
  };
}
