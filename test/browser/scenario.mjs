/**
 * What the browser test does with platter's runtime-agnostic build, the same
 * in a browser page and in Node: open a qcow2 overlay and its backing file from
 * bytes in memory, describe it, map it, list its partitions, convert it to raw
 * and check it; convert a zlib-compressed image with platter's portable codecs. `load(name)` gives a file's bytes; the result is plain JSON.
 */

/** SHA-256 of `bytes` in hex, through Web Crypto (a browser's and Node's alike). */
async function sha256(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return [...digest].map((byte) => byte.toString(16).padStart(2, '0')).join('');
}


export async function scenario(platter, load) {
  const files = new Map();
  for (const name of ['overlay.qcow2', 'base.qcow2', 'compressed.qcow2']) files.set(name, await load(name));
  const host = {
    // zlib clusters through platter's own inflater: a page has no zlib.
    codecs: platter.portableCodecs(),
    warn: () => {},
    // Files named inside an image come from the same set of bytes.
    async openNamedFile(name) {
      const bytes = files.get(name);
      if (!bytes) throw new Error(`no file ${name}`);
      return new platter.MemoryDevice(bytes.slice(), { writable: false, name });
    },
  };
  const image = await platter.openImage(new platter.MemoryDevice(files.get('overlay.qcow2').slice(), { writable: false, name: 'overlay.qcow2' }), { host });
  try {
    const info = await platter.info(image, { backingChain: true });
    const map = [];
    for await (const entry of platter.mapImage(image)) map.push(entry);
    const partitions = await platter.listPartitions(image);
    const raw = new platter.MemoryDevice(0, { name: 'disk.raw' });
    await platter.convertToRaw(image, raw);
    const compressed = await platter.openImage(new platter.MemoryDevice(files.get('compressed.qcow2').slice(), { writable: false, name: 'compressed.qcow2' }), { host });
    const compressedRaw = new platter.MemoryDevice(0, { name: 'compressed.raw' });
    await platter.convertToRaw(compressed, compressedRaw);
    await compressed.close();
    const check = await platter.checkImage(new platter.MemoryDevice(files.get('overlay.qcow2').slice(), { writable: false }), 'qcow2');
    return {
      info: JSON.parse(JSON.stringify(info, (_, value) => (typeof value === 'bigint' ? String(value) : value))),
      map,
      partitions,
      rawSize: raw.size,
      rawSha256: await sha256(await raw.read(0, raw.size)),
      compressedSha256: await sha256(await compressedRaw.read(0, compressedRaw.size)),
      check: { corruptions: check.corruptions, leaks: check.leaks, checkErrors: check.checkErrors },
    };
  } finally {
    await image.close();
  }
}
