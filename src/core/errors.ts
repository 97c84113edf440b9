/**
 * Every failure platter reports is a PlatterError with a stable `code`.
 * Only the CLI turns them into exit statuses and one line on stderr.
 */

/** Stable error codes; scripts may match on them. */
export type ErrorCode =
  | 'EUSAGE'
  | 'EFORMAT'
  | 'EUNSUPPORTED'
  | 'ECORRUPT'
  | 'ELIMIT'
  | 'ENOTFOUND'
  | 'EIO'
  | 'EREADONLY'
  | 'ERANGE'
  | 'EPROTO';

/** Base class of every error platter throws on purpose. */
export class PlatterError extends Error {
  readonly code: ErrorCode;
  readonly data: Record<string, unknown>;
  /** The file the error is about, when known; the CLI prints it as `platter: FILE: message`. */
  file?: string;

  constructor(code: ErrorCode, message: string, data: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.data = data;
  }

  /** Attaches the file name once, at the outermost place that knows it. */
  inFile(file: string): this {
    this.file ??= file;
    return this;
  }
}

/** Bad arguments: a size string, an unknown option, a missing operand. */
export class UsageError extends PlatterError {
  constructor(message: string, data: Record<string, unknown> = {}) {
    super('EUSAGE', message, data);
  }
}

/** The bytes are not the format that was asked for, or no format matched. */
export class WrongFormatError extends PlatterError {
  constructor(message: string, data: Record<string, unknown> = {}) {
    super('EFORMAT', message, data);
  }
}

/** A valid image that uses something platter does not handle (encryption, an unknown feature bit). */
export class UnsupportedFeatureError extends PlatterError {
  constructor(message: string, data: Record<string, unknown> = {}) {
    super('EUNSUPPORTED', message, data);
  }
}

/** The image contradicts its own format; `offset` says where, when known. */
export class CorruptImageError extends PlatterError {
  readonly offset: number | undefined;
  constructor(message: string, offset?: number, data: Record<string, unknown> = {}) {
    super('ECORRUPT', offset === undefined ? message : `${message} (at byte ${offset})`, { ...data, offset });
    this.offset = offset;
  }
}

/** A value read from an image exceeds one of the named limits in `limits.ts`. */
export class LimitExceededError extends PlatterError {
  constructor(message: string, data: Record<string, unknown> = {}) {
    super('ELIMIT', message, data);
  }
}

/** A file, snapshot, partition or volume that was asked for does not exist. */
export class NotFoundError extends PlatterError {
  constructor(message: string, data: Record<string, unknown> = {}) {
    super('ENOTFOUND', message, data);
  }
}

/** The host refused an I/O operation (permissions, a directory, a full disk). */
export class IoError extends PlatterError {
  constructor(message: string, data: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super('EIO', message, data, options);
  }
}

/** A write to a device or image that was opened read-only, or cannot be written. */
export class ReadOnlyError extends PlatterError {
  constructor(message: string, data: Record<string, unknown> = {}) {
    super('EREADONLY', message, data);
  }
}

/** An access outside a device's bounds. */
export class OutOfRangeError extends PlatterError {
  constructor(message: string, data: Record<string, unknown> = {}) {
    super('ERANGE', message, data);
  }
}

/** A peer broke a network protocol (a bad magic, a truncated message, an impossible length). */
export class ProtocolError extends PlatterError {
  constructor(message: string, data: Record<string, unknown> = {}) {
    super('EPROTO', message, data);
  }
}
