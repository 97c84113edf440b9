#!/usr/bin/env node
/**
 * `npm run bench`: platter convert -O raw against qemu-img convert -O raw on
 * the same images, alternately, several rounds; prints median wall time, CPU
 * time and peak RSS for each and the platter/qemu-img ratios, and saves the
 * table as JSON in .bench/. Also times `platter info` start-up against `node -e 0`.
 *
 * Environment:
 *   BENCH_SCALE   multiplies the data sizes (default 1; 0.05 for a quick run)
 *   BENCH_ROUNDS  rounds per image (default 3, at least 1)
 *   BENCH_ONLY    comma-separated image names to run (default all)
 */

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, writeSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { randomFillSync } from 'node:crypto';

const ROOT = resolve(new URL('../..', import.meta.url).pathname);
const BENCH = join(ROOT, '.bench');
const CLI = join(ROOT, 'dist/cli.js');
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const SCALE = Number(process.env.BENCH_SCALE ?? '1');
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? '3'));
const ONLY = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(',')) : undefined;
const TIME = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;

/** A size scaled by BENCH_SCALE, in whole MiB (at least 4 MiB). */
const scaled = (bytes) => Math.max(4 * MiB, Math.round((bytes * SCALE) / MiB) * MiB);

function sh(program, args, options = {}) {
  return execFileSync(program, args, { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', ...options });
}

/** Raw file with `dataBytes` of random data in 4 MiB pieces, each followed by a 4 MiB hole. */
function makeRandomWithHoles(path, dataBytes) {
  const piece = 4 * MiB;
  const buffer = Buffer.alloc(piece);
  const fd = openSync(path, 'w');
  try {
    for (let done = 0; done < dataBytes; done += piece) {
      randomFillSync(buffer);
      writeSync(fd, buffer, 0, piece, done * 2);
    }
  } finally {
    closeSync(fd);
  }
  execFileSync('truncate', ['-s', String(dataBytes * 2), path]);
}

/** Raw file of compressible text: lines of words from a small vocabulary, seeded. */
function makeText(path, bytes) {
  const words = 'block cluster image guest sector qcow2 snapshot backing refcount table entry offset length zero data map'.split(' ');
  let seed = 12345;
  const next = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
  const chunk = Buffer.alloc(4 * MiB);
  const fd = openSync(path, 'w');
  try {
    for (let done = 0; done < bytes; done += chunk.length) {
      let at = 0;
      while (at < chunk.length) {
        const line = `${next() % 100000} ${words[next() % words.length]} ${words[next() % words.length]} ${words[next() % words.length]}\n`;
        at += chunk.write(line, at);
      }
      writeSync(fd, chunk, 0, chunk.length, done);
    }
  } finally {
    closeSync(fd);
  }
}

/** Builds (or reuses) the benchmark images; returns [{ name, path, virtual }]. */
function prepareImages() {
  mkdirSync(BENCH, { recursive: true });
  const tag = `s${SCALE}`;
  const images = [];
  const holes = join(BENCH, `random-holes-${tag}.qcow2`);
  if (!existsSync(holes)) {
    const raw = join(BENCH, 'random-holes.raw.tmp');
    makeRandomWithHoles(raw, scaled(GiB));
    sh('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, holes]);
    rmSync(raw);
  }
  images.push({ name: 'random+holes', path: holes });
  // A raw source isolates the copy loop from the qcow2 read path.
  const raw = join(BENCH, `random-${tag}.raw`);
  if (!existsSync(raw)) {
    const tmp = join(BENCH, 'random.raw.tmp');
    makeRandomWithHoles(tmp, scaled(GiB));
    sh('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', '-S', '0', tmp, raw]);
    rmSync(tmp);
  }
  images.push({ name: 'random-raw', path: raw });
  const zlib = join(BENCH, `text-zlib-${tag}.qcow2`);
  const zstd = join(BENCH, `text-zstd-${tag}.qcow2`);
  if (!existsSync(zlib) || !existsSync(zstd)) {
    const raw = join(BENCH, 'text.raw.tmp');
    makeText(raw, scaled(512 * MiB));
    sh('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', raw, zlib]);
    sh('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'compression_type=zstd', raw, zstd]);
    rmSync(raw);
  }
  images.push({ name: 'text-zlib', path: zlib }, { name: 'text-zstd', path: zstd });
  const empty = join(BENCH, 'empty-1T.qcow2');
  if (!existsSync(empty)) sh('qemu-img', ['create', '-q', '-f', 'qcow2', empty, '1T']);
  images.push({ name: 'empty-1T', path: empty });
  return images.filter((image) => !ONLY || ONLY.has(image.name));
}

/** Parses GNU time -v output. */
function parseTime(text) {
  const field = (label) => text.split('\n').find((line) => line.trim().startsWith(label))?.split(': ').pop()?.trim();
  const wall = field('Elapsed (wall clock) time')
    .split(':')
    .reduce((total, part) => total * 60 + Number(part), 0);
  return {
    wall,
    cpu: Number(field('User time (seconds)')) + Number(field('System time (seconds)')),
    rssMiB: Number(field('Maximum resident set size (kbytes)')) / 1024,
  };
}

/** Runs a command once; returns wall seconds, CPU seconds and peak RSS (MiB) where measurable. */
function measure(program, args) {
  if (TIME) {
    const result = spawnSync(TIME, ['-v', program, ...args], { encoding: 'utf8' });
    if (result.status !== 0) throw new Error(`${program} ${args.join(' ')} failed:\n${result.stderr}`);
    return parseTime(result.stderr);
  }
  const started = process.hrtime.bigint();
  const result = spawnSync(program, args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${program} ${args.join(' ')} failed:\n${result.stderr}`);
  return { wall: Number(process.hrtime.bigint() - started) / 1e9, cpu: NaN, rssMiB: NaN };
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};

function summarize(samples) {
  return {
    wall: median(samples.map((s) => s.wall)),
    cpu: median(samples.map((s) => s.cpu)),
    rssMiB: median(samples.map((s) => s.rssMiB)),
  };
}

/**
 * Flushes dirty pages left by the previous run (and lets writeback finish), so
 * each run starts from the same page-cache state; without it the run after a
 * 1 GiB write pays for the previous one's writeback.
 */
function settle() {
  spawnSync('sync');
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
}

function benchConvert(image) {
  const out = join(BENCH, 'out.raw');
  const format = image.path.endsWith('.raw') ? ['-f', 'raw'] : [];
  const tools = {
    platter: () => measure(process.execPath, [CLI, 'convert', ...format, '-O', 'raw', image.path, out]),
    'qemu-img': () => measure('qemu-img', ['convert', ...format, '-O', 'raw', image.path, out]),
  };
  const samples = { platter: [], 'qemu-img': [] };
  for (let round = 0; round < ROUNDS; round++) {
    // Alternate which tool goes first so neither always meets a warmer cache.
    const order = round % 2 === 0 ? ['platter', 'qemu-img'] : ['qemu-img', 'platter'];
    for (const tool of order) {
      rmSync(out, { force: true });
      settle();
      samples[tool].push(tools[tool]());
    }
  }
  rmSync(out, { force: true });
  return { platter: summarize(samples.platter), qemu: summarize(samples['qemu-img']) };
}

function benchStartup(image) {
  const rounds = Math.max(5, ROUNDS * 3);
  const info = [];
  const bare = [];
  for (let round = 0; round < rounds; round++) {
    info.push(measure(process.execPath, [CLI, 'info', image]));
    bare.push(measure(process.execPath, ['-e', '0']));
  }
  return { platterInfo: summarize(info), nodeBare: summarize(bare) };
}

const fixed = (value, digits = 2) => (Number.isFinite(value) ? value.toFixed(digits) : 'n/a');

function main() {
  if (!existsSync(CLI)) throw new Error('dist/cli.js is missing: run npm run build');
  const images = prepareImages();
  const rows = [];
  for (const image of images) {
    const virtual = Number(JSON.parse(sh('qemu-img', ['info', '--output=json', image.path]))['virtual-size']);
    const { platter, qemu } = benchConvert(image);
    rows.push({
      image: image.name,
      virtualSize: virtual,
      fileSize: statSync(image.path).size,
      platter,
      qemuImg: qemu,
      ratio: { wall: platter.wall / qemu.wall, cpu: platter.cpu / qemu.cpu, rss: platter.rssMiB / qemu.rssMiB },
    });
  }
  const startup = benchStartup(images[0]?.path ?? prepareImages()[0].path);
  const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model, memoryGiB: totalmem() / GiB, node: process.version };
  const qemuVersion = sh('qemu-img', ['--version']).split('\n')[0];
  const report = { date: new Date().toISOString(), scale: SCALE, rounds: ROUNDS, machine, qemuVersion, rows, startup };

  console.log(`platter convert -O raw vs ${qemuVersion} (scale ${SCALE}, ${ROUNDS} rounds, median; ${machine.cpus} cores)`);
  console.log('image          | platter wall s | qemu wall s | wall ratio | platter CPU s | qemu CPU s | CPU ratio | platter RSS MiB | qemu RSS MiB');
  for (const row of rows) {
    console.log(
      [
        row.image.padEnd(14),
        fixed(row.platter.wall).padStart(14),
        fixed(row.qemuImg.wall).padStart(11),
        fixed(row.ratio.wall).padStart(10),
        fixed(row.platter.cpu).padStart(13),
        fixed(row.qemuImg.cpu).padStart(10),
        fixed(row.ratio.cpu).padStart(9),
        fixed(row.platter.rssMiB, 0).padStart(15),
        fixed(row.qemuImg.rssMiB, 0).padStart(12),
      ].join(' | '),
    );
  }
  console.log(
    `start-up: platter info ${fixed(startup.platterInfo.wall * 1000, 0)} ms, node -e 0 ${fixed(startup.nodeBare.wall * 1000, 0)} ms`,
  );
  const file = join(BENCH, `results-${report.date.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
  writeFileSync(join(BENCH, 'results-latest.json'), JSON.stringify(report, null, 2) + '\n');
  console.log(`saved ${file}`);
}

main();
