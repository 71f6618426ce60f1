// notifications: tells customers what happened to their orders (examples/shop/README.md is the
// specification).
//
// Subscribed to topic `orders` (order.created → /events/order-created, order.rejected →
// /events/order-rejected, anything else → /events/other, acknowledged). A delivery creates
// `notification-<order>` and adds it to its index bucket (`index-N`, ETag) in one transaction;
// a delivery that finds the notification already there is a redelivery (pub/sub is
// at-least-once) and is acknowledged without a second notification.
'use strict';

const { serve, json, limitOf, HttpError } = require('./lib/http');
const { connect, read, readOne, transact, retrying } = require('./lib/sidecar');
const { bucketKey, entries, firstFound } = require('./lib/buckets');

const STATESTORE = 'statestore';
const PUBSUB = 'pubsub';
/** The topic orders' outbox publishes to (`outboxPublishTopic` in herd.toml). */
const TOPIC = process.env.SHOP_TOPIC || 'orders';

const client = connect();
let ready = false;

const notificationKey = (order) => `notification-${order}`;
/** A notification with its fields in the specification's order (the store keeps them sorted). */
const shaped = (n) => ({ order: n.order, kind: n.kind, message: n.message, received: n.received });

function message(kind, order) {
  if (kind === 'rejected') return `Order ${order.id} was rejected: ${order.reason ?? 'no reason given'}`;
  const lines = (order.items ?? []).map((l) => `${l.quantity} × ${l.item}`).join(', ');
  return `Order ${order.id} was accepted: ${lines}`;
}

/** Records the notification of `order` once; resolves true, or false for a redelivery. */
function record(kind, order) {
  const key = notificationKey(order.id);
  const bucket = bucketKey('index', order.id);
  return retrying(`notifying ${order.id}`, async () => {
    const found = await read(client, STATESTORE, [key, bucket]);
    if (found.has(key)) return false;
    const notification = { order: order.id, kind, message: message(kind, order), received: Date.now() };
    const index = found.get(bucket);
    const writes = [
      { key, value: notification },
      { key: bucket, value: { ...(index?.value ?? {}), [order.id]: notification.received }, etag: index?.etag },
    ];
    return (await transact(client, STATESTORE, writes)) ? true : undefined;
  });
}

/** A delivery's handler for `kind`: the event's data is the order. */
function delivered(kind) {
  return async (ctx) => {
    const order = ctx.json()?.data;
    if (!order || typeof order.id !== 'string' || order.id === '') {
      console.error(`notifications: an event without an order: ${ctx.text.slice(0, 200)}`);
      return json(200, { status: 'DROP' });
    }
    try {
      const fresh = await record(kind, order);
      if (!fresh) console.log(`notifications: ${order.id} again (a redelivery); acknowledged`);
      return json(200, { status: 'SUCCESS' });
    } catch (err) {
      console.error(`notifications: ${order.id}: ${err?.message ?? err}`);
      return json(200, { status: 'RETRY' });
    }
  };
}

async function list(ctx) {
  const limit = limitOf(ctx.query);
  const all = await entries(client, STATESTORE, 'index');
  all.sort(([a, x], [b, y]) => y - x || (a < b ? 1 : a > b ? -1 : 0));
  const orders = all.map(([order]) => order);
  return json(200, (await firstFound(client, STATESTORE, orders, notificationKey, limit)).map(shaped));
}

async function one(ctx) {
  const found = await readOne(client, STATESTORE, notificationKey(ctx.params[0]));
  if (!found) throw new HttpError(404, 'no notification for this order yet');
  return json(200, shaped(found.value));
}

function subscriptions() {
  return json(200, [
    {
      pubsubname: PUBSUB,
      topic: TOPIC,
      routes: {
        rules: [
          { match: 'event.type == "order.created"', path: '/events/order-created' },
          { match: 'event.type == "order.rejected"', path: '/events/order-rejected' },
        ],
        default: '/events/other',
      },
    },
  ]);
}

serve({
  name: 'notifications',
  ready: () => ready,
  routes: [
    ['GET', /^\/dapr\/subscribe$/, subscriptions],
    ['GET', /^\/notifications$/, list],
    ['GET', /^\/notifications\/([^/]+)$/, one],
    ['POST', /^\/events\/order-created$/, delivered('created')],
    ['POST', /^\/events\/order-rejected$/, delivered('rejected')],
    ['POST', /^\/events\/other$/, () => json(200, { status: 'SUCCESS' })],
  ],
});

client.start().then(
  () => {
    ready = true;
  },
  (err) => {
    console.error(`notifications: the sidecar API never answered: ${err?.message ?? err}`);
    process.exit(1);
  },
);
