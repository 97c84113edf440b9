/**
 * The `partitions` and `mount-offset` commands through the built CLI, on raw
 * images and on qcow2 images (made with `qemu-img convert -O qcow2`) whose
 * virtual disk holds the same table: the answers must be the same.
 */

import { spawn } from 'node:child_process';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mustRun, requireTools, runTool, tempDir, type ToolResult } from './helpers/partition-tools.js';

const CLI = fileURLToPath(new URL('../dist/cli.cjs', import.meta.url));

function platter(args: string[], input = ''): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args]);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.on('error', () => {});
    child.stdin.end(input);
  });
}

/** Drops the keys sfdisk does not have (filesystem), for comparing with sfdisk --json. */
function withoutExtras(document: { partitiontable: { partitions?: Record<string, unknown>[] } }): unknown {
  const table = structuredClone(document);
  for (const partition of table.partitiontable.partitions ?? []) delete partition.filesystem;
  return table;
}

const CLASSIC = 'label: dos\nlabel-id: 0x0badcafe\nunit: sectors\n\nstart=63, size=180369, type=83, bootable\nstart=180432, size=200000, type=5\nstart=180495, size=1000, type=83\nstart=181558, size=2000, type=8e\n';

describe('platter partitions and mount-offset (CLI)', () => {
  let available = false;
  let dir = '';
  let cleanup = async () => {};
  beforeAll(async () => {
    available = await requireTools('sfdisk', 'qemu-img', 'truncate');
    ({ dir, cleanup } = await tempDir('pcli'));
  });
  afterAll(() => cleanup());

  async function classicImage(name: string): Promise<string> {
    const path = join(dir, name);
    await mustRun('truncate', ['-s', String(400000 * 512), path]);
    const written = await platter(['partitions', '--write', '-', path], CLASSIC);
    expect(written.stderr).toBe('');
    expect(written.code).toBe(0);
    return path;
  }

  it('--write - then --output=json equals sfdisk --json, and sfdisk reads the script back', async () => {
    if (!available) return;
    const path = await classicImage('classic.img');
    const listed = await platter(['partitions', '--output=json', path]);
    expect(listed.code).toBe(0);
    expect(withoutExtras(JSON.parse(listed.stdout))).toEqual(JSON.parse(await mustRun('sfdisk', ['--json', path])));
    const script = await platter(['partitions', '--output=sfdisk', path]);
    expect(script.stdout).toBe(await mustRun('sfdisk', ['-d', path]));
  });

  it('--output=json is what sfdisk --json prints, byte for byte (MBR, GPT with names and attributes, an empty table)', async () => {
    if (!available) return;
    const scripts = [CLASSIC, 'label: gpt\nsize=10M, attrs="RequiredPartition GUID:50", name="root fs"\n,,U\n', 'label: gpt\n'];
    for (const [index, script] of scripts.entries()) {
      const path = join(dir, `json-${index}.img`);
      await mustRun('truncate', ['-s', String(256 * 1024 * 1024), path]);
      await mustRun('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', path], script);
      const listed = await platter(['partitions', '--output=json', path]);
      expect(listed.stdout, script).toBe(await mustRun('sfdisk', ['--json', path]));
    }
  });

  it('human output adds a filesystem column when a partition holds one', async () => {
    if (!available || !(await requireTools('mke2fs'))) return;
    const path = await classicImage('human.img');
    await mustRun('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'five', '-E', `offset=${180495 * 512}`, path, '500k']);
    const result = await platter(['partitions', path]);
    expect(result.stdout).toContain('Disklabel type: dos');
    expect(result.stdout).toContain('Disk identifier: 0x0badcafe');
    expect(result.stdout).toMatch(/Device\s+Boot\s+Start\s+End\s+Sectors\s+Size\s+Id\s+Type\s+Filesystem/);
    expect(result.stdout).toMatch(new RegExp(`${path}5\\s+180495\\s+181494\\s+1000\\s+500K\\s+83 Linux\\s+ext4 "five"`));
  });

  it('without filesystems the human listing is exactly sfdisk -l -uS (MBR and GPT)', async () => {
    if (!available || !(await requireTools('sgdisk'))) return;
    const mbr = await classicImage('plain.img');
    expect((await platter(['partitions', mbr])).stdout).toBe(await mustRun('sfdisk', ['-l', '-uS', mbr]));
    const gpt = join(dir, 'plain-gpt.img');
    await mustRun('truncate', ['-s', '24M', gpt]);
    await mustRun('sgdisk', ['-n1:2048:+4M', '-t1:EF00', '-n2:0:+8M', '-t2:8300', '-n3:0:0', '-t3:8E00', gpt]);
    expect((await platter(['partitions', gpt])).stdout).toBe(await mustRun('sfdisk', ['-l', '-uS', gpt]));
  });

  it('mount-offset 5 prints 92413440 and ready commands', async () => {
    if (!available) return;
    const path = await classicImage('offset.img');
    const result = await platter(['mount-offset', path, '5']);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('offset:    92413440');
    expect(result.stdout).toContain(`mount -o loop,offset=92413440,sizelimit=512000 ${path} MOUNTPOINT`);
    expect(result.stdout).toContain(`losetup -f --show -o 92413440 --sizelimit 512000 ${path}`);
    const json = JSON.parse((await platter(['mount-offset', '--output=json', path, '5'])).stdout);
    expect(json.targets[0]).toMatchObject({ name: '5', offset: 92413440, sizelimit: 512000 });
  });

  it('--write places like sfdisk and refuses partitions that do not fit', async () => {
    if (!available) return;
    const path = join(dir, 'fill.img');
    await mustRun('truncate', ['-s', '50M', path]);
    const script = 'label: dos\nlabel-id: 0x11112222\n,10M,L\n,,Ex\n,5M,S\n';
    await platter(['partitions', '--write', '-', path], script);
    const bySfdisk = join(dir, 'fill-sfdisk.img');
    await mustRun('truncate', ['-s', '50M', bySfdisk]);
    await mustRun('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', bySfdisk], script);
    expect((await mustRun('sfdisk', ['-d', path])).split(path).join('X')).toBe((await mustRun('sfdisk', ['-d', bySfdisk])).split(bySfdisk).join('X'));
    const refused = await platter(['partitions', '--write', '-', path], 'label: dos\nstart=200000, size=10\n');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(new RegExp(`^platter: ${path}: partition 1 \\(start 200000, 10 sectors\\) does not fit`));
  });

  it('a raw file that ends inside a sector: tables listed and written on its whole sectors, as sfdisk does, never growing it', async () => {
    if (!available) return;
    // 30000001 bytes: qemu (and info) round up to 58594 sectors, sfdisk counts 58593; 4 MiB + 511 is a "small disk" (grain 512) for sfdisk.
    const gpt = 'label: gpt\nlabel-id: 0F4DB643-B516-A246-95DA-07C95AF929D8\nuuid=E647A520-072E-0242-BC5E-A97E8890E990, size=2M, type=L\nuuid=5CCA0B3D-BFDC-42BE-9B34-15703AFADCEE, type=S\n';
    const dos = 'label: dos\nlabel-id: 0x12345678\n,1M,L\n,,Ex\n,,L\n';
    for (const size of [30000001, 4 * 1024 * 1024 + 511]) {
      for (const script of [gpt, dos]) {
        const ours = join(dir, `partial-${size}.img`);
        const theirs = join(dir, `partial-${size}-sfdisk.img`);
        await rm(ours, { force: true });
        await rm(theirs, { force: true });
        await mustRun('truncate', ['-s', String(size), ours, theirs]);
        await mustRun('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', theirs], script);
        const written = await platter(['partitions', '--write', '-', ours], script);
        expect(written.stderr, script).toBe('');
        expect((await stat(ours)).size).toBe(size);
        expect((await runTool('cmp', [ours, theirs])).stdout, script).toBe('');
        expect((await platter(['partitions', theirs])).stdout).toBe(await mustRun('sfdisk', ['-l', theirs]));
        expect((await platter(['partitions', '--output=json', theirs])).stdout).toBe(await mustRun('sfdisk', ['--json', theirs]));
        expect((await platter(['partitions', '--output=sfdisk', theirs])).stdout).toBe(await mustRun('sfdisk', ['-d', theirs]));
        const offsets = JSON.parse((await platter(['mount-offset', '--output=json', theirs])).stdout);
        const listed = JSON.parse(await mustRun('sfdisk', ['--json', theirs])).partitiontable.partitions;
        const mountable = listed.filter((partition: { type: string }) => partition.type !== '5');
        expect(offsets.targets.map((target: { offset: number }) => target.offset)).toEqual(mountable.map((partition: { start: number }) => partition.start * 512));
      }
      // The image's virtual size is still qemu's, rounded up to a whole sector.
      const info = join(dir, `partial-${size}.img`);
      const ourInfo = JSON.parse((await platter(['info', '--output=json', info])).stdout);
      expect(ourInfo['virtual-size']).toBe(JSON.parse(await mustRun('qemu-img', ['info', '--output=json', info]))['virtual-size']);
    }
  });

  it('PARTLABEL= picks a GPT partition by name', async () => {
    if (!available) return;
    const path = join(dir, 'named-gpt.img');
    await mustRun('truncate', ['-s', '16M', path]);
    const written = await platter(['partitions', '--write', '-', path], 'label: gpt\n,2M,U\nsize=4M, type=L, name="data disk"\n');
    expect(written.code).toBe(0);
    const json = JSON.parse((await platter(['mount-offset', '--output=json', path, 'PARTLABEL=data disk'])).stdout);
    expect(json.targets).toEqual([expect.objectContaining({ name: '2', partlabel: 'data disk', offset: 3 * 1024 * 1024, sizelimit: 4 * 1024 * 1024 })]);
  });

  it('an unknown WHICH is an error line, exit 1', async () => {
    if (!available) return;
    const path = await classicImage('missing.img');
    const result = await platter(['mount-offset', path, 'LABEL=nothing']);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`platter: ${path}: no partition or logical volume matches 'LABEL=nothing'\n`);
  });

  it('a disk with a filesystem and no table is one whole-disk entry at offset 0', async () => {
    if (!(await requireTools('mke2fs'))) return;
    const path = join(dir, 'plain-ext.img');
    await mustRun('truncate', ['-s', '8M', path]);
    await mustRun('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'whole', path]);
    const json = JSON.parse((await platter(['mount-offset', '--output=json', path])).stdout);
    expect(json.targets).toEqual([expect.objectContaining({ name: 'disk', kind: 'disk', offset: 0, sizelimit: 8 * 1024 * 1024 })]);
    expect(json.targets[0].filesystem).toMatchObject({ type: 'ext4', label: 'whole' });
    const listed = await platter(['partitions', '--output=json', path]);
    expect(listed.code).toBe(1);
    expect(listed.stderr).toContain('does not contain a recognized partition table');
  });

  it('mount-offset: swap gets swapon and LUKS cryptsetup open on a loop device, not mount; a hibernation image and an external journal get no command', async () => {
    if (!available || !(await requireTools('mkswap', 'mke2fs', 'dd'))) return;
    const path = join(dir, 'kinds.img');
    await rm(path, { force: true });
    await mustRun('truncate', ['-s', '48M', path]);
    await platter(['partitions', '--write', '-', path], 'label: gpt\n,8M,S\n,20M,L\n,4M,L\n,4M,S\n,,L\n');
    /** Makes a volume in a file of `mib` MiB with `make`, then copies it into the disk at `atMib`. */
    const place = async (name: string, mib: number, atMib: number, make: (file: string) => Promise<unknown>) => {
      const file = join(dir, name);
      await rm(file, { force: true });
      await mustRun('truncate', ['-s', `${mib}M`, file]);
      await make(file);
      await mustRun('dd', [`if=${file}`, `of=${path}`, 'bs=1M', `seek=${atMib}`, 'conv=notrunc', 'status=none']);
    };
    await place('kinds-swap', 8, 1, (file) => mustRun('mkswap', ['-L', 'sw', file]));
    // luksFormat needs no device-mapper; where it fails the partition stays empty (and mountable).
    const luks = (await requireTools('cryptsetup'))
      ? await place('kinds-luks', 20, 9, (file) => runTool('cryptsetup', ['luksFormat', '--batch-mode', '--type', 'luks2', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', file, '-'], 'pass')).then(
          async () => (await runTool('blkid', ['-p', '-o', 'value', '-s', 'TYPE', '-O', String(9 << 20), path])).stdout.trim() === 'crypto_LUKS',
        )
      : false;
    await place('kinds-journal', 4, 29, (file) => mustRun('mke2fs', ['-q', '-F', '-O', 'journal_dev', '-b', '4096', file]));
    // A hibernation image keeps the swap header, with S1SUSPEND where SWAPSPACE2 was.
    await place('kinds-hibernation', 4, 33, async (file) => {
      await mustRun('mkswap', [file]);
      await mustRun('dd', [`of=${file}`, 'bs=1', 'seek=4086', 'conv=notrunc', 'status=none'], 'S1SUSPEND\0');
    });
    await mustRun('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'root', '-E', `offset=${37 << 20}`, path, '8M']);

    const loop = (offset: number, size: number) => `losetup -f --show -o ${offset} --sizelimit ${size} ${path}`;
    const text = (await platter(['mount-offset', path])).stdout;
    expect(text).toContain(`partition 1: swap "sw"\n  offset:    ${1 << 20}\n  sizelimit: ${8 << 20}\n  swapon "$(${loop(1 << 20, 8 << 20)})"\n  ${loop(1 << 20, 8 << 20)}\n`);
    if (luks) expect(text).toContain(`  cryptsetup open "$(${loop(9 << 20, 20 << 20)})" NAME   # then: mount /dev/mapper/NAME MOUNTPOINT\n  ${loop(9 << 20, 20 << 20)}\n`);
    expect(text).toContain('partition 3: jbd\n  offset:    30408704\n  sizelimit: 4194304\n  an external ext3/ext4 journal: not mountable, used by the filesystem that names it\n');
    expect(text).toContain('partition 4: swsuspend\n  offset:    34603008\n  sizelimit: 4194304\n  a hibernation image in a swap area: not mountable, and swapon would discard it\n');
    expect(text).toContain(`  mount -o loop,offset=${37 << 20},sizelimit=${10 << 20} ${path} MOUNTPOINT\n`);
    expect(text.match(/mount -o loop/g)).toHaveLength(luks ? 1 : 2);

    // JSON: the commands the text prints, under the name of the tool.
    const json = JSON.parse((await platter(['mount-offset', '--output=json', path])).stdout);
    const commands = json.targets.map((target: { commands?: Record<string, string> }) => target.commands && Object.keys(target.commands));
    expect(commands).toEqual([['swapon', 'losetup'], luks ? ['cryptsetup', 'losetup'] : ['mount', 'losetup'], undefined, undefined, ['mount', 'losetup']]);
    expect(json.targets[0].commands.swapon).toBe(`swapon "$(${loop(1 << 20, 8 << 20)})"`);
    if (luks) expect(json.targets[1].commands.cryptsetup).toBe(`cryptsetup open "$(${loop(9 << 20, 20 << 20)})" NAME`);

    // A qcow2 image: the same tool, on the converted raw file or the NBD device.
    const qcow2 = join(dir, 'kinds.qcow2');
    await mustRun('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', path, qcow2]);
    const viaQcow2 = (await platter(['mount-offset', qcow2, '1'])).stdout;
    expect(viaQcow2).toContain(`  platter convert -O raw ${qcow2} disk.raw && swapon "$(losetup -f --show -o ${1 << 20} --sizelimit ${8 << 20} disk.raw)"\n`);
    expect(viaQcow2).toContain(`  platter serve --partition 1 ${qcow2}   # then: nbd-client, or qemu-nbd -c, and swapon the NBD device\n`);
    expect(viaQcow2).not.toContain('mount');

    // An LVM PV is used through its logical volumes: the PV itself gets no command, in JSON as in the text.
    const lvm = join(dir, 'kinds-lvm.img');
    await writeFile(lvm, gunzipSync(await readFile(new URL('../fixtures/lvm-in-mbr.img.gz', import.meta.url))));
    const pv = JSON.parse((await platter(['mount-offset', '--output=json', lvm, '1'])).stdout).targets[0];
    expect(pv.filesystem.type).toBe('LVM2_member');
    expect(pv.commands).toBeUndefined();
  });

  it('qcow2: the same table, offsets and LVs as the raw image; a table written onto it reads back', async () => {
    if (!available) return;
    const raw = join(dir, 'lvm.img');
    await writeFile(raw, gunzipSync(await readFile(new URL('../fixtures/lvm-in-mbr.img.gz', import.meta.url))));
    const qcow2 = join(dir, 'lvm.qcow2');
    await mustRun('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
    const rawJson = JSON.parse((await platter(['partitions', '--output=json', raw])).stdout);
    const qcowJson = JSON.parse((await platter(['partitions', '--output=json', qcow2])).stdout);
    // A name ending in a digit (lvm.qcow2) gets sfdisk's 'p' before partition numbers.
    expect(JSON.stringify(qcowJson).split(`${qcow2}p`).join(raw).split(qcow2).join(raw)).toBe(JSON.stringify(rawJson));
    const rawOffsets = JSON.parse((await platter(['mount-offset', '--output=json', raw])).stdout);
    const qcowOffsets = JSON.parse((await platter(['mount-offset', '--output=json', qcow2])).stdout);
    expect(qcowOffsets.format).toBe('qcow2');
    const strip = (targets: Record<string, unknown>[]) => targets.map(({ commands: _commands, ...rest }) => rest);
    expect(strip(qcowOffsets.targets)).toEqual(strip(rawOffsets.targets));
    expect(qcowOffsets.targets.find((t: { name: string }) => t.name === 'vgfix/linear')).toMatchObject({ offset: 2097152, filesystem: { label: 'lvdata' } });
    const human = await platter(['mount-offset', qcow2, 'vgfix/linear']);
    expect(human.stdout).toContain(`platter convert -O raw ${qcow2} disk.raw`);
    const blank = join(dir, 'blank.qcow2');
    await mustRun('qemu-img', ['create', '-q', '-f', 'qcow2', blank, '64M']);
    const script = 'label: dos\nlabel-id: 0x1234abcd\nunit: sectors\n\nstart=2048, size=20480, type=83\nstart=22528, size=40960, type=5\nstart=24576, size=8192, type=82\n';
    const write = await platter(['partitions', '--write', '-', blank], script);
    expect(write.stderr).toBe('');
    expect(write.code).toBe(0);
    await mustRun('qemu-img', ['check', blank]);
    const flat = join(dir, 'blank.raw');
    await mustRun('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', blank, flat]);
    const written = JSON.parse(await mustRun('sfdisk', ['--json', flat]));
    expect(written.partitiontable.id).toBe('0x1234abcd');
    expect(written.partitiontable.partitions.map((p: { start: number; size: number }) => [p.start, p.size])).toEqual([
      [2048, 20480],
      [22528, 40960],
      [24576, 8192],
    ]);
  });

  it('qcow2: the classic layout gives partition 5 at 92413440', async () => {
    if (!available) return;
    const raw = await classicImage('classic-q.img');
    const qcow2 = join(dir, 'classic.qcow2');
    await mustRun('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
    const json = JSON.parse((await platter(['mount-offset', '--output=json', qcow2, '5'])).stdout);
    expect(json.targets[0]).toMatchObject({ offset: 92413440, sizelimit: 512000 });
    const listed = JSON.parse((await platter(['partitions', '--output=json', qcow2])).stdout);
    expect(JSON.stringify(listed).split(`${qcow2}p`).join(raw).split(qcow2).join(raw)).toBe(JSON.stringify(JSON.parse(await mustRun('sfdisk', ['--json', raw]))));
  });

  it('--help shows examples', async () => {
    for (const command of ['partitions', 'mount-offset']) {
      const result = await platter([command, '--help']);
      expect(result.code).toBe(0);
      expect(result.stdout).toContain('Examples:');
    }
  });
});
