/**
 * Raw deflate (RFC 1951) decoded in plain JavaScript, for runtimes without
 * node:zlib: a browser page, a worker, Deno. It decodes into a caller's
 * buffer and stops when that is full or the last block ends, whichever comes
 * first, so the bytes that follow a qcow2 compressed cluster's stream (it is
 * stored in whole sectors) are never looked at. Every loop consumes input or
 * fills output, and a stream that runs out of input fails: hostile input ends
 * in an error, in time bounded by its length and the output's.
 */

/** Why a stream did not decode, with where in the input it went wrong. */
export class InflateError extends Error {
  constructor(message: string, readonly at: number) {
    super(`${message} (deflate stream, byte ${at})`);
    this.name = 'InflateError';
  }
}

/** RFC 1951 3.2.5: base lengths and extra bits of length symbols 257..285. */
const LENGTH_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LENGTH_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
/** Base distances and extra bits of distance symbols 0..29. */
const DISTANCE_BASE = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577];
const DISTANCE_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];
/** The order in which a dynamic block lists the code length code's lengths. */
const CODE_LENGTH_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];
const MAX_CODE_BITS = 15;
const END_OF_BLOCK = 256;

/**
 * A canonical Huffman code as a lookup table indexed by the next `bits` input
 * bits (deflate sends codes most significant bit first, so indexes are the
 * bit-reversed codes); each entry is symbol << 4 | code length, 0 where no
 * code matches.
 */
interface HuffmanTable {
  entries: Uint32Array;
  bits: number;
}

function reverseBits(code: number, length: number): number {
  let reversed = 0;
  for (let i = 0; i < length; i++) {
    reversed = (reversed << 1) | (code & 1);
    code >>>= 1;
  }
  return reversed;
}

/** The table for code lengths `lengths` (0 = symbol unused); throws on an over-subscribed code. */
function buildTable(lengths: ArrayLike<number>, at: number): HuffmanTable {
  const counts = new Uint16Array(MAX_CODE_BITS + 1);
  let bits = 0;
  for (let symbol = 0; symbol < lengths.length; symbol++) {
    const length = lengths[symbol]!;
    counts[length]!++;
    if (length > bits) bits = length;
  }
  counts[0] = 0;
  // The first code of each length (RFC 1951 3.2.2), and a check that the code is not over-subscribed.
  const next = new Uint16Array(MAX_CODE_BITS + 2);
  let code = 0;
  let left = 1;
  for (let length = 1; length <= MAX_CODE_BITS; length++) {
    left = (left << 1) - counts[length]!;
    if (left < 0) throw new InflateError('over-subscribed Huffman code', at);
    code = (code + counts[length - 1]!) << 1;
    next[length] = code;
  }
  const entries = new Uint32Array(1 << Math.max(bits, 1));
  for (let symbol = 0; symbol < lengths.length; symbol++) {
    const length = lengths[symbol]!;
    if (length === 0) continue;
    const reversed = reverseBits(next[length]!++, length);
    // Every index whose low `length` bits are this code decodes to it.
    for (let index = reversed; index < entries.length; index += 1 << length) entries[index] = (symbol << 4) | length;
  }
  return { entries, bits };
}

/** The fixed codes of block type 1 (RFC 1951 3.2.6), built once. */
let fixedTables: { literals: HuffmanTable; distances: HuffmanTable } | undefined;
function fixedCodes(): { literals: HuffmanTable; distances: HuffmanTable } {
  if (!fixedTables) {
    const lengths = new Uint8Array(288);
    lengths.fill(8, 0, 144);
    lengths.fill(9, 144, 256);
    lengths.fill(7, 256, 280);
    lengths.fill(8, 280, 288);
    fixedTables = { literals: buildTable(lengths, 0), distances: buildTable(new Uint8Array(30).fill(5), 0) };
  }
  return fixedTables;
}

/** Reads the input least significant bit first, as deflate packs it. */
class BitReader {
  private position = 0;
  private buffer = 0;
  private count = 0;

  constructor(private readonly input: Uint8Array) {}

  /** The input byte the reader has reached, for messages. */
  get at(): number {
    return this.position;
  }

  /** Makes at least `need` (≤ 24) bits available; past the input's end they read as zeros until `overrun` says so. */
  private fill(need: number): void {
    while (this.count < need) {
      this.buffer |= (this.position < this.input.length ? this.input[this.position]! : 0) << this.count;
      this.position++;
      this.count += 8;
    }
  }

  /** True when bits past the end of the input were used (they read as zeros). */
  get overrun(): boolean {
    return this.position * 8 - this.count > this.input.length * 8;
  }

  bits(count: number): number {
    if (count === 0) return 0;
    this.fill(count);
    const value = this.buffer & ((1 << count) - 1);
    this.buffer >>>= count;
    this.count -= count;
    return value;
  }

