/**
 * Opens each image of a batch with the built library, the way a service would:
 * info of the whole chain, block status of the whole disk, a read of every data
 * extent, the same for each internal snapshot. Prints one JSON object: per case
 * the error code and message (or success and a summary), the time taken,
 * whether the file changed, and at the end the process's peak RSS.
 *
 * Usage: node hostile-runner.mjs MANIFEST.json   (an array of {name, path, options})
 */

import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const dist = pathToFileURL(resolve(import.meta.dirname, '../../dist/index.js')).href;
const { openImageFile, info, openSnapshotView, PlatterError, Qcow2Image } = await import(dist);

/** Most bytes read per case: the corpus images are small, so this only bounds a runaway. */
const MAX_READ_BYTES = 64 * 1024 * 1024;
const READ_CHUNK = 1024 * 1024;
const MAX_SNAPSHOT_WALKS = 8;

/** SHA-256 of a file, read in chunks so a large sparse image does not count against the case's memory. */
function hashFile(path) {
  let fd;
  try {
    fd = openSync(path, 'r');
    const hash = createHash('sha256');
    const chunk = Buffer.alloc(1024 * 1024);
    for (let read; (read = readSync(fd, chunk, 0, chunk.length, null)) > 0; ) hash.update(chunk.subarray(0, read));
    return hash.digest('hex');
  } catch {
    return 'unreadable';
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Block status of the whole image, checked to tile [0, size) exactly. */
async function walk(image, budget) {
  const extents = image.size === 0 ? [] : await image.blockStatus(0, image.size);
  let expected = 0;
  for (const extent of extents) {
    if (extent.start !== expected || !(extent.length > 0)) throw new Error(`extents do not tile the disk at ${expected}`);
    expected += extent.length;
  }
  if (expected !== image.size) throw new Error(`extents cover ${expected} of ${image.size} bytes`);
  for (const extent of extents) {
    // Data is read; an unallocated or zero run is touched once, which reads through the backing chain.
    const length = extent.kind === 'data' ? extent.length : Math.min(extent.length, 4096);
    for (let done = 0; done < length && budget.left > 0; ) {
      const chunk = Math.min(READ_CHUNK, length - done, budget.left);
      const bytes = await image.read(extent.start + done, chunk);
      if (bytes.length !== chunk) throw new Error(`read returned ${bytes.length} of ${chunk} bytes`);
      budget.left -= chunk;
      done += chunk;
    }
  }
  return extents;
}

async function runCase(entry) {
  const warnings = [];
  const image = await openImageFile(entry.path, { ...entry.options, warn: (message) => warnings.push(message) });
  try {
    const chain = await info(image, { backingChain: true });
    const budget = { left: MAX_READ_BYTES };
    const extents = await walk(image, budget);
    let snapshots = 0;
    if (image instanceof Qcow2Image) {
      // A service shows a few snapshots, not 65536 of them: the first ones are walked.
      for (const snapshot of image.metadata.snapshots.slice(0, MAX_SNAPSHOT_WALKS)) {
        const view = await openSnapshotView(image, snapshot.id);
        await walk(view, budget);
        await view.close();
        snapshots++;
      }
    }
    return { ok: true, warnings, formats: chain.map((layer) => layer.format), chainLength: chain.length, snapshots, extents: extents.slice(0, 32) };
  } finally {
    await image.close();
  }
}

const manifest = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const results = [];
for (const entry of manifest) {
  const before = hashFile(entry.path);
  // CPU time, not wall time: the bound is on the work a case costs, and the suite
  // shares two cores with other test files, which stretches wall time arbitrarily.
  const started = process.cpuUsage();
  let result;
  try {
    result = await runCase(entry);
  } catch (error) {
    result =
      error instanceof PlatterError
        ? { ok: false, code: error.code, message: error.message, file: error.file }
        : { ok: false, foreign: `${error?.name}: ${error?.message}`, stack: error?.stack };
  }
  const spent = process.cpuUsage(started);
  result.ms = (spent.user + spent.system) / 1000;
  result.unchanged = hashFile(entry.path) === before;
  results.push({ name: entry.name, ...result });
}
process.stdout.write(JSON.stringify({ results, maxRssBytes: process.resourceUsage().maxRSS * 1024 }));
