/**
 * Requests served at once on one NBD connection: reads overlap and each reply
 * comes back whole as soon as it is ready; a write waits for the reads sent
 * before it and runs alone, so they see the old bytes and later reads the
 * new; the number of requests and of read bytes in flight stay under their
 * limits whatever the client queues.
 */

import { describe, expect, it } from 'vitest';
import { Command, NBD_SIMPLE_REPLY_MAGIC } from '../src/nbd/constants.js';
import type { NbdExport } from '../src/nbd/export.js';
import { MAX_CONCURRENT_READ_BYTES, MAX_CONCURRENT_REQUESTS } from '../src/nbd/limits.js';
import { serveConnection, singleExportCatalog } from '../src/nbd/server.js';
import type { NbdDuplex } from '../src/nbd/stream.js';
import { SimpleReply } from '../src/nbd/structs.js';
import { memoryPipe, TestNbdClient } from './helpers/serve-nbd-client.js';

const SIZE = 64 << 20;

/** Bytes that repeat only every 65537 bytes, so a read at the wrong offset cannot match. */
function patterned(size: number): Uint8Array {
  const period = 65537;
  const bytes = new Uint8Array(size);
  for (let index = 0; index < period; index++) bytes[index] = (index * 7 + (index >> 8)) & 0xff;
  for (let filled = period; filled < size; filled *= 2) bytes.copyWithin(filled, 0, Math.min(filled, size - filled));
  return bytes;
}

/** An in-memory export whose reads take `delay(offset)` ms, and which records how requests overlap. */
function slowExport(delay: (offset: number) => number) {
  const bytes = patterned(SIZE);
  const seen = { reads: 0, peakReads: 0, readBytes: 0, peakReadBytes: 0, writesDuringReads: 0 };
  const exported: NbdExport = {
    name: 'disk',
    size: SIZE,
    writable: true,
    async read(offset, length) {
      seen.reads++;
      seen.readBytes += length;
      seen.peakReads = Math.max(seen.peakReads, seen.reads);
      seen.peakReadBytes = Math.max(seen.peakReadBytes, seen.readBytes);
      await new Promise((resolve) => setTimeout(resolve, delay(offset)));
      const out = bytes.slice(offset, offset + length);
      seen.reads--;
      seen.readBytes -= length;
      return out;
    },
    async write(offset, data) {
      if (seen.reads > 0) seen.writesDuringReads++;
      bytes.set(data, offset);
    },
    async writeZeroes(offset, length) {
      bytes.fill(0, offset, offset + length);
    },
    async trim() {},
    async flush() {},
    async blockStatus(offset, length) {
      return [{ start: offset, length, kind: 'data', depth: 0 }];
    },
  };
  return { exported, bytes, seen };
}

/** Connects with simple replies; returns the client and the raw stream to read replies from. */
async function connect(exported: NbdExport): Promise<{ client: TestNbdClient; io: NbdDuplex; finished: Promise<void> }> {
  const [serverSide, clientSide] = memoryPipe();
  const finished = serveConnection(serverSide, singleExportCatalog(exported));
  const client = new TestNbdClient(clientSide);
  await client.connect({ structured: false });
  return { client, io: clientSide, finished };
}

/** Reads `count` simple replies in the order they come; a successful READ's data follows its header. */
async function replies(io: NbdDuplex, count: number, readLength: (cookie: bigint) => number) {
  const out: { cookie: bigint; error: number; data: Uint8Array }[] = [];
  for (let index = 0; index < count; index++) {
    const header = SimpleReply.decode((await io.readExact(SimpleReply.size))!.slice());
    expect(header.magic).toBe(NBD_SIMPLE_REPLY_MAGIC);
    const length = header.error === 0 ? readLength(header.cookie) : 0;
    const data = length > 0 ? (await io.readExact(length))!.slice() : new Uint8Array(0);
    out.push({ cookie: header.cookie, error: header.error, data });
  }
  return out;
}

describe('NBD requests in flight on one connection', () => {
  it('reads overlap; each reply comes back whole as soon as it is ready', async () => {
    const count = 8;
    const piece = 64 << 10;
    // The first read is the slowest: served one at a time, replies would keep request order.
    const { exported, bytes, seen } = slowExport((offset) => (count - offset / piece) * 15);
    const { client, io } = await connect(exported);
    for (let index = 0; index < count; index++) await client.request(Command.READ, index * piece, piece, { cookie: BigInt(index + 1) });
    const answers = await replies(io, count, () => piece);
    expect(answers.map((answer) => answer.cookie).sort((a, b) => Number(a - b))).toEqual([1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n]);
    expect(answers.map((answer) => answer.cookie)).not.toEqual([1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n]);
    for (const { cookie, error, data } of answers) {
      expect(error).toBe(0);
      const offset = Number(cookie - 1n) * piece;
      expect(Buffer.compare(data, bytes.subarray(offset, offset + piece))).toBe(0);
    }
    expect(seen.peakReads).toBe(count);
    await client.request(Command.DISC, 0, 0);
  });

  it('a write waits for the reads sent before it and runs alone; reads after it see its bytes', async () => {
    const { exported, bytes, seen } = slowExport(() => 20);
    const old = bytes.slice(0, 4096);
    const { client, io } = await connect(exported);
    await client.request(Command.READ, 0, 4096, { cookie: 1n });
    await client.request(Command.READ, 0, 4096, { cookie: 2n });
    await client.request(Command.WRITE, 0, 4096, { cookie: 3n, payload: new Uint8Array(4096).fill(0xab) });
    await client.request(Command.READ, 0, 4096, { cookie: 4n });
    const answers = await replies(io, 4, (cookie) => (cookie === 3n ? 0 : 4096));
    expect(answers.map((answer) => answer.cookie).slice(2)).toEqual([3n, 4n]);
    const byCookie = new Map(answers.map((answer) => [answer.cookie, answer]));
    expect(Buffer.compare(byCookie.get(1n)!.data, old)).toBe(0);
    expect(Buffer.compare(byCookie.get(2n)!.data, old)).toBe(0);
    expect(byCookie.get(4n)!.data.every((value) => value === 0xab)).toBe(true);
    expect(seen.writesDuringReads).toBe(0);
    await client.request(Command.DISC, 0, 0);
  });

  it.each([
    ['small reads: the request limit', 4096, MAX_CONCURRENT_REQUESTS],
    ['large reads: the byte limit', 8 << 20, MAX_CONCURRENT_READ_BYTES / (8 << 20)],
  ])('%s holds whatever the client queues', async (_name, length, most) => {
    const { exported, seen } = slowExport(() => 5);
    const { client, io } = await connect(exported);
    const count = 40;
    for (let index = 0; index < count; index++) {
      await client.request(Command.READ, (index * length) % (SIZE - length), length, { cookie: BigInt(index + 1) });
    }
    const answers = await replies(io, count, () => length);
    expect(answers.every((answer) => answer.error === 0)).toBe(true);
    expect(seen.peakReads).toBe(most);
    expect(seen.peakReadBytes).toBeLessThanOrEqual(MAX_CONCURRENT_READ_BYTES);
    await client.request(Command.DISC, 0, 0);
  });

  it('on disconnect, finishes the reads in flight before the connection ends', async () => {
    const { exported } = slowExport(() => 30);
    const { client, io, finished } = await connect(exported);
    await client.request(Command.READ, 0, 4096, { cookie: 9n });
    await client.request(Command.DISC, 0, 0);
    const [answer] = await replies(io, 1, () => 4096);
    expect(answer!.cookie).toBe(9n);
    await finished;
  });
});
