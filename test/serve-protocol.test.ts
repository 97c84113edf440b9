/** The NBD protocol code, in memory: handshake, requests, replies, hostile bytes. */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  AllocationFlag,
  ChunkType,
  ClientFlag,
  Command,
  CommandFlag,
  HandshakeFlag,
  InfoType,
  NbdErrno,
  Option,
  OptionReply,
  TransmissionFlag,
} from '../src/nbd/constants.js';
import { imageExport } from '../src/nbd/export.js';
import { MAX_OPTION_BYTES, MAX_REQUEST_BYTES } from '../src/nbd/limits.js';
import { singleExportCatalog, serveConnection } from '../src/nbd/server.js';
import { allocationRuns } from '../src/nbd/status.js';
import { StreamReader } from '../src/nbd/stream.js';
import * as structs from '../src/nbd/structs.js';
import type { Extent, Image } from '../src/core/image.js';
import { memoryPipe, TestNbdClient } from './helpers/serve-nbd-client.js';
import { RawImage } from '../formats/raw/index.js';
import { MemoryDevice } from '../src/core/device.js';
import { formats } from '../src/engine/formats.js';
import { patternBytes, sparseImage } from './helpers/serve-images.js';

const SIZE = 1024 * 1024;

/** Byte equality without a slow element-by-element deep compare. */
function expectSameBytes(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length);
  expect(Buffer.compare(actual, expected)).toBe(0);
}

/** Serves `image` on an in-memory pipe; returns the client and the server's end. */
function serveInMemory(image: Image, options: { writable?: boolean; name?: string } = {}) {
  const [serverSide, clientSide] = memoryPipe();
  const exported = imageExport(image, { name: options.name ?? 'disk', writable: options.writable ?? false });
  const errors: unknown[] = [];
  const finished = serveConnection(serverSide, singleExportCatalog(exported), { onError: (error) => errors.push(error) });
  return { client: new TestNbdClient(clientSide), finished, errors };
}

describe('NBD structs', () => {
  it('have the sizes the protocol fixes', () => {
    expect(structs.ServerGreeting.size).toBe(18);
    expect(structs.OptionHeader.size).toBe(16);
    expect(structs.OptionReplyHeader.size).toBe(20);
    expect(structs.ExportNameReply.size).toBe(10);
    expect(structs.InfoExport.size).toBe(12);
    expect(structs.InfoBlockSize.size).toBe(14);
    expect(structs.Request.size).toBe(28);
    expect(structs.SimpleReply.size).toBe(16);
    expect(structs.ChunkHeader.size).toBe(20);
    expect(structs.OffsetHole.size).toBe(12);
    expect(structs.StatusDescriptor.size).toBe(8);
  });

  it('round-trip a request', () => {
    fc.assert(
      fc.property(fc.nat(0xffff), fc.nat(0xffff), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.nat(0xffffffff), (flags, type, cookie, offset, length) => {
        const value = { magic: 0x25609513, flags, type, cookie, offset, length };
        expect(structs.Request.decode(structs.Request.encode(value))).toEqual(value);
      }),
    );
  });
});

describe('StreamReader', () => {
  it('serves the same bytes however the stream is chunked', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 300 }), fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1 }), fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1 }), async (bytes, cuts, reads) => {
        const reader = new StreamReader({ pause() {}, resume() {} }, 16);
        let at = 0;
        for (let index = 0; at < bytes.length; index++) {
          const step = cuts[index % cuts.length]!;
          reader.push(bytes.slice(at, at + step));
          at += step;
        }
        reader.end();
        const out: number[] = [];
        for (let index = 0; out.length < bytes.length; index++) {
          const want = Math.min(reads[index % reads.length]!, bytes.length - out.length);
          out.push(...(await reader.readExact(want))!);
        }
        expect(Uint8Array.from(out)).toEqual(bytes);
        expect(await reader.readExact(1)).toBeNull();
      }),
    );
  });

  it('fails a read cut short by the end of the stream', async () => {
    const reader = new StreamReader({ pause() {}, resume() {} });
    reader.push(new Uint8Array(3));
    reader.end();
    await expect(reader.readExact(4)).rejects.toMatchObject({ code: 'EPROTO' });
  });

  it('pauses the flow past the high-water mark and resumes when drained', async () => {
    const calls: string[] = [];
    const reader = new StreamReader({ pause: () => calls.push('pause'), resume: () => calls.push('resume') }, 8);
    reader.push(new Uint8Array(10));
    expect(calls).toEqual(['pause']);
    await reader.readExact(10);
    expect(calls).toEqual(['pause', 'resume']);
  });
});

