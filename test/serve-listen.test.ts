/** The Node listener in-process: handshake timeout, waiting clients, ending after the last client. */

import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { imageExport } from '../src/nbd/export.js';
import { singleExportCatalog } from '../src/nbd/server.js';
import { Command, Option } from '../src/nbd/constants.js';
import { listenNbd, type NbdListener } from '../src/node/nbd-listen.js';
import { connectUnix, TestNbdClient } from './helpers/serve-nbd-client.js';
import { patternBytes, sparseImage } from './helpers/serve-images.js';
import { makeServeTempDir } from './helpers/serve-tools.js';

const temp = makeServeTempDir();
afterAll(() => temp.cleanup());
let count = 0;

async function listen(options: { shared?: number; persistent?: boolean; handshakeTimeoutMs?: number } = {}): Promise<{ listener: NbdListener; socket: string; logs: string[] }> {
  const image = sparseImage(1 << 20, [[0, patternBytes(4096)]]);
  const socket = join(temp.dir, `l${++count}.sock`);
  const logs: string[] = [];
  const listener = await listenNbd(singleExportCatalog(imageExport(image, { name: '', writable: false })), { socketPath: socket }, {
    shared: options.shared ?? 1,
    persistent: options.persistent ?? false,
    handshakeTimeoutMs: options.handshakeTimeoutMs,
    log: (message) => logs.push(message),
  });
  return { listener, socket, logs };
}

/** Resolves when the server closes a connection that says nothing. */
function silentConnection(socket: string): Promise<void> {
  return new Promise((resolve) => {
    const client = connect(socket);
    client.on('data', () => {});
    client.on('error', () => {});
    client.on('close', () => resolve());
  });
}

/** Connects and hangs up at once, before the handshake. */
function silentConnectionClosedByClient(socket: string): Promise<void> {
  return new Promise((resolve) => {
    const client = connect(socket, () => client.end());
    client.on('data', () => {});
    client.on('error', () => {});
    client.on('close', () => resolve());
  });
}

describe('listenNbd', () => {
  it('drops a client that never finishes the handshake, freeing its slot', async () => {
    const { listener, socket, logs } = await listen({ handshakeTimeoutMs: 200, persistent: true });
    await silentConnection(socket);
    expect(logs.join('\n')).toMatch(/did not finish the handshake/);
    const client = new TestNbdClient(await connectUnix(socket));
    expect((await client.connect()).size).toBe(1 << 20);
    await listener.close();
  });

  it('ends after the last client leaves, unless persistent', async () => {
    const { listener, socket } = await listen();
    let ended = false;
    void listener.done.then(() => (ended = true));
    const client = new TestNbdClient(await connectUnix(socket));
    await client.connect();
    await client.request(Command.READ, 0, 4096);
    expect(Buffer.compare((await client.simpleReply(4096)).data, patternBytes(4096))).toBe(0);
    expect(ended).toBe(false);
    await client.request(Command.DISC, 0, 0);
    await listener.done;
    expect(ended).toBe(true);
  });

  it('is not ended by a client that leaves in the handshake (listing, a missing export, a hang-up), as qemu-nbd is not', async () => {
    const { listener, socket } = await listen();
    let ended = false;
    void listener.done.then(() => (ended = true));
    const lister = new TestNbdClient(await connectUnix(socket));
    await lister.greet();
    await lister.sendOption(Option.LIST);
    await lister.optionReplies();
    await lister.sendOption(Option.ABORT);
    await lister.optionReplies();
    expect(await lister.io.readExact(1)).toBeNull();
    const lost = new TestNbdClient(await connectUnix(socket));
    await expect(lost.connect({ name: 'missing' })).rejects.toThrow(/GO refused/);
    lost.io.close();
    await silentConnectionClosedByClient(socket);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(ended).toBe(false);
    const client = new TestNbdClient(await connectUnix(socket));
    await client.connect();
    await client.request(Command.DISC, 0, 0);
    await listener.done;
    expect(ended).toBe(true);
  });

  it('serves waiting clients in turn with --shared 1', async () => {
    const { listener, socket } = await listen({ persistent: true });
    const clients = await Promise.all([0, 1, 2].map(async () => new TestNbdClient(await connectUnix(socket))));
    for (const client of clients) {
      await client.connect();
      await client.request(Command.READ, 0, 16);
      expect((await client.simpleReply(16)).error).toBe(0);
      await client.request(Command.DISC, 0, 0);
    }
    await listener.close();
  });

  it('close() drops connected and waiting clients and resolves', async () => {
    const { listener, socket } = await listen({ persistent: true });
    const first = new TestNbdClient(await connectUnix(socket));
    await first.connect();
    const waiting = silentConnection(socket);
    await listener.close();
    await waiting;
    expect(await first.io.readExact(1)).toBeNull();
  });
});
