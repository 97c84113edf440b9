/**
 * The byte stream a connection runs on, abstracted so the protocol code stays
 * runtime-agnostic: a runtime pushes received chunks into a StreamReader and
 * supplies `write` and `close`.
 */

import { ProtocolError } from '../core/errors.js';
import { READ_HIGH_WATER_BYTES } from './limits.js';

/** A full-duplex byte stream: exact reads, ordered writes. */
export interface NbdDuplex {
  /**
   * Reads exactly `length` bytes. Resolves `null` when the peer ended the stream
   * cleanly before the first of them; a stream cut inside them is a ProtocolError.
   */
  readExact(length: number): Promise<Uint8Array | null>;
  /**
   * Queues bytes for sending; resolves when the transport accepted them. Bytes
   * of calls made one after another without waiting go out in call order,
   * unbroken (replies rely on it).
   */
  write(data: Uint8Array): Promise<void>;
  /** Ends the connection (idempotent). */
  close(): void;
}

/** Lets a reader stop and restart the flow of incoming data. */
export interface FlowControl {
  pause(): void;
  resume(): void;
}

interface PendingRead {
  length: number;
  resolve(bytes: Uint8Array | null): void;
  reject(error: Error): void;
}

/**
 * Buffers pushed chunks and serves exact-length reads, one at a time. Memory is
 * bounded: past READ_HIGH_WATER_BYTES (or the pending read's size, if bigger)
 * the flow is paused until reads drain the buffer.
 */
export class StreamReader {
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  private ended = false;
  private failure: Error | undefined;
  private pending: PendingRead | undefined;
  private paused = false;

  constructor(private readonly flow: FlowControl, private readonly highWater = READ_HIGH_WATER_BYTES) {}

  /** Bytes received and not yet read. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /** Adds received bytes. */
  push(chunk: Uint8Array): void {
    if (this.ended || chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    this.settle();
    if (!this.paused && this.buffered > Math.max(this.highWater, this.pending?.length ?? 0)) {
      this.paused = true;
      this.flow.pause();
    }
  }

  /** Marks the end of the stream, cleanly or with an error. */
  end(error?: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.failure = error;
    this.settle();
  }

  /** See NbdDuplex.readExact. */
  readExact(length: number): Promise<Uint8Array | null> {
    if (this.pending) return Promise.reject(new Error('StreamReader: one read at a time'));
    return new Promise((resolve, reject) => {
      this.pending = { length, resolve, reject };
      this.settle();
      if (this.pending && this.paused) {
        // The buffer alone cannot satisfy this read: let more in.
        this.paused = false;
        this.flow.resume();
      }
    });
  }

  private settle(): void {
    const pending = this.pending;
    if (!pending) return;
    if (this.buffered >= pending.length) {
      this.pending = undefined;
      pending.resolve(this.take(pending.length));
      if (this.paused && this.buffered <= this.highWater) {
        this.paused = false;
        this.flow.resume();
      }
      return;
    }
    if (!this.ended) return;
    this.pending = undefined;
    if (this.failure) pending.reject(this.failure);
    else if (this.buffered === 0) pending.resolve(null);
    else pending.reject(new ProtocolError(`connection closed inside a ${pending.length}-byte message`));
  }

  private take(length: number): Uint8Array {
    const first = this.chunks[0];
    if (first && first.length >= length) {
      // The common case: no copy, just a view.
      const out = first.subarray(0, length);
      if (first.length === length) this.chunks.shift();
      else this.chunks[0] = first.subarray(length);
      this.buffered -= length;
      return out;
    }
    const out = new Uint8Array(length);
    let filled = 0;
    while (filled < length) {
      const chunk = this.chunks[0]!;
      const part = Math.min(chunk.length, length - filled);
      out.set(chunk.subarray(0, part), filled);
      filled += part;
      if (part === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(part);
    }
    this.buffered -= length;
    return out;
  }
}
