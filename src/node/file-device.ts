/** Files as block devices: the only place platter touches the file system for image data. */

import { close, constants, fdatasync, fstat, ftruncate, open, read, realpath, statfs, unlink, write, type Stats, type StatsFs } from 'node:fs';
import { checkRange } from '../core/bytes.js';
import { requireWritable, type BlockDevice } from '../core/device.js';
import { IoError, NotFoundError, PlatterError } from '../core/errors.js';
import { settleAll } from '../core/slots.js';

/**
 * Linux caches a file in folios as large as a write and its alignment allow,
 * up to 2 MiB. A 2 MiB folio is taken whole from the free blocks that a VM
 * with free page reporting has handed back to its host, and the first touch of
 * those pages costs the host's fault-in, about 2 s/GiB. Measured on a 2-core
 * VM, writing 1 GiB in 2 MiB writes at 2 MiB-aligned offsets took 0.61-1.25 s;
 * the same writes with the first 64 KiB of each split off took 0.25-0.29 s (the
 * folios are then at most 1 MiB, from pages the guest still holds). So a write
 * that would fill an aligned 2 MiB block writes its head alone first.
 */
const LARGEST_FOLIO = 2 * 1024 * 1024;
const FOLIO_HEAD = 64 * 1024;

/** Bytes of the next write system call at `position`, with `remaining` bytes to write: never a whole aligned 2 MiB block. */
export function writePiece(position: number, remaining: number): number {
  const into = position % LARGEST_FOLIO;
  if (into === 0) return remaining >= LARGEST_FOLIO ? FOLIO_HEAD : remaining;
  const toBoundary = LARGEST_FOLIO - into;
  return remaining - toBoundary >= LARGEST_FOLIO ? toBoundary : remaining;
}

/** What qemu writes over the start of a file it sizes from zero (its MAX_BLOCKSIZE), and in a file smaller than that (a sector). */
const FIRST_BLOCK = 4096;
const SMALL_FIRST_BLOCK = 512;

/**
 * A node:fs callback call as a promise. The callback API rather than
 * node:fs/promises, which costs every run ~2 ms and 60-120 fresh pages to load
 * (it pulls in readline and the file watchers).
 */
