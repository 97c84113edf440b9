/**
 * The policy for file names found inside images: plain local paths only,
 * `--no-backing` opens nothing else, `--backing-root DIR` keeps every backing
 * and data file inside DIR even through symlinks.
 */

import { mkdirSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { PlatterError } from '../src/core/errors.js';
import { MemoryDevice } from '../src/core/device.js';
import { checkNamedFile, confirmOpenedInside, refuseProtocolName } from '../src/node/host.js';
import { FileDevice } from '../src/node/file-device.js';
import { openImageFile } from '../src/node/open.js';
import { buildQcow2, type BaseImageOptions } from './helpers/hostile-qcow2.js';
import { platter, tempDir } from './helpers/tools.js';

const tmp = tempDir('platter-policy-');
afterAll(() => tmp.cleanup());
afterEach(() => {
  vi.restoreAllMocks();
});

/** Writes a qcow2 image naming `backing` (and optionally a data file) into `dir`. */
function writeImage(path: string, options: BaseImageOptions = {}): string {
  writeFileSync(path, buildQcow2({ noSnapshot: true, ...options }));
  return path;
}

function refused(name: string): PlatterError {
  try {
    refuseProtocolName(name);
  } catch (error) {
    expect(error).toBeInstanceOf(PlatterError);
    return error as PlatterError;
  }
  throw new Error(`'${name}' was not refused`);
}

describe('names refused inside images', () => {
  const kinds: Array<[string, string]> = [
    ['json: pseudo-protocol', 'json:{"file":{"driver":"file","filename":"/etc/shadow"}}'],
    ['nbd: host and port', 'nbd:localhost:10809'],
    ['nbd:// URL', 'nbd://attacker.example/export'],
    ['http URL', 'http://attacker.example/disk.qcow2'],
    ['https URL', 'https://attacker.example/disk.qcow2'],
    ['ssh URL', 'ssh://user@host/disk.qcow2'],
    ['file: prefix', 'file:/etc/passwd'],
    ['iscsi URL', 'iscsi://target/iqn.2001-04.com.example/1'],
    ['a protocol with an underscore', 'null_co:'],
    ['a drive-letter-like prefix', 'C:\\disk.qcow2'],
  ];
  it.each(kinds)('%s', (_kind, name) => {
    const error = refused(name);
    expect(error.code).toBe('EUNSUPPORTED');
    expect(error.message).toMatch(/only plain local paths are followed, not protocols or URLs/);
  });

  it('a NUL byte', () => {
    const error = refused('base.qcow2\0.evil');
    expect(error.code).toBe('EUNSUPPORTED');
    expect(error.message).toBe("refusing file name 'base.qcow2\\x00.evil': the name contains a NUL byte");
  });

  it('an empty name', () => {
    expect(refused('').message).toMatch(/the name is empty/);
  });

  it.each(['base.qcow2', './with:colon.qcow2', 'dir/with:colon.qcow2', '/var/lib/images/base.qcow2', '../sibling.qcow2'])(
    'accepts the plain path %s',
    (name) => {
      expect(() => refuseProtocolName(name)).not.toThrow();
    },
  );

  it('refuses a protocol backing name through the CLI, plain or json:', () => {
    const dir = join(tmp.dir, 'protocol');
    mkdirSync(dir);
    for (const [backingFile, reason] of [
      ['nbd://attacker.example/x', /only plain local paths/],
      ['json:{"driver":"nbd","server":{"type":"inet","host":"attacker.example","port":"10809"}}', /the 'nbd' driver is not supported/],
      ['json:{"driver":"raw","file":{"driver":"http","url":"http://attacker.example/x"}}', /the 'http' protocol is not supported/],
    ] as const) {
      const image = writeImage(join(dir, 'top.qcow2'), { backingFile, backingFormat: 'raw' });
      const result = platter(['info', '--backing-chain', image]);
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(/^platter: .*top\.qcow2: refusing file name '/);
      expect(result.stderr).toMatch(reason);
    }
  });

  it('a json: name of a local file is a name like a plain path: the backing root refuses it outside', () => {
    const dir = join(tmp.dir, 'json-file');
    mkdirSync(dir);
    const image = writeImage(join(dir, 'top.qcow2'), { backingFile: 'json:{"file.filename":"/etc/passwd"}', backingFormat: 'raw' });
    const result = platter(['info', '--backing-chain', '--backing-root', dir, image]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/refusing file name 'json:\{"file\.filename":"\/etc\/passwd"\}': it resolves to '\/etc\/passwd', outside the backing root/);
  });

  it('refuses a protocol data file name through the CLI', () => {
    const dir = join(tmp.dir, 'protocol-data');
    mkdirSync(dir);
    const image = writeImage(join(dir, 'top.qcow2'), { dataFile: 'nbd://attacker.example/x' });
    const result = platter(['info', '--backing-chain', '--output=json', image]);
    expect(result.status).toBe(1);
    expect(JSON.parse(result.stdout).error.code).toBe('EUNSUPPORTED');
    expect(result.stderr).toMatch(/refusing file name 'nbd:\/\/attacker\.example\/x'/);
  });
});

describe('--no-backing', () => {
  it('inspects an image whose backing file is missing or refused', () => {
    const dir = join(tmp.dir, 'nobacking');
    mkdirSync(dir);
    for (const backing of ['missing.qcow2', 'nbd://attacker.example/x']) {
      const image = writeImage(join(dir, 'top.qcow2'), { backingFile: backing, backingFormat: 'qcow2' });
      expect(platter(['info', '--backing-chain', image]).status).toBe(1);
      const result = platter(['info', '--backing-chain', '--no-backing', '--output=json', image]);
      expect(result.status, result.stderr).toBe(0);
      const chain = JSON.parse(result.stdout);
      expect(chain).toHaveLength(1);
      expect(chain[0]['backing-filename']).toBe(backing);
    }
  });

  it('does not open an external data file', () => {
    const dir = join(tmp.dir, 'nodata');
    mkdirSync(dir);
    const image = writeImage(join(dir, 'top.qcow2'), { dataFile: 'missing.raw', empty: true });
    expect(platter(['info', '--backing-chain', image]).stderr).toMatch(/missing\.raw/);
    const result = platter(['info', '--backing-chain', '--no-backing', image]);
    expect(result.status, result.stderr).toBe(0);
  });

  it('is in the help with an explanation', () => {
    expect(platter(['info', '--help']).stdout).toMatch(/--no-backing\s+Open no backing or external data file/);
  });
});

describe('--backing-root', () => {
  const root = join(tmp.dir, 'root');
  const outside = join(tmp.dir, 'outside');
  mkdirSync(join(root, 'sub'), { recursive: true });
  mkdirSync(outside);
  writeImage(join(root, 'base.qcow2'));
  writeImage(join(outside, 'secret.qcow2'));
  symlinkSync(join(outside, 'secret.qcow2'), join(root, 'escape.qcow2'));
  symlinkSync(join(root, 'base.qcow2'), join(root, 'sub', 'inside-link.qcow2'));
  symlinkSync(outside, join(root, 'dirlink'));

  function chainOf(backing: string, options: BaseImageOptions = {}) {
    const top = writeImage(join(root, 'top.qcow2'), { backingFile: backing, backingFormat: 'qcow2', ...options });
    return platter(['info', '--backing-chain', '--output=json', '--backing-root', root, top]);
  }

  it('follows a backing file inside the root', () => {
    const result = chainOf('base.qcow2');
    expect(result.status, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toHaveLength(2);
  });

  it('follows a symlink that stays inside the root', () => {
    const result = chainOf('sub/inside-link.qcow2');
    expect(result.status, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toHaveLength(2);
  });

  it('refuses an absolute path outside the root', () => {
    const result = chainOf(join(outside, 'secret.qcow2'));
    expect(result.status).toBe(1);
    expect(JSON.parse(result.stdout).error.code).toBe('EUNSUPPORTED');
    expect(result.stderr).toMatch(/refusing file name '.*secret\.qcow2': it resolves to '.*outside\/secret\.qcow2', outside the backing root/);
  });

  it('refuses a relative path climbing out with ..', () => {
    const result = chainOf('../outside/secret.qcow2');
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/outside the backing root/);
  });

  it('refuses a symlink inside the root that points out of it', () => {
    const result = chainOf('escape.qcow2');
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/refusing file name 'escape\.qcow2': it resolves to '.*outside\/secret\.qcow2', outside the backing root/);
  });

  it('refuses a path through a symlinked directory that points out', () => {
    const result = chainOf('dirlink/secret.qcow2');
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/outside the backing root/);
  });

  it('refuses a data file outside the root', () => {
    const top = writeImage(join(root, 'data-top.qcow2'), { dataFile: join(outside, 'secret.qcow2'), empty: true });
    const result = platter(['info', '--backing-chain', '--backing-root', root, top]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/outside the backing root/);
  });

  it('names a backing root that does not exist', () => {
    const top = writeImage(join(root, 'top2.qcow2'), { backingFile: 'base.qcow2', backingFormat: 'qcow2' });
    const result = platter(['info', '--backing-chain', '--backing-root', join(tmp.dir, 'nope'), top]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/backing root '.*nope' does not exist/);
  });

  it('applies to library callers through openImageFile', async () => {
    const top = writeImage(join(root, 'lib-top.qcow2'), { backingFile: 'escape.qcow2', backingFormat: 'qcow2' });
    await expect(openImageFile(top, { backingRoot: root })).rejects.toMatchObject({ code: 'EUNSUPPORTED' });
    const inside = writeImage(join(root, 'lib-top2.qcow2'), { backingFile: 'base.qcow2', backingFormat: 'qcow2' });
    const image = await openImageFile(inside, { backingRoot: root });
    expect(image.backing?.format).toBe('qcow2');
    await image.close();
  });

  it('checks the file as opened: a directory swapped for a symlink between check and open is caught', async () => {
    const area = join(tmp.dir, 'race');
    mkdirSync(join(area, 'root', 'sub'), { recursive: true });
    mkdirSync(join(area, 'elsewhere'));
    writeImage(join(area, 'root', 'sub', 'base.qcow2'));
    writeImage(join(area, 'elsewhere', 'base.qcow2'));
    const top = writeImage(join(area, 'root', 'top.qcow2'), { backingFile: 'sub/base.qcow2', backingFormat: 'qcow2' });
    const realOpen = FileDevice.open.bind(FileDevice);
    vi.spyOn(FileDevice, 'open').mockImplementation(async (path, options) => {
      // The check has passed; now the attacker swaps the directory, just before the open.
      if (path.endsWith('sub/base.qcow2')) {
        renameSync(join(area, 'root', 'sub'), join(area, 'root', 'sub-was'));
        symlinkSync(join(area, 'elsewhere'), join(area, 'root', 'sub'));
      }
      return realOpen(path, options);
    });
    await expect(openImageFile(top, { backingRoot: join(area, 'root') })).rejects.toThrow(/opened at '.*elsewhere\/base\.qcow2', outside the backing root/);
  });

  it('confirms an opened file inside the root, and refuses one outside', async () => {
    const inside = await FileDevice.open(writeImage(join(root, 'confirm.qcow2')));
    const outsideFile = await FileDevice.open(join(outside, 'secret.qcow2'));
    try {
      await expect(confirmOpenedInside(inside, 'confirm.qcow2', join(root, 'confirm.qcow2'), root)).resolves.toBeUndefined();
      await expect(confirmOpenedInside(outsideFile, 'escape.qcow2', join(root, 'escape.qcow2'), root)).rejects.toMatchObject({ code: 'EUNSUPPORTED' });
      // Where the open descriptor's path is unknown: the checked path must still name the opened file.
      vi.spyOn(FileDevice.prototype, 'openedPath').mockResolvedValue(undefined);
      await expect(confirmOpenedInside(inside, 'confirm.qcow2', join(root, 'confirm.qcow2'), root)).resolves.toBeUndefined();
      await expect(confirmOpenedInside(outsideFile, 'base.qcow2', join(root, 'base.qcow2'), root)).rejects.toThrow(/changed while it was being opened/);
      // A path that now runs through a symlink (dirlink -> outside) is no longer what was checked.
      await expect(confirmOpenedInside(outsideFile, 'secret.qcow2', join(root, 'dirlink', 'secret.qcow2'), root)).rejects.toThrow(/changed while/);
    } finally {
      await inside.close();
      await outsideFile.close();
    }
  });

  it('checks names without opening them (checkNamedFile)', () => {
    const namedBy = new MemoryDevice(0, { name: join(root, 'x.qcow2') });
    expect(checkNamedFile('base.qcow2', namedBy, { backingRoot: root })).toMatch(/root\/base\.qcow2$/);
    expect(() => checkNamedFile('escape.qcow2', namedBy, { backingRoot: root })).toThrow(/outside the backing root/);
  });
});

describe('the policy flags on every command that opens images', () => {
  const dir = join(tmp.dir, 'commands');
  const root = join(dir, 'root');
  mkdirSync(join(dir, 'out'), { recursive: true });
  mkdirSync(root);
  writeImage(join(dir, 'out', 'secret.qcow2'));
  const top = writeImage(join(root, 'top.qcow2'), { backingFile: '../out/secret.qcow2', backingFormat: 'qcow2' });
  const missing = writeImage(join(root, 'orphan.qcow2'), { backingFile: 'gone.qcow2', backingFormat: 'qcow2' });

  const out = join(dir, 'out.raw');
  /** Each command that opens images, with its operands around the image. */
  const commands: Array<[string, (image: string) => string[], number]> = [
    ['info', (image) => ['info', '--backing-chain', image], 1],
    ['partitions', (image) => ['partitions', image], 1],
    ['mount-offset', (image) => ['mount-offset', image], 1],
    ['map', (image) => ['map', '--output=json', image], 1],
    ['convert', (image) => ['convert', '-O', 'raw', image, out], 1],
    ['compare', (image) => ['compare', image, image], 2],
    ['measure', (image) => ['measure', '-O', 'qcow2', image], 1],
    ['dd', (image) => ['dd', `if=${image}`, `of=${out}`], 1],
  ];

  it.each(commands)('%s refuses a backing file outside --backing-root', (_name, argv, status) => {
    const [command, ...rest] = argv(top);
    const result = platter([command!, '--backing-root', root, ...rest]);
    expect(result.status).toBe(status);
    expect(result.stderr).toMatch(/refusing file name '\.\.\/out\/secret\.qcow2': it resolves to '.*out\/secret\.qcow2', outside the backing root/);
  });

  it.each(commands)('%s --no-backing reads an image whose backing file is gone', (_name, argv, status) => {
    const [command, ...rest] = argv(missing);
    expect(platter([command!, ...rest]).status).toBe(status);
    const result = platter([command!, '--no-backing', ...rest]);
    expect(result.status, result.stderr).toBe(0);
  });
});
