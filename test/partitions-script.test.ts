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

const sized = (types: string[]) =>
  fc.record({
    size: fc.oneof(fc.integer({ min: 1, max: 30000 }).map(String), fc.integer({ min: 1, max: 20 }).map((mib) => `${mib}M`)),
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

/** MiB a line asks for at most (sizes in sectors rounded up), plus a grain for alignment and an EBR. */
function mibOf(entry: Line): number {
  if (entry.size === undefined) return 2;
  return entry.size.endsWith('M') ? Number(entry.size.slice(0, -1)) + 2 : Math.ceil(Number(entry.size) / 2048) + 2;
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

describe('sfdisk script defaults against sfdisk', () => {
  let available = false;
  let dir = '';
  let cleanup = async () => {};
  beforeAll(async () => {
    available = await requireTools('sfdisk', 'truncate');
    ({ dir, cleanup } = await tempDir('script'));
  });
  afterAll(() => cleanup());

  it('80 random scripts: platter places partitions exactly where sfdisk does', async () => {
    if (!available) return;
    const seed = Date.now() % 0x7fffffff;
    const specs = fc.sample(scriptArbitrary, { numRuns: 80, seed }).map(fitting);
    const problems = await mapLimited(specs, 4, async (spec, index) => {
      const script = scriptText(spec);
      const size = String(spec.mib * 1024 * 1024 + spec.extra * 512);
      const bySfdisk = join(dir, `s${index}.img`);
      const byPlatter = join(dir, `p${index}.img`);
      await mustRun('truncate', ['-s', size, bySfdisk, byPlatter]);
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
      const expected = await dump(bySfdisk);
      const actual = await dump(byPlatter);
      return expected === actual ? undefined : `${script}\n${expected}\n${actual}`;
    });
    expect(problems.filter(Boolean), `seed ${seed}`).toEqual([]);
  }, 120_000);
});
