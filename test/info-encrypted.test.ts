/**
 * info of encrypted qcow2 images, without their key, against qemu-img info:
 * LUKS headers of several ciphers, modes and IV generators, the legacy AES
 * method, and an encrypted overlay's chain. Every other command refuses
 * such an image, as qemu-img does without the key (its words differ).
 */

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const enabled = hasTool('qemu-img');

/** qemu's secret object for the key, and a short iteration time so that each image is made in milliseconds. */
const SECRET = ['--object', 'secret,id=key,data=platter'];

const LUKS_VARIANTS = [
  '',
  'encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256',
  'encrypt.cipher-alg=twofish-256,encrypt.hash-alg=sha512',
  'encrypt.cipher-alg=serpent-256,encrypt.ivgen-alg=plain',
  'encrypt.cipher-alg=cast5-128,encrypt.cipher-mode=cbc',
];

describe.skipIf(!enabled)('info of an encrypted image, without its key', () => {
  const temp = tempDir('platter-info-encrypted-');
  afterAll(() => temp.cleanup());
  const qemuImg = (args: string[]) => run('qemu-img', args, { cwd: temp.dir });
  /** qemu-img create of an encrypted image: its short key-derivation benchmark sometimes fails under load ("Unable to get accurate CPU usage"), so it is tried again. */
  const createEncrypted = (args: string[]) => {
    for (let attempt = 1; ; attempt++) {
      try {
        return qemuImg(['create', '-q', '-f', 'qcow2', ...SECRET, ...args]);
      } catch (error) {
        if (attempt >= 5 || !String(error).includes('Unable to get accurate CPU usage')) throw error;
      }
    }
  };
  const same = (image: string, extra: string[] = []) => {
    for (const output of ['human', 'json']) {
      const args = ['info', `--output=${output}`, ...extra, image];
      const ours = platter(args, { cwd: temp.dir });
      expect({ args, stderr: ours.stderr, status: ours.status }).toEqual({ args, stderr: '', status: 0 });
      expect(ours.stdout).toBe(qemuImg(args));
    }
  };

  LUKS_VARIANTS.forEach((options, index) => {
    it(`LUKS ${options || '(qemu-img defaults)'}: the same info as qemu-img`, () => {
      const image = `luks${index}.qcow2`;
      const encrypt = ['encrypt.format=luks', 'encrypt.key-secret=key', 'encrypt.iter-time=10', ...(options ? [options] : [])].join(',');
      createEncrypted(['-o', encrypt, image, '4M']);
      same(image);
    });
  });

  it('the legacy AES method, in a version 2 image: the same info as qemu-img', () => {
    createEncrypted(['-o', 'compat=0.10,encryption=on,encrypt.key-secret=key', 'aes.qcow2', '4M']);
    same('aes.qcow2');
  });

  it('an encrypted overlay of a plain image: the same chain as qemu-img info --backing-chain', () => {
    qemuImg(['create', '-q', '-f', 'qcow2', 'base.qcow2', '4M']);
    createEncrypted(['-o', 'encrypt.format=luks,encrypt.key-secret=key,encrypt.iter-time=10', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2']);
    same('top.qcow2', ['--backing-chain']);
  });

  it.each([
    ['map', 'luks0.qcow2'],
    ['check', 'luks0.qcow2'],
    ['convert', '-O', 'raw', 'luks0.qcow2', 'out.raw'],
    ['compare', 'luks0.qcow2', 'base.qcow2'],
    ['resize', 'luks0.qcow2', '8M'],
  ])('%s refuses it: encrypted images are not supported', (...args) => {
    const ours = platter(args, { cwd: temp.dir });
    expect(ours.stderr).toBe('platter: luks0.qcow2: encrypted images are not supported\n');
    expect(ours.status).not.toBe(0);
  });

  it('a LUKS header with a bad magic is reported, not described', () => {
    const bytes = readFileSync(join(temp.dir, 'luks0.qcow2'));
    // The encryption header pointer extension (0x0537be77) names where the LUKS header is.
    let at = 104;
    while (bytes.readUInt32BE(at) !== 0x0537be77) at += 8 + Math.ceil(bytes.readUInt32BE(at + 4) / 8) * 8;
    const header = Number(bytes.readBigUInt64BE(at + 8));
    bytes.write('XXXX', header, 'latin1');
    writeFileSync(join(temp.dir, 'bad-magic.qcow2'), bytes);
    const ours = platter(['info', 'bad-magic.qcow2'], { cwd: temp.dir });
    expect(ours.stderr).toMatch(/^platter: bad-magic\.qcow2: the encryption header is not a LUKS header \(bad magic\)/);
    expect(ours.status).toBe(1);
  });
});
