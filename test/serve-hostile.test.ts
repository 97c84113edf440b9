/**
 * Malformed traffic from raw sockets must cost only its own connection: a
 * second client's transfer on the same server (--shared 2) comes out intact.
 */

import { execFile } from 'node:child_process';
import { connect } from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Command, NbdErrno, Option, OptionReply } from '../src/nbd/constants.js';
import { MAX_REQUEST_BYTES } from '../src/nbd/limits.js';
import { connectUnix, TestNbdClient } from './helpers/serve-nbd-client.js';
import { patternBytes } from './helpers/serve-images.js';
import { haveServeTool, makeServeTempDir, startServe, stopAllServes } from './helpers/serve-tools.js';

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;
const temp = makeServeTempDir();

afterEach(stopAllServes);
afterAll(() => temp.cleanup());

/** Sends raw bytes on a fresh connection and waits (bounded) for the server to close it. */
function sendRaw(socketPath: string, bytes: Uint8Array, holdMs = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    let received = 0;
    const socket = connect(socketPath, () => {
      socket.write(bytes);
      if (holdMs === 0) return;
      setTimeout(() => socket.destroy(), holdMs);
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('server did not close a broken connection'));
    }, 15_000);
    socket.on('data', (chunk) => (received += chunk.length));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(received);
    });
  });
}

/** Runs malformed requests on a handshaken connection; each must get an error reply. */
async function malformedRequests(socketPath: string): Promise<void> {
  const client = new TestNbdClient(await connectUnix(socketPath));
  const { size } = await client.connect({ structured: true });
  const cases: [string, number, number, number, number][] = [
    ['read past the end', Command.READ, size - 1, 2, NbdErrno.EINVAL],
    ['read at a 2^63 offset', Command.READ, 2 ** 62, 16, NbdErrno.EINVAL],
    ['read longer than 32 MiB', Command.READ, 0, MAX_REQUEST_BYTES + 1, NbdErrno.EOVERFLOW],
    ['zero on a read-only export', Command.WRITE_ZEROES, 0, 4096, NbdErrno.EPERM],
    ['unknown command', 0x1234, 0, 0, NbdErrno.EINVAL],
    ['block status with no context', Command.BLOCK_STATUS, 0, 4096, NbdErrno.EINVAL],
  ];
  for (const [what, type, offset, length, errno] of cases) {
    await client.request(type, offset, length);
    expect((await client.structuredReply()).error, what).toBe(errno);
  }
  await client.request(Command.WRITE, 0, 8, { payload: new Uint8Array(8) });
  expect((await client.structuredReply()).error).toBe(NbdErrno.EPERM);
  // The connection still works after all that.
  await client.request(Command.READ, 0, 4096);
  expect(Buffer.compare((await client.structuredReply(0, 4096)).data, patternBytes(4096, 21))).toBe(0);
  // A bad magic ends it.
  await client.request(Command.READ, 0, 16, { magic: 0x12345678 });
  expect(await client.io.readExact(1)).toBeNull();
  client.io.close();
}

