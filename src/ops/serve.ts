/**
 * `serve`: export an image's virtual disk, or one partition of it, over NBD.
 * The op builds the export and runs a listener it is handed (the runtime's
 * sockets); it prints nothing.
 */

import { UnsupportedFeatureError, UsageError } from '../core/errors.js';
import type { Image } from '../core/image.js';
import { imageExport, type ExportWindow, type NbdExport } from '../nbd/export.js';
import type { ExportCatalog } from '../nbd/handshake.js';
import { MAX_STRING_BYTES } from '../nbd/limits.js';
import { singleExportCatalog } from '../nbd/server.js';
import { nbdUri, type NbdAddress } from '../nbd/uri.js';
import { mountOffsets, selectTarget } from './mount-offset.js';
import { bitmapContexts } from './serve-bitmaps.js';
import { openSnapshotView, Qcow2Image, type SnapshotRef } from '../../formats/qcow2/index.js';

/** Finds a partition (a number, LABEL=, UUID=, PARTLABEL=, VG/LV) in an image's virtual disk. */
export type PartitionResolver = (image: Image, which: string) => Promise<ExportWindow>;

/** A listener the op starts: the runtime's sockets, already configured. */
export type NbdListen = (catalog: ExportCatalog) => Promise<{
  address: NbdAddress;
  done: Promise<void>;
  close(): Promise<void>;
}>;

/** What to export. */
export interface ExportOptions {
  /** The export's name (default '': clients that name none get it). */
  exportName?: string;
  /** The description clients are given (qemu-nbd's -D; default: the image's name, and the snapshot's). */
  description?: string;
  /** Accept writes (the image must be open for writing). */
  writable?: boolean;
  /** Export only this partition. */
  partition?: string;
  /** Export this internal snapshot instead of the current state: an ID or name, or both to match. */
  snapshot?: SnapshotRef;
  /** TRIM frees what the range stores (qemu-nbd's --discard=unmap). */
  unmapOnTrim?: boolean;
  /** Clients served at once (qemu-nbd's --shared); above 1 the export offers multi-conn. */
  shared?: number;
  /** Offer the qemu:allocation-depth metadata context (qemu-nbd's -A). */
  allocationDepth?: boolean;
  /** Persistent dirty bitmaps to offer as qemu:dirty-bitmap:NAME contexts (qemu-nbd's -B, once per name). */
  bitmaps?: readonly string[];
  /** How `partition` is found (default: as `mount-offset` finds it). */
  resolvePartition?: PartitionResolver;
}

/** What a running server tells its caller. */
export interface ServeInfo {
  uri: string;
  socket?: string;
  host?: string;
  port?: number;
  'export-name': string;
  'virtual-size': number;
  /** Where the export starts in the image's virtual disk (a partition's offset). */
  offset: number;
  format: string;
  writable: boolean;
}

/** A running server. */
export interface ServeHandle {
  info: ServeInfo;
  /** Resolves when the server stopped and every client's writes were flushed. */
  done: Promise<void>;
  /** Stops the server (drops clients, flushes). */
  stop(): Promise<void>;
}

/**
 * The partitions and volumes `mount-offset` knows, as export windows. A logical
 * volume scattered over several runs has no single window and is refused.
 */
export const mountTargetWindow: PartitionResolver = async (image, which) => {
  const target = selectTarget(await mountOffsets(image), which);
  if (!target.contiguous || target.offset === undefined || target.sizelimit === undefined) {
    throw new UnsupportedFeatureError(`'${which}' cannot be exported as one byte range: ${target.reason ?? 'it is not contiguous'}`);
  }
  return { start: target.offset, length: target.sizelimit };
};

/** The read-only view of an internal snapshot (qemu-nbd's -l). */
async function snapshotImage(image: Image, snapshot: SnapshotRef, writable: boolean): Promise<Image> {
  if (writable) throw new UsageError('a snapshot is exported read-only: --snapshot cannot be used with --writable');
  if (!(image instanceof Qcow2Image)) throw new UnsupportedFeatureError(`${image.format} images have no internal snapshots`);
  return openSnapshotView(image, snapshot);
}

/** How a description names a snapshot: as it was asked for. */
function snapshotLabel(snapshot: SnapshotRef): string {
  if (typeof snapshot === 'string') return snapshot;
  return [snapshot.id, snapshot.name].filter((part) => part !== undefined).join(' ');
}

/** Builds the export for an image, refusing what cannot be served. */
export async function prepareExport(image: Image, options: ExportOptions = {}): Promise<{ exported: NbdExport; window: ExportWindow }> {
  const source = options.snapshot === undefined ? image : await snapshotImage(image, options.snapshot, options.writable === true);
  const name = options.exportName ?? '';
  if (new TextEncoder().encode(name).length > MAX_STRING_BYTES) throw new UsageError(`export name is longer than ${MAX_STRING_BYTES} bytes`);
  const window =
    options.partition === undefined
      ? { start: 0, length: source.size }
      : await (options.resolvePartition ?? mountTargetWindow)(source, options.partition);
  const description = options.description ?? (options.snapshot === undefined ? source.name : `${source.name} snapshot ${snapshotLabel(options.snapshot)}`);
  const exported = imageExport(source, {
    name,
    writable: options.writable === true,
    window,
    description,
    unmapOnTrim: options.unmapOnTrim === true,
    multiConn: (options.shared ?? 1) > 1,
    allocationDepth: options.allocationDepth === true,
    // The image's bitmaps, also under a snapshot (as qemu-nbd -l -B exports them).
    metaContexts: bitmapContexts(image, options.bitmaps ?? [], window),
  });
  return { exported, window };
}

/** Exports `image` and starts `listen`; resolves once clients can connect. */
export async function serve(image: Image, options: ExportOptions & { listen: NbdListen }): Promise<ServeHandle> {
  const { exported, window } = await prepareExport(image, options);
  const listener = await options.listen(singleExportCatalog(exported));
  const address = listener.address;
  const info: ServeInfo = {
    uri: nbdUri(address, exported.name),
    ...('socketPath' in address ? { socket: address.socketPath } : { host: address.host, port: address.port }),
    'export-name': exported.name,
    'virtual-size': exported.size,
    offset: window.start,
    format: image.format,
    writable: exported.writable,
  };
  const done = listener.done.then(() => exported.flush());
  return { info, done, stop: async () => { await listener.close(); await done; } };
}
