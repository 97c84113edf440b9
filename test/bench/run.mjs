#!/usr/bin/env node
/**
 * `npm run bench`: platter convert against qemu-img convert on the same
 * sources (qcow2 and raw to raw, raw to qcow2 with and without -c), alternately,
 * several rounds; prints median wall time, CPU time and peak RSS for each and
 * the platter/qemu-img ratios, and saves the table as JSON in .bench/. Also
 * checks that platter's peak RSS does not follow the image size (a quarter-size
 * image against the full one) and times `platter info` against `node -e 0`.
 *
 * Environment:
 *   BENCH_SCALE   multiplies the data sizes (default 1; 0.05 for a quick run)
 *   BENCH_ROUNDS  rounds per case (default 7, at least 1)
 *   BENCH_ONLY    comma-separated case names to run (default all): random+holes,
 *                 random-raw, text-zlib, text-zstd, empty-1T, raw-qcow2, raw-qcow2-c, rss-4x
 *   BENCH_KEEP_ENV  set to 1 to time the runs with the environment as it is
 *                 (by default NODE_EXTRA_CA_CERTS is left out: see RUN_ENV)
 */

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readSync, writeSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { cpus, freemem, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { randomFillSync } from 'node:crypto';

const ROOT = resolve(new URL('../..', import.meta.url).pathname);
const BENCH = join(ROOT, '.bench');
const CLI = join(ROOT, 'dist/cli.cjs');
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const SCALE = Number(process.env.BENCH_SCALE ?? '1');
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? '7'));
const ONLY = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(',')) : undefined;
const TIME = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;

/**
 * The environment of the timed runs. NODE_EXTRA_CA_CERTS makes every Node
 * process parse that certificate bundle before running any code (30 ms for the
 * usual 220 KB bundle on the bench VM, a third of `node -e 0`); platter makes no
 * TLS connection, and qemu-img does not read the variable, so it is left out
 * unless BENCH_KEEP_ENV=1. The report says when it was.
 */
const LEFT_OUT = process.env.BENCH_KEEP_ENV === '1' ? [] : ['NODE_EXTRA_CA_CERTS'].filter((name) => name in process.env);
const RUN_ENV = Object.fromEntries(Object.entries(process.env).filter(([name]) => !LEFT_OUT.includes(name)));

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

/** Builds `path` with `make(tmp)` followed by qemu-img convert `args`, unless it exists. */
function build(path, make, args) {
  if (existsSync(path)) return path;
  const tmp = `${path}.tmp`;
  make(tmp);
  sh('qemu-img', ['convert', ...args, tmp, path]);
  rmSync(tmp);
  return path;
}

/** Converts `source` into `path` with qemu-img, unless it exists. */
function derive(path, source, args) {
  if (!existsSync(path)) sh('qemu-img', ['convert', ...args, source, path]);
  return path;
}

/**
 * Builds (or reuses) the benchmark sources; returns the cases to run:
 * { cases: [{ name, what, source, args (convert's format options), out }], holes: the random+holes image }.
 */
function prepareCases() {
  mkdirSync(BENCH, { recursive: true });
  const tag = `s${SCALE}`;
  const withHoles = (bytes) => (path) => makeRandomWithHoles(path, scaled(bytes));
  const holes = build(join(BENCH, `random-holes-${tag}.qcow2`), withHoles(GiB), ['-f', 'raw', '-O', 'qcow2']);
  // A fully allocated raw source isolates the copy loop from the qcow2 read path.
  const raw = build(join(BENCH, `random-${tag}.raw`), withHoles(GiB), ['-f', 'raw', '-O', 'raw', '-S', '0']);
  const text = build(join(BENCH, `text-${tag}.raw`), (path) => makeText(path, scaled(512 * MiB)), ['-f', 'raw', '-O', 'raw']);
  const zlib = derive(join(BENCH, `text-zlib-${tag}.qcow2`), text, ['-c', '-f', 'raw', '-O', 'qcow2']);
  const zstd = derive(join(BENCH, `text-zstd-${tag}.qcow2`), text, ['-c', '-f', 'raw', '-O', 'qcow2', '-o', 'compression_type=zstd']);
  const empty = join(BENCH, 'empty-1T.qcow2');
  if (!existsSync(empty)) sh('qemu-img', ['create', '-q', '-f', 'qcow2', empty, '1T']);
  const toRaw = ['-O', 'raw'];
  const cases = [
    { name: 'random+holes', what: 'qcow2, 1 GiB random data + 1 GiB holes → raw', source: holes, args: toRaw, out: 'out.raw' },
    { name: 'random-raw', what: 'raw, the same 2 GiB fully allocated → raw', source: raw, args: ['-f', 'raw', ...toRaw], out: 'out.raw' },
    { name: 'text-zlib', what: 'qcow2, 512 MiB text, zlib-compressed → raw', source: zlib, args: toRaw, out: 'out.raw' },
    { name: 'text-zstd', what: 'qcow2, 512 MiB text, zstd-compressed → raw', source: zstd, args: toRaw, out: 'out.raw' },
    { name: 'empty-1T', what: 'qcow2, empty 1 TiB → raw', source: empty, args: toRaw, out: 'out.raw' },
    { name: 'raw-qcow2', what: 'raw, 2 GiB (half zeros) → qcow2', source: raw, args: ['-f', 'raw', '-O', 'qcow2'], out: 'out.qcow2' },
    { name: 'raw-qcow2-c', what: 'raw, 512 MiB text → qcow2 -c (zlib)', source: text, args: ['-f', 'raw', '-O', 'qcow2', '-c'], out: 'out.qcow2' },
  ];
  return { cases: cases.filter((entry) => !ONLY || ONLY.has(entry.name)), holes };
}

