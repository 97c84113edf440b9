/**
 * The Node host: files named inside images, codecs, and warnings.
 *
 * Names found inside an image (backing files, external data files) come from
 * whoever wrote the image, not from the user. They are followed only when they
 * are plain local paths to regular files or block devices (or json: names of
 * such a file, qcow2 or raw, whole or a part), and, with a backing root, only
 * when they resolve (symlinks included) inside that directory, checked again
 * on the file as opened.
 */

import { realpathSync, statSync } from 'node:fs';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { deviceWindow, imageSpec, type ImageSpec } from '../core/block-options.js';
import type { BlockDevice } from '../core/device.js';
import { NotFoundError, PlatterError, UnsupportedFeatureError } from '../core/errors.js';
import type { EngineHost } from '../engine/open.js';
import { nodeCodecs } from './codecs.js';
import { FileDevice } from './file-device.js';

/** Which files named inside images may be opened. */
export interface NamedFilePolicy {
  /**
   * Every backing or data file must resolve (after following symlinks) to a
   * path inside this directory; anything else is refused. For services that
   * inspect uploaded images.
   */
  backingRoot?: string;
}

/** Options for the Node host. */
export interface NodeHostOptions extends NamedFilePolicy {
  /** Where warnings go (the CLI prints them on stderr); `file`, when given, is the file a warning is about instead of the one opened. */
  warn?: (message: string, file?: string) => void;
  /**
   * Follow every backing file an image names, even one a json: name opens
   * alone (`"backing": null`): qemu-img info --backing-chain lists them so.
   */
  wholeChain?: boolean;
}

/** A name found inside an image that the policy does not allow; `code` EUNSUPPORTED. */
export class RefusedNameError extends UnsupportedFeatureError {
  constructor(name: string, reason: string) {
    super(`refusing file name '${printable(name)}': ${reason}`, { name, reason });
  }
}

