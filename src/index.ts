/**
 * platter's library API. `platter/core` is the runtime-agnostic subset; this
 * entry adds the Node file access (FileDevice, openImageFile).
 */

export * from './core.js';
export { FileDevice, type FileOpenOptions } from './node/file-device.js';
export { openImageFile, type OpenFileOptions } from './node/open.js';
export { nodeHost } from './node/host.js';
export { nodeCodecs } from './node/codecs.js';
export { nodeByteTests } from './node/byte-tests.js';
export { VERSION } from './version.js';
export { serve, prepareExport, mountTargetWindow, type ServeHandle, type ServeInfo, type ExportOptions } from './ops/serve.js';
export { listenNbd, onShutdownSignals, defaultSocketPath, type NbdEndpoint, type NbdListener } from './node/nbd-listen.js';
export * as nbd from './nbd/index.js';
