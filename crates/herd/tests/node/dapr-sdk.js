// The official Dapr JavaScript SDK (`@dapr/dapr`), used unchanged against herd's sidecar API,
// over HTTP or, with SDK_PROTOCOL=grpc, over Dapr's gRPC API. Run as a herd service, it finds
// the API on the port herd gives it in DAPR_HTTP_PORT or DAPR_GRPC_PORT (and the token in
// DAPR_API_TOKEN, which the SDK reads by itself), then drives
// the state client (save with and without ETags, options and request metadata, get, getBulk,
// delete, transaction, the ETag and fencing conflicts) and the lock client, recording what the
// SDK returned or threw.
//
// The record is one JSON line, printed and written to the file named by SDK_RESULT_FILE (via a
// rename, so a reader never sees half of it); a failure is recorded as {"error": "..."} and the
// process exits 1. The checks live in crates/herd/tests/it/sdk.rs: this program only observes.
// After a successful run it stays up until SIGTERM, so herd does not run it again.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const {
  DaprClient,
  CommunicationProtocolEnum,
  StateConcurrencyEnum,
  StateConsistencyEnum,
} = require('@dapr/dapr');

const STORE = process.env.SDK_STORE ?? 'statestore';
const GRPC = process.env.SDK_PROTOCOL === 'grpc';
const PROTOCOL = GRPC ? CommunicationProtocolEnum.GRPC : CommunicationProtocolEnum.HTTP;
const resultFile = process.env.SDK_RESULT_FILE;

function record(result) {
  const line = JSON.stringify(result);
  console.log(`sdk-result ${line}`);
  if (resultFile) {
    const tmp = `${resultFile}.tmp`;
    fs.writeFileSync(tmp, `${line}\n`);
    fs.renameSync(tmp, resultFile);
  }
}

// Over HTTP the SDK reports a failed call as an Error whose message is
// {"error": statusText, "error_msg": body, "status": code}; keep the status and Dapr's errorCode.
// Over gRPC the message starts with the status, e.g. "[aborted] ..."; keep its name.
function failure(err) {
  if (!err) return null;
  const out = { message: String(err.message ?? err) };
  const grpc = /^\[([a-z_]+)\]/.exec(out.message);
  if (grpc) out.grpcStatus = grpc[1].toUpperCase();
  try {
    const outer = JSON.parse(err.message);
    out.status = outer.status;
    out.errorCode = JSON.parse(outer.error_msg).errorCode;
  } catch {
    // Not the SDK's HTTP error shape: the message alone says what happened.
  }
  return out;
}

// A call's failure whether the SDK returns it (HTTP: `{ error }`) or throws it (gRPC).
async function outcome(fn) {
  try {
    return failure((await fn())?.error);
  } catch (err) {
    return failure(err);
  }
}

async function thrown(fn) {
  try {
    await fn();
    return null;
  } catch (err) {
    return failure(err);
  }
}

function sdkVersion() {
  const main = require.resolve('@dapr/dapr');
  let dir = path.dirname(main);
  while (!fs.existsSync(path.join(dir, 'package.json'))) dir = path.dirname(dir);
  return JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version;
}

