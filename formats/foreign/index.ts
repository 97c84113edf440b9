/**
 * Disk image formats platter does not read, known by their signatures. Such a
 * file must not be taken for a raw disk: its bytes are a container (headers,
 * allocation tables, grain or block maps), not what the guest sees, so a raw
 * reading would convert, compare and map the wrong disk. Names are qemu-img's
 * -f names; the signatures are the ones each format's specification puts at
 * the start of the file. A raw image of an encrypted (LUKS) volume is left
 * out on purpose: its bytes are the disk's.
 */

const ascii = (text: string): Uint8Array => new TextEncoder().encode(text);

/** One format's mark: these bytes at this offset. */
interface Signature {
  format: string;
  offset: number;
  magic: Uint8Array;
}

const SIGNATURES: readonly Signature[] = [
  // VMware: sparse extents ("KDMV"), VMware 3 ("COWD"), and the text descriptor of split and flat disks.
  { format: 'vmdk', offset: 0, magic: ascii('KDMV') },
  { format: 'vmdk', offset: 0, magic: ascii('COWD') },
  { format: 'vmdk', offset: 0, magic: ascii('# Disk DescriptorFile') },
  // VirtualBox: the header's signature 0xbeda107f, little-endian, at byte 64.
  { format: 'vdi', offset: 64, magic: new Uint8Array([0x7f, 0x10, 0xda, 0xbe]) },
  // Virtual PC / Hyper-V VHD (dynamic: the footer copy at the start), and VHDX.
  { format: 'vpc', offset: 0, magic: ascii('conectix') },
  { format: 'vhdx', offset: 0, magic: ascii('vhdxfile') },
  { format: 'qed', offset: 0, magic: ascii('QED\0') },
  // The first qcow format: qcow2's magic with version 1.
  { format: 'qcow', offset: 0, magic: new Uint8Array([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 1]) },
  { format: 'parallels', offset: 0, magic: ascii('WithoutFreeSpace') },
  { format: 'parallels', offset: 0, magic: ascii('WithouFreSpacExt') },
  { format: 'bochs', offset: 0, magic: ascii('Bochs Virtual HD Image') },
  { format: 'cloop', offset: 0, magic: ascii('#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0') },
];

/** The name of the image format whose signature `head` (the first bytes of a file) carries, if it is one platter does not read. */
export function foreignImageFormat(head: Uint8Array): string | undefined {
  for (const { format, offset, magic } of SIGNATURES) {
    if (head.length < offset + magic.length) continue;
    if (magic.every((byte, index) => head[offset + index] === byte)) return format;
  }
  return undefined;
}

/** Every format name `foreignImageFormat` may answer. */
export const FOREIGN_IMAGE_FORMATS: ReadonlySet<string> = new Set(SIGNATURES.map((signature) => signature.format));
