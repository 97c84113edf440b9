/**
 * The runtime-agnostic part of platter: core types, devices, formats and the
 * engine. Importing it never loads node:* modules, so it runs in browsers too.
 */

export * from './core/index.js';
export { openImage, type ImageOpenOptions, type EngineHost } from './engine/open.js';
export { formats } from './engine/formats.js';
export { RawImage, rawFormat } from '../formats/raw/index.js';
export { info, imageInfo, type ImageInfo } from './ops/info.js';
export {
  qcow2Format,
  openQcow2,
  openSnapshotView,
  Qcow2Image,
  type Qcow2Metadata,
  type Qcow2Snapshot,
} from '../formats/qcow2/index.js';
