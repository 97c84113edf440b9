/**
 * The two assertions yargs imports from `assert`. Loading node:assert costs several
 * milliseconds of start-up (it pulls in the colour and inspection machinery), so the
 * CLI bundle maps `assert` to this file.
 */

function fail(message: string | Error | undefined, fallback: string): never {
  if (message instanceof Error) throw message;
  throw new Error(message ?? fallback);
}

export function strictEqual(actual: unknown, expected: unknown, message?: string | Error): void {
  if (!Object.is(actual, expected)) fail(message, `expected ${String(actual)} to equal ${String(expected)}`);
}

export function notStrictEqual(actual: unknown, expected: unknown, message?: string | Error): void {
  if (Object.is(actual, expected)) fail(message, `expected ${String(actual)} not to equal ${String(expected)}`);
}

export default { strictEqual, notStrictEqual };