/** The random+holes image at a quarter of the bench's size, for the memory-growth check. */
function quarterImage() {
  const quarter = SCALE / 4;
  const path = join(BENCH, `random-holes-s${quarter}.qcow2`);
  return build(path, (tmp) => makeRandomWithHoles(tmp, Math.max(4 * MiB, Math.round((GiB * quarter) / MiB) * MiB)), ['-f', 'raw', '-O', 'qcow2']);
}

/** CPU seconds and peak RSS from GNU time -v output. */
function parseTime(text) {
  const field = (label) => text.split('\n').find((line) => line.trim().startsWith(label))?.split(': ').pop()?.trim();
  return {
    cpu: Number(field('User time (seconds)')) + Number(field('System time (seconds)')),
    rssMiB: Number(field('Maximum resident set size (kbytes)')) / 1024,
  };
}

/**
 * Runs a command once; returns wall seconds, and CPU seconds and peak RSS (MiB)
 * where GNU time is there to measure them. Wall time is the parent's clock:
 * GNU time prints it in hundredths, too coarse for start-up times.
 */
function measure(program, args) {
  const [command, commandArgs] = TIME ? [TIME, ['-v', program, ...args]] : [program, args];
  const started = process.hrtime.bigint();
  const result = spawnSync(command, commandArgs, { encoding: 'utf8', env: RUN_ENV });
  const wall = Number(process.hrtime.bigint() - started) / 1e9;
  if (result.status !== 0) throw new Error(`${program} ${args.join(' ')} failed:\n${result.stderr}`);
  return { wall, ...(TIME ? parseTime(result.stderr) : { cpu: NaN, rssMiB: NaN }) };
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};

/** Medians, and every run's wall time (in the JSON, to see how much runs spread). */
function summarize(samples) {
  return {
    wall: median(samples.map((s) => s.wall)),
    cpu: median(samples.map((s) => s.cpu)),
    rssMiB: median(samples.map((s) => s.rssMiB)),
    best: Math.min(...samples.map((s) => s.wall)),
    walls: samples.map((s) => s.wall),
  };
}

/**
 * Memory touched before each run: enough for the largest case's output in the
 * page cache and the tool's own buffers, and never more than a quarter of what
 * is free.
 */
const WARM_BYTES = Math.min(scaled(3 * GiB), Math.floor(freemem() / 4));

/** Touches `bytes` of fresh memory, a page at a time, in 64 MiB pieces held until the end. */
const WARM_CODE =
  'const held = []; for (let left = Number(process.argv[1]); left > 0; left -= 64 << 20) {' +
  ' const piece = Buffer.allocUnsafeSlow(Math.min(64 << 20, left)); for (let at = 0; at < piece.length; at += 4096) piece[at] = 1; held.push(piece); }';

/**
 * Called right after the previous output was deleted, so that every run of
 * either tool starts from the same state. It writes back what is dirty (and
 * commits the deletion), so no run pays for the previous run's writeback. It
 * reads the source through (see readThrough). Last, right before the run, it
 * touches WARM_BYTES in a short-lived process and frees them. On a VM that
 * hands free memory back to its host (free page reporting), a page left free
 * for a couple of seconds costs a fault on the host when next touched (about
 * 2 s per GiB on the bench VM), and whichever tool met such pages took two or
 * three times as long, so medians depended on luck. Memory freed just before
 * the run has not been handed back yet, and the run's allocations reuse it.
 */
function settle(source) {
  spawnSync('sync');
  readThrough(source);
  spawnSync(process.execPath, ['-e', WARM_CODE, String(WARM_BYTES)], { stdio: 'ignore' });
}

