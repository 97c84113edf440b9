/**
 * Limits that apply to every format. Each format keeps its own limits file
 * (formats/<name>/limits.ts) next to its code; these are the shared ones.
 */

/** Largest byte offset a JS number holds exactly; any u64 above it is refused as corrupt. */
export const MAX_SAFE_OFFSET = Number.MAX_SAFE_INTEGER;

/** Largest single read a device serves at once; bigger requests are split by callers. */
export const MAX_IO_BYTES = 64 * 1024 * 1024;

/** Bytes read from the start of a file to probe its format (qemu probes 2 KiB; GPT at 4K sectors needs 8 KiB+). */
export const PROBE_BYTES = 64 * 1024;

/** Longest backing chain followed before giving up (qemu's bdrv_open allows ~ this depth too). */
export const MAX_BACKING_DEPTH = 64;

/** Bytes a write-behind device holds queued before a writer waits for them to land. */
export const MAX_WRITE_BEHIND_BYTES = 4 * 1024 * 1024;

/**
 * Most partition lines an sfdisk script may have. Placing each one looks at
 * all placed before it (as sfdisk does), so the work grows with the square of
 * the count: 4096 lines take about a second; real tables have tens.
 */
export const MAX_SCRIPT_PARTITIONS = 4096;
