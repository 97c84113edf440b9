/**
 * Snapshot table fields as qemu-img shows them: names longer than the TAG
 * column, VM state sizes eight characters wide, and a guest clock and an
 * instruction count past 2^53 (a guest that ran for more than 104 days),
 * which must list, print as JSON and survive a rewrite of the table exactly.
 */

import { copyFileSync, openSync, closeSync, readSync, writeSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shStatus } from './helpers/qcow2-oracle.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const tmp = tempDir('platter-snapfields-');
afterAll(() => tmp.cleanup());

const qemuImg = (args: string[]) => shStatus(tmp.dir, 'qemu-img', args);
const platterCli = (args: string[]) => platter(args, { cwd: tmp.dir });

const CLOCK = (1n << 60n) + 123_456_789n;
const ICOUNT = (1n << 60n) + 7n;
/** Shows as "1.52 GiB": eight characters, one more than the column. */
const VM_STATE = 1_632_087_572n;

/** Sets the first snapshot entry's guest clock, VM state size (both fields) and icount. */
function pokeFirstEntry(path: string): void {
  const fd = openSync(path, 'r+');
  try {
    const header = Buffer.alloc(72);
    readSync(fd, header, 0, 72, 0);
    const entry = Number(header.readBigUInt64BE(64));
    const put = (at: number, value: bigint, bytes: 4 | 8) => {
      const field = Buffer.alloc(bytes);
      if (bytes === 8) field.writeBigUInt64BE(value);
      else field.writeUInt32BE(Number(value & 0xffffffffn));
      writeSync(fd, field, 0, bytes, entry + at);
    };
    put(24, CLOCK, 8); // vm_clock_nsec
    put(32, VM_STATE, 4); // vm_state_size
    put(40, VM_STATE, 8); // extra data: vm_state_size_large
    put(56, ICOUNT, 8); // extra data: icount
  } finally {
    closeSync(fd);
  }
}

describe.skipIf(!hasTool('qemu-img'))('snapshot fields against qemu-img', () => {
  const image = tmp.path('fields.qcow2');

  beforeAll(() => {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', image, '16M']);
    run('qemu-img', ['snapshot', '-c', 'a-name-longer-than-the-column', image]);
    run('qemu-img', ['snapshot', '-c', 'short', image]);
    pokeFirstEntry(image);
  });

  it('snapshot -l and info print the table as qemu-img does', () => {
    const list = platterCli(['snapshot', '-l', image]);
    expect(list).toEqual(qemuImg(['snapshot', '-l', image]));
    expect(list.stdout).toMatch(/1\.52 GiB/);
    const info = (result: { stdout: string }) => result.stdout.replace(/^disk size: .*\n/m, '');
    expect(info(platterCli(['info', image]))).toBe(info(qemuImg(['info', image])));
  });

  it('info --output=json prints the clock and the icount exactly', () => {
    const json = (result: { stdout: string }) => result.stdout.replace(/^ *"actual-size": \d+,\n/m, '');
    const ours = platterCli(['info', '--output=json', image]);
    expect(json(ours)).toBe(json(qemuImg(['info', '--output=json', image])));
    expect(ours.stdout).toContain(`"icount": ${ICOUNT}`);
    expect(ours.stdout).toContain(`"vm-clock-sec": ${CLOCK / 1_000_000_000n}`);
  });

  it('a table written again keeps them exactly', () => {
    const copy = tmp.path('rewritten.qcow2');
    copyFileSync(image, copy);
    expect(platterCli(['snapshot', '-d', 'short', copy]).status).toBe(0);
    const firstRow = (text: string) => text.split('\n')[2];
    expect(firstRow(qemuImg(['snapshot', '-l', copy]).stdout)).toBe(firstRow(qemuImg(['snapshot', '-l', image]).stdout));
    const json = JSON.stringify(qemuImg(['info', '--output=json', copy]).stdout);
    expect(json).toContain(`\\"icount\\": ${ICOUNT}`);
    expect(qemuImg(['check', copy]).status).toBe(0);
  });
});