/** The name with control characters escaped, so a message stays one line. */
function printable(name: string): string {
  // eslint-disable-next-line no-control-regex
  return name.replace(/[\x00-\x1f\x7f]/g, (char) => `\\x${char.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/**
 * Plain names written inside images are local paths. A protocol prefix (`nbd:`,
 * `http://`, `file:`...) would let an image make the tool open things the user
 * never named; qemu reads a name as a protocol when a `:` comes before the
 * first `/`, so every such name is refused (write `./a:b` for a file with a
 * colon); json: names are read apart (jsonNamed). A NUL byte cannot be part of
 * a host path, and an empty name names nothing.
 */
export function refuseProtocolName(name: string): void {
  if (name === '') throw new RefusedNameError(name, 'the name is empty');
  if (name.includes('\0')) throw new RefusedNameError(name, 'the name contains a NUL byte');
  const colon = name.indexOf(':');
  const slash = name.indexOf('/');
  if (colon >= 0 && (slash < 0 || colon < slash)) {
    throw new RefusedNameError(name, 'only plain local paths are followed, not protocols or URLs');
  }
}

/**
 * qemu's path_combine: a relative name resolves against the naming file's
 * directory, by plain prefixing (`dir/` + name, no normalisation), so the
 * result reads exactly like qemu-img's full-backing-filename.
 */
export function resolveNamedPath(name: string, namedBy: BlockDevice): string {
  if (isAbsolute(name)) return name;
  const slash = namedBy.name.lastIndexOf('/');
  return slash < 0 ? name : namedBy.name.slice(0, slash + 1) + name;
}

/** True when `path` is `root` itself or lies below it (both absolute and canonical). */
function isInside(path: string, root: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith('..' + sep) && rel !== '..' && !isAbsolute(rel));
}

/** realpath, or undefined when the path does not exist. */
function realpathOrUndefined(path: string): string | undefined {
  try {
    return realpathSync(path);
  } catch {
    return undefined;
  }
}

/** The backing root with symlinks resolved; it must exist. */
function canonicalRoot(root: string): string {
  const real = realpathOrUndefined(root);
  if (real === undefined) throw new NotFoundError(`backing root '${root}' does not exist`);
  return real;
}

/**
 * Applies the policy to a name found inside `namedBy` and returns the host path
 * to open. With a backing root, that is the canonical path (symlinks resolved),
 * so what is opened is what was checked.
 */
export function checkNamedFile(name: string, namedBy: BlockDevice, policy: NamedFilePolicy = {}): string {
  refuseProtocolName(name);
  return checkNamedPath(name, resolveNamedPath(name, namedBy), policy);
}

/** Applies the policy to `path`, which `name` (found inside an image) leads to; returns the host path to open. */
function checkNamedPath(name: string, path: string, policy: NamedFilePolicy): string {
  let target = path;
  if (policy.backingRoot !== undefined) {
    const root = canonicalRoot(policy.backingRoot);
    const real = realpathOrUndefined(path);
    // A missing file is checked by its lexical path: the error then says "outside" or "not found" truthfully.
    target = real ?? resolve(path);
    if (!isInside(target, root)) {
      throw new RefusedNameError(name, `it resolves to '${target}', outside the backing root '${root}'`);
    }
  }
  refuseSpecialFile(name, target);
  return target;
}

/**
 * After opening a file the policy allowed: the file really opened must lie
 * inside the backing root too. Between the check and the open, a directory on
 * the checked path may have been swapped for a symlink to elsewhere; the open
 * descriptor's own path (Linux) shows where the open landed. Where that path is
 * not known, the checked path must still be canonical (no symlink swapped in)
 * and name the very file opened (same device and inode).
 */
export async function confirmOpenedInside(device: FileDevice, name: string, checked: string, root: string): Promise<void> {
  const opened = await device.openedPath();
  if (opened !== undefined) {
    if (!isInside(opened, root)) throw new RefusedNameError(name, `it was opened at '${opened}', outside the backing root '${root}'`);
    return;
  }
  const found = realpathOrUndefined(checked) === checked ? statOrUndefined(checked) : undefined;
  const open = await device.identity();
  if (!found || found.dev !== open.dev || found.ino !== open.ino) {
    throw new RefusedNameError(name, `'${checked}' changed while it was being opened`);
  }
}

function statOrUndefined(path: string): { dev: number; ino: number } | undefined {
  try {
    return statSync(path);
  } catch {
    return undefined;
  }
}

/**
 * Only regular files and block devices are followed: a FIFO would block the
 * open forever, and a character device (a terminal, /dev/zero) is no image.
 */
function refuseSpecialFile(name: string, path: string): void {
  let stats;
  try {
    stats = statSync(path);
  } catch {
    return; // missing or unreadable: FileDevice.open reports it with the host's reason
  }
  if (!stats.isFile() && !stats.isBlockDevice() && !stats.isDirectory()) {
    throw new RefusedNameError(name, 'it is not a regular file or block device');
  }
}

/**
 * What a json: name found inside an image opens, when it names a file: qemu
 * writes such names for a backing file opened with options of its own (a raw
 * part of a file, say). Its file name is taken as qemu takes it, relative to
 * the current directory, not to the image that names it. Undefined for any
 * other name; a json: name that names no file here is refused.
 */
function jsonNamed(name: string): ImageSpec | undefined {
  if (!name.startsWith('json:')) return undefined;
  try {
    return imageSpec(name);
  } catch (error) {
    throw new RefusedNameError(name, error instanceof Error ? error.message : String(error));
  }
}

/** Builds the host the engine uses on Node. */
export function nodeHost(options: NodeHostOptions = {}): EngineHost {
  const warn = options.warn ?? (() => {});
  const policy: NamedFilePolicy = { backingRoot: options.backingRoot };
  return {
    codecs: nodeCodecs,
    warn,
    // qemu's full-backing-filename of a json: name is the name itself.
    resolveName: (name, namedBy) => (name.startsWith('json:') ? name : resolveNamedPath(name, namedBy)),
    canonical(name) {
      const spec = jsonNamed(name);
      const path = spec?.path ?? name;
      const file = realpathOrUndefined(path) ?? resolve(path);
      // Two parts of one file are two images.
      return spec?.window ? `${file}#${spec.window.offset}+${spec.window.size ?? ''}` : file;
    },
    namedFormat: (name) => jsonNamed(name)?.format,
    namedAlone: (name) => !options.wholeChain && jsonNamed(name)?.noBacking === true,
    async openNamedFile(name, namedBy, { writable }) {
      const spec = jsonNamed(name);
      const path = spec ? checkNamedPath(name, spec.path, policy) : checkNamedFile(name, namedBy, policy);
      let device: FileDevice;
      try {
        device = await FileDevice.open(path, { writable });
      } catch (error) {
        if (error instanceof PlatterError) throw error;
        throw new RefusedNameError(name, error instanceof Error ? error.message : String(error));
      }
      try {
        if (policy.backingRoot !== undefined) await confirmOpenedInside(device, name, path, canonicalRoot(policy.backingRoot));
        return spec?.window ? deviceWindow(device, spec.window) : device;
      } catch (error) {
        await device.close();
        throw error;
      }
    },
  };
}
