/**
 * The NBD server on Node: a node:net listener (unix socket or TCP) feeding
 * connections to the runtime-agnostic protocol code, and SIGINT/SIGTERM handling.
 */

import { lstat, readFile, unlink } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { constants, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { IoError } from '../core/errors.js';
import type { ExportCatalog } from '../nbd/handshake.js';
import { HANDSHAKE_TIMEOUT_MS, MAX_WAITING_CLIENTS } from '../nbd/limits.js';
import { serveConnection } from '../nbd/server.js';
import { StreamReader, type NbdDuplex } from '../nbd/stream.js';
import type { NbdAddress } from '../nbd/uri.js';

/** Where to listen: a unix socket path, or a TCP port (bound to `host`, default 127.0.0.1). */
export type NbdEndpoint = { socketPath: string } | { port: number; host?: string };

/** How the listener treats clients. */
export interface NbdListenOptions {
  /** Clients served at once; more wait for a free slot (qemu-nbd's --shared). */
  shared: number;
  /** Keep listening after the last client leaves (qemu-nbd's --persistent); else stop when one that picked an export leaves last. */
  persistent: boolean;
  /** Where connection events are reported. */
  log?(message: string): void;
  /** Time a client has to finish the handshake (default HANDSHAKE_TIMEOUT_MS). */
  handshakeTimeoutMs?: number;
}

/** A listening server. */
export interface NbdListener {
  readonly address: NbdAddress;
  /** Resolves once the server stopped and every connection finished (exports flushed). */
  readonly done: Promise<void>;
  /** Stops listening, drops every client, and resolves like `done`. */
  close(): Promise<void>;
}

/** The socket path used when none is given: per process, in the temp directory. */
export function defaultSocketPath(): string {
  return join(tmpdir(), `platter-nbd-${process.pid}.sock`);
}

/** Wraps a socket as the protocol's duplex, pausing the socket when too much is buffered. */
export function socketDuplex(socket: Socket): NbdDuplex {
  const reader = new StreamReader({ pause: () => socket.pause(), resume: () => socket.resume() });
  socket.on('data', (chunk: Buffer) => reader.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length)));
  socket.on('end', () => reader.end());
  socket.on('error', (error) => reader.end(new IoError(`connection failed: ${error.message}`)));
  socket.on('close', () => reader.end());
  return {
    readExact: (length) => reader.readExact(length),
    write: (data) =>
      new Promise((resolve, reject) => {
        if (socket.destroyed || !socket.writable) return reject(new IoError('connection closed by the client'));
        socket.write(data, (error) => (error ? reject(new IoError(`send failed: ${error.message}`)) : resolve()));
      }),
    close: () => {
      if (socket.destroyed) return;
      socket.end(() => socket.destroy());
      // A client that stopped reading never lets the end flush: do not wait on it.
      setTimeout(() => socket.destroy(), 1000).unref();
    },
  };
}

/** Starts listening; resolves once the socket accepts connections. */
export async function listenNbd(catalog: ExportCatalog, endpoint: NbdEndpoint, options: NbdListenOptions): Promise<NbdListener> {
  const log = options.log ?? (() => {});
  const sockets = new Set<Socket>();
  const connections = new Set<Promise<void>>();
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));
  let closing: Promise<void> | undefined;

  const waiting: Socket[] = [];

  const start = (socket: Socket) => {
    sockets.add(socket);
    const connection = runConnection(socket, catalog, log, options.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS).then((served) => {
      sockets.delete(socket);
      connections.delete(connection);
      const next = nextWaiting(waiting);
      if (next && !closing) start(next);
      // As qemu-nbd: only a client that got to transmission ends a one-shot server; one that
      // listed the exports, asked for a missing one or broke off its handshake does not.
      else if (!options.persistent && served && sockets.size === 0) void close();
    });
    connections.add(connection);
  };

  const server = createServer((socket) => {
    if (closing) return socket.destroy();
    if (sockets.size < options.shared) return start(socket);
    if (waiting.length >= MAX_WAITING_CLIENTS) {
      log(`turned a client away: ${options.shared} connected and ${waiting.length} waiting (see --shared)`);
      return socket.destroy();
    }
    // Like a listen backlog: the client waits, unanswered, until a slot frees.
    waiting.push(socket);
    socket.on('error', () => {});
  });

  const close = (): Promise<void> => {
    closing ??= (async () => {
      // server.close() waits for open connections, so drop them after asking it to stop.
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of [...sockets, ...waiting]) socket.destroy();
      await Promise.all([...connections]);
      await stopped;
      finish();
    })();
    return closing;
  };

  const address = await startListening(server, endpoint);
  // After start-up, a failing accept (EMFILE...) costs that client only.
  server.on('error', (error) => log(`listener error: ${error.message}`));
  return { address, done, close };
}

/** The next waiting client that has not hung up meanwhile. */
function nextWaiting(waiting: Socket[]): Socket | undefined {
  for (let socket = waiting.shift(); socket; socket = waiting.shift()) {
    if (!socket.destroyed && socket.readable) return socket;
  }
  return undefined;
}

