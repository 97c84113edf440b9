/** `create`: a new, empty image of a given size (qemu-img create). */

import { alignUp } from '../core/bytes.js';
import { writeZeros, type BlockDevice } from '../core/device.js';
import { PlatterError, UnsupportedFeatureError, UsageError } from '../core/errors.js';
import type { ImageHost } from '../core/image.js';
import { optionBoolean, rejectUnknownOptions } from '../core/options.js';
import { parseSize } from '../core/size.js';
import { SECTOR_SIZE } from './convert.js';
import { openQcow2, type Qcow2Image } from '../../formats/qcow2/index.js';
import {
  PREALLOCATION_MODES,
  QCOW2_CREATE_DEFAULTS,
  l1EntriesFor,
  validateCreateOptions,
  writeQcow2Skeleton,
  type Qcow2CreateOptions,
} from '../../formats/qcow2/create.js';
import { MAX_L1_BYTES } from '../../formats/qcow2/limits.js';

/** What to create. */
export interface CreateRequest {
  format: string;
  /** Virtual size; for qcow2 it defaults to the backing file's size. */
  size?: number;
  /** Parsed `-o` options. */
  options: Map<string, string>;
  /** -b / backing_file. */
  backingFile?: string;
  /** -F / backing_fmt. */
  backingFormat?: string;
  /** -u: do not open the backing file (a size is then required). */
  unsafe?: boolean;
  /** Opens the backing file (resolved like qemu, relative to the new image) and answers its virtual size. */
  backingSize?(name: string, format: string): Promise<number>;
  /** Creates the external data file (`data_file`) with the given size. */
  createDataFile?(name: string, size: number, fill?: boolean): Promise<void>;
}

/** What was created: the settings qemu-img prints on its "Formatting" line, in its order. */
export interface CreateResult {
  size: number;
  settings: [string, string][];
}

/** One -o option a new image takes: its name, the kind of value, and what it sets (for `-o help`). */
export interface CreateOption {
  name: string;
  value: 'str' | 'size' | 'num' | 'bool (on/off)';
  help: string;
}

/**
 * Options of the file the image is stored in, which qemu-img takes with any
 * format: hints to the host file system that qemu applies where it can and
 * ignores elsewhere. Portable file APIs have no call for either, so platter
 * checks them and applies neither (nocow=on says so).
 */
const FILE_OPTIONS: readonly CreateOption[] = [
  { name: 'extent_size_hint', value: 'size', help: 'Extent size hint for XFS (checked; not applied: no portable call sets it)' },
  { name: 'nocow', value: 'bool (on/off)', help: 'No copy-on-write on btrfs (checked; not applied: no portable call sets it)' },
];

/** The -o options of each format platter creates, by name. */
export const CREATE_OPTIONS: Readonly<Record<'raw' | 'qcow2', readonly CreateOption[]>> = {
  raw: [
    FILE_OPTIONS[0]!,
    FILE_OPTIONS[1]!,
    { name: 'preallocation', value: 'str', help: 'off, falloc (left sparse) or full (zeros written)' },
    { name: 'size', value: 'size', help: 'Virtual size of the disk' },
  ],
  qcow2: [
    { name: 'backing_file', value: 'str', help: 'Backing file, resolved beside the new image' },
    { name: 'backing_fmt', value: 'str', help: 'Format of the backing file' },
    { name: 'cluster_size', value: 'size', help: 'Cluster size, a power of two from 512 to 2M' },
    { name: 'compat', value: 'str', help: 'Version: 0.10 (v2) or 1.1 (v3)' },
    { name: 'compression_type', value: 'str', help: 'zlib or zstd, for compressed clusters' },
    { name: 'data_file', value: 'str', help: 'External data file that holds the guest data' },
    { name: 'data_file_raw', value: 'bool (on/off)', help: 'Keep the external data file a valid raw disk' },
    { name: 'extended_l2', value: 'bool (on/off)', help: 'L2 entries with 32 subclusters each' },
    FILE_OPTIONS[0]!,
    { name: 'lazy_refcounts', value: 'bool (on/off)', help: 'Update refcounts late (the image is marked dirty meanwhile)' },
    FILE_OPTIONS[1]!,
    { name: 'preallocation', value: 'str', help: 'off, metadata, falloc or full' },
    { name: 'refcount_bits', value: 'num', help: 'Bits per refcount: 1, 2, 4, 8, 16, 32 or 64' },
    { name: 'size', value: 'size', help: 'Virtual size of the disk' },
  ],
};