async function run() {
  const r = {
    sdkVersion: sdkVersion(),
    daprPort: Number(GRPC ? process.env.DAPR_GRPC_PORT : process.env.DAPR_HTTP_PORT),
    protocol: GRPC ? 'grpc' : 'http',
    tokenGiven: Boolean(process.env.DAPR_API_TOKEN),
  };
  const client = new DaprClient({
    daprHost: '127.0.0.1',
    daprPort: GRPC ? process.env.DAPR_GRPC_PORT : process.env.DAPR_HTTP_PORT,
    communicationProtocol: PROTOCOL,
  });
  // The SDK's own start-up check: it polls GET /v1.0/metadata until the sidecar answers.
  await client.start();
  const meta = await client.metadata.get();
  r.metadata = { id: meta.id, components: meta.components.map((c) => c.name) };

  // A client given nothing but the protocol finds the API through DAPR_HTTP_ENDPOINT (or
  // DAPR_GRPC_ENDPOINT) alone.
  const bare = new DaprClient({ communicationProtocol: PROTOCOL });
  r.bareMetadataId = (await bare.metadata.get()).id;

  // Save without ETags or options, then read back.
  r.save = await outcome(() =>
    client.state.save(STORE, [
        { key: 'order-1', value: { item: 'book', qty: 1 } },
        { key: 'greeting', value: 'hello' },
        { key: 'count', value: 42 },
      ]),
  );
  r.get = {
    order: await client.state.get(STORE, 'order-1'),
    greeting: await client.state.get(STORE, 'greeting'),
    count: await client.state.get(STORE, 'count'),
    missing: await client.state.get(STORE, 'missing'),
  };

  // getBulk is where the SDK hands out ETags.
  const bulk = await client.state.getBulk(STORE, ['order-1', 'greeting', 'missing']);
  r.bulk = bulk;
  const etagOf = async (key) => (await client.state.getBulk(STORE, [key]))[0].etag;
  const first = bulk.find((i) => i.key === 'order-1').etag;

  // Save with the current ETag and options: accepted, and the ETag changes.
  r.saveWithEtag = await outcome(() =>
    client.state.save(STORE, [
        {
          key: 'order-1',
          value: { item: 'book', qty: 2 },
          etag: first,
          options: {
            concurrency: StateConcurrencyEnum.CONCURRENCY_FIRST_WRITE,
            consistency: StateConsistencyEnum.CONSISTENCY_STRONG,
          },
        },
      ]),
  );
  const second = await etagOf('order-1');
  r.etagChanged = first !== second;
  // The stale ETag conflicts (the SDK returns the error rather than throwing), and the
  // value stays.
  r.staleSave = await outcome(() =>
    client.state.save(STORE, [
        {
          key: 'order-1',
          value: { item: 'book', qty: 99 },
          etag: first,
          options: { concurrency: StateConcurrencyEnum.CONCURRENCY_FIRST_WRITE },
        },
      ]),
  );
  r.afterStaleSave = await client.state.get(STORE, 'order-1', {
    consistency: StateConsistencyEnum.CONSISTENCY_STRONG,
  });
  // last-write ignores the stale ETag.
  r.lastWrite = await outcome(() =>
    client.state.save(STORE, [
        {
          key: 'order-1',
          value: { item: 'book', qty: 3 },
          etag: first,
          options: { concurrency: StateConcurrencyEnum.CONCURRENCY_LAST_WRITE },
        },
      ]),
  );
  r.afterLastWrite = await client.state.get(STORE, 'order-1');

  // Delete with a stale ETag conflicts and keeps the key; with the current one it goes.
  r.staleDelete = await outcome(() =>
    client.state.delete(STORE, 'order-1', { etag: first }),
  );
  r.afterStaleDelete = await client.state.get(STORE, 'order-1');
  const current = await etagOf('order-1');
  r.delete = await outcome(() =>
    client.state.delete(STORE, 'order-1', { etag: current }),
  );
  r.afterDelete = await client.state.get(STORE, 'order-1');

  // Transactions: all or nothing; a stale ETag fails the whole of it (the SDK throws).
  const countEtag = await etagOf('count');
  r.staleTransaction = await thrown(() =>
    client.state.transaction(STORE, [
      { operation: 'upsert', request: { key: 'tx-never', value: 'no' } },
      { operation: 'delete', request: { key: 'count', etag: first } },
    ]),
  );
  r.afterStaleTransaction = await client.state.get(STORE, 'tx-never');
  r.transaction = await thrown(() =>
    client.state.transaction(STORE, [
      { operation: 'upsert', request: { key: 'tx-1', value: 'one' } },
      {
        operation: 'upsert',
        request: {
          key: 'tx-2',
          // The SDK's gRPC client sends a transaction's values as they are and takes only
          // strings and buffers there; over HTTP it serialises objects itself.
          value: GRPC ? JSON.stringify({ n: 2 }) : { n: 2 },
          options: { concurrency: StateConcurrencyEnum.CONCURRENCY_FIRST_WRITE },
        },
      },
      { operation: 'delete', request: { key: 'count', etag: countEtag } },
    ]),
  );
  r.afterTransaction = await client.state.getBulk(STORE, ['tx-1', 'tx-2', 'count']);

  // save's options.metadata travels as metadata.* query parameters and applies to every item:
  // a TTL (checked by the test through the HTTP API's expiry header), and fencing tokens.
  r.saveWithTtl = await outcome(() =>
    client.state.save(STORE, [{ key: 'ttl-key', value: 'expires' }], {
        metadata: { ttlInSeconds: '3600' },
      }),
  );
  const fenced = async (token) =>
    await outcome(() =>
    client.state.save(STORE, [{ key: 'fenced', value: token }], {
          metadata: { fencingToken: String(token) },
        }),
  );
  r.fence = { five: await fenced(5), four: await fenced(4) };
  r.afterFence = await client.state.get(STORE, 'fenced');

  // Locks (alpha API), when this SDK version has the client.
  if (client.lock && typeof client.lock.lock === 'function') {
    r.lock = {
      granted: await client.lock.lock(STORE, 'resource-1', 'owner-a', 30),
      held: await client.lock.lock(STORE, 'resource-1', 'owner-b', 30),
      unlockOthers: await client.lock.unlock(STORE, 'resource-1', 'owner-b'),
      unlock: await client.lock.unlock(STORE, 'resource-1', 'owner-a'),
      unlockAgain: await client.lock.unlock(STORE, 'resource-1', 'owner-a'),
      regranted: await client.lock.lock(STORE, 'resource-1', 'owner-b', 30),
    };
  } else {
    console.log(`note: @dapr/dapr ${r.sdkVersion} has no lock client; locks not exercised`);
    r.lock = null;
  }

  // A last value for the test to read through the HTTP API under this app's id.
  r.final = await outcome(() =>
    client.state.save(STORE, [{ key: 'sdk-visible', value: { from: 'sdk' } }]),
  );
  await client.stop();
  return r;
}

function ready() {
  const fd = Number(process.env.HERD_READY_FD);
  if (Number.isInteger(fd) && fd > 0) fs.writeSync(fd, 'READY=1\n');
}

process.on('SIGTERM', () => process.exit(0));

run().then(
  (r) => {
    record(r);
    ready();
    // Stay up until herd stops this instance.
    setInterval(() => {}, 1 << 30);
  },
  (err) => {
    record({ error: String(err?.stack ?? err) });
    process.exit(1);
  },
);