export function call<T = void>(start: (done: (error: NodeJS.ErrnoException | null, value: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => start((error, value) => (error ? reject(error) : resolve(value))));
}

const openFd = (path: string, flags: number) => call<number>((done) => open(path, flags, done));
const closeFd = (fd: number) => call((done) => close(fd, done));
const statFd = (fd: number) => call<Stats>((done) => fstat(fd, done));
/** Reads into `buffer[from, from + length)` at `position`; resolves with the bytes read. */
const readAt = (fd: number, buffer: Uint8Array, from: number, length: number, position: number) =>
  call<number>((done) => read(fd, buffer, from, length, position, done));
/** Writes `buffer[from, from + length)` at `position`; resolves with the bytes written. */
const writeAt = (fd: number, buffer: Uint8Array, from: number, length: number, position: number) =>
  call<number>((done) => write(fd, buffer, from, length, position, done));

/** How to open a file. */
export interface FileOpenOptions {
  /** Open for writing (default read-only). */
  writable?: boolean;
  /** Create the file (empty) or truncate an existing one; implies writable. */
  create?: boolean;
  /**
   * False: `flush` does nothing (qemu's cache=unsafe, the default of qemu-img
   * convert for its output: a half-written new image is worthless anyway, and
   * waiting for the disk at the end would double the time of a large copy).
   */
  flushes?: boolean;
}

/**
 * File systems whose block counts (st_blocks) follow every write at once, delayed
 * allocation included: ext2/3/4, XFS, btrfs and tmpfs (statfs's f_type). Not
 * ZFS, which counts blocks only when a transaction group is written, nor
 * overlayfs, FUSE or network file systems, whose counts come from elsewhere.
 */
const EXACT_BLOCK_COUNTS = new Set([0xef53, 0x58465342, 0x9123683e, 0x01021994]);
/**
 * A file this small may keep its bytes in its inode (ext4's inline data, btrfs's
 * inline extents) with no block counted: it is never taken for a hole.
 */
const INLINE_DATA_MAX = 4096;

/**
 * A file read-only whose holes are more than this share of its size, and whose
 * reader reads holes too (a raw image, not a qcow2 file, whose holes are
 * never read), is read with O_DIRECT where offsets, lengths and buffers allow. Without SEEK_DATA the
 * holes must be read, and through the page cache each hole page is allocated,
 * zeroed and copied: about 1 GB/s on the bench VM, where O_DIRECT answers a
 * hole at memory speed (4 GiB of holes: 4.1 s against 0.04 s). Data read that
 * way comes from the disk, not the cache (a warm 2 GiB: 0.66 s against 0.15 s),
 * which the holes repay once they are a fifth of the file.
 */
const DIRECT_READ_HOLE_SHARE = 0.2;
/** Offsets, lengths and buffer addresses of O_DIRECT reads are multiples of this (a page covers any logical block size up to 4 KiB). */
const DIRECT_ALIGN = 4096;

/** A file on the host, read-only unless asked. */
export class FileDevice implements BlockDevice {
  private closing: Promise<void> | undefined;
  /** Whether the file's file system counts blocks exactly; asked once. */
  private exactCounts: Promise<boolean> | undefined;
  /** A second descriptor with O_DIRECT, for a sparse file's reads (see DIRECT_READ_HOLE_SHARE); opened at the first such read. */
  private direct: Promise<number | undefined> | undefined;
  /** Set by willReadHoles: the reader reads holes too (a raw image), so O_DIRECT may pay. */
  private holesRead = false;
  /** Set when the kernel refused an O_DIRECT read: later reads go through the page cache. */
  private directRefused = false;
  /** Reads served through O_DIRECT so far. */
  directReads = 0;

  private constructor(
    private readonly fd: number,
    readonly name: string,
    private length: number,
    readonly writable: boolean,
    private readonly flushes: boolean,
    /** A regular file opened read-only with holes past DIRECT_READ_HOLE_SHARE of it. */
    private readonly sparse: boolean = false,
  ) {}

  /** Opens `path`; missing files, directories and permission problems become PlatterErrors. */
  static async open(path: string, options: FileOpenOptions = {}): Promise<FileDevice> {
    const writable = options.writable === true || options.create === true;
    if (options.create) await createEmpty(path);
    const access = writable ? constants.O_RDWR : constants.O_RDONLY;
    // Non-blocking open: a FIFO would otherwise block the open until a writer comes, forever.
    const flags = access | (constants.O_NONBLOCK ?? 0);
    let fd: number;
    try {
      fd = await openFd(path, flags);
    } catch (error) {
      throw hostError(error, path, 'open');
    }
    try {
      const stats = await statFd(fd);
      if (stats.isDirectory()) throw new IoError('is a directory', { path });
      if (stats.isFIFO() || stats.isSocket()) throw new IoError('is a FIFO or socket, not an image file', { path });
      const size = stats.isBlockDevice() ? await readableSize(fd) : stats.size;
      const sparse = !writable && stats.isFile() && stats.blocks * 512 < stats.size * (1 - DIRECT_READ_HOLE_SHARE);
      return new FileDevice(fd, path, size, writable, options.flushes ?? true, sparse);
    } catch (error) {
      await closeFd(fd);
      throw hostError(error, path, 'open');
    }
  }

  get size(): number {
    return this.length;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    await this.readInto(offset, out);
    return out;
  }

  async readInto(offset: number, target: Uint8Array): Promise<void> {
    const length = target.length;
    checkRange(offset, length, this.length, `read from ${this.name}`);
    const aligned = offset % DIRECT_ALIGN === 0 && length % DIRECT_ALIGN === 0 && target.byteOffset % DIRECT_ALIGN === 0;
    if (this.sparse && this.holesRead && aligned && length > 0 && (await this.readDirect(offset, target))) return;
    await this.readBuffered(offset, target, 0);
  }

  /** Reads `target` from its byte `from` on, at `offset + from`, through the page cache. */
  private async readBuffered(offset: number, target: Uint8Array, from: number): Promise<void> {
    for (let done = from; done < target.length; ) {
      const bytesRead = await this.io(() => readAt(this.fd, target, done, target.length - done, offset + done), 'read');
      if (bytesRead === 0) throw new IoError(`file shrank while reading at offset ${offset + done}`);
      done += bytesRead;
    }
  }

  /** A raw image reads every byte of its file: a sparse one is then read with O_DIRECT where it can be. */
  willReadHoles(): void {
    this.holesRead = true;
  }

  /**
   * Reads all of `target` at `offset` through the O_DIRECT descriptor; false
   * when there is none, or the kernel refuses the read (a buffer that is not
   * aligned in memory, a file system without O_DIRECT), after which this
   * device reads through the page cache only. Nothing has been read into
   * `target` that a buffered read would not write over.
   */
  private async readDirect(offset: number, target: Uint8Array): Promise<boolean> {
    if (this.directRefused) return false;
    // Opened through Linux's /proc/self/fd: the very file of this descriptor, whatever its path names by now.
    this.direct ??= constants.O_DIRECT === undefined ? Promise.resolve(undefined) : openFd(`/proc/self/fd/${this.fd}`, constants.O_RDONLY | constants.O_DIRECT).catch(() => undefined);
    const fd = await this.direct;
    if (fd === undefined || this.directRefused) return false;
    let done = 0;
    while (done < target.length) {
      let bytesRead: number;
      try {
        bytesRead = await readAt(fd, target, done, target.length - done, offset + done);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EINVAL') throw hostError(error, this.name, 'read');
        // Left open until close: other reads may still be queued on it, and a closed number can name another file by then.
        this.directRefused = true;
        return false;
      }
      // A short read stops at the file's end: the page cache finishes (and says so when the file shrank).
      if (bytesRead % DIRECT_ALIGN !== 0 || bytesRead === 0) {
        await this.readBuffered(offset, target, done + bytesRead);
        return true;
      }
      done += bytesRead;
    }
    this.directReads++;
    return true;
  }

  /**
   * Writes the pieces `writePiece` cuts at once, each its own system call on
   * the thread pool: they cover disjoint ranges, so the order they land in does
   * not matter, and the call costs one round trip to the pool instead of one per piece.
   */
  async write(offset: number, data: Uint8Array): Promise<void> {
    requireWritable(this);
    checkRange(offset, 0, Number.MAX_SAFE_INTEGER - data.length, `write to ${this.name}`);
    const pieces: Promise<void>[] = [];
    for (let done = 0; done < data.length; ) {
      const piece = writePiece(offset + done, data.length - done);
      pieces.push(this.writeAll(offset + done, data.subarray(done, done + piece)));
      done += piece;
    }
    // Every piece settles before a failure is reported: nothing is still being written when the caller moves on.
    await settleAll(pieces);
    this.length = Math.max(this.length, offset + data.length);
  }

  /** Writes all of `data` at `offset`, going on after short writes. */
  private async writeAll(offset: number, data: Uint8Array): Promise<void> {
    for (let done = 0; done < data.length; ) {
      const bytesWritten = await this.io(() => writeAt(this.fd, data, done, data.length - done, offset + done), 'write');
      done += bytesWritten;
    }
  }

  async truncate(size: number): Promise<void> {
    requireWritable(this);
    const grownFromEmpty = this.length === 0 && size > 0;
    await this.io(() => call((done) => ftruncate(this.fd, size, done)), 'truncate');
    this.length = size;
    if (grownFromEmpty) await this.allocateFirstBlock();
  }

  /**
   * Writes zeros over the start of a file that has just grown from empty, as
   * qemu's file driver does for every file it sizes from zero (a new raw
   * image, convert's and dd's raw outputs, a raw data file): qemu probes
   * O_DIRECT alignment by reading the first block, which an unallocated block
   * can fool. Done here too, so a file platter makes occupies what qemu-img's
   * does (`info`'s disk size, du) and qemu finds its first block allocated.
   */
  private async allocateFirstBlock(): Promise<void> {
    const block = this.length < FIRST_BLOCK ? SMALL_FIRST_BLOCK : FIRST_BLOCK;
    await this.writeAll(0, new Uint8Array(Math.min(block, this.length)));
  }

  async flush(): Promise<void> {
    if (this.writable && this.flushes) await this.io(() => call((done) => fdatasync(this.fd, done)), 'flush');
  }

  /** Bytes the host file system really holds (st_blocks * 512). */
  async allocatedBytes(): Promise<number> {
    const stats = await this.io(() => statFd(this.fd), 'stat');
    return stats.blocks * 512;
  }

  /**
   * True when the file holds no data at all, so that all of it reads as zeros
   * without being read: a regular file with no blocks allocated, on a file
   * system that counts them exactly. There is no portable call that finds the
   * holes in a file (lseek's SEEK_DATA), but a file that is one hole (a raw
   * image fresh from truncate) is common, and reading it would copy zeros for
   * as long as the disk is large. (create writes a file's first block, as qemu
   * does: such a file is read, through readDirect.)
   */
  async holdsNoData(): Promise<boolean> {
    const stats = await this.io(() => statFd(this.fd), 'stat');
    if (!stats.isFile() || stats.blocks !== 0 || stats.size <= INLINE_DATA_MAX) return false;
    this.exactCounts ??= exactBlockCounts(this.fd);
    return this.exactCounts;
  }

  /**
   * Where the open file really lies, symlinks resolved, as the kernel knows it
   * through the open descriptor (Linux's /proc/self/fd); undefined where that
   * cannot be known.
   */
  async openedPath(): Promise<string | undefined> {
    try {
      return await call<string>((done) => realpath(`/proc/self/fd/${this.fd}`, done));
    } catch {
      return undefined;
    }
  }

  /** The device and inode numbers of the open file. */
  async identity(): Promise<{ dev: number; ino: number }> {
    const stats = await this.io(() => statFd(this.fd), 'stat');
    return { dev: stats.dev, ino: stats.ino };
  }

  /** Closes the file once; later calls wait for the same close (a descriptor closed twice could be another file's by then). */
  close(): Promise<void> {
    this.closing ??= Promise.all([closeFd(this.fd), this.direct?.then((fd) => (fd === undefined ? undefined : closeFd(fd)))]).then(() => {});
    return this.closing;
  }

  private async io<T>(operation: () => Promise<T>, what: string): Promise<T> {
    try {
      return await operation();
    } catch (error) {
      throw hostError(error, this.name, what);
    }
  }
}

/**
 * The size of a block device, which stat reports as 0. Node has no ioctl to
 * ask, so this finds the first offset a one-byte read cannot reach: doubling
 * until a read comes back empty, then halving the gap (about 2 log2(size)
 * reads, served from the device's page cache).
 */
export async function readableSize(fd: number): Promise<number> {
  const probe = new Uint8Array(1);
  const readable = async (offset: number) => (await readAt(fd, probe, 0, 1, offset)) === 1;
  if (!(await readable(0))) return 0;
  let reached = 0; // a readable offset
  let end = 512; // end - 1 is the next offset to try
  while (await readable(end - 1)) {
    reached = end - 1;
    end *= 2;
    if (end > Number.MAX_SAFE_INTEGER) throw new IoError('cannot find the end of the device');
  }
  // The size is the first unreadable offset in (reached, end - 1].
  let low = reached + 1;
  let high = end - 1;
  while (low < high) {
    const middle = Math.floor((low + high) / 2);
    if (await readable(middle)) low = middle + 1;
    else high = middle;
  }
  return low;
}

/**
 * Creates `path` empty (truncating an existing file) through a descriptor of its
 * own, closed at once. ext4 flushes a file truncated to zero when the descriptor
 * that truncated it is closed (its guard for replace-by-truncate): closing this
 * short-lived descriptor spends that flush while nothing is written yet, instead
 * of making the final close write back the whole output.
 */
async function createEmpty(path: string): Promise<void> {
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | (constants.O_NONBLOCK ?? 0);
  try {
    await closeFd(await openFd(path, flags));
  } catch (error) {
    throw hostError(error, path, 'open');
  }
}

/** Whether the file system of open descriptor `fd` is one of EXACT_BLOCK_COUNTS; false where that cannot be known. */
async function exactBlockCounts(fd: number): Promise<boolean> {
  try {
    // Linux's /proc/self/fd names the open file itself, wherever its path now leads.
    const info = await call<StatsFs>((done) => statfs(`/proc/self/fd/${fd}`, done));
    return EXACT_BLOCK_COUNTS.has(Number(info.type));
  } catch {
    return false;
  }
}

/** Deletes `path`, as qemu deletes an image it failed to create; a file that is already gone is no error. */
export async function removeFile(path: string): Promise<void> {
  try {
    await call((done) => unlink(path, done));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw hostError(error, path, 'remove');
  }
}

const HOST_MESSAGES: Record<string, string> = {
  ENOENT: 'No such file or directory',
  EFBIG: 'File too large',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  EISDIR: 'is a directory',
  ENOSPC: 'No space left on device',
  EROFS: 'Read-only file system',
  ENOTDIR: 'Not a directory',
  ELOOP: 'Too many levels of symbolic links',
  ENXIO: 'No such device or address',
};

/** Turns a Node system error into a PlatterError naming the file. */
export function hostError(error: unknown, path: string, what: string): PlatterError {
  if (error instanceof PlatterError) return error.inFile(path);
  const code = (error as NodeJS.ErrnoException)?.code ?? '';
  const text = HOST_MESSAGES[code] ?? `${what} failed (${code || String(error)})`;
  const message = what === 'open' ? `Could not open: ${text}` : `${what} failed: ${text}`;
  const wrapped =
    code === 'ENOENT'
      ? new NotFoundError(message, { path, errno: code })
      : new IoError(message, { path, errno: code }, { cause: error });
  return wrapped.inFile(path);
}
