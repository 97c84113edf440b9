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
export { convertToRaw, type ConvertOptions, type ConvertResult } from './ops/convert.js';
export { convertToQcow2, type Qcow2ConvertOptions, type Qcow2ConvertResult } from './ops/convert-qcow2.js';
export { createImage, type CreateRequest, type CreateResult } from './ops/create.js';
export { checkImage, checkExitStatus, type CheckReport, type RepairMode } from './ops/check.js';
export { measure, type MeasureRequest, type MeasureResult } from './ops/measure.js';
export { resizeImage } from './ops/resize.js';
export { amendImage } from './ops/amend.js';
export { mapImage, type MapEntry, type MapOptions } from './ops/map.js';
export { rebaseImage, type RebaseOptions, type RebaseResult } from './ops/rebase.js';
export { commitImage, baseDepth, type CommitOptions, type CommitResult } from './ops/commit.js';
export { writeDelta, type DeltaOptions, type DeltaResult } from './ops/delta.js';
export { compareImages, type CompareOptions, type CompareResult, type CompareMismatch } from './ops/compare.js';
export { ddToRaw, planDd, type DdOperands, type DdPlan, type DdResult } from './ops/dd.js';
export { portableByteTests, type ByteTests } from './ops/bytes-accel.js';
export type { ProgressCallback } from './ops/progress.js';
export { listPartitions, sfdiskJson, sfdiskScript, writePartitions, type PartitionListing, type ListedPartition } from './ops/partitions.js';
export { mountOffsets, selectTarget, targetUse, type MountOffsets, type MountTarget, type TargetUse } from './ops/mount-offset.js';
export { snapshot, listSnapshots, type SnapshotAction, type SnapshotResult, type SnapshotJson } from './ops/snapshot.js';
export { readPartitionTable, writePartitionTable } from './engine/partition-table.js';
export type { PartitionTable, PartitionRecord } from '../formats/partition-table/model.js';
export { probeFilesystem, type FilesystemInfo } from '../formats/fs-probe/index.js';
export { readPhysicalVolume, lvPlacement } from '../formats/lvm/index.js';
