/** The Node host: files named inside images, codecs, and warnings. */

import { isAbsolute, resolve } from 'node:path';
import type { BlockDevice } from '../core/device.js';
import { UnsupportedFeatureError } from '../core/errors.js';
import type { EngineHost } from '../engine/open.js';
import { nodeCodecs } from './codecs.js';
import { FileDevice } from './file-device.js';

/** Options for the Node host. */
export interface NodeHostOptions {
  /** Where warnings go (the CLI prints them on stderr). */
  warn?: (message: string) => void;
}

/**
 * Names written inside images are plain local paths. Protocol prefixes (`json:`,
 * `nbd:`, URLs) would let an image make the tool open things the user never named.
 */
export function refuseProtocolName(name: string): void {
  if (/^json:/i.test(name) || /^[a-z][a-z0-9+.-]*:\/\//i.test(name) || /^[a-z][a-z0-9+.-]*:/i.test(name) && !/^[a-z]:[\\/]/i.test(name)) {
    throw new UnsupportedFeatureError(`refusing file name '${name}': only plain local paths are followed`, { name });
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

/** Builds the host the engine uses on Node. */
export function nodeHost(options: NodeHostOptions = {}): EngineHost {
  const warn = options.warn ?? (() => {});
  return {
    codecs: nodeCodecs,
    warn,
    resolveName: resolveNamedPath,
    canonical: (name) => resolve(name),
    async openNamedFile(name, namedBy, { writable }) {
      refuseProtocolName(name);
      return FileDevice.open(resolveNamedPath(name, namedBy), { writable });
    },
  };
}