  decode(table: HuffmanTable): number {
    this.fill(table.bits);
    const entry = table.entries[this.buffer & ((1 << table.bits) - 1)]!;
    const length = entry & 15;
    if (length === 0) throw new InflateError('no Huffman code matches the input', this.position);
    this.buffer >>>= length;
    this.count -= length;
    return entry >>> 4;
  }

  /** Drops the bits up to the next byte boundary (before a stored block's length). */
  align(): void {
    const drop = this.count & 7;
    this.buffer >>>= drop;
    this.count -= drop;
  }
}

/** Reads a dynamic block's two code tables (RFC 1951 3.2.7). */
function dynamicCodes(reader: BitReader): { literals: HuffmanTable; distances: HuffmanTable } {
  const literalCount = reader.bits(5) + 257;
  const distanceCount = reader.bits(5) + 1;
  const codeLengthCount = reader.bits(4) + 4;
  if (literalCount > 286 || distanceCount > 30) throw new InflateError('too many length or distance codes', reader.at);
  const codeLengths = new Uint8Array(19);
  for (let i = 0; i < codeLengthCount; i++) codeLengths[CODE_LENGTH_ORDER[i]!] = reader.bits(3);
  const codeLengthTable = buildTable(codeLengths, reader.at);
  const lengths = new Uint8Array(literalCount + distanceCount);
  for (let i = 0; i < lengths.length; ) {
    if (reader.overrun) throw new InflateError('the stream ends inside a block header', reader.at);
    const symbol = reader.decode(codeLengthTable);
    if (symbol < 16) {
      lengths[i++] = symbol;
      continue;
    }
    let repeat: number;
    let value = 0;
    if (symbol === 16) {
      if (i === 0) throw new InflateError('a repeated code length with none before it', reader.at);
      value = lengths[i - 1]!;
      repeat = 3 + reader.bits(2);
    } else if (symbol === 17) {
      repeat = 3 + reader.bits(3);
    } else {
      repeat = 11 + reader.bits(7);
    }
    if (i + repeat > lengths.length) throw new InflateError('code lengths overrun the table', reader.at);
    lengths.fill(value, i, i + repeat);
    i += repeat;
  }
  if (lengths[END_OF_BLOCK] === 0) throw new InflateError('the block has no end-of-block code', reader.at);
  return { literals: buildTable(lengths.subarray(0, literalCount), reader.at), distances: buildTable(lengths.subarray(literalCount), reader.at) };
}

/**
 * Decodes the raw deflate stream at the start of `input` into `output`, until
 * the last block ends or `output` is full; returns the bytes written. Throws an
 * InflateError on a malformed stream, or one that ends before either.
 */
export function inflateRawInto(input: Uint8Array, output: Uint8Array): number {
  const reader = new BitReader(input);
  let filled = 0;
  let last = false;
  while (!last && filled < output.length) {
    last = reader.bits(1) === 1;
    const type = reader.bits(2);
    if (type === 0) {
      reader.align();
      const length = reader.bits(16);
      const complement = reader.bits(16);
      if ((length ^ 0xffff) !== complement) throw new InflateError('a stored block whose length check fails', reader.at);
      for (let i = 0; i < length && filled < output.length; i++) output[filled++] = reader.bits(8);
    } else if (type === 1 || type === 2) {
      const { literals, distances } = type === 1 ? fixedCodes() : dynamicCodes(reader);
      for (;;) {
        if (reader.overrun) throw new InflateError('the stream ends inside a block', reader.at);
        const symbol = reader.decode(literals);
        if (symbol < 256) {
          if (filled === output.length) break;
          output[filled++] = symbol;
        } else if (symbol === END_OF_BLOCK) {
          break;
        } else {
          const index = symbol - 257;
          if (index >= LENGTH_BASE.length) throw new InflateError(`invalid length symbol ${symbol}`, reader.at);
          const length = LENGTH_BASE[index]! + reader.bits(LENGTH_EXTRA[index]!);
          const code = reader.decode(distances);
          if (code >= DISTANCE_BASE.length) throw new InflateError(`invalid distance symbol ${code}`, reader.at);
          const distance = DISTANCE_BASE[code]! + reader.bits(DISTANCE_EXTRA[code]!);
          if (distance > filled) throw new InflateError(`a distance of ${distance} reaches before the output's start`, reader.at);
          const end = Math.min(filled + length, output.length);
          // Byte by byte: the source may overlap what is being written (a run).
          for (; filled < end; filled++) output[filled] = output[filled - distance]!;
          if (filled === output.length) break;
        }
      }
    } else {
      throw new InflateError('a block of the reserved type 3', reader.at);
    }
    if (reader.overrun) throw new InflateError('the stream ends early', input.length);
  }
  return filled;
}
