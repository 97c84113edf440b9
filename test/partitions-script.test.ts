/**
 * sfdisk scripts with defaults (no start, sizes in sectors or MiB, type
 * aliases, an extended partition): platter's --write must place every
 * partition where sfdisk does, or refuse exactly when sfdisk refuses.
 */

import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writePartitions } from '../src/ops/partitions.js';
import { PlatterError } from '../src/core/errors.js';
import { mapLimited, mustRun, requireTools, runTool, tempDir } from './helpers/partition-tools.js';
import { withImage } from './helpers/partition-images.js';

interface Line {
  size?: string;
  type: string;
}

interface Spec {
  label: 'dos' | 'gpt';
  before: Line[];
  /** DOS: an extended partition over the rest of the disk, holding `after` as logical partitions. */
  extended: boolean;
  after: Line[];
  mib: number;
  extra: number;
}

/**
 * Sizes as scripts write them: sectors (decimal or hex), whole MiB, KiB, KB and
 * MiB with a fraction; sizes with a unit get sfdisk's end alignment.
 */
const sizeText = fc.oneof(
  fc.integer({ min: 1, max: 30000 }).map(String),
  fc.integer({ min: 1, max: 30000 }).map((sectors) => `0x${sectors.toString(16)}`),
  fc.integer({ min: 1, max: 20 }).map((mib) => `${mib}M`),
  fc.integer({ min: 1, max: 20000 }).map((kib) => `${kib}K`),
  fc.integer({ min: 1, max: 20000 }).map((kb) => `${kb}KB`),
  fc.record({ whole: fc.integer({ min: 0, max: 12 }), fraction: fc.integer({ min: 1, max: 999 }) }).map(({ whole, fraction }) => `${whole}.${fraction}M`),
);

const sized = (types: string[]) =>
  fc.record({
    size: sizeText,
    type: fc.constantFrom(...types),
  });

/** Lines with sizes, the last one maybe taking the rest of the space. */
const lines = (types: string[], maxLength: number) =>
  fc.record({ sized: fc.array(sized(types), { maxLength }), rest: fc.option(fc.constantFrom(...types), { nil: undefined }) }).map(({ sized: list, rest }) => (rest === undefined ? list : [...list, { type: rest }]));

/**
 * Scripts in the region where sfdisk's placement is well defined: every size
 * fits (sfdisk shrinks oversized requests, platter refuses them); a line taking
 * the rest of the space comes last in its area; an MBR's extended partition takes
 * the rest of the disk so every later line is logical.
 */
const scriptArbitrary: fc.Arbitrary<Spec> = fc.oneof(
  fc.record({
    label: fc.constant('dos' as const),
    before: fc.array(sized(['L', 'S', 'V', '7']), { maxLength: 3 }),
    extended: fc.boolean(),
    after: lines(['L', 'S', 'V', 'c'], 8),
    mib: fc.integer({ min: 8, max: 120 }),
    extra: fc.integer({ min: 0, max: 2047 }),
  }),
  fc.record({
    label: fc.constant('gpt' as const),
    before: lines(['L', 'S', 'V', 'U', 'H', 'R'], 8),
    extended: fc.constant(false),
    after: fc.constant([] as Line[]),
    mib: fc.integer({ min: 8, max: 120 }),
    extra: fc.integer({ min: 0, max: 2047 }),
  }),
);

/** MiB a line asks for at most (rounded up), plus a grain for alignment and an EBR. */
function mibOf(entry: Line): number {
  const size = entry.size;
  if (size === undefined) return 2;
  const bytes = size.endsWith('KB') ? Number(size.slice(0, -2)) * 1000 : size.endsWith('K') ? Number(size.slice(0, -1)) * 1024 : size.endsWith('M') ? Number(size.slice(0, -1)) * 2 ** 20 : Number(size) * 512;
  // sfdisk reads a fraction like .10 or .100 as a whole unit more: leave room for it.
  return Math.ceil(bytes / 2 ** 20) + (size.includes('.') ? 3 : 2);
}

