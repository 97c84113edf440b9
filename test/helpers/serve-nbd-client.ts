/**
 * A minimal NBD client for tests, over any NbdDuplex (an in-memory pipe or a
 * socket). It speaks just enough to check the server, and can send bytes that
 * no real client would.
 */

import { connect } from 'node:net';
import { socketDuplex } from '../../src/node/nbd-listen.js';
import {
  ChunkFlag,
  ChunkType,
  ClientFlag,
  InfoType,
  NBD_IHAVEOPT,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  Option,
} from '../../src/nbd/constants.js';
import { StreamReader, type NbdDuplex } from '../../src/nbd/stream.js';
import { ChunkHeader, OptionReplyHeader, Request, ServerGreeting, SimpleReply } from '../../src/nbd/structs.js';

/** Two connected in-memory duplexes: what one writes, the other reads. */
export function memoryPipe(): [NbdDuplex, NbdDuplex] {
  const flow = { pause() {}, resume() {} };
  const readers = [new StreamReader(flow), new StreamReader(flow)] as const;
  const side = (mine: StreamReader, theirs: StreamReader): NbdDuplex => ({
    readExact: (length) => mine.readExact(length),
    write: async (data) => theirs.push(data.slice()),
    close: () => {
      mine.end();
      theirs.end();
    },
  });
  return [side(readers[0], readers[1]), side(readers[1], readers[0])];
}

/** Connects to a unix socket. */
export function connectUnix(path: string): Promise<NbdDuplex> {
  return new Promise((resolve, reject) => {
    const socket = connect(path, () => resolve(socketDuplex(socket)));
    socket.once('error', reject);
  });
}

/** One option reply. */
export interface OptionAnswer {
  replyType: number;
  data: Uint8Array;
}

/** A reply to a request, structured chunks assembled. */
export interface Answer {
  error: number;
  /** READ data (holes filled with zeros). */
  data: Uint8Array;
  /** base:allocation runs, as [length, flags]. */
  status: [number, number][];
  chunkTypes: number[];
}

function u32(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value, false);
  return out;
}

