/** Core types and helpers shared by every format and operation. */

export * from './errors.js';
export * from './limits.js';
export * from './bytes.js';
export * from './struct.js';
export * from './size.js';
export * from './device.js';
export * from './image.js';
export * from './registry.js';
export * from './options.js';
export * from './crc32.js';
export * from './portable-codecs.js';
export { inflateRawInto, InflateError } from './inflate.js';
