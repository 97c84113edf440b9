/**
 * Cluster allocation (qemu's qcow2_alloc_clusters): single clusters and runs
 * alike take the lowest free place at or after the lowest freed cluster, else
 * the end of the file. Every allocation records its refcount before the caller
 * writes anything that points at it.
 */

import type { MetadataOverlap } from './overlap.js';
import { maxRefcount, type Refcounts } from './refcount.js';

/** Hands out host clusters and takes them back. */
export class ClusterAllocator {
  /** Where the next compressed stream may go (0: start a new cluster). */
  private packCursor = 0;

  /** `overlap`, when given, keeps a metadata cluster whose refcount reads 0 (a damaged image) from being handed out. */
  constructor(
    readonly refcounts: Refcounts,
    private readonly overlap?: MetadataOverlap,
  ) {
    if (overlap) refcounts.isReserved = (cluster) => overlap.find(cluster * refcounts.clusterSize, refcounts.clusterSize) !== undefined;
  }

  /** Cluster size in bytes. */
  get clusterSize(): number {
    return this.refcounts.clusterSize;
  }

  /** One cluster, refcount 1: a freed one when there is one, else at the end. Returns its byte offset. */
  allocate(): Promise<number> {
    return this.allocateRun(1);
  }

  /**
   * `count` contiguous clusters, refcount 1 each: the first free run at or
   * after the lowest freed cluster, as qemu's alloc_clusters_noref finds it. A
   * run that reaches the end of the file goes on past it. Returns the first
   * byte offset.
   */
  async allocateRun(count: number): Promise<number> {
    const { refcounts } = this;
    for (;;) {
      let start = refcounts.freeHint;
      for (let cluster = start; cluster < refcounts.endCluster && cluster < start + count; cluster++) {
        if (!(await this.isFree(cluster))) start = cluster + 1;
      }
      // A run that goes on past the end must be contiguous with what is appended: a refcount block made
      // for an uncovered cluster of the file (a damaged image) would land between, so such a run starts at the end.
      if (start + count > refcounts.endCluster && !refcounts.coversClusters(start, refcounts.endCluster)) start = refcounts.endCluster;
      // Like qemu's free_cluster_index: past the run before it is counted (a new refcount block goes after it),
      // and a free cluster skipped on the way waits for the next release.
      refcounts.freeHint = start + count;
      const tableMoves = refcounts.tableMoves;
      const inside = Math.min(count, refcounts.endCluster - start);
      for (let cluster = start; cluster < start + inside; cluster++) await refcounts.set(cluster, 1);
      if (inside < count) await refcounts.appendClusters(count - inside);
      if (refcounts.tableMoves === tableMoves) return start * this.clusterSize;
      // The refcount table moved to make room: qemu gives the run back and searches again from the lower of
      // its start and the freed old table, so the run may land there or in the clusters skipped by the move.
      await refcounts.adjust(start, count, -1);
      refcounts.freeHint = Math.min(refcounts.freeHint, start);
    }
  }

  /** True when `cluster` may be handed out: no reference, and no metadata of a damaged image there. */
  private async isFree(cluster: number): Promise<boolean> {
    return (await this.refcounts.get(cluster)) === 0 && this.overlap?.find(cluster * this.clusterSize, this.clusterSize) === undefined;
  }

  /**
   * `size` bytes (less than a cluster) for a compressed stream, packed right
   * after the previous stream like qemu's qcow2_alloc_bytes: a stream may run
   * on into the next cluster when that cluster is the next one appended. Every
   * cluster a stream touches gets one more reference. A cluster whose
   * refcount is at the width's maximum takes no more streams (with
   * refcount_bits=1, one stream a cluster), as in qemu. Returns the byte offset.
   */
  async allocateBytes(size: number): Promise<number> {
    const { clusterSize, refcounts } = this;
    let offset = this.packCursor;
    if (offset !== 0 && (await refcounts.get(Math.floor(offset / clusterSize))) >= maxRefcount(refcounts.order)) offset = 0;
    const tailEnd = Math.ceil(offset / clusterSize) * clusterSize;
    const fits = offset !== 0 && offset % clusterSize !== 0 && size <= tailEnd - offset;
    const canSpill = offset !== 0 && offset % clusterSize !== 0 && refcounts.endCluster * clusterSize === tailEnd;
    if (fits || canSpill) {
      await this.retain(offset);
      if (!fits) await refcounts.appendClusters(1);
    } else {
      offset = (await refcounts.appendClusters(1)) * clusterSize;
    }
    this.packCursor = offset + size;
    return offset;
  }

  /** Drops one reference from each cluster in [offset, offset+bytes) (clusters the range touches). */
  async release(offset: number, bytes: number): Promise<void> {
    if (bytes <= 0) return;
    const [first, last] = this.clustersTouched(offset, bytes);
    await this.refcounts.adjust(first, last - first + 1, -1);
    for (let cluster = first; cluster <= last && cluster < this.refcounts.freeHint; cluster++) {
      if ((await this.refcounts.get(cluster)) === 0) this.refcounts.freeHint = cluster;
    }
  }

  /**
   * Releases [offset, offset+bytes) only when every cluster it touches is
   * referenced; else changes nothing and resolves false (qemu's
   * qcow2_free_clusters fails the same way and undoes its partial work).
   */
  async releaseIfReferenced(offset: number, bytes: number): Promise<boolean> {
    if (bytes <= 0) return true;
    const [first, last] = this.clustersTouched(offset, bytes);
    for (let cluster = first; cluster <= last; cluster++) if ((await this.refcounts.get(cluster)) === 0) return false;
    await this.release(offset, bytes);
    return true;
  }

  /** The first and last cluster that [offset, offset+bytes) touches (bytes > 0). */
  private clustersTouched(offset: number, bytes: number): [number, number] {
    return [Math.floor(offset / this.clusterSize), Math.floor((offset + bytes - 1) / this.clusterSize)];
  }

  /** Adds one reference to a cluster. */
  async retain(offset: number): Promise<void> {
    await this.refcounts.adjust(Math.floor(offset / this.clusterSize), 1, 1);
  }
}
