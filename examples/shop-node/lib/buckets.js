// Index buckets: a service lists what it holds (orders' `intake-0` … `intake-15`,
// notifications' `index-0` … `index-15`) as 16 JSON objects keyed by id, so concurrent writers
// spread over 16 ETags instead of meeting on one. Which bucket an id goes to is a hash of the id
// (FNV-1a, 32 bits, modulo 16); readers read every bucket, so the choice only spreads the load.
'use strict';

const { read, readOne, transact, retrying } = require('./sidecar');

const BUCKETS = 16;

/** The bucket key of `id` under `prefix` (`intake`, `index`). */
function bucketKey(prefix, id) {
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(id, 'utf8')) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return `${prefix}-${h % BUCKETS}`;
}

/** Every bucket key under `prefix`. */
function bucketKeys(prefix) {
  return Array.from({ length: BUCKETS }, (_, i) => `${prefix}-${i}`);
}

/** The entries of every bucket under `prefix`, as `[id, value]` pairs. */
async function entries(client, store, prefix) {
  const found = await read(client, store, bucketKeys(prefix));
  const out = [];
  for (const { value } of found.values()) {
    if (value && typeof value === 'object') out.push(...Object.entries(value));
  }
  return out;
}

/**
 * Reads `ids` (already in the order wanted) under `keyOf(id)` in pages, keeping the values
 * found, until `limit` values are in hand or the ids run out.
 */
async function firstFound(client, store, ids, keyOf, limit) {
  const out = [];
  for (let i = 0; i < ids.length && out.length < limit; i += limit) {
    const page = ids.slice(i, i + limit);
    const found = await read(client, store, page.map(keyOf));
    for (const id of page) {
      const hit = found.get(keyOf(id));
      if (hit && out.length < limit) out.push(hit.value);
    }
  }
  return out;
}

/** Additions waiting for their bucket's writer, by store and bucket key. */
const queues = new Map();

/**
 * Adds `id` → `value` to bucket `key` unless the bucket has `id` already; resolves `{value,
 * added}`: the value the bucket keeps for `id`, and whether this call put it there (false when
 * `id` was there before, or an earlier addition of the same `id` went into the same write).
 * Additions to one bucket made while a write to it is under way wait and go together in the
 * next one, so a burst costs a few ETag-checked writes per bucket, not one (and a conflict) per
 * addition.
 */
function addOnce(client, store, key, id, value) {
  return new Promise((resolve, reject) => {
    const name = `${store}/${key}`;
    const waiting = queues.get(name);
    if (waiting) {
      waiting.push({ id, value, resolve, reject });
      return;
    }
    queues.set(name, [{ id, value, resolve, reject }]);
    drain(client, store, key, name);
  });
}

async function drain(client, store, key, name) {
  for (;;) {
    const batch = queues.get(name);
    if (batch.length === 0) {
      queues.delete(name);
      return;
    }
    queues.set(name, []);
    try {
      const kept = await retrying(`adding to ${key}`, async () => {
        const bucket = await readOne(client, store, key);
        const next = { ...(bucket?.value ?? {}) };
        let changed = false;
        const out = batch.map(({ id, value }) => {
          if (id in next) return { value: next[id], added: false };
          next[id] = value;
          changed = true;
          return { value, added: true };
        });
        if (!changed) return out;
        return (await transact(client, store, [{ key, value: next, etag: bucket?.etag }])) ? out : undefined;
      });
      batch.forEach((w, i) => w.resolve(kept[i]));
    } catch (err) {
      batch.forEach((w) => w.reject(err));
    }
  }
}

module.exports = { bucketKey, bucketKeys, entries, firstFound, addOnce };
