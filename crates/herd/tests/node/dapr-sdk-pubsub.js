// The official Dapr JavaScript SDK (`@dapr/dapr`, HTTP protocol, or gRPC with SDK_PROTOCOL=grpc)
// doing pub/sub against herd, unchanged. Run as a herd `port = "auto"` service, it is both ends:
//
// - a subscriber: a DaprServer listening on APP_PORT (or PORT) with its subscriptions registered
//   before `server.start()`, as the SDK asks; herd finds them through the SDK's own
//   GET /dapr/subscribe and delivers to the SDK's routes. The subscriptions cover the plain form
//   (`subscribe`), content-based routing rules with a default route, a handler answering
//   DaprPubSubStatusEnum.RETRY once, and one answering DROP with a dead-letter topic, whose
//   messages a further subscription receives;
// - a publisher: once herd's metadata lists every subscription, the embedded DaprClient
//   publishes plain JSON, text, JSON with an explicit content type and request metadata, two
//   CloudEvents of its own and a bulk publish (`publishBulk`) mixing all of them.
//
// Every handler call is appended as one JSON line {kind: "delivery", ...} to SDK_EVENTS_FILE:
// what the SDK handed the handler (data and the headers it exposes) and what the handler
// answered. A middleware on the Express app the SDK serves (passed in as `serverHttp`) appends
// {kind: "wire", ...} with the CloudEvent as it arrived and the HTTP status, so the test sees
// the envelope the SDK does not pass on. The publish results go to SDK_RESULT_FILE (via a
// rename); a failure is recorded there as {"error": "..."} and the process exits 1. The checks
// live in crates/herd/tests/it/sdk_pubsub.rs: this program only observes. It stays up until
// SIGTERM.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { DaprServer, CommunicationProtocolEnum, DaprPubSubStatusEnum } = require('@dapr/dapr');
// The Express the SDK itself depends on, so the app it serves is the one it expects.
const express = require(require.resolve('express', { paths: [require.resolve('@dapr/dapr')] }));

const PUBSUB = 'pubsub';
const GRPC = process.env.SDK_PROTOCOL === 'grpc';
const TOPIC = {
  plain: 'sdk-plain',
  routed: 'sdk-routed',
  bulk: 'sdk-bulk',
  retry: 'sdk-retry',
  drop: 'sdk-drop',
  dead: 'sdk-dead',
};
const resultFile = process.env.SDK_RESULT_FILE;
const eventsFile = process.env.SDK_EVENTS_FILE;

function append(line) {
  fs.appendFileSync(eventsFile, `${JSON.stringify(line)}\n`);
}

function record(result) {
  const line = JSON.stringify(result);
  console.log(`sdk-result ${line}`);
  const tmp = `${resultFile}.tmp`;
  fs.writeFileSync(tmp, `${line}\n`);
  fs.renameSync(tmp, resultFile);
}

function sdkVersion() {
  let dir = path.dirname(require.resolve('@dapr/dapr'));
  while (!fs.existsSync(path.join(dir, 'package.json'))) dir = path.dirname(dir);
  return JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version;
}

// A handler recording what the SDK gave it, answering `answer(data)` (a status or undefined).
function handler(topic, route, answer = () => undefined) {
  return async (data, headers) => {
    const status = answer(data);
    append({
      kind: 'delivery',
      topic,
      route,
      data,
      headers: {
        contentType: headers['content-type'],
        traceparent: headers.traceparent,
        pubsubname: headers.pubsubname,
      },
      answer: status ?? null,
    });
    return status;
  };
}

