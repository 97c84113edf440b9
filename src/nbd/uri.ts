/** NBD URIs (the NBD project's uri.md), as printed for clients to connect with. */

/** Where a server listens: a unix socket path, or a TCP host and port. */
export type NbdAddress = { socketPath: string } | { host: string; port: number };

/** The URI a client connects to for `exportName` at `address`. */
export function nbdUri(address: NbdAddress, exportName: string): string {
  const path = exportName === '' ? '' : encodeURIComponent(exportName);
  if ('socketPath' in address) return `nbd+unix:///${path}?socket=${encodeURI(address.socketPath)}`;
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return `nbd://${host}:${address.port}/${path}`;
}
