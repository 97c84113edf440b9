/**
 * Opening images: format choice (given or probed), and backing chains with a
 * depth cap and cycle detection. Runtime-agnostic: files come from the host.
 */

import type { BlockDevice } from '../core/device.js';
import { LimitExceededError, PlatterError, UsageError } from '../core/errors.js';
import type { Image, ImageHost } from '../core/image.js';
import { MAX_BACKING_DEPTH, PROBE_BYTES } from '../core/limits.js';
import { formats } from './formats.js';

/** How to open one image. */
export interface ImageOpenOptions {
  /** qemu-img's -f: skip probing. */
  format?: string;
  writable?: boolean;
  /** Open no backing or data files. */
  noBacking?: boolean;
  /** An encrypted image opens, to be described only (info); its backing files open as usual. */
  describeEncrypted?: boolean;
  host: ImageHost;
}

/** Host services plus a way to name files uniquely, for cycle detection. */
export interface EngineHost extends ImageHost {
  /** A canonical key for a file name (an absolute path); defaults to the name. */
  canonical?(name: string): string;
}

/** How many images of an over-deep chain are named at each end of the message. */
const CHAIN_ENDS_SHOWN = 3;

/** A chain for a message: every file, or its first and last few when it is long. */
function describeChain(chain: string[]): string {
  if (chain.length <= 2 * CHAIN_ENDS_SHOWN) return chain.join(' -> ');
  const hidden = chain.length - 2 * CHAIN_ENDS_SHOWN;
  return [...chain.slice(0, CHAIN_ENDS_SHOWN), `(${hidden} more)`, ...chain.slice(-CHAIN_ENDS_SHOWN)].join(' -> ');
}

/** Reads the first bytes of a device for probing. */
export async function readHead(device: BlockDevice): Promise<Uint8Array> {
  return device.read(0, Math.min(PROBE_BYTES, device.size));
}

/** Opens the image stored on `device`, with its backing chain unless `noBacking`. */
export async function openImage(device: BlockDevice, options: ImageOpenOptions): Promise<Image> {
  const host = options.host as EngineHost;
  const key = (name: string) => host.canonical?.(name) ?? name;
  return openLayer(device, options, [key(device.name)]);
}

async function openLayer(device: BlockDevice, options: ImageOpenOptions, chain: string[]): Promise<Image> {
  const host = options.host as EngineHost;
  const layerHost: ImageHost = {
    ...host,
    // A backing image's warnings (marked corrupt, dirty) are about that file, not the image the user named.
    warn: chain.length > 1 ? (message, file) => host.warn(message, file ?? device.name) : host.warn,
    openBacking: (name, namedBy, format) => openBackingLayer(name, namedBy, format, options, chain),
  };
  try {
    const module = options.format ? formats.get(options.format) : formats.probe(await readHead(device));
    const reprobe = options.format ? undefined : (head: Uint8Array) => formats.nameOf(head);
    return await module.open(device, { host: layerHost, writable: options.writable, noBacking: options.noBacking, describeEncrypted: options.describeEncrypted, reprobe });
  } catch (error) {
    if (error instanceof PlatterError) error.inFile(device.name);
    throw error;
  }
}

async function openBackingLayer(
  name: string,
  namedBy: BlockDevice,
  format: string | undefined,
  options: ImageOpenOptions,
  chain: string[],
): Promise<Image> {
  const host = options.host as EngineHost;
  if (!host.openNamedFile) throw new UsageError(`cannot open backing file '${name}': no file access here`);
  const resolved = host.resolveName?.(name, namedBy) ?? name;
  const key = host.canonical?.(resolved) ?? resolved;
  if (chain.includes(key)) {
    throw new LimitExceededError(`backing chain has a cycle: ${[...chain, key].join(' -> ')}`, { chain: [...chain, key] });
  }
  if (chain.length >= MAX_BACKING_DEPTH) {
    throw new LimitExceededError(`backing chain is deeper than ${MAX_BACKING_DEPTH} images: ${describeChain([...chain, key])}`, {
      depth: chain.length,
    });
  }
  const device = await host.openNamedFile(name, namedBy, { writable: false });
  const chosen = host.namedFormat?.(name) ?? format;
  // The format is missing from the naming image: deeper in a chain, that is a backing file, not the top.
  if (!chosen) host.warn(`backing file format of '${resolved}' is not recorded; probing it (use -F to set it)`, chain.length > 1 ? namedBy.name : undefined);
  try {
    // A json: name with "backing": null opens that image alone, as qemu opens it.
    const noBacking = options.noBacking === true || host.namedAlone?.(name) === true;
    return await openLayer(device, { ...options, format: chosen, writable: false, noBacking }, [...chain, key]);
  } catch (error) {
    // A chain that fails deep down must not leave one open file per layer behind.
    await device.close();
    throw error;
  }
}
