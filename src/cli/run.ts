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
    reportError(error, { json });
    return command?.errorExitCode ?? 1;
  }
  return exitCode;
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
      throw error ?? new UsageError(`${message}`);
    });
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