describe('allocationRuns', () => {
  const extentList = fc
    .array(fc.record({ length: fc.integer({ min: 1, max: 5000 }), kind: fc.constantFrom('data', 'zero', 'unallocated') as fc.Arbitrary<Extent['kind']> }), { minLength: 1, maxLength: 30 })
    .map((runs) => {
      let start = 0;
      return runs.map((run) => {
        const extent: Extent = { start, length: run.length, kind: run.kind, depth: 0 };
        start += run.length;
        return extent;
      });
    });

  it('covers exactly the asked range, merged, with each byte flagged as its extent says', () => {
    fc.assert(
      fc.property(extentList, fc.nat(), fc.nat(), (extents, a, b) => {
        const total = extents.reduce((sum, extent) => sum + extent.length, 0);
        const offset = a % total;
        const length = 1 + (b % (total - offset));
        const runs = allocationRuns(extents, offset, length);
        expect(runs.reduce((sum, run) => sum + run.length, 0)).toBe(length);
        for (let index = 1; index < runs.length; index++) expect(runs[index]!.flags).not.toBe(runs[index - 1]!.flags);
        let at = offset;
        for (const run of runs) {
          const extent = extents.find((e) => e.start <= at && at < e.start + e.length)!;
          expect(run.flags).toBe(extent.kind === 'data' ? 0 : AllocationFlag.HOLE | AllocationFlag.ZERO);
          at += run.length;
        }
        expect(allocationRuns(extents, offset, length, true)).toEqual(runs.slice(0, 1));
      }),
    );
  });
});

