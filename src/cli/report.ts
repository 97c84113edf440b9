/** Where errors and warnings become text: one line on stderr, never a stack trace unless asked. */

import { PlatterError } from '../core/errors.js';
import { writeStdout } from './output.js';

/** Formats an error as `platter: FILE: message` (or `platter: message`). */
export function errorLine(error: unknown): string {
  if (error instanceof PlatterError) {
    return error.file ? `platter: ${error.file}: ${error.message}` : `platter: ${error.message}`;
  }
  const message = error instanceof Error ? error.message : String(error);
  return `platter: internal error: ${message}`;
}

/** The error as JSON, for `--output=json`. */
export function errorJson(error: unknown): Record<string, unknown> {
  if (error instanceof PlatterError) {
    return { error: { code: error.code, message: error.message, file: error.file, data: error.data } };
  }
  return { error: { code: 'EINTERNAL', message: error instanceof Error ? error.message : String(error) } };
}

/** Prints an error on stderr (and as JSON on stdout when asked). */
export function reportError(error: unknown, options: { json?: boolean } = {}): void {
  if (options.json) writeStdout(JSON.stringify(errorJson(error), null, 4) + '\n');
  process.stderr.write(errorLine(error) + '\n');
  // Warnings that belong with the refusal (qemu-img prints them after its error).
  const warnings = error instanceof PlatterError ? error.data['warnings'] : undefined;
  if (Array.isArray(warnings)) for (const warning of warnings) warn(String(warning));
  if (process.env.PLATTER_DEBUG === '1' && error instanceof Error && error.stack) {
    process.stderr.write(error.stack + '\n');
  }
}

/** Prints a warning on stderr. */
export function warn(message: string): void {
  process.stderr.write(`platter: warning: ${message}\n`);
}
