/** One client connection from greeting to hang-up, whatever the transport. */

import type { NbdExport } from './export.js';
import type { ExportCatalog } from './handshake.js';
import { negotiate } from './handshake.js';
import type { NbdDuplex } from './stream.js';
import { transmit } from './transmission.js';

/** What happened on a connection, for the server's log. */
export interface ConnectionEvents {
  /** The client picked an export and transmission started. */
  onSession?(exportName: string): void;
  /** The connection ended on an error (a broken client, a failing image). */
  onError?(error: unknown): void;
}

/**
 * Serves one connection: handshake, then requests until the client leaves.
 * Never rejects: errors end this connection only and go to `events.onError`.
 * A writable export is flushed when its client leaves, however it leaves.
 */
export async function serveConnection(io: NbdDuplex, catalog: ExportCatalog, events: ConnectionEvents = {}): Promise<void> {
  let session;
  try {
    session = await negotiate(io, catalog);
    if (session) {
      events.onSession?.(session.export.name);
      await transmit(io, session);
    }
  } catch (error) {
    events.onError?.(error);
  } finally {
    io.close();
    if (session?.export.writable) {
      await session.export.flush().catch((error: unknown) => events.onError?.(error));
    }
  }
}

/** A catalog of one export, which is also the default ('') export. */
export function singleExportCatalog(exported: NbdExport): ExportCatalog {
  return {
    find: (name) => (name === '' || name === exported.name ? exported : undefined),
    list: () => [exported],
  };
}