const RAW_OPTIONS = CREATE_OPTIONS.raw.map((option) => option.name);
/** The `-o` names a qcow2 image takes. */
export const QCOW2_OPTIONS = CREATE_OPTIONS.qcow2.map((option) => option.name);

/**
 * A checked request: everything `create` refuses is refused while planning,
 * before any file is made or truncated (as qemu-img refuses a bad option
 * without touching the file).
 */
export type ImagePlan =
  | { format: 'raw'; size: number; preallocation: 'off' | 'falloc' | 'full'; settings: [string, string][] }
  | { format: 'qcow2'; size: number; qcow2: Qcow2CreateOptions; settings: [string, string][] };

/** Checks `request` (opening the backing file for its size when needed) and says what will be written. */
export async function planImage(request: CreateRequest): Promise<ImagePlan> {
  if (request.format === 'raw') return planRaw(request);
  if (request.format === 'qcow2') return planQcow2(request);
  throw new UnsupportedFeatureError(`creating ${request.format} images is not supported`);
}

/** Writes a planned image onto an empty, writable device (creating a qcow2 image's data file first). */
export async function writeImage(device: BlockDevice, plan: ImagePlan, request: Pick<CreateRequest, 'createDataFile'>): Promise<CreateResult> {
  if (plan.format === 'raw') {
    // Without fallocate in a portable file API, falloc leaves a sparse file: it reads the same.
    if (plan.preallocation === 'full') await writeZeros(device, 0, plan.size);
    await device.truncate!(plan.size);
  } else {
    const { qcow2 } = plan;
    if (qcow2.dataFile !== undefined) {
      if (!request.createDataFile) throw new UsageError('cannot create the data file here');
      // qemu creates the data file as a raw file of the disk's size, whether or not it must stay a valid
      // raw disk; with preallocation=full every byte of it is written (falloc leaves it sparse, as for raw).
      await request.createDataFile(qcow2.dataFile, plan.size, qcow2.preallocation === 'full');
    }
    await writeQcow2Skeleton(device, qcow2);
    await layOut(device, qcow2);
  }
  return { size: plan.size, settings: plan.settings };
}

/** Writes a new image of `request.format` onto an empty, writable device. */
export async function createImage(device: BlockDevice, request: CreateRequest): Promise<CreateResult> {
  return writeImage(device, await planImage(request), request);
}

function planRaw(request: CreateRequest): ImagePlan {
  rejectUnknownOptions(request.options, RAW_OPTIONS, 'raw');
  if (request.backingFile !== undefined) throw new UsageError("raw images cannot have a backing file ('-b')");
  const asked = sizeFrom(request);
  if (asked === undefined) throw new UsageError('Image creation needs a size parameter');
  const preallocation = request.options.get('preallocation') ?? 'off';
  // As qemu-img prints them, in the order of qemu's file options: the size asked for, nocow, preallocation, the extent size hint.
  const file = new Map(fileSettings(request.options));
  const settings: [string, string][] = [['fmt', 'raw'], ['size', String(asked)]];
  if (file.has('nocow')) settings.push(['nocow', file.get('nocow')!]);
  if (request.options.has('preallocation')) settings.push(['preallocation', preallocation]);
  if (file.has('extent_size_hint')) settings.push(['extent_size_hint', file.get('extent_size_hint')!]);
  return afterFormatting(settings, () => {
    // A mode qemu knows but its file driver does not do is unsupported (as resize words it), any other invalid.
    if (preallocation === 'metadata') throw new UnsupportedFeatureError('Unsupported preallocation mode: metadata');
    if (preallocation !== 'off' && preallocation !== 'falloc' && preallocation !== 'full') {
      throw new UsageError(`invalid parameter value: ${preallocation}`);
    }
    return { format: 'raw', size: wholeSectors(asked), preallocation, settings };
  });
}

/**
 * Runs the format driver's checks of a new image. qemu-img prints its
 * "Formatting" line before its driver checks the values, so an error raised
 * here carries the line's settings (`data.formatting`) for the CLI to print first.
 */
function afterFormatting<T>(settings: [string, string][], check: () => T): T {
  try {
    return check();
  } catch (error) {
    if (error instanceof PlatterError) error.data['formatting'] = settings;
    throw error;
  }
}

/** qemu's raw and qcow2 drivers make a new image whole sectors, rounding the size asked for up. */
function wholeSectors(size: number): number {
  return alignUp(size, SECTOR_SIZE);
}

function sizeFrom(request: CreateRequest): number | undefined {
  const option = request.options.get('size');
  if (option === undefined) return request.size;
  if (request.size !== undefined) throw new UsageError('The image size must be specified only once');
  return parseSize(option, 'image size');
}