/** Serves one client; resolves true when it picked an export (transmission started), false when it left in the handshake. */
async function runConnection(socket: Socket, catalog: ExportCatalog, log: (message: string) => void, timeoutMs: number): Promise<boolean> {
  if (socket.remoteFamily) socket.setNoDelay(true);
  // A client that never finishes the handshake must not hold a --shared slot forever.
  const timer = setTimeout(() => {
    log('dropped a client that did not finish the handshake in time');
    socket.destroy();
  }, timeoutMs);
  let served = false;
  await serveConnection(socketDuplex(socket), catalog, {
    onSession: () => {
      served = true;
      clearTimeout(timer);
    },
    onError: (error) => log(`client dropped: ${error instanceof Error ? error.message : String(error)}`),
  });
  clearTimeout(timer);
  return served;
}

function listenOnce(server: Server, endpoint: NbdEndpoint): Promise<NbdAddress> {
  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException) => reject(error);
    server.once('error', onError);
    const onListening = () => {
      server.off('error', onError);
      if ('socketPath' in endpoint) return resolve({ socketPath: endpoint.socketPath });
      const bound = server.address();
      const port = bound && typeof bound === 'object' ? bound.port : endpoint.port;
      resolve({ host: endpoint.host ?? '127.0.0.1', port });
    };
    if ('socketPath' in endpoint) server.listen(endpoint.socketPath, onListening);
    else server.listen(endpoint.port, endpoint.host ?? '127.0.0.1', onListening);
  });
}

/** The socket's listening flag in /proc/net/unix (__SO_ACCEPTCON). */
const LISTENING_FLAG = 0x10000;

/**
 * Whether a unix socket at `path` is listened on, as Linux lists it in
 * /proc/net/unix (this network namespace only): true, false, or undefined
 * where that list cannot be read.
 */
async function listedAsListening(path: string): Promise<boolean | undefined> {
  let table: string;
  try {
    table = await readFile('/proc/net/unix', 'utf8');
  } catch {
    return undefined;
  }
  // The list shows each path as it was bound: absolute, or relative to the binder's directory.
  const wanted = new Set([path, resolve(path)]);
  return table.split('\n').some((line) => {
    const fields = line.trim().split(/\s+/);
    return fields.length >= 8 && wanted.has(fields.slice(7).join(' ')) && (Number.parseInt(fields[3]!, 16) & LISTENING_FLAG) !== 0;
  });
}

/**
 * True when `path` is a unix socket that nobody listens on (left by a killed
 * server). Linux's socket list answers without touching the socket; a probe
 * connection is the fallback, and it would count as the one client of a live
 * server that serves one, so it is the last resort.
 */
async function isStaleSocket(path: string): Promise<boolean> {
  try {
    if (!(await lstat(path)).isSocket()) return false;
  } catch {
    return false;
  }
  if (await listedAsListening(path)) return false;
  return new Promise((resolveProbe) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolveProbe(false);
    });
    probe.once('error', (error: NodeJS.ErrnoException) => resolveProbe(error.code === 'ECONNREFUSED'));
  });
}

/**
 * Listens on the endpoint. A stale unix socket file in the way is replaced, as
 * qemu-nbd does; a live one, or any other file, is an error.
 */
async function startListening(server: Server, endpoint: NbdEndpoint): Promise<NbdAddress> {
  const where = 'socketPath' in endpoint ? endpoint.socketPath : `port ${endpoint.port}`;
  try {
    return await listenOnce(server, endpoint);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' && 'socketPath' in endpoint && (await isStaleSocket(endpoint.socketPath))) {
      await unlink(endpoint.socketPath);
      // A server whose listen failed must be closed before it can listen again.
      server.close();
      return listenOnce(server, endpoint).catch((retry: NodeJS.ErrnoException) => {
        throw new IoError(`cannot listen on ${where}: ${retry.message}`, { errno: retry.code });
      });
    }
    const reason = code === 'EADDRINUSE' ? 'address already in use' : (error as Error).message;
    throw new IoError(`cannot listen on ${where}: ${reason}`, { errno: code });
  }
}

/**
 * The signals that stop a server cleanly (clients dropped, writes flushed, the
 * socket removed): qemu-nbd's, SIGHUP included, so a server left behind by a
 * closed terminal does not die with its socket file in place.
 */
const SHUTDOWN_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * Runs `stop` on the first shutdown signal (a second one exits at once, with
 * the shell's status for that signal). Returns a function that removes the handlers.
 */
export function onShutdownSignals(stop: () => Promise<void>): () => void {
  let stopping = false;
  const handler = (signal: NodeJS.Signals) => {
    if (stopping) process.exit(128 + (constants.signals[signal] ?? 0));
    stopping = true;
    void stop();
  };
  for (const signal of SHUTDOWN_SIGNALS) process.on(signal, handler);
  return () => {
    for (const signal of SHUTDOWN_SIGNALS) process.off(signal, handler);
  };
}