/** Grows the disk until everything fits; without an extended partition an MBR keeps four lines. */
function fitting(spec: Spec): Spec {
  const after = spec.label === 'dos' && !spec.extended ? spec.after.slice(0, Math.max(0, 4 - spec.before.length)) : spec.after;
  const needed = [...spec.before, ...after].reduce((sum, entry) => sum + mibOf(entry), 4);
  return { ...spec, after, mib: Math.max(spec.mib, needed) };
}

function scriptText(spec: Spec): string {
  const id = spec.label === 'dos' ? '0x5c417e57' : '5C417E57-0000-4000-8000-000000000001';
  const text = [`label: ${spec.label}`, `label-id: ${id}`, ''];
  const render = (entry: Line) => `,${entry.size ?? ''},${entry.type}`;
  text.push(...spec.before.map(render));
  if (spec.extended) text.push(',,Ex');
  text.push(...spec.after.map(render));
  return text.join('\n') + '\n';
}

/** `sfdisk -d` without the random partition UUIDs and with the device name replaced. */
async function dump(path: string): Promise<string> {
  return (await mustRun('sfdisk', ['-d', path])).split(path).join('DISK').replace(/, uuid=[0-9A-F-]+/g, '');
}

/**
 * Offsets of the bytes two images differ in (cmp -l), less the disk signature
 * when it is random; only `count` bytes from `skip` when given.
 */
async function differentBytes(a: string, b: string, sameId: boolean, skip = 0, count?: number): Promise<number[]> {
  const range = count === undefined ? [] : ['-i', String(skip), '-n', String(count)];
  const { stdout } = await runTool('cmp', ['-l', ...range, a, b]);
  const offsets = stdout.split('\n').filter(Boolean).map((line) => skip + Number(line.trim().split(/\s+/)[0]) - 1);
  return offsets.filter((offset) => sameId || offset < 440 || offset > 443);
}

