/**
 * serve with qemu-nbd's --fork, --pid-file and -r: the command returns once
 * the server listens and the server goes on in the background under the
 * process id the pid file names, removing the file when it stops; a server
 * that cannot start fails the command with its error; -r is the default mode
 * and cannot be given with --writable.
 */

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const tmp = tempDir('platter-serve-fork-');
afterAll(() => tmp.cleanup());

/** True while a process with this id runs. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Resolves once `done()` holds, checking every 20 ms for up to 5 s. */
async function until(done: () => boolean): Promise<void> {
  for (let waited = 0; !done() && waited < 5000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
}

describe.skipIf(!hasTool('qemu-img'))('serve --fork', () => {
  const disk = tmp.path('disk.raw');
  writeFileSync(disk, new Uint8Array(1 << 20).fill(7));

  it('returns once listening; the background server serves under the pid the file names, and removes it when killed', async () => {
    const socket = tmp.path('d.sock');
    const pidFile = tmp.path('d.pid');
    const result = platter(['serve', '--fork', '--pid-file', pidFile, '-t', '-k', socket, disk]);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(result.stdout).toBe(`serving ${disk} (raw, 1 MiB, read-only) at nbd+unix:///?socket=${socket}\n`);
    const pid = Number(readFileSync(pidFile, 'utf8'));
    expect(alive(pid)).toBe(true);
    // Persistent: two clients one after the other.
    for (let client = 0; client < 2; client++) expect(run('qemu-img', ['info', `nbd+unix:///?socket=${socket}`])).toContain('virtual size: 1 MiB');
    process.kill(pid, 'SIGTERM');
    await until(() => !alive(pid));
    expect(alive(pid)).toBe(false);
    expect(existsSync(pidFile)).toBe(false);
  });

  it('a server that cannot start fails the command with its error', () => {
    const result = platter(['serve', '--fork', '-k', tmp.path('x.sock'), tmp.path('missing.raw')]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/missing\.raw: Could not open: No such file or directory/);
  });

  it.skipIf(!hasTool('qemu-nbd'))('a one-shot server outlives clients that leave in the handshake, and ends after one served, as qemu-nbd does', async () => {
    const servers = [
      { name: 'platter', socket: tmp.path('o1.sock'), pidFile: tmp.path('o1.pid') },
      { name: 'qemu-nbd', socket: tmp.path('o2.sock'), pidFile: tmp.path('o2.pid') },
    ];
    for (const server of servers) {
      const args = ['--fork', '--pid-file', server.pidFile, '-r', '-f', 'raw', '-k', server.socket, disk];
      if (server.name === 'platter') expect(platter(['serve', ...args]).status).toBe(0);
      else run('qemu-nbd', args);
    }
    const seen = [];
    for (const server of servers) {
      const pid = Number(readFileSync(server.pidFile, 'utf8'));
      // A client that only lists the exports, then one that names an export not there.
      expect(run('qemu-nbd', ['-L', '-k', server.socket])).toContain("export: ''");
      expect(() => run('qemu-img', ['info', `nbd+unix:///missing?socket=${server.socket}`])).toThrow();
      const aliveAfterHandshakes = alive(pid);
      let info = '';
      try {
        info = run('qemu-img', ['info', `nbd+unix:///?socket=${server.socket}`]);
      } catch {
        // A server that ended too early: the comparison below says so.
      }
      await until(() => !alive(pid));
      seen.push({ aliveAfterHandshakes, served: info.includes('virtual size: 1 MiB'), endedAfterServing: !alive(pid) });
    }
    expect(seen[0]).toEqual({ aliveAfterHandshakes: true, served: true, endedAfterServing: true });
    expect(seen[0]).toEqual(seen[1]);
  });

  it('-r is taken (the default mode), and refused with --writable', () => {
    const refused = platter(['serve', '-r', '-w', disk]);
    expect([refused.status, refused.stderr]).toEqual([1, 'platter: --read-only and --writable cannot be used together\n']);
    const socket = tmp.path('r.sock');
    const result = platter(['serve', '--fork', '-r', '--output=json', '-k', socket, disk]);
    expect(result.status).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ writable: false, socket });
    // Not persistent: the server ends after its one client.
    expect(run('qemu-img', ['info', `nbd+unix:///?socket=${socket}`])).toContain('file format: raw');
  });
});
