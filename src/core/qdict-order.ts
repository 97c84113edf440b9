/**
 * qemu-img prints JSON objects in the iteration order of qemu's QDict: by hash
 * bucket (tdb_hash of the key, modulo 512), newest first within a bucket.
 * Ordering our keys the same way makes our JSON text match theirs.
 */

const QDICT_BUCKETS = 512;

/** qemu's tdb_hash of a key (32-bit arithmetic). */
function tdbHash(key: string): number {
  const bytes = new TextEncoder().encode(key);
  let value = Math.imul(0x238f13af, bytes.length) >>> 0;
  for (let i = 0; i < bytes.length; i++) value = (value + ((bytes[i]! << ((i * 5) % 24)) >>> 0)) >>> 0;
  return (Math.imul(1103515243, value) + 12345) >>> 0;
}

/** `object`'s keys (given in insertion order) re-ordered as a QDict iterates them. */
export function qdictOrder<T extends Record<string, unknown>>(object: T): T {
  const keys = Object.keys(object);
  const ordered = keys
    .map((key, inserted) => ({ key, inserted, bucket: tdbHash(key) % QDICT_BUCKETS }))
    .sort((a, b) => a.bucket - b.bucket || b.inserted - a.inserted);
  const out: Record<string, unknown> = {};
  for (const { key } of ordered) out[key] = object[key];
  return out as T;
}
