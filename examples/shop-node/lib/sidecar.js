// The sidecar API through the official Dapr JavaScript SDK (`@dapr/dapr`, HTTP protocol): the
// client, reads that keep ETags, conditional transactions, invocation, and retrying with
// jittered backoff after a conflict.
//
// What the SDK gives and what it does not: `state.get` returns the value alone (no ETag), so
// reads go through `state.getBulk`, whose entries carry theirs. `state.transaction` takes each
// operation's `etag`, `metadata` and `options.concurrency` (as the SDK's StateConcurrencyEnum;
// a string there is dropped) and throws on an error status; the error's message is the JSON
// `{error, error_msg, status}`. Only `invoker.invoke` takes per-call headers, so the
// `traceparent` a service received can be passed on to an invocation but not to state or
// publish calls: the SDK has no trace propagation of its own.
'use strict';

const { DaprClient, CommunicationProtocolEnum, HttpMethod, StateConcurrencyEnum } = require('@dapr/dapr');

/** The SDK's client for this instance's sidecar API (herd sets `DAPR_HTTP_PORT`). */
function connect() {
  return new DaprClient({
    daprHost: '127.0.0.1',
    daprPort: process.env.DAPR_HTTP_PORT ?? '3500',
    communicationProtocol: CommunicationProtocolEnum.HTTP,
  });
}

/** The HTTP status of an error the SDK threw, if it was an answer from the sidecar. */
function statusOf(err) {
  try {
    return JSON.parse(err.message).status;
  } catch {
    return undefined;
  }
}

/** `keys` of `store` as a Map key → `{value, etag}`; missing keys are absent. */
async function read(client, store, keys) {
  const found = new Map();
  if (keys.length === 0) return found;
  const entries = await client.state.getBulk(store, keys);
  for (const e of entries) {
    if (e.etag !== undefined && e.data !== undefined && e.data !== null) {
      found.set(e.key, { value: e.data, etag: e.etag });
    }
  }
  return found;
}

/** One key of `store` as `{value, etag}`, or undefined. */
async function readOne(client, store, key) {
  return (await read(client, store, [key])).get(key);
}

/**
 * Writes `writes` (`{key, value, etag?, metadata?}`) in one transaction, each conditional: with
 * an `etag` only over that version, without one only if the key is missing (first-write).
 * Resolves true when committed, false on a conflict (409); throws on any other failure.
 */
async function transact(client, store, writes) {
  const operations = writes.map((w) => ({
    operation: 'upsert',
    request: {
      key: w.key,
      value: w.value,
      ...(w.etag === undefined ? {} : { etag: w.etag }),
      ...(w.metadata ? { metadata: w.metadata } : {}),
      options: { concurrency: StateConcurrencyEnum.CONCURRENCY_FIRST_WRITE },
    },
  }));
  try {
    await client.state.transaction(store, operations);
    return true;
  } catch (err) {
    if (statusOf(err) === 409) return false;
    throw err;
  }
}

/** `POST` `body` to `method` of app `app`, passing `traceparent` on; the answer's JSON. */
async function invoke(client, app, method, body, traceparent) {
  const headers = traceparent ? { traceparent } : {};
  return client.invoker.invoke(app, method, HttpMethod.POST, body, { headers });
}

/** Waits before attempt `attempt` (1, 2, …): full jitter over 5 ms × 2^attempt, at most 250 ms. */
function backoff(attempt) {
  const cap = Math.min(250, 5 * 2 ** attempt);
  return new Promise((resolve) => setTimeout(resolve, Math.random() * cap));
}

/**
 * Runs `attempt(n)` until it resolves to something other than `undefined` (undefined means "a
 * conflict: read again and retry"), backing off between tries; after `tries` attempts throws.
 */
async function retrying(what, attempt, tries = 60) {
  for (let n = 1; n <= tries; n += 1) {
    const result = await attempt(n);
    if (result !== undefined) return result;
    await backoff(n);
  }
  throw new Error(`${what}: still conflicting after ${tries} attempts`);
}

module.exports = { connect, statusOf, read, readOne, transact, invoke, retrying };
