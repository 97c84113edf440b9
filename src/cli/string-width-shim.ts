/**
 * Display width for yargs' help layout. The full string-width package builds
 * Intl.Segmenter instances at import time, which costs ~30 ms of start-up on every
 * run; platter's help text is plain ASCII, so code points less escape sequences
 * give the same widths.
 */

const ANSI_ESCAPE = /\u001B\[[0-9;]*[A-Za-z]/g;

export default function stringWidth(text: string): number {
  if (typeof text !== 'string' || text.length === 0) return 0;
  let width = 0;
  for (const char of text.replace(ANSI_ESCAPE, '')) {
    const code = char.codePointAt(0) ?? 0;
    if (code >= 0x20 && !(code >= 0x7f && code < 0xa0)) width += 1;
  }
  return width;
}