/** The qcow2 version a `compat=` value names (0.10 or v2, 1.1 or v3); undefined for any other. */
export function compatVersion(compat: string): 2 | 3 | undefined {
  if (compat === '0.10' || compat === 'v2') return 2;
  if (compat === '1.1' || compat === 'v3') return 3;
  return undefined;
}

/** Parses qemu-img's qcow2 `-o` options over the defaults. */
export function qcow2CreateOptions(options: Map<string, string>, size: number): Qcow2CreateOptions {
  rejectUnknownOptions(options, QCOW2_OPTIONS, 'qcow2');
  const parsed: Qcow2CreateOptions = { ...QCOW2_CREATE_DEFAULTS, size };
  const compat = options.get('compat');
  if (compat !== undefined) {
    const version = compatVersion(compat);
    if (version === undefined) throw new UsageError(`Parameter 'version' does not accept value '${compat}'`);
    parsed.version = version;
  }
  const clusterSize = options.get('cluster_size');
  if (clusterSize !== undefined) parsed.clusterSize = parseSize(clusterSize, 'cluster_size');
  const refcountBits = options.get('refcount_bits');
  if (refcountBits !== undefined) parsed.refcountBits = Number(refcountBits);
  const compression = options.get('compression_type');
  if (compression !== undefined) {
    if (compression !== 'zlib' && compression !== 'zstd') throw new UsageError(`Parameter 'compression-type' does not accept value '${compression}'`);
    parsed.compressionType = compression === 'zlib' ? 0 : 1;
  }
  parsed.extendedL2 = optionBoolean(options.get('extended_l2'), 'extended_l2', false);
  parsed.lazyRefcounts = optionBoolean(options.get('lazy_refcounts'), 'lazy_refcounts', false);
  parsed.dataFileRaw = optionBoolean(options.get('data_file_raw'), 'data_file_raw', false);
  const preallocation = options.get('preallocation') ?? 'off';
  if (!(PREALLOCATION_MODES as readonly string[]).includes(preallocation)) {
    throw new UsageError(`Parameter 'preallocation' does not accept value '${preallocation}'`);
  }
  parsed.preallocation = preallocation as Qcow2CreateOptions['preallocation'];
  if (options.has('backing_file')) parsed.backingFile = options.get('backing_file');
  if (options.has('backing_fmt')) parsed.backingFormat = options.get('backing_fmt');
  if (options.has('data_file')) parsed.dataFile = options.get('data_file');
  return parsed;
}

async function planQcow2(request: CreateRequest): Promise<ImagePlan> {
  const options = new Map(request.options);
  if (request.backingFile !== undefined) options.set('backing_file', request.backingFile);
  if (request.backingFormat !== undefined) options.set('backing_fmt', request.backingFormat);
  let size = sizeFrom(request);
  const backingFile = options.get('backing_file');
  if (backingFile !== undefined) {
    const backingFormat = options.get('backing_fmt');
    if (backingFormat === undefined) {
      throw new UsageError('Backing file specified without backing format (use -F FMT)');
    }
    if (!request.unsafe && request.backingSize) {
      const backingSize = await request.backingSize(backingFile, backingFormat);
      size ??= backingSize;
    }
  }
  if (size === undefined) throw new UsageError('Image creation needs a size parameter');
  rejectUnknownOptions(options, QCOW2_OPTIONS, 'qcow2');
  const settings = qcow2Settings(options, size);
  const sectors = wholeSectors(size);
  return afterFormatting(settings, () => {
    const parsed = qcow2CreateOptions(options, sectors);
    validateCreateOptions(parsed);
    if (l1EntriesFor(sectors, parsed.clusterSize, parsed.extendedL2) * 8 > MAX_L1_BYTES) {
      // qemu-img's words for its driver's EFBIG (with the hint it gives whenever the format has a cluster size).
      throw new UsageError("The image size is too large for file format 'qcow2' (try using a larger cluster size)");
    }
    if (parsed.dataFileRaw && parsed.preallocation === 'off') parsed.preallocation = 'metadata'; // the data file must read as the disk
    if (parsed.backingFile !== undefined && parsed.preallocation !== 'off' && !parsed.extendedL2) {
      throw new UsageError('Backing file and preallocation can only be used at the same time if extended_l2 is on');
    }
    return { format: 'qcow2', size: sectors, qcow2: parsed, settings };
  });
}