describe('handshake', () => {
  it('greets fixed newstyle, lists the export, and answers GO with its size and flags', async () => {
    const { client, finished } = serveInMemory(sparseImage(SIZE, []));
    const flags = await client.greet();
    expect(flags).toBe(HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES);
    await client.sendOption(Option.LIST);
    const listed = await client.optionReplies();
    expect(listed.map((reply) => reply.replyType)).toEqual([OptionReply.SERVER, OptionReply.ACK]);
    expect(new TextDecoder().decode(listed[0]!.data.subarray(4, 8))).toBe('disk');
    await client.sendOption(Option.GO, TestNbdClient.goData('disk', [InfoType.NAME, InfoType.BLOCK_SIZE]));
    const replies = await client.optionReplies();
    expect(replies.at(-1)!.replyType).toBe(OptionReply.ACK);
    const info = new DataView(replies[0]!.data.buffer);
    expect(Number(info.getBigUint64(2))).toBe(SIZE);
    expect(info.getUint16(10) & TransmissionFlag.READ_ONLY).toBe(TransmissionFlag.READ_ONLY);
    // TRIM and WRITE_ZEROES are offered to writable exports only, as by qemu-nbd.
    expect(info.getUint16(10) & (TransmissionFlag.SEND_TRIM | TransmissionFlag.SEND_WRITE_ZEROES)).toBe(0);
    expect(info.getUint16(10) & TransmissionFlag.SEND_CACHE).toBe(TransmissionFlag.SEND_CACHE);
    await client.request(Command.DISC, 0, 0);
    await finished;
  });

  it('refuses unknown exports, unknown options, bad payloads and oversized options, and carries on', async () => {
    const { client, finished } = serveInMemory(sparseImage(SIZE, []));
    await client.greet();
    await client.sendOption(Option.GO, TestNbdClient.goData('nope'));
    expect((await client.optionReplies()).at(-1)!.replyType).toBe(OptionReply.ERR_UNKNOWN);
    await client.sendOption(99);
    expect((await client.optionReplies())[0]!.replyType).toBe(OptionReply.ERR_UNSUP);
    // As a qemu-nbd without TLS credentials: known, but not done here.
    await client.sendOption(Option.STARTTLS);
    expect((await client.optionReplies())[0]!.replyType).toBe(OptionReply.ERR_POLICY);
    await client.sendOption(Option.GO, new Uint8Array([0, 0, 0, 200, 1]));
    expect((await client.optionReplies())[0]!.replyType).toBe(OptionReply.ERR_INVALID);
    await client.sendOption(Option.INFO, new Uint8Array(MAX_OPTION_BYTES + 1));
    expect((await client.optionReplies())[0]!.replyType).toBe(OptionReply.ERR_TOO_BIG);
    await client.sendOption(Option.SET_META_CONTEXT, TestNbdClient.metaData('', ['base:allocation']));
    expect((await client.optionReplies())[0]!.replyType).toBe(OptionReply.ERR_INVALID);
    const { size } = await (async () => {
      await client.sendOption(Option.GO, TestNbdClient.goData(''));
      const replies = await client.optionReplies();
      return { size: Number(new DataView(replies[0]!.data.buffer).getBigUint64(2)) };
    })();
    expect(size).toBe(SIZE);
    await client.request(Command.DISC, 0, 0);
    await finished;
  });

  it('negotiates base:allocation and lists it under the base: namespace', async () => {
    const { client } = serveInMemory(sparseImage(SIZE, []));
    await client.greet();
    await client.sendOption(Option.LIST_META_CONTEXT, TestNbdClient.metaData('', ['base:']));
    const listed = await client.optionReplies();
    expect(listed[0]!.replyType).toBe(OptionReply.META_CONTEXT);
    expect(new TextDecoder().decode(listed[0]!.data.subarray(4))).toBe('base:allocation');
    await client.sendOption(Option.STRUCTURED_REPLY);
    expect((await client.optionReplies())[0]!.replyType).toBe(OptionReply.ACK);
    await client.sendOption(Option.SET_META_CONTEXT, TestNbdClient.metaData('', ['qemu:dirty-bitmap:x', 'base:allocation']));
    const selected = await client.optionReplies();
    expect(selected.map((reply) => reply.replyType)).toEqual([OptionReply.META_CONTEXT, OptionReply.ACK]);
  });

  it('serves NBD_OPT_EXPORT_NAME with the 124 reserved zeros to a client without NO_ZEROES', async () => {
    const { client, finished } = serveInMemory(sparseImage(SIZE, [[0, patternBytes(16)]]));
    await client.greet(ClientFlag.FIXED_NEWSTYLE);
    await client.sendOption(Option.EXPORT_NAME, new TextEncoder().encode('disk'));
    const reply = (await client.io.readExact(10 + 124))!;
    expect(Number(new DataView(reply.buffer, reply.byteOffset).getBigUint64(0))).toBe(SIZE);
    expect(reply.subarray(10).every((byte) => byte === 0)).toBe(true);
    await client.request(Command.READ, 0, 16);
    expect((await client.simpleReply(16)).data).toEqual(patternBytes(16));
    await client.request(Command.DISC, 0, 0);
    await finished;
  });

  it('drops a client that sends a bad option magic', async () => {
    const { client, finished, errors } = serveInMemory(sparseImage(SIZE, []));
    await client.greet();
    await client.io.write(new Uint8Array(16).fill(0x41));
    await finished;
    expect(errors[0]).toMatchObject({ code: 'EPROTO' });
    expect(await client.io.readExact(1)).toBeNull();
  });

  it('refuses a second STRUCTURED_REPLY, as qemu-nbd does', async () => {
    const { client } = serveInMemory(sparseImage(SIZE, []));
    await client.greet();
    await client.sendOption(Option.STRUCTURED_REPLY);
    expect((await client.optionReplies())[0]!.replyType).toBe(OptionReply.ACK);
    await client.sendOption(Option.STRUCTURED_REPLY);
    expect((await client.optionReplies())[0]!.replyType).toBe(OptionReply.ERR_INVALID);
  });

  it('drops a client without fixed newstyle that sends anything but EXPORT_NAME', async () => {
    const { client, finished, errors } = serveInMemory(sparseImage(SIZE, []));
    await client.greet(ClientFlag.NO_ZEROES);
    await client.sendOption(Option.LIST);
    await finished;
    expect(errors[0]).toMatchObject({ code: 'EPROTO' });
    expect(await client.io.readExact(1)).toBeNull();
  });

  it('answers an unknown export name of the longest allowed length with an error of legal length, and carries on', async () => {
    const { client } = serveInMemory(sparseImage(SIZE, []));
    await client.greet();
    const name = 'n'.repeat(4096);
    for (const [option, data] of [
      [Option.INFO, TestNbdClient.goData(name)],
      [Option.GO, TestNbdClient.goData(name)],
      [Option.LIST_META_CONTEXT, TestNbdClient.metaData(name, [])],
    ] as const) {
      await client.sendOption(option, data);
      const [answer] = await client.optionReplies();
      expect(answer!.replyType).toBe(OptionReply.ERR_UNKNOWN);
      expect(new TextDecoder().decode(answer!.data)).toBe(`no export named '${'n'.repeat(80)}...'`);
    }
    await client.sendOption(Option.GO, TestNbdClient.goData('disk'));
    expect((await client.optionReplies()).at(-1)!.replyType).toBe(OptionReply.ACK);
  });

  it("advertises a probed raw image's 512-byte minimum block size to clients that ask for block sizes, 1 to others", async () => {
    const probed = new RawImage(new MemoryDevice(new Uint8Array(SIZE), { name: 'disk.raw' }), (head) => formats.nameOf(head));
    const minimumFor = async (image: Image, option: number, infoTypes: number[]) => {
      const { client } = serveInMemory(image);
      await client.greet();
      await client.sendOption(option, TestNbdClient.goData('disk', infoTypes));
      const sizes = (await client.optionReplies()).find((reply) => reply.replyType === OptionReply.INFO && new DataView(reply.data.buffer).getUint16(0) === InfoType.BLOCK_SIZE);
      return new DataView(sizes!.data.buffer).getUint32(2);
    };
    expect(await minimumFor(probed, Option.GO, [InfoType.BLOCK_SIZE])).toBe(512);
    expect(await minimumFor(probed, Option.INFO, [])).toBe(512);
    expect(await minimumFor(probed, Option.GO, [])).toBe(1);
    expect(await minimumFor(sparseImage(SIZE, []), Option.GO, [InfoType.BLOCK_SIZE])).toBe(1);
  });

  it('offers multi-conn only when clients are served side by side', async () => {
    for (const multiConn of [false, true]) {
      const [serverSide, clientSide] = memoryPipe();
      const exported = imageExport(sparseImage(SIZE, []), { name: 'disk', writable: false, multiConn });
      void serveConnection(serverSide, singleExportCatalog(exported));
      const { flags } = await new TestNbdClient(clientSide).connect({ name: 'disk' });
      expect(flags & TransmissionFlag.CAN_MULTI_CONN).toBe(multiConn ? TransmissionFlag.CAN_MULTI_CONN : 0);
    }
  });

  it('answers ABORT and ends', async () => {
    const { client, finished } = serveInMemory(sparseImage(SIZE, []));
    await client.greet();
    await client.sendOption(Option.ABORT);
    expect((await client.optionReplies())[0]!.replyType).toBe(OptionReply.ACK);
    await finished;
  });
});

