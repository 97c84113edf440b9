/**
 * Progress display shared by the long-running commands (convert, compare, and
 * later rebase, commit): qemu-img's `-p` line on stdout, or JSON lines on stderr.
 */

import type { Argv } from 'yargs';
import { formatFixed } from '../core/size.js';
import { writeStdout } from './output.js';

/** How progress is shown. */
export type ProgressMode = 'none' | 'human' | 'json';

/** A progress display: feed it bytes done, end it once. */
export interface ProgressReporter {
  update(done: number, total: number): void;
  end(): void;
}

/** qemu-img redraws when progress moves by at least this many percent. */
const MIN_STEP_PERCENT = 1;

/** Adds `-p` and `--progress=json`. */
export function withProgress(yargs: Argv): Argv {
  return yargs
    .option('p', { type: 'boolean', default: false, describe: 'Show progress on stdout, like qemu-img -p' })
    .option('progress', {
      choices: ['human', 'json'] as const,
      describe: 'Progress display; json prints {"done":BYTES,"total":BYTES} lines on stderr',
    });
}

/** The mode chosen by `-p` / `--progress`; `-q` silences `-p`, as in qemu-img (JSON lines, asked for by name, stay). */
export function progressMode(args: Record<string, unknown>): ProgressMode {
  if (args.progress === 'json') return 'json';
  if (args.q === true) return 'none';
  if (args.progress === 'human' || args.p === true) return 'human';
  return 'none';
}

/** A reporter for `mode` (a silent one for `none`). */
export function createProgress(mode: ProgressMode): ProgressReporter {
  if (mode === 'none') return { update() {}, end() {} };
  let lastPercent = -Infinity;
  let last = { done: 0, total: 0 };
  let shown = { done: -1, total: -1 };
  const show = (done: number, total: number) => {
    shown = { done, total };
    if (mode === 'json') process.stderr.write(JSON.stringify({ done, total }) + '\n');
    else writeStdout(`    (${formatFixed(percentOf(done, total), 2)}/100%)\r`);
  };
  return {
    update(done, total) {
      last = { done, total };
      const percent = percentOf(done, total);
      if (percent - lastPercent < MIN_STEP_PERCENT && done !== total) return;
      if (percent === lastPercent) return;
      lastPercent = percent;
      show(done, total);
    },
    end() {
      // qemu-img prints its last line again on a terminal; a JSON reader gets each step once.
      if (mode === 'human' || shown.done !== last.total || shown.total !== last.total) show(last.total, last.total);
      if (mode === 'human') writeStdout('\n');
    },
  };
}

function percentOf(done: number, total: number): number {
  return total > 0 ? (done / total) * 100 : 100;
}