async function run() {
  // Seen on the wire before the SDK's body parsers and routes; recorded once answered.
  const app = express();
  app.use((req, res, next) => {
    if (req.method === 'POST') {
      res.on('finish', () =>
        append({ kind: 'wire', path: req.path, status: res.statusCode, event: req.body ?? null }),
      );
    }
    next();
  });

  // With SDK_PROTOCOL=grpc the server is the SDK's AppCallback gRPC server (herd runs the
  // service with app_protocol = "grpc") and the client speaks Dapr's gRPC API; there is no
  // Express app then, so no wire lines.
  const protocol = GRPC ? CommunicationProtocolEnum.GRPC : CommunicationProtocolEnum.HTTP;
  const server = new DaprServer({
    serverHost: '127.0.0.1',
    serverPort: String(process.env.APP_PORT ?? process.env.PORT),
    communicationProtocol: protocol,
    ...(GRPC ? {} : { serverHttp: app }),
    clientOptions: {
      daprHost: '127.0.0.1',
      daprPort: GRPC ? process.env.DAPR_GRPC_PORT : process.env.DAPR_HTTP_PORT,
      communicationProtocol: protocol,
    },
  });

  // The plain form: the SDK's default route for the topic.
  await server.pubsub.subscribe(PUBSUB, TOPIC.plain, handler(TOPIC.plain, 'default'));
  await server.pubsub.subscribe(PUBSUB, TOPIC.bulk, handler(TOPIC.bulk, 'default'));
  // Routing rules (CEL on event.type) and a default route, each with its own handler.
  await server.pubsub.subscribeWithOptions(PUBSUB, TOPIC.routed, {
    route: {
      default: '/other',
      rules: [{ match: "event.type == 'order.created'", path: '/created' }],
    },
  });
  for (const route of ['created', 'other']) {
    server.pubsub.subscribeToRoute(PUBSUB, TOPIC.routed, `/${route}`, handler(TOPIC.routed, route));
  }
  // RETRY the first time a key is seen, SUCCESS after.
  const seen = new Set();
  await server.pubsub.subscribe(
    PUBSUB,
    TOPIC.retry,
    handler(TOPIC.retry, 'default', (data) => {
      if (seen.has(data.key)) return DaprPubSubStatusEnum.SUCCESS;
      seen.add(data.key);
      return DaprPubSubStatusEnum.RETRY;
    }),
  );
  // DROP, with a dead-letter topic that another subscription reads.
  await server.pubsub.subscribeWithOptions(PUBSUB, TOPIC.drop, {
    deadLetterTopic: TOPIC.dead,
    callback: handler(TOPIC.drop, 'default', () => DaprPubSubStatusEnum.DROP),
  });
  await server.pubsub.subscribe(PUBSUB, TOPIC.dead, handler(TOPIC.dead, 'default'));

  // Listens, serves GET /dapr/subscribe, then waits for the sidecar.
  await server.start();
  const client = server.client;

  // Publish only once herd consumes every topic (its metadata lists active subscriptions).
  const wanted = Object.values(TOPIC);
  const deadline = Date.now() + 30_000;
  let meta;
  for (;;) {
    meta = await client.metadata.get();
    // The SDK's gRPC metadata has no subscriptions: the test creates SDK_GO_FILE once herd's
    // own metadata lists them.
    if (GRPC && fs.existsSync(process.env.SDK_GO_FILE)) break;
    const active = new Set((meta.subscriptions ?? []).map((s) => s.topic));
    if (wanted.every((t) => active.has(t))) break;
    if (Date.now() > deadline) {
      throw new Error(`subscriptions never became active: ${JSON.stringify(meta.subscriptions)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }

  const r = {
    protocol: GRPC ? 'grpc' : 'http',
    sdkVersion: sdkVersion(),
    appId: meta.id,
    subscriptions: meta.subscriptions,
    publish: {},
  };
  const pub = async (name, topic, data, options) => {
    r.publish[name] = await client.pubsub.publish(PUBSUB, topic, data, options);
  };
  await pub('json', TOPIC.plain, { kind: 'json', n: 1 });
  await pub('text', TOPIC.plain, 'hello from the sdk');
  await pub(
    'typed',
    TOPIC.plain,
    { kind: 'typed', n: 2 },
    { contentType: 'application/json', metadata: { ttlInSeconds: '300' } },
  );
  // CloudEvents of the publisher's own: their attributes are kept, and event.type routes them.
  const cloudEvent = (id, type, data) => ({
    specversion: '1.0',
    id,
    source: 'sdk-test',
    type,
    datacontenttype: 'application/json',
    data,
  });
  await pub('created', TOPIC.routed, cloudEvent('ce-created', 'order.created', { order: 7 }));
  await pub('paid', TOPIC.routed, cloudEvent('ce-paid', 'order.paid', { order: 7 }));
  await pub('routedJson', TOPIC.routed, { kind: 'json-routed' });
  r.bulk = await client.pubsub.publishBulk(PUBSUB, TOPIC.bulk, [
    { bulk: 1 },
    { bulk: 2 },
    'bulk text',
    {
      entryID: 'entry-ce',
      event: cloudEvent('ce-bulk', 'bulk.event', { bulk: 3 }),
      contentType: 'application/cloudevents+json',
    },
  ]);
  // The SDK reports failed entries with their errors; keep what can be serialised.
  r.bulk = {
    failed: r.bulk.failedMessages.map((f) => ({
      entryID: f.message.entryID,
      error: String(f.error?.message ?? f.error),
    })),
  };
  await pub('retry', TOPIC.retry, { key: 'again' });
  await pub('drop', TOPIC.drop, { key: 'dropped' });
  for (const [name, outcome] of Object.entries(r.publish)) {
    r.publish[name] = outcome.error ? String(outcome.error.message ?? outcome.error) : null;
  }
  return r;
}

process.on('SIGTERM', () => process.exit(0));

run().then(
  (r) => record(r),
  (err) => {
    record({ error: String(err?.stack ?? err) });
    process.exit(1);
  },
);