describe('transmission', () => {
  const dataAt = 256 * 1024;
  const layout = (): [number, Uint8Array][] => [
    [0, patternBytes(4096, 3)],
    [dataAt, patternBytes(8192, 7)],
  ];

  it('serves reads as simple replies, and as data and hole chunks that never read holes', async () => {
    const image = sparseImage(SIZE, layout());
    const expected = image.memory.contents().slice(0, 512 * 1024);
    const simple = serveInMemory(image);
    await simple.client.connect();
    await simple.client.request(Command.READ, 0, expected.length);
    expectSameBytes((await simple.client.simpleReply(expected.length)).data, expected);
    // DF means nothing without structured replies: refused, as by qemu-nbd. FUA is taken (and ignored).
    await simple.client.request(Command.READ, 0, 4096, { flags: CommandFlag.DF });
    expect((await simple.client.simpleReply()).error).toBe(NbdErrno.EINVAL);
    await simple.client.request(Command.READ, 0, 4096, { flags: CommandFlag.FUA });
    expectSameBytes((await simple.client.simpleReply(4096)).data, expected.subarray(0, 4096));

    const structured = serveInMemory(image);
    await structured.client.connect({ structured: true });
    await structured.client.request(Command.READ, 0, expected.length);
    const answer = await structured.client.structuredReply(0, expected.length);
    expectSameBytes(answer.data, expected);
    expect(answer.chunkTypes).toEqual([ChunkType.OFFSET_DATA, ChunkType.OFFSET_HOLE, ChunkType.OFFSET_DATA, ChunkType.OFFSET_HOLE]);
    await structured.client.request(Command.READ, 4096, 0);
    expect((await structured.client.structuredReply()).chunkTypes).toEqual([ChunkType.NONE]);
    await structured.client.request(Command.READ, 0, expected.length, { flags: CommandFlag.DF });
    const whole = await structured.client.structuredReply(0, expected.length);
    expect(whole.chunkTypes).toEqual([ChunkType.OFFSET_DATA]);
    expectSameBytes(whole.data, expected);
  });

  it('reports base:allocation from the image block status, honouring REQ_ONE', async () => {
    const { client } = serveInMemory(sparseImage(SIZE, layout()));
    await client.connect({ structured: true, allocation: true });
    await client.request(Command.BLOCK_STATUS, 0, SIZE);
    const hole = AllocationFlag.HOLE | AllocationFlag.ZERO;
    expect((await client.structuredReply()).status).toEqual([
      [4096, 0],
      [dataAt - 4096, hole],
      [8192, 0],
      [SIZE - dataAt - 8192, hole],
    ]);
    await client.request(Command.BLOCK_STATUS, 8192, 4096, { flags: CommandFlag.REQ_ONE });
    expect((await client.structuredReply()).status).toEqual([[4096, hole]]);
  });

  it('answers bad requests with errors and keeps serving', async () => {
    const { client } = serveInMemory(sparseImage(SIZE, layout()));
    await client.connect({ structured: true });
    const cases: [number, number, number, number, number][] = [
      [Command.READ, SIZE - 10, 20, 0, NbdErrno.EINVAL],
      [Command.READ, 0, MAX_REQUEST_BYTES + 1, 0, NbdErrno.EOVERFLOW],
      [Command.TRIM, 0, 4096, 0, NbdErrno.EPERM],
      [Command.WRITE_ZEROES, 0, 4096, 0, NbdErrno.EPERM],
      [Command.BLOCK_STATUS, 0, 4096, 0, NbdErrno.EINVAL],
      // CACHE (offered, as by qemu-nbd) reads the range ahead; past the end, or with a flag of another command, it is refused.
      [Command.CACHE, 0, 4096, 0, 0],
      [Command.CACHE, SIZE - 10, 20, 0, NbdErrno.EINVAL],
      [Command.CACHE, 0, 4096, CommandFlag.NO_HOLE, NbdErrno.EINVAL],
      // FUA is taken on every command, as the protocol has servers take it.
      [Command.CACHE, 0, 4096, CommandFlag.FUA, 0],
      [Command.FLUSH, 0, 0, CommandFlag.FUA, 0],
      [42, 0, 0, 0, NbdErrno.EINVAL],
      [Command.READ, 0, 16, 0x80, NbdErrno.EINVAL],
    ];
    for (const [type, offset, length, flags, errno] of cases) {
      await client.request(type, offset, length, { flags });
      expect((await client.structuredReply()).error, `command ${type}`).toBe(errno);
    }
    await client.request(Command.WRITE, 0, 4, { payload: new Uint8Array(4) });
    expect((await client.structuredReply()).error).toBe(NbdErrno.EPERM);
    await client.request(Command.READ, 0, 4096);
    expect((await client.structuredReply(0, 4096)).data).toEqual(patternBytes(4096, 3));
  });

  it('writes, zeroes, trims and flushes a writable export', async () => {
    const image = sparseImage(SIZE, layout(), { writable: true });
    const { client, finished } = serveInMemory(image, { writable: true });
    const { flags } = await client.connect();
    expect(flags & TransmissionFlag.READ_ONLY).toBe(0);
    expect(flags & (TransmissionFlag.SEND_TRIM | TransmissionFlag.SEND_WRITE_ZEROES)).toBe(TransmissionFlag.SEND_TRIM | TransmissionFlag.SEND_WRITE_ZEROES);
    await client.request(Command.WRITE, 100_000, 3, { payload: new Uint8Array([1, 2, 3]), flags: CommandFlag.FUA });
    expect((await client.simpleReply()).error).toBe(0);
    await client.request(Command.WRITE, SIZE - 2, 3, { payload: new Uint8Array(3) });
    expect((await client.simpleReply()).error).toBe(NbdErrno.ENOSPC);
    await client.request(Command.WRITE_ZEROES, dataAt, 4096);
    expect((await client.simpleReply()).error).toBe(0);
    await client.request(Command.TRIM, 0, 4096);
    expect((await client.simpleReply()).error).toBe(0);
    await client.request(Command.FLUSH, 0, 0);
    expect((await client.simpleReply()).error).toBe(0);
    await client.request(Command.DISC, 0, 0);
    await finished;
    const bytes = image.memory.contents();
    expect([...bytes.subarray(100_000, 100_003)]).toEqual([1, 2, 3]);
    expect(bytes.subarray(dataAt, dataAt + 4096).every((byte) => byte === 0)).toBe(true);
    expect(bytes.subarray(dataAt + 4096, dataAt + 8192)).toEqual(patternBytes(8192, 7).subarray(4096));
  });

  it('drops a client on a bad request magic or an oversized write', async () => {
    for (const send of [
      (client: TestNbdClient) => client.request(Command.READ, 0, 16, { magic: 0xdeadbeef }),
      (client: TestNbdClient) => client.request(Command.WRITE, 0, MAX_REQUEST_BYTES + 1),
    ]) {
      const { client, finished, errors } = serveInMemory(sparseImage(SIZE, []), { writable: false });
      await client.connect();
      await send(client);
      await finished;
      expect(errors[0]).toMatchObject({ code: 'EPROTO' });
    }
  });

  it('exports a window of the image with shifted block status', async () => {
    const image = sparseImage(SIZE, layout());
    const [serverSide, clientSide] = memoryPipe();
    const exported = imageExport(image, { name: '', writable: false, window: { start: dataAt - 4096, length: 65536 } });
    void serveConnection(serverSide, singleExportCatalog(exported));
    const client = new TestNbdClient(clientSide);
    expect((await client.connect({ structured: true, allocation: true })).size).toBe(65536);
    await client.request(Command.BLOCK_STATUS, 0, 65536);
    const hole = AllocationFlag.HOLE | AllocationFlag.ZERO;
    expect((await client.structuredReply()).status).toEqual([[4096, hole], [8192, 0], [65536 - 4096 - 8192, hole]]);
    await client.request(Command.READ, 4096, 8192);
    expect((await client.structuredReply(4096, 8192)).data).toEqual(patternBytes(8192, 7));
  });
});