describe('sfdisk script defaults against sfdisk', () => {
  let available = false;
  let dir = '';
  let cleanup = async () => {};
  beforeAll(async () => {
    available = await requireTools('sfdisk', 'truncate', 'cmp');
    ({ dir, cleanup } = await tempDir('script'));
  });
  afterAll(() => cleanup());

  /**
   * Writes `script` with both tools onto disks of `bytes` (blank, or holding
   * the table sfdisk writes from `before`); a description of any difference.
   */
  async function compareWithSfdisk(script: string, bytes: number, name: string, before?: string): Promise<string | undefined> {
    const bySfdisk = join(dir, `s-${name}.img`);
    const byPlatter = join(dir, `p-${name}.img`);
    await mustRun('truncate', ['-s', String(bytes), bySfdisk, byPlatter]);
    if (before !== undefined) {
      for (const path of [bySfdisk, byPlatter]) await mustRun('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', path], before);
    }
    const theirs = await runTool('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', bySfdisk], script);
    let ours: unknown;
    try {
      await withImage(byPlatter, (image) => writePartitions(image, script), true);
    } catch (error) {
      if (!(error instanceof PlatterError)) throw error;
      ours = error;
    }
    if (theirs.code !== 0 || ours) {
      return theirs.code !== 0 && ours ? undefined : `${script}sfdisk: ${theirs.code} ${theirs.stderr}\nplatter: ${String(ours)}`;
    }
    // A label-id the script leaves out is random with either tool.
    const random = (text: string) => (/^label-id:/m.test(script) ? text : text.replace(/^label-id: .*$/m, 'label-id: (random)'));
    const expected = random(await dump(bySfdisk));
    const actual = random(await dump(byPlatter));
    if (expected !== actual) return `${script}\n${expected}\n${actual}`;
    // On a blank disk an MBR's sectors (the EBRs too) come out as sfdisk writes them, byte
    // for byte. Over an old GPT, sfdisk clears only its signatures where platter blanks its headers.
    if (!expected.startsWith('label: dos') || before !== undefined) return undefined;
    const differing = await differentBytes(bySfdisk, byPlatter, /^label-id:/m.test(script));
    return differing.length === 0 ? undefined : `${script}\nbytes differ at ${differing.slice(0, 8).join(', ')}`;
  }

  it('refuses headers no table can have here, before writing anything', async () => {
    const path = join(dir, 'refused.img');
    // Room for 258 logical partitions, each 1 MiB after the last (sparse).
    await mustRun('truncate', ['-s', String(1024 * 1024 * 1024), path]);
    for (const [script, message] of [
      ['label: gpt\ntable-length: 4294967295\n,1M\n', 'table-length 4294967295 is out of range (1 to 32768)'],
      ['label: gpt\ntable-length: 0\n,1M\n', 'table-length 0 is out of range'],
      ['label: gpt\nsector-size: 3\n,1M\n', 'sector-size 3 is not supported (512 or 4096)'],
      ['label: dos\nsector-size: 0\n,1M\n', 'sector-size 0 is not supported'],
      ['label: gpt\nsector-size: 1048576\n,1M\n', 'sector-size 1048576 is not supported'],
      ['label: dos\ngrain: 100\n,1M\n', "grain '100' is not a power of two of at least 512 bytes"],
      ['label: dos\ngrain: 3M\n,1M\n', "grain '3M' is not a power of two"],
      ['label: gpt\nfirst-lba: 33\n,1M\n', 'first-lba 33 is out of range (34 to 2097118 for 128 entries)'],
      ['label: gpt\ntable-length: 8\nlast-lba: 2097149\n,1M\n', 'last-lba 2097149 is out of range (4 to 2097148 for 8 entries)'],
      // sfdisk writes such a partition without its name.
      ['label: gpt\nsize=1M, name="\\xff\\xfe"\n', "script line 2: the name's \\x bytes are not UTF-8"],
      // More partitions than are placed in reasonable time, than an MBR holds, than the EBR chain the reader follows.
      [`label: gpt\ntable-length: 32768\n${',1K\n'.repeat(4097)}`, 'the script has 4097 partitions; at most 4096 are written'],
      [`label: dos\n,,E\n${',1K\n'.repeat(300)}`, 'the script has 301 partitions; the MBR holds at most 260'],
      [`label: dos\n,,E\n${',1\n'.repeat(258)}`, '258 logical partitions'],
    ] as const) {
      await expect(withImage(path, (image) => writePartitions(image, script), true), script).rejects.toThrow(message);
    }
    // Nothing was written: the disk is still blank.
    expect(await withImage(path, (image) => image.read(0, 1024 * 1024))).toEqual(new Uint8Array(1024 * 1024));
  });

  it('a script over an old table makes a new one, as sfdisk does: the old label type, but not its id, table length, first LBA or attributes', async () => {
    if (!available) return;
    const gpt = 'label: gpt\nlabel-id: 11111111-2222-4333-8444-555555555555\ntable-length: 32\nfirst-lba: 64\nsize=10M, attrs="RequiredPartition GUID:50", name=old\nsize=5M, attrs=LegacyBIOSBootable\n';
    const dos = 'label: dos\nlabel-id: 0x12345678\n,10M,c,*\n';
    const cases: Array<[string, string]> = [
      [gpt, 'size=20M\nsize=3M, attrs=GUID:49\n,,\n'],
      [gpt, 'label: gpt\n,20M\n'],
      [gpt, 'label: dos\n,20M\n'],
      [dos, ',20M\n,,S\n'],
      [dos, 'label: gpt\n,20M\n'],
    ];
    const problems = await mapLimited(cases, 3, ([before, script], index) => compareWithSfdisk(script, 64 * 1024 * 1024, `o${index}`, before));
    expect(problems.filter(Boolean)).toEqual([]);
  });

  it('spellings sfdisk reads: type names and aliases, starts with units, attribute lists, bootable +, hex and octal numbers, fractions, grain', async () => {
    if (!available) return;
    const scripts = [
      'label: dos\nstart=5M, size=10M\nstart=1000K, size=1.5M, type="W95 FAT32"\nsize=3.5M, type=linuxex\n',
      'label: dos\n,10K\n,511K,swap\n,1025K,uefi\n,2047K,lvm,+\n',
      'label: dos\n,0x800,Linux\n,010,"Linux raid autodetect"\n,1.25K,hpfs-ntfs-exfat,*\n',
      'label: dos\n,3.2M;raid\n,1.10M;extended\n,2.M\n',
      'label: gpt\nstart=3M, size=3.5M, type="EFI System"\nsize=1500K, type=swap, attrs="RequiredPartition,LegacyBIOSBootable"\nsize=1.5M, type="linux filesystem", attrs="GUID:48,GUID:50 GUID:0x3f"\n',
      'label: gpt\n,1025K,home\n,2049K,"BIOS boot"\n,5000K,Microsoft-basic-data\n,0x1000,lvm\n',
      // A grain of its own: starts and ends on its boundaries, the first partition still 1 MiB in.
      'label: gpt\ngrain: 2M\n,1M\n,3M\n,,\n',
      'label: dos\ngrain: 4M\n,1M\n,3M\n,,E\n,1M\n,3.5M\n,,\n',
      'label: dos\ngrain: 8192\n,1M\n,3.3M\n,2.7M\n,,E\n,1M\n,,\n',
      'label: dos\ngrain: 512\n,100K\n,3\n,,E\n,1K\n,,\n',
      // An MBR's sectors are 512 bytes: a script in 4096-byte sectors is recalculated, as sfdisk does on a file.
      'label: dos\nsector-size: 4096\nstart=512, size=1000\n,100,E\n,10\n',
      // Default starts around given ones: an MBR's first free area that holds the size, a GPT's largest free area.
      'label: dos\nstart=30000, size=1M\n,2M\n,20M\n,,\n',
      'label: dos\nstart=2100, size=100\n,,\n,,\n',
      'label: gpt\nstart=40000, size=1M\n,2M\n,,\n',
      'label: gpt\nstart=100000, size=1M\n,,\n,,\n',
      // Logical partitions out of disk order: the EBR chain links back, as sfdisk writes it.
      'label: dos\n,,E\nstart=40000,size=1M\nstart=60000,size=1M\nstart=20000,size=1M\n,1M\n',
      'label: dos\n,,E\nstart=40000,size=1M\n,1M\n,1M\n,,\n',
      // Names: \xNN is a byte of UTF-8, quoted or not; other backslashes are kept.
      'label: gpt\nsize=1M, name="caf\\xc3\\xa9\\x41"\nsize=1M, name=plain\\x41\nsize=1M, name="a\\\\b c\\x4"\nsize=1M, name=\\x22q\\x22\n',
      // Numbers: a line without one takes the lowest free.
      'label: gpt\ndisk3 : size=1M\nsize=2M\ndisk2 : size=1M\nsize=1M\n',
      'label: dos\ndisk3 : size=1M\nsize=2M\nsize=1M, type=Ex\n,1M\n',
      // Refused by both: no grain left for a new primary; a primary inside the extended one.
      'label: dos\ngrain: 2M\ntype=S\ntype=c\n',
      'label: dos\ngrain: 64K\nsize=1131K, type=U\nsize=60M, type=E\ndisk3 : start=5027, size=5994, type=c\n',
    ];
    const withId = (script: string) => script.replace(/^label: (dos|gpt)\n/, (line, label: string) => `${line}label-id: ${label === 'dos' ? '0x5c417e57' : '5C417E57-0000-4000-8000-000000000001'}\n`);
    const problems = await mapLimited(scripts, 3, (script, index) => compareWithSfdisk(withId(script), 64 * 1024 * 1024, `s${index}`));
    expect(problems.filter(Boolean)).toEqual([]);
  });

  it('EBRs go where sfdisk puts them: 1 MiB before their partition, or the sector before once a start lies closer to the disk or extended start', async () => {
    if (!available) return;
    const scripts = [
      'label: dos\nstart=2048, size=20480, type=83\nstart=22528, size=100000, type=5\nstart=24576, size=20480\nstart=47104, size=8192, type=82\nstart=57344, size=777\n',
      'label: dos\nstart=63, size=18000, bootable\nstart=18432, size=100000, type=5\nstart=18495, size=4000\nstart=22558, size=10000, type=8e\n',
      'label: dos\nstart=2048, size=20480\nstart=22528, size=100000, type=f\nstart=22529, size=5000\nstart=27600, size=5000\n',
      'label: dos\n,,E\nstart=40000, size=1M\nstart=4096, size=1M\nstart=80000, size=1M\n',
      'label: dos\n,10M,L\n,,E\n,5M\n,5M,S\n,,\n',
      // The links between EBRs have type 5 whatever the extended partition's type.
      'label: dos\n,10M\n,,85\n,5M\n,5M\n,,\n',
    ];
    const withId = (script: string) => script.replace(/^label: dos\n/, 'label: dos\nlabel-id: 0x5c417e57\n');
    const problems = await mapLimited(scripts, 3, (script, index) => compareWithSfdisk(withId(script), 64 * 1024 * 1024, `e${index}`));
    expect(problems.filter(Boolean)).toEqual([]);
  });

  it('a GPT comes out as sfdisk writes it, byte for byte, protective MBR included', async () => {
    if (!available) return;
    const script =
      'label: gpt\nlabel-id: 5C417E57-0000-4000-8000-000000000001\n' +
      'size=10M, type=U, uuid=11111111-1111-4111-8111-111111111111, name="EFI system", attrs="RequiredPartition GUID:63"\n' +
      'size=777, type=S, uuid=22222222-2222-4222-8222-222222222222, name="r\\xc3\\xb6ot"\n' +
      'type=V, uuid=33333333-3333-4333-8333-333333333333\n';
    const problems = [];
    for (const [index, bytes] of [64 * 1024 * 1024, 9 * 1024 * 1024 * 1024].entries()) {
      const bySfdisk = join(dir, `g-s${index}.img`);
      const byPlatter = join(dir, `g-p${index}.img`);
      await mustRun('truncate', ['-s', String(bytes), bySfdisk, byPlatter]);
      await mustRun('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', bySfdisk], script);
      await withImage(byPlatter, (image) => writePartitions(image, script), true);
      // The protective MBR, the primary header and array; the backup ones.
      const tail = 64 * 1024;
      const differing = [...(await differentBytes(bySfdisk, byPlatter, true, 0, 1024 * 1024)), ...(await differentBytes(bySfdisk, byPlatter, true, bytes - tail, tail))];
      if (differing.length > 0) problems.push(`${bytes} bytes: differ at ${differing.slice(0, 8).join(', ')}`);
    }
    expect(problems).toEqual([]);
  });

  it('80 random scripts: platter places partitions exactly where sfdisk does', async () => {
    if (!available) return;
    const seed = Date.now() % 0x7fffffff;
    const specs = fc.sample(scriptArbitrary, { numRuns: 80, seed }).map(fitting);
    const problems = await mapLimited(specs, 4, (spec, index) => compareWithSfdisk(scriptText(spec), spec.mib * 1024 * 1024 + spec.extra * 512, `r${index}`));
    expect(problems.filter(Boolean), `seed ${seed}`).toEqual([]);
  }, 120_000);
});

