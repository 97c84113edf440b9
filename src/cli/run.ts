/** Parses the command line with yargs and runs one command. */

import yargs, { type Argv } from 'yargs';
import { UsageError } from '../core/errors.js';
import { VERSION } from '../version.js';
import type { Args, CliCommand } from './command.js';
import { COMMANDS, invokedEntry } from './commands.js';
import { reportError } from './report.js';

/** Runs platter with these arguments; resolves to the exit status. */
export async function runCli(argv: string[]): Promise<number> {
  const invoked = invokedEntry(argv);
  const command = invoked ? (await invoked.load()).default : undefined;
  if (command?.prepareArgv) argv = command.prepareArgv(argv);
  argv = operandsAfterEndOfOptions(argv);
  const json = wantsJson(argv);
  let exitCode = 0;

  const parser = baseParser(argv);
  skipHelpCache(parser);
  if (command) {
    parser.command(command.command, command.describe, command.builder, async (args) => {
      exitCode = (await command.handler(args as Args)) ?? 0;
    });
  } else {
    // The whole table only for the command list of `platter --help` and for
    // suggestions after an unknown command: each entry costs yargs a parse.
    for (const entry of COMMANDS) parser.command(entry.name, entry.describe);
  }
  try {
    await parser.parseAsync();
  } catch (error) {
    reportError(unknownFlagFirst(error, argv, parser), { json });
    const status = command?.errorExitCode ?? 1;
    return typeof status === 'function' ? status(error) : status;
  }
  return exitCode;
}

/**
 * `--` ends the options, as in qemu-img (`platter info -- -odd-name.qcow2`,
 * `platter resize disk.qcow2 -- +1G`). yargs leaves the words after it out of
 * the positionals (a demanded operand is then missing), so the marker is
 * dropped and the words stay as operands; one that starts with '-' is given
 * as './-...', the same file, so that it is not taken for a flag (a negative
 * size is turned into an option by resize itself, before this).
 */
function operandsAfterEndOfOptions(argv: string[]): string[] {
  const end = argv.indexOf('--');
  if (end < 0) return argv;
  return [...argv.slice(0, end), ...argv.slice(end + 1).map((word) => (word.startsWith('-') ? `./${word}` : word))];
}

/**
 * yargs lets an unknown flag take the next word as its value, so
 * `platter info -X disk.img` failed with "Not enough non-option arguments"
 * before its strict check could name -X. Such a failure names the unknown
 * flags instead, as qemu-img names an unrecognized option.
 */
function unknownFlagFirst(error: unknown, argv: string[], parser: Argv): unknown {
  if (!(error instanceof UsageError) || !error.message.startsWith('Not enough non-option arguments')) return error;
  const options = (parser as unknown as { getOptions?: () => { key: Record<string, unknown>; alias: Record<string, string[]> } }).getOptions?.();
  if (!options) return error;
  const known = new Set([...Object.keys(options.key), ...Object.values(options.alias).flat()]);
  const unknown: string[] = [];
  for (const word of argv) {
    if (word === '--') break;
    const long = /^--([A-Za-z][\w-]*)/.exec(word)?.[1];
    const names = long !== undefined ? [long] : /^-[A-Za-z]/.test(word) ? [...word.slice(1).replace(/[^A-Za-z].*$/, '')] : [];
    for (const name of names) {
      if (!known.has(name) && !(name.startsWith('no-') && known.has(name.slice(3)))) unknown.push(name);
    }
  }
  if (unknown.length === 0) return error;
  return new UsageError(`Unknown argument${unknown.length > 1 ? 's' : ''}: ${unknown.join(', ')}`);
}

/**
 * yargs names an unknown `--dirty-maps` twice, as `dirty-maps, dirtyMaps`
 * (its camel-case alias): the list keeps only the names as they were given.
 */
function withoutCamelCaseTwins(message: string): string {
  const match = /^Unknown arguments?: (.*)$/.exec(message);
  if (!match) return message;
  const names = match[1]!.split(', ');
  const camel = (name: string) => name.replace(/-([a-z])/g, (_, letter: string) => letter.toUpperCase());
  const kept = names.filter((name) => !names.some((other) => other !== name && other.includes('-') && camel(other) === name));
  return `Unknown argument${kept.length > 1 ? 's' : ''}: ${kept.join(', ')}`;
}

function baseParser(argv: string[]): Argv {
  return yargs(argv)
    .scriptName('platter')
    .usage('platter COMMAND [options]\n\nInspect, convert and repair virtual disk images without qemu.')
    .demandCommand(1, 'a command is required (see platter --help)')
    .strict()
    .recommendCommands()
    .help()
    .alias('h', 'help')
    .version(VERSION)
    .alias('V', 'version')
    // Reading the terminal's width creates process.stdout, loading node's stream
    // modules, which a quiet convert never needs: read it only when help is shown.
    .wrap(wantsHelp(argv) ? Math.min(100, process.stdout.columns || 100) : null)
    .epilogue('Run `platter COMMAND --help` for the options and examples of one command.')
    .fail((message, error) => {
      // Marked as a command line that could not be parsed: some commands exit apart for those (compare).
      throw error ?? new UsageError(withoutCamelCaseTwins(`${message}`), { commandLine: true });
    })
    .middleware(lastValueWins, true);
}

/** Where the parsed arguments keep the names of flags given more than once (a Set of names). */
export const REPEATED_FLAGS = Symbol('repeated flags');

/** Options that add up when repeated, as in qemu-img (`-o a=1 -o b=2` is `-o a=1,b=2`), dd's operands, convert's files, --object and serve's --bitmap (qemu-nbd -B). */
const REPEATABLE = new Set(['_', 'o', 'options', 'operands', 'files', 'object', 'bitmap']);

/**
 * A flag given twice takes its last value, as qemu-img's option parsing does
 * (`-f raw ... -f qcow2` is `-f qcow2`); yargs would make a list of both. The
 * names of such flags are kept under REPEATED_FLAGS, for commands where
 * qemu-img refuses a repeat (snapshot's actions).
 */
function lastValueWins(args: Record<string | symbol, unknown>): void {
  const repeated = new Set<string>();
  for (const [name, value] of Object.entries(args)) {
    if (Array.isArray(value) && !REPEATABLE.has(name)) {
      args[name] = value[value.length - 1];
      repeated.add(name);
    }
  }
  args[REPEATED_FLAGS] = repeated;
}

/**
 * yargs renders a command's whole help text right after starting its handler,
 * to have it should the handler fail later. platter's fail handler never shows
 * help (errors are reported on their own), so that text is never used: skipping
 * it saves 6-9 ms and ~170 fresh pages per run on a 2-core VM. `--help` renders
 * the text itself, uncached. The hook is internal to yargs, hence the guards.
 */
function skipHelpCache(parser: Argv): void {
  type Usage = { cacheHelpMessage?: () => void };
  const internal = parser as unknown as { getInternalMethods?: () => { getUsageInstance?: () => Usage } };
  const usage = internal.getInternalMethods?.().getUsageInstance?.();
  if (typeof usage?.cacheHelpMessage === 'function') usage.cacheHelpMessage = () => {};
}

function wantsHelp(argv: string[]): boolean {
  return argv.includes('--help') || argv.includes('-h') || argv.length === 0;
}

function wantsJson(argv: string[]): boolean {
  const at = argv.indexOf('--output');
  return argv.includes('--output=json') || (at >= 0 && argv[at + 1] === 'json');
}

export type { CliCommand };
