/** Parsers for the option payloads clients send during the handshake. */

import { ProtocolError } from '../core/errors.js';
import { MAX_INFO_REQUESTS, MAX_STRING_BYTES } from './limits.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** What NBD_OPT_INFO and NBD_OPT_GO ask: an export and the info types wanted. */
export interface InfoRequest {
  exportName: string;
  infoTypes: number[];
}

/** What NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT ask. */
export interface MetaContextRequest {
  exportName: string;
  queries: string[];
}

/** Reads fields off an option payload, refusing to run past its end. */
class PayloadCursor {
  private at = 0;
  private readonly view: DataView;

  constructor(private readonly data: Uint8Array, private readonly what: string) {
    this.view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  }

  private need(length: number, field: string): void {
    if (length > this.data.length - this.at) {
      throw new ProtocolError(`${this.what}: ${field} at byte ${this.at} runs past the ${this.data.length}-byte option`);
    }
  }

  u16(field: string): number {
    this.need(2, field);
    const value = this.view.getUint16(this.at, false);
    this.at += 2;
    return value;
  }

  u32(field: string): number {
    this.need(4, field);
    const value = this.view.getUint32(this.at, false);
    this.at += 4;
    return value;
  }

  /** A string of `length` bytes (length already read). */
  text(length: number, field: string): string {
    if (length > MAX_STRING_BYTES) throw new ProtocolError(`${this.what}: ${field} is ${length} bytes (limit ${MAX_STRING_BYTES})`);
    this.need(length, field);
    const bytes = this.data.subarray(this.at, this.at + length);
    this.at += length;
    return decodeText(bytes, `${this.what}: ${field}`);
  }

  /** Throws unless every byte was consumed. */
  finish(): void {
    if (this.at !== this.data.length) {
      throw new ProtocolError(`${this.what}: ${this.data.length - this.at} unexpected bytes at byte ${this.at}`);
    }
  }
}

/** Decodes a protocol string: UTF-8 with no NUL. */
export function decodeText(bytes: Uint8Array, what: string): string {
  if (bytes.length > MAX_STRING_BYTES) throw new ProtocolError(`${what} is ${bytes.length} bytes (limit ${MAX_STRING_BYTES})`);
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw new ProtocolError(`${what} is not valid UTF-8`);
  }
  if (text.includes('\0')) throw new ProtocolError(`${what} contains a NUL character`);
  return text;
}

/** Parses NBD_OPT_INFO / NBD_OPT_GO data: u32 name length, name, u16 count, u16 info types. */
export function parseInfoRequest(data: Uint8Array): InfoRequest {
  const cursor = new PayloadCursor(data, 'NBD_OPT_INFO/GO');
  const exportName = cursor.text(cursor.u32('name length'), 'export name');
  const count = cursor.u16('info request count');
  if (count > MAX_INFO_REQUESTS) throw new ProtocolError(`NBD_OPT_INFO/GO: ${count} info requests (limit ${MAX_INFO_REQUESTS})`);
  const infoTypes: number[] = [];
  for (let index = 0; index < count; index++) infoTypes.push(cursor.u16('info request'));
  cursor.finish();
  return { exportName, infoTypes };
}

/** Parses meta context option data: u32 name length, name, u32 query count, queries (u32 length, string). */
export function parseMetaContextRequest(data: Uint8Array): MetaContextRequest {
  const cursor = new PayloadCursor(data, 'NBD_OPT_*_META_CONTEXT');
  const exportName = cursor.text(cursor.u32('name length'), 'export name');
  const count = cursor.u32('query count');
  // Each query takes at least its 4-byte length: a count the payload cannot hold is a lie.
  if (count > data.length / 4) {
    throw new ProtocolError(`NBD_OPT_*_META_CONTEXT: ${count} queries cannot fit in ${data.length} bytes`);
  }
  const queries: string[] = [];
  for (let index = 0; index < count; index++) queries.push(cursor.text(cursor.u32('query length'), `query ${index}`));
  cursor.finish();
  return { exportName, queries };
}
