/**
 * What `info` shows of an encrypted qcow2 image, as qemu-img info shows it
 * without the key (qemu's qcrypto_block_get_info): the legacy AES method by
 * name, and the LUKS1 header the "full disk encryption header pointer"
 * extension points at (qcow2.rst; the LUKS on-disk format 1.2.3), field by
 * field. Nothing here decrypts: platter reads no guest data of such an image.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { CorruptImageError, UnsupportedFeatureError } from '../../src/core/errors.js';
import { qdictOrder } from '../../src/core/qdict-order.js';
import { ascii, defineStruct, trimNul, u16be, u32be } from '../../src/core/struct.js';
import type { HeaderExtensions } from './extensions.js';
import { CRYPT_AES, CRYPT_LUKS, type Qcow2Header } from './header.js';

/** The LUKS1 header up to its key slots (the digest and salts are not shown, so not declared). */
const LuksHeader = defineStruct('LUKS1 header', 208, {
  magic: [0, ascii(6)],
  version: [6, u16be],
  cipherName: [8, ascii(32)],
  cipherMode: [40, ascii(32)],
  hashSpec: [72, ascii(32)],
  payloadOffset: [104, u32be],
  keyBytes: [108, u32be],
  masterKeyIterations: [164, u32be],
  uuid: [168, ascii(40)],
});

/** One of the eight key slots that follow the header (its salt is not shown). */
const LuksKeySlot = defineStruct('LUKS1 key slot', 48, {
  active: [0, u32be],
  iterations: [4, u32be],
  keyMaterialOffset: [40, u32be],
  stripes: [44, u32be],
});

const LUKS_MAGIC = 'LUKS\xba\xbe';
const LUKS_KEY_SLOTS = 8;
/** The whole LUKS1 header: the fields above and the key slots. */
const LUKS_HEADER_BYTES = LuksHeader.size + LUKS_KEY_SLOTS * LuksKeySlot.size;
const LUKS_SLOT_ENABLED = 0x00ac71f3;
const LUKS_SLOT_DISABLED = 0x0000dead;
/** LUKS counts offsets in 512-byte sectors; qemu shows them in bytes. */
const LUKS_SECTOR = 512;

/** Ciphers qemu knows, by LUKS name, with their key sizes (a second key of the same size for XTS). */
const CIPHER_KEY_SIZES: Record<string, number[]> = {
  aes: [16, 24, 32],
  serpent: [16, 24, 32],
  twofish: [16, 24, 32],
  cast5: [16],
  sm4: [16],
};
const CIPHER_MODES = ['ecb', 'cbc', 'xts', 'ctr'];
const IV_GENERATORS = ['plain', 'plain64', 'essiv'];
const HASHES = ['md5', 'sha1', 'sha224', 'sha256', 'sha384', 'sha512', 'ripemd160'];

/** qemu-img info's `encrypt` object of an encrypted image, or undefined when it is not encrypted. */
export async function readEncryptionInfo(device: BlockDevice, header: Qcow2Header, extensions: HeaderExtensions): Promise<Record<string, unknown> | undefined> {
  if (header.cryptMethod === CRYPT_AES) return { format: 'aes' };
  if (header.cryptMethod !== CRYPT_LUKS) return undefined;
  const pointer = extensions.crypto;
  if (!pointer) throw new CorruptImageError('a LUKS-encrypted image without its encryption header extension');
  if (pointer.length < LUKS_HEADER_BYTES || pointer.offset > device.size || LUKS_HEADER_BYTES > device.size - pointer.offset) {
    throw new CorruptImageError(`the LUKS header (${pointer.length} bytes at ${pointer.offset}) is too short or past the end of the file`);
  }
  return describeLuks(await device.read(pointer.offset, LUKS_HEADER_BYTES), pointer.offset);
}

/** The `encrypt` object of a LUKS1 header read at file offset `at`. */
export function describeLuks(bytes: Uint8Array, at = 0): Record<string, unknown> {
  const header = LuksHeader.decode(bytes);
  if (header.magic !== LUKS_MAGIC) throw new CorruptImageError('the encryption header is not a LUKS header (bad magic)', at);
  if (header.version !== 1) throw new UnsupportedFeatureError(`LUKS version ${header.version} is not supported`);
  const [mode, ivgen, ivgenHash] = cipherMode(trimNul(header.cipherMode));
  const hash = trimNul(header.hashSpec);
  if (!HASHES.includes(hash)) throw new UnsupportedFeatureError(`LUKS hash '${hash}' is not supported`);
  const slots = Array.from({ length: LUKS_KEY_SLOTS }, (_, index) => keySlot(bytes, index, at));
  return qdictOrder({
    'cipher-alg': cipherAlgorithm(trimNul(header.cipherName), header.keyBytes, mode),
    'cipher-mode': mode,
    'ivgen-alg': ivgen,
    ...(ivgenHash === undefined ? {} : { 'ivgen-hash-alg': ivgenHash }),
    'hash-alg': hash,
    'payload-offset': header.payloadOffset * LUKS_SECTOR,
    'master-key-iters': header.masterKeyIterations,
    uuid: trimNul(header.uuid),
    slots,
    format: 'luks',
  });
}

/** A cipher mode string (`xts-plain64`, `cbc-essiv:sha256`): the mode, the IV generator and its hash. */
function cipherMode(text: string): [string, string, string | undefined] {
  const dash = text.indexOf('-');
  if (dash < 0) throw new CorruptImageError(`unexpected LUKS cipher mode '${text}'`);
  const mode = text.slice(0, dash);
  const [ivgen = '', ivgenHash] = text.slice(dash + 1).split(':');
  if (!CIPHER_MODES.includes(mode)) throw new UnsupportedFeatureError(`LUKS cipher mode '${mode}' is not supported`);
  if (!IV_GENERATORS.includes(ivgen)) throw new UnsupportedFeatureError(`LUKS IV generator '${ivgen}' is not supported`);
  if (ivgenHash !== undefined && !HASHES.includes(ivgenHash)) throw new UnsupportedFeatureError(`LUKS IV generator hash '${ivgenHash}' is not supported`);
  return [mode, ivgen, ivgenHash];
}

/** qemu's name for a cipher and key size (`aes-256`); XTS keys hold two keys of the cipher's size. */
function cipherAlgorithm(name: string, keyBytes: number, mode: string): string {
  const cipherKey = mode === 'xts' ? keyBytes / 2 : keyBytes;
  if (!CIPHER_KEY_SIZES[name]?.includes(cipherKey)) throw new UnsupportedFeatureError(`LUKS cipher '${name}' with ${keyBytes}-byte keys is not supported`);
  return name === 'sm4' ? 'sm4' : `${name}-${cipherKey * 8}`;
}

/** Key slot `index`: active ones show their iterations and stripes. */
function keySlot(bytes: Uint8Array, index: number, at: number): Record<string, unknown> {
  const offset = LuksHeader.size + index * LuksKeySlot.size;
  const slot = LuksKeySlot.decode(bytes, offset);
  if (slot.active !== LUKS_SLOT_ENABLED && slot.active !== LUKS_SLOT_DISABLED) {
    throw new CorruptImageError(`LUKS key slot ${index} is neither enabled nor disabled`, at + offset);
  }
  const keyOffset = slot.keyMaterialOffset * LUKS_SECTOR;
  if (slot.active !== LUKS_SLOT_ENABLED) return qdictOrder({ active: false, 'key-offset': keyOffset });
  return qdictOrder({ active: true, iters: slot.iterations, 'key-offset': keyOffset, stripes: slot.stripes });
}
