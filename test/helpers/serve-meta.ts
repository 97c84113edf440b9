/** Metadata contexts as nbdinfo sees them, served by qemu-nbd (the oracle) and by platter serve. */

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { runTool, startServe } from './serve-tools.js';

/** What nbdinfo prints of an export: `--map=CONTEXT` lines, or its `--json` description. */
export type NbdinfoQuery = { map: string } | { json: true };

function nbdinfoArgs(query: NbdinfoQuery, uri: string): string[] {
  return 'map' in query ? [`--map=${query.map}`, uri] : ['--json', uri];
}

/** nbdinfo's answer about qemu-nbd serving `image` (read-only unless `args` say otherwise) on `socket`. */
export async function viaQemuNbd(image: string, socket: string, args: string[], query: NbdinfoQuery): Promise<string> {
  const server = spawn('qemu-nbd', ['-t', '-k', socket, ...args, image], { stdio: 'ignore' });
  try {
    for (let attempt = 0; !existsSync(socket); attempt++) {
      if (attempt > 100 || server.exitCode !== null) throw new Error(`qemu-nbd ${args.join(' ')} ${image} did not start`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return runTool('nbdinfo', nbdinfoArgs(query, `nbd+unix:///?socket=${socket}`));
  } finally {
    server.kill();
    await new Promise((resolve) => (server.exitCode !== null ? resolve(null) : server.on('exit', resolve)));
  }
}

/** nbdinfo's answer about `platter serve ARGS image` on `socket`. */
export async function viaPlatter(image: string, socket: string, args: string[], query: NbdinfoQuery): Promise<string> {
  const served = await startServe(image, socket, ['-t', ...args]);
  try {
    return runTool('nbdinfo', nbdinfoArgs(query, served.uri));
  } finally {
    await served.stop();
  }
}

/** The contexts nbdinfo --json lists for the first export. */
export function listedContexts(json: string): string[] {
  return (JSON.parse(json) as { exports: { contexts: string[] }[] }).exports[0]!.contexts;
}