/**
 * Reads `path` to its end, so that the run finds the source in the page cache.
 * Every run is timed from a warm source: a kernel that reclaims cold pages
 * (DAMON's pageout on the bench VM) otherwise evicts part of the source between
 * runs, and a run that reads from the disk takes three to four times as long.
 */
function readThrough(path) {
  const buffer = Buffer.allocUnsafe(8 * MiB);
  const fd = openSync(path, 'r');
  try {
    while (readSync(fd, buffer, 0, buffer.length, null) > 0);
  } finally {
    closeSync(fd);
  }
}

function benchConvert(entry) {
  const out = join(BENCH, entry.out);
  const run = (program, prefix) => () => measure(program, [...prefix, ...entry.args, entry.source, out]);
  const tools = { platter: run(process.execPath, [CLI, 'convert']), 'qemu-img': run('qemu-img', ['convert']) };
  const samples = { platter: [], 'qemu-img': [] };
  for (let round = 0; round < ROUNDS; round++) {
    // Alternate which tool goes first so neither always meets a warmer cache.
    const order = round % 2 === 0 ? ['platter', 'qemu-img'] : ['qemu-img', 'platter'];
    for (const tool of order) {
      rmSync(out, { force: true });
      settle(entry.source);
      samples[tool].push(tools[tool]());
    }
  }
  rmSync(out, { force: true });
  return { platter: summarize(samples.platter), qemu: summarize(samples['qemu-img']) };
}

/** platter's peak RSS converting random+holes at full and at quarter size: memory must not follow the image. */
function benchMemoryGrowth(full) {
  const out = join(BENCH, 'out.raw');
  const peak = (source) => {
    const samples = [];
    for (let round = 0; round < ROUNDS; round++) {
      rmSync(out, { force: true });
      settle(source);
      samples.push(measure(process.execPath, [CLI, 'convert', '-O', 'raw', source, out]).rssMiB);
    }
    rmSync(out, { force: true });
    return median(samples);
  };
  const quarterMiB = peak(quarterImage());
  const fullMiB = peak(full);
  return { quarterMiB, fullMiB, growth: fullMiB / quarterMiB - 1 };
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

/** Runs every case (BENCH_ONLY picks some; `rss-4x` names the memory-growth check). */
function main() {
  if (!existsSync(CLI)) throw new Error('dist/cli.cjs is missing: run npm run build');
  const { cases, holes } = prepareCases();
  const rows = [];
  for (const entry of cases) {
    const { platter, qemu } = benchConvert(entry);
    rows.push({
      case: entry.name,
      what: entry.what,
      sourceBytes: statSync(entry.source).size,
      platter,
      qemuImg: qemu,
      ratio: { wall: platter.wall / qemu.wall, best: platter.best / qemu.best, cpu: platter.cpu / qemu.cpu, rss: platter.rssMiB / qemu.rssMiB },
    });
  }
  const memory = !ONLY || ONLY.has('rss-4x') ? benchMemoryGrowth(holes) : undefined;
  const startup = benchStartup(holes);
  const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model, memoryGiB: totalmem() / GiB, node: process.version };
  const qemuVersion = sh('qemu-img', ['--version']).split('\n')[0];
  const report = { date: new Date().toISOString(), scale: SCALE, rounds: ROUNDS, machine, qemuVersion, leftOutOfEnv: LEFT_OUT, rows, memory, startup };

  console.log(`platter convert vs ${qemuVersion} (scale ${SCALE}, ${ROUNDS} rounds, median; ${machine.cpus} cores)`);
  if (LEFT_OUT.length > 0) console.log(`timed without ${LEFT_OUT.join(', ')} in the environment (BENCH_KEEP_ENV=1 keeps it)`);
  console.log(
    'case          | platter wall s | qemu wall s | wall ratio | best-run ratio | platter CPU s | qemu CPU s | CPU ratio | platter RSS MiB | qemu RSS MiB',
  );
  for (const row of rows) {
    console.log(
      [
        row.case.padEnd(13),
        fixed(row.platter.wall).padStart(14),
        fixed(row.qemuImg.wall).padStart(11),
        fixed(row.ratio.wall).padStart(10),
        fixed(row.ratio.best).padStart(14),
        fixed(row.platter.cpu).padStart(13),
        fixed(row.qemuImg.cpu).padStart(10),
        fixed(row.ratio.cpu).padStart(9),
        fixed(row.platter.rssMiB, 0).padStart(15),
        fixed(row.qemuImg.rssMiB, 0).padStart(12),
      ].join(' | '),
    );
  }
  if (memory) {
    console.log(
      `peak RSS, random+holes → raw: ${fixed(memory.quarterMiB, 0)} MiB at a quarter of the size, ` +
        `${fixed(memory.fullMiB, 0)} MiB at full size (${memory.growth >= 0 ? '+' : ''}${fixed(memory.growth * 100, 1)}%)`,
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