function join(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

const utf8 = new TextEncoder();

/** The client. */
export class TestNbdClient {
  constructor(readonly io: NbdDuplex) {}

  private async read(length: number): Promise<Uint8Array> {
    const bytes = await this.io.readExact(length);
    if (!bytes) throw new Error('server closed the connection');
    return bytes.slice();
  }

  /** Reads the greeting and answers with client flags. */
  async greet(clientFlags = ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES): Promise<number> {
    const greeting = ServerGreeting.decode(await this.read(ServerGreeting.size));
    await this.io.write(u32(clientFlags));
    return greeting.handshakeFlags;
  }

  /** Sends one option. */
  async sendOption(option: number, data: Uint8Array = new Uint8Array(0)): Promise<void> {
    const header = new Uint8Array(16);
    const view = new DataView(header.buffer);
    view.setBigUint64(0, NBD_IHAVEOPT, false);
    view.setUint32(8, option, false);
    view.setUint32(12, data.length, false);
    await this.io.write(join([header, data]));
  }

  /** Reads option replies until ACK or an error reply. */
  async optionReplies(): Promise<OptionAnswer[]> {
    const answers: OptionAnswer[] = [];
    for (;;) {
      const header = OptionReplyHeader.decode(await this.read(OptionReplyHeader.size));
      const data = header.length ? await this.read(header.length) : new Uint8Array(0);
      answers.push({ replyType: header.replyType, data });
      if (header.replyType === 1 || header.replyType >= 0x80000000) return answers;
    }
  }

  /** INFO/GO option data for an export name. */
  static goData(name: string, infoTypes: number[] = [InfoType.NAME]): Uint8Array {
    const nameBytes = utf8.encode(name);
    const tail = new Uint8Array(2 + infoTypes.length * 2);
    const view = new DataView(tail.buffer);
    view.setUint16(0, infoTypes.length, false);
    infoTypes.forEach((type, index) => view.setUint16(2 + index * 2, type, false));
    return join([u32(nameBytes.length), nameBytes, tail]);
  }

  /** Meta context option data. */
  static metaData(name: string, queries: string[]): Uint8Array {
    const nameBytes = utf8.encode(name);
    const parts = [u32(nameBytes.length), nameBytes, u32(queries.length)];
    for (const query of queries) {
      const bytes = utf8.encode(query);
      parts.push(u32(bytes.length), bytes);
    }
    return join(parts);
  }

  /** A full handshake ending in NBD_OPT_GO; returns the export size and transmission flags. */
  async connect(options: { structured?: boolean; allocation?: boolean; name?: string } = {}): Promise<{ size: number; flags: number }> {
    await this.greet();
    if (options.structured) {
      await this.sendOption(Option.STRUCTURED_REPLY);
      await this.optionReplies();
      if (options.allocation) {
        await this.sendOption(Option.SET_META_CONTEXT, TestNbdClient.metaData(options.name ?? '', ['base:allocation']));
        await this.optionReplies();
      }
    }
    await this.sendOption(Option.GO, TestNbdClient.goData(options.name ?? ''));
    const replies = await this.optionReplies();
    const last = replies[replies.length - 1]!;
    if (last.replyType !== 1) throw new Error(`GO refused: 0x${last.replyType.toString(16)}`);
    const exportInfo = replies.find((reply) => new DataView(reply.data.buffer).getUint16(0) === InfoType.EXPORT)!;
    const view = new DataView(exportInfo.data.buffer);
    return { size: Number(view.getBigUint64(2, false)), flags: view.getUint16(10, false) };
  }

  /** Sends a request (and a WRITE's payload). */
  async request(type: number, offset: number, length: number, options: { flags?: number; cookie?: bigint; payload?: Uint8Array; magic?: number } = {}): Promise<void> {
    const header = Request.encode({
      magic: options.magic ?? NBD_REQUEST_MAGIC,
      flags: options.flags ?? 0,
      type,
      cookie: options.cookie ?? 1n,
      offset: BigInt(offset),
      length,
    });
    await this.io.write(options.payload ? join([header, options.payload]) : header);
  }

  /** Reads a simple reply; `dataLength` bytes follow a successful READ. */
  async simpleReply(dataLength = 0): Promise<Answer> {
    const reply = SimpleReply.decode(await this.read(SimpleReply.size));
    if (reply.magic !== NBD_SIMPLE_REPLY_MAGIC) throw new Error('not a simple reply');
    const data = reply.error === 0 && dataLength > 0 ? await this.read(dataLength) : new Uint8Array(0);
    return { error: reply.error, data, status: [], chunkTypes: [] };
  }

  /** Reads structured chunks until DONE; READ data lands at `offset`-relative positions. */
  async structuredReply(offset = 0, length = 0): Promise<Answer> {
    const answer: Answer = { error: 0, data: new Uint8Array(length), status: [], chunkTypes: [] };
    for (;;) {
      const header = ChunkHeader.decode(await this.read(ChunkHeader.size));
      if (header.magic !== NBD_STRUCTURED_REPLY_MAGIC) throw new Error('not a structured reply');
      const payload = header.length ? await this.read(header.length) : new Uint8Array(0);
      const view = new DataView(payload.buffer);
      answer.chunkTypes.push(header.type);
      if (header.type === ChunkType.OFFSET_DATA) answer.data.set(payload.subarray(8), Number(view.getBigUint64(0)) - offset);
      if (header.type === ChunkType.OFFSET_HOLE) answer.data.fill(0, Number(view.getBigUint64(0)) - offset, Number(view.getBigUint64(0)) - offset + view.getUint32(8));
      if (header.type === ChunkType.BLOCK_STATUS) {
        for (let at = 4; at < payload.length; at += 8) answer.status.push([view.getUint32(at), view.getUint32(at + 4)]);
      }
      if (header.type >= 0x8000) answer.error = view.getUint32(0);
      if (header.flags & ChunkFlag.DONE) return answer;
    }
  }
}