/** Adds the L1 table and any preallocation through the writer. */
async function layOut(device: BlockDevice, options: Qcow2CreateOptions): Promise<void> {
  const host: ImageHost = {
    codecs: {
      inflateRaw: () => Promise.reject(new UsageError('no codecs while creating')),
      zstdDecompress: () => Promise.reject(new UsageError('no codecs while creating')),
    },
    warn: () => {},
  };
  // The image is new and complete only once create returns: its table writes are held and land merged
  // (a metadata preallocation updates an L2 entry and a refcount per cluster).
  const image: Qcow2Image = await openQcow2(device, { host, writable: true, noBacking: true, writeBehindMetadata: true });
  const writer = image.writer!;
  await writer.setInitialSize(options.size);
  if (options.preallocation !== 'off') await writer.preallocate(options.preallocation === 'full');
  await image.flush();
  await device.flush?.();
}

/**
 * The "Formatting" line's settings, in qemu-img 7.2's order, from the values
 * given (sizes, numbers and on/off parsed, the rest as written, whether valid
 * or not: the driver checks them later); explicit-only options only when
 * given; the size as asked for.
 */
function qcow2Settings(given: Map<string, string>, asked: number): [string, string][] {
  // A boolean as written (yes, true, on...: qemu-img echoes it), once checked; off when not given.
  const onOff = (name: string) => givenBoolean(given, name) ?? 'off';
  const clusterSize = given.get('cluster_size');
  const settings: [string, string][] = [
    ['fmt', 'qcow2'],
    ['cluster_size', String(clusterSize === undefined ? QCOW2_CREATE_DEFAULTS.clusterSize : parseSize(clusterSize, 'cluster_size'))],
    ['extended_l2', onOff('extended_l2')],
  ];
  if (given.has('preallocation')) settings.push(['preallocation', given.get('preallocation')!]);
  settings.push(['compression_type', given.get('compression_type') ?? 'zlib'], ['size', String(asked)]);
  for (const name of ['compat', 'backing_file', 'backing_fmt', 'data_file']) if (given.has(name)) settings.push([name, given.get(name)!]);
  if (given.has('data_file_raw')) settings.push(['data_file_raw', onOff('data_file_raw')]);
  settings.push(['lazy_refcounts', onOff('lazy_refcounts')], ['refcount_bits', String(refcountBitsOf(given))], ...fileSettings(given));
  return settings;
}

/** The refcount_bits value as a number (qemu's option parser refuses anything else); its range is the driver's to check. */
function refcountBitsOf(given: Map<string, string>): number {
  const value = given.get('refcount_bits');
  if (value === undefined) return QCOW2_CREATE_DEFAULTS.refcountBits;
  if (!/^\s*(\d+|0x[0-9a-f]+)\s*$/i.test(value)) throw new UsageError("Parameter 'refcount_bits' expects a number");
  return Number(value);
}

/** The largest extent size hint qemu takes (it is a 32-bit field of the file system). */
const MAX_EXTENT_SIZE_HINT = 0xffffffff;

/** The names of the file options, which every output format takes. */
export const FILE_OPTION_NAMES: readonly string[] = FILE_OPTIONS.map((option) => option.name);

/** What the CLI says when nocow=on is asked for: platter cannot set the attribute. */
export const NOCOW_NOT_APPLIED =
  "nocow=on is not applied: no portable file call sets a file's no-copy-on-write attribute (on btrfs, 'chattr +C' on the directory makes new files in it so)";

/** True when the options ask for nocow=on, which platter cannot apply (the caller says so). */
export function asksNocow(options: Map<string, string>): boolean {
  return options.has('nocow') && optionBoolean(options.get('nocow'), 'nocow', false);
}

/** The file options given, checked as qemu-img checks them, in the order its "Formatting" line prints them. */
/** A boolean option's text as given, once checked to be one (qemu-img prints what was written); undefined when absent. */
function givenBoolean(options: Map<string, string>, name: string): string | undefined {
  const value = options.get(name);
  if (value === undefined) return undefined;
  optionBoolean(value, name, false);
  return value;
}

export function fileSettings(options: Map<string, string>): [string, string][] {
  const settings: [string, string][] = [];
  const nocow = givenBoolean(options, 'nocow');
  if (nocow !== undefined) settings.push(['nocow', nocow]);
  const hint = options.get('extent_size_hint');
  if (hint !== undefined) {
    const bytes = parseSize(hint, 'extent_size_hint');
    if (bytes > MAX_EXTENT_SIZE_HINT) throw new UsageError('Extent size hint is too large');
    settings.push(['extent_size_hint', String(bytes)]);
  }
  return settings;
}