describe('hostile byte streams', () => {
  /** Runs a server on an in-memory pipe, feeds it `bytes` after `prefix`, ends the stream. */
  async function feed(bytes: Uint8Array, handshake: 'none' | 'structured' | 'simple'): Promise<unknown[]> {
    const { client, finished, errors } = serveInMemory(sparseImage(64 * 1024, [[0, patternBytes(100)]], { writable: true }), { writable: true, name: '' });
    if (handshake === 'none') await client.greet();
    else await client.connect({ structured: handshake === 'structured', allocation: handshake === 'structured' });
    await client.io.write(bytes);
    client.io.close();
    await finished;
    return errors;
  }

  it('end every connection with at most a PlatterError, never a crash or a hang', async () => {
    const request = fc
      .record({ type: fc.nat(10), flags: fc.nat(0x3f), offset: fc.nat(70_000), length: fc.nat(70_000) })
      .map(({ type, flags, offset, length }) => structs.Request.encode({ magic: 0x25609513, flags, type, cookie: 7n, offset: BigInt(offset), length }));
    const stream = fc.array(fc.oneof(request, fc.uint8Array({ maxLength: 64 })), { maxLength: 8 }).map((parts) => Uint8Array.from(parts.flatMap((part) => [...part])));
    await fc.assert(
      fc.asyncProperty(stream, fc.constantFrom('none', 'structured', 'simple') as fc.Arbitrary<'none' | 'structured' | 'simple'>, async (bytes, handshake) => {
        const errors = await feed(bytes, handshake);
        for (const error of errors) expect(error, String(error)).toHaveProperty('code');
      }),
      { numRuns: 200 },
    );
  });
});
