/**
 * Codecs in plain JavaScript, for runtimes without node:zlib (a browser page,
 * a worker, Deno): qcow2's zlib clusters decode with the inflater here. zstd
 * has no decoder here; one can be passed in (a WebAssembly libzstd, say), else
 * zstd clusters are refused with a clear error.
 */

import { UnsupportedFeatureError } from './errors.js';
import type { Codecs } from './image.js';
import { inflateRawInto } from './inflate.js';

/** Codecs for `ImageHost.codecs` that need no runtime library; `zstdDecompress` is used for zstd clusters when given. */
export function portableCodecs(options: { zstdDecompress?: Codecs['zstdDecompress'] } = {}): Codecs {
  return {
    async inflateRaw(input, outputLength) {
      const output = new Uint8Array(outputLength);
      return output.subarray(0, inflateRawInto(input, output));
    },
    async inflateRawInto(input, output) {
      return inflateRawInto(input, output);
    },
    zstdDecompress:
      options.zstdDecompress ??
      (() => Promise.reject(new UnsupportedFeatureError('zstd-compressed clusters need a zstd decoder (portableCodecs({ zstdDecompress }))'))),
  };
}