describe('hostile sfdisk scripts', () => {
  /** Lines built from the script language's pieces, mixed with arbitrary text. */
  const piece = fc.oneof(
    fc.constantFrom('label: dos', 'label: gpt', 'grain: 4096', 'grain: 2M', 'grain: 8192', 'grain: 3M', 'sector-size: 4096', 'table-length: 4', 'first-lba: 34', 'last-lba: 9', 'unit: sectors'),
    fc.constantFrom(',', ',,', ',,E', ',1M', ',0x10', ',010', ',1.10M', ',-', ',+', ',,L,*', ',,L,+', ';;S', 'start=1', 'start=5M', 'size=0', 'size=99999999999999999999T'),
    fc.constantFrom('disk3 : size=1M', 'disk9 : start=2048', 'type=linux', 'type="EFI System"', 'attrs="GUID:48,49"', 'attrs=RequiredPartition,', 'name="a,b"', 'bootable'),
    fc.string({ maxLength: 30 }),
  );
  const script = fc.array(piece, { maxLength: 24 }).map((lines) => lines.join('\n') + '\n');

  it('any script gives a table or a clear error, quickly', async () => {
    const { parseScript } = await import('../src/engine/sfdisk-script.js');
    const { layoutScript } = await import('../src/engine/partition-layout.js');
    fc.assert(
      fc.property(script, fc.integer({ min: 1, max: 1 << 16 }), (text, sectors) => {
        try {
          const table = layoutScript(parseScript(text), sectors * 512);
          for (const partition of table.partitions) {
            expect(Number.isSafeInteger(partition.start) && Number.isSafeInteger(partition.size) && partition.size > 0).toBe(true);
          }
        } catch (error) {
          if (!(error instanceof PlatterError)) throw error;
        }
      }),
      { numRuns: 2000 },
    );
  });
});