/** Handshake abuse on separate connections; each must be closed or refused, never hang. */
async function malformedHandshakes(socketPath: string): Promise<void> {
  // Garbage instead of client flags and options.
  await sendRaw(socketPath, new Uint8Array(64).fill(0xff));
  // Client flags, then an option with a bad magic.
  await sendRaw(socketPath, Uint8Array.from([0, 0, 0, 3, ...new Array(16).fill(0x42)]));
  // EXPORT_NAME for an export that does not exist: no reply is possible, so a hang-up.
  const unknown = new TestNbdClient(await connectUnix(socketPath));
  await unknown.greet();
  await unknown.sendOption(Option.EXPORT_NAME, new TextEncoder().encode('no-such-export'));
  expect(await unknown.io.readExact(1)).toBeNull();
  // An option that claims 4 GiB of data: refused without reading it all.
  const huge = new TestNbdClient(await connectUnix(socketPath));
  await huge.greet();
  await huge.io.write(Uint8Array.from([0x49, 0x48, 0x41, 0x56, 0x45, 0x4f, 0x50, 0x54, 0, 0, 0, Option.GO, 0xff, 0xff, 0xff, 0xff]));
  huge.io.close();
  // A request cut in half, then a hang-up.
  const cut = new TestNbdClient(await connectUnix(socketPath));
  await cut.connect();
  await cut.io.write(new Uint8Array(10));
  cut.io.close();
  // GO for an unknown name is an error reply, and the connection goes on.
  const polite = new TestNbdClient(await connectUnix(socketPath));
  await polite.greet();
  await polite.sendOption(Option.GO, TestNbdClient.goData('nope'));
  expect((await polite.optionReplies()).at(-1)!.replyType).toBe(OptionReply.ERR_UNKNOWN);
  await polite.sendOption(Option.ABORT);
  await polite.optionReplies();
  polite.io.close();
}

/** A 48 MiB image with data spread over it; returns its path and bytes. */
function makeSharedImage(name: string): { image: string; bytes: Uint8Array } {
  const image = join(temp.dir, name);
  const bytes = new Uint8Array(48 * MiB);
  bytes.set(patternBytes(4096, 21), 0);
  for (let at = MiB; at < bytes.length; at += 3 * MiB) bytes.set(patternBytes(MiB, at % 251), at);
  writeFileSync(image, bytes);
  return { image, bytes };
}

describe('hostile clients', () => {
  it('cost only their own connection while another client reads (--shared 2)', async () => {
    const { image, bytes } = makeSharedImage('interleaved.raw');
    const socket = join(temp.dir, 'interleaved.sock');
    const served = await startServe(image, socket, ['--shared', '2', '--persistent']);
    const good = new TestNbdClient(await connectUnix(socket));
    expect((await good.connect({ structured: true })).size).toBe(bytes.length);
    const steps = [() => malformedRequests(socket), () => malformedHandshakes(socket), () => malformedRequests(socket)];
    const chunk = 4 * MiB;
    for (let at = 0, step = 0; at < bytes.length; at += chunk, step++) {
      // The good client's transfer goes on between (and across) the hostile connections.
      await good.request(Command.READ, at, chunk, { cookie: BigInt(at) });
      const answer = await good.structuredReply(at, chunk);
      expect(answer.error).toBe(0);
      expect(Buffer.compare(answer.data, bytes.subarray(at, at + chunk))).toBe(0);
      await steps[step]?.();
    }
    await good.request(Command.DISC, 0, 0);
    expect(served.process.exitCode).toBeNull();
    expect(await served.stop()).toBe(0);
  });
});

describe.runIf(haveServeTool('qemu-img'))('hostile clients and qemu-img', () => {
  it("do not disturb qemu-img's transfer (--shared 2)", async () => {
    const { image, bytes } = makeSharedImage('shared.raw');
    const socket = join(temp.dir, 'shared.sock');
    const served = await startServe(image, socket, ['--shared', '2', '--persistent']);

    const out = join(temp.dir, 'shared-out.raw');
    // qemu-img holds one slot for the whole copy; the hostile clients take turns in the other.
    const transfer = execFileAsync('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', served.uri, out], { timeout: 60_000 });
    await malformedRequests(socket);
    await malformedHandshakes(socket);
    await transfer.catch((error: Error) => {
      throw new Error(`${error.message}\nserver said: ${served.stderr()}`);
    });
    expect(Buffer.compare(readFileSync(out), bytes)).toBe(0);

    // The server is still up and serving after all of it.
    await malformedRequests(socket);
    expect(served.process.exitCode).toBeNull();
    expect(served.stderr()).toMatch(/client dropped: bad request magic/);
    expect(await served.stop()).toBe(0);
  });
});
