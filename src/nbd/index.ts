/** The NBD server protocol, runtime-agnostic: bytes in, bytes out, over an abstract duplex. */

export * from './constants.js';
export * from './limits.js';
export { imageExport, type NbdExport, type ImageExportOptions, type ExportWindow } from './export.js';
export { negotiate, transmissionFlagsFor, type ExportCatalog, type Session } from './handshake.js';
export { transmit, type NbdRequest } from './transmission.js';
export { serveConnection, singleExportCatalog, type ConnectionEvents } from './server.js';
export { StreamReader, type NbdDuplex, type FlowControl } from './stream.js';
export { allocationFlags, allocationRuns } from './status.js';
export { nbdUri, type NbdAddress } from './uri.js';
