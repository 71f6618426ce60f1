// inventory: keeps stock (examples/shop/README.md is the specification).
//
// `stock-<item>` and `catalog` live in `statestore`, seeded on first start. A reservation
// (`POST /reservations`, invoked by orders) reads the stock with ETags and writes every item's
// new stock and the reservation in one transaction; a conflict reads again and retries, so
// concurrent orders never take stock below zero. Within this instance, requests for the same
// items queue on a lock first (fewer conflicts; the ETags keep it correct across instances).
// `order.cancelled` events release a reservation's stock once.
'use strict';

const { serve, json, HttpError } = require('./lib/http');
const { connect, read, readOne, transact, retrying } = require('./lib/sidecar');

const STATESTORE = 'statestore';
const PUBSUB = 'pubsub';
/** The topic orders' outbox publishes to (`outboxPublishTopic` in herd.toml). */
const TOPIC = process.env.SHOP_TOPIC || 'orders';
const INITIAL_STOCK = Number(process.env.SHOP_INITIAL_STOCK ?? 100);
if (!Number.isInteger(INITIAL_STOCK) || INITIAL_STOCK < 0) {
  console.error(`inventory: SHOP_INITIAL_STOCK must be an integer >= 0, not ${process.env.SHOP_INITIAL_STOCK}`);
  process.exit(2);
}
/** The built-in catalog (prices in cents), seeded with INITIAL_STOCK of each. */
const CATALOG = [
  { id: 'apple', name: 'Apple', price: 45 },
  { id: 'bread', name: 'Sourdough bread', price: 420 },
  { id: 'cheese', name: 'Comté cheese', price: 890 },
  { id: 'coffee', name: 'Coffee beans', price: 1250 },
  { id: 'milk', name: 'Whole milk', price: 135 },
  { id: 'tea', name: 'Green tea', price: 560 },
];
const ITEM_ID = /^[A-Za-z0-9_-]{1,64}$/;

const client = connect();
let ready = false;

const stockKey = (id) => `stock-${id}`;
const reservationKey = (order) => `reservation-${order}`;
/** An item with its fields in the specification's order (the store keeps them sorted). */
const shaped = (i) => ({ id: i.id, name: i.name, price: i.price, available: i.available });

/** Per-item locks of this instance: `locked(ids, fn)` runs `fn` holding every id's lock. */
const tails = new Map();
async function locked(ids, fn) {
  const sorted = [...new Set(ids)].sort();
  const releases = [];
  for (const id of sorted) {
    const before = tails.get(id) ?? Promise.resolve();
    let release;
    const mine = new Promise((resolve) => {
      release = resolve;
    });
    const tail = before.then(() => mine);
    tails.set(id, tail);
    releases.push(() => {
      release();
      if (tails.get(id) === tail) tails.delete(id);
    });
    await before;
  }
  try {
    return await fn();
  } finally {
    releases.forEach((r) => r());
  }
}

/** Quantities per item, lines for the same item added up. */
function totals(items) {
  const out = new Map();
  for (const { item, quantity } of items) out.set(item, (out.get(item) ?? 0) + quantity);
  return out;
}

function reservationRequest(body) {
  const ok =
    body &&
    typeof body.order === 'string' &&
    body.order !== '' &&
    Array.isArray(body.items) &&
    body.items.length > 0 &&
    body.items.every(
      (l) => l && typeof l.item === 'string' && l.item !== '' && Number.isInteger(l.quantity) && l.quantity > 0,
    );
  if (!ok) throw new HttpError(400, 'a reservation is {"order", "items": [{"item", "quantity"}]}');
  return { order: body.order, items: body.items.map(({ item, quantity }) => ({ item, quantity })) };
}

/** The order's reservation: the one recorded, or a new one (reserved or rejected). */
async function reserve(order, items) {
  const key = reservationKey(order);
  const recorded = await readOne(client, STATESTORE, key);
  if (recorded) return recorded.value;
  const wanted = totals(items);
  const ids = [...wanted.keys()];
  return locked(ids, () =>
    retrying(`reserving for ${order}`, async () => {
      const found = await read(client, STATESTORE, [key, ...ids.map(stockKey)]);
      if (found.has(key)) return found.get(key).value;
      let reason = null;
      for (const [id, quantity] of wanted) {
        const stock = found.get(stockKey(id));
        if (!stock) reason ??= `unknown item: ${id}`;
        else if (stock.value.available < quantity) reason ??= `out of stock: ${id}`;
      }
      const reservation = { order, status: reason ? 'rejected' : 'reserved', items, reason };
      const writes = [{ key, value: reservation }];
      if (!reason) {
        for (const [id, quantity] of wanted) {
          const stock = found.get(stockKey(id));
          const value = { ...stock.value, available: stock.value.available - quantity };
          writes.push({ key: stockKey(id), value, etag: stock.etag });
        }
      }
      return (await transact(client, STATESTORE, writes)) ? reservation : undefined;
    }),
  );
}

/** Gives a reserved reservation's stock back, once; anything else is left as it is. */
async function release(order) {
  const key = reservationKey(order);
  const recorded = await readOne(client, STATESTORE, key);
  if (!recorded || recorded.value.status !== 'reserved') return;
  const wanted = totals(recorded.value.items);
  const ids = [...wanted.keys()];
  await locked(ids, () =>
    retrying(`releasing ${order}`, async () => {
      const found = await read(client, STATESTORE, [key, ...ids.map(stockKey)]);
      const r = found.get(key);
      if (!r || r.value.status !== 'reserved') return true;
      const writes = [{ key, value: { ...r.value, status: 'released' }, etag: r.etag }];
      for (const [id, quantity] of wanted) {
        const stock = found.get(stockKey(id));
        if (!stock) continue;
        const value = { ...stock.value, available: stock.value.available + quantity };
        writes.push({ key: stockKey(id), value, etag: stock.etag });
      }
      return (await transact(client, STATESTORE, writes)) ? true : undefined;
    }),
  );
}

async function items() {
  const catalog = await readOne(client, STATESTORE, 'catalog');
  const ids = Array.isArray(catalog?.value) ? catalog.value : [];
  const found = await read(client, STATESTORE, ids.map(stockKey));
  const out = [...found.values()].map((s) => shaped(s.value));
  out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return json(200, out);
}

async function item(ctx) {
  const found = await readOne(client, STATESTORE, stockKey(ctx.params[0]));
  if (!found) throw new HttpError(404, 'no such item');
  return json(200, shaped(found.value));
}

async function setItem(ctx) {
  const id = ctx.params[0];
  if (!ITEM_ID.test(id)) throw new HttpError(400, 'an item id is 1 to 64 of [A-Za-z0-9_-]');
  const body = ctx.json();
  const valid =
    body &&
    typeof body === 'object' &&
    Number.isInteger(body.available) &&
    body.available >= 0 &&
    (body.name === undefined || (typeof body.name === 'string' && body.name !== '')) &&
    (body.price === undefined || (Number.isInteger(body.price) && body.price >= 0));
  if (!valid) throw new HttpError(400, 'an item is {"name"?, "price"?, "available"}: price and available integers >= 0');
  return locked([id], () =>
    retrying(`setting ${id}`, async () => {
      const found = await read(client, STATESTORE, [stockKey(id), 'catalog']);
      const old = found.get(stockKey(id));
      const value = {
        id,
        name: body.name ?? old?.value.name ?? id,
        price: body.price ?? old?.value.price ?? 0,
        available: body.available,
      };
      const writes = [{ key: stockKey(id), value, etag: old?.etag }];
      const catalog = found.get('catalog');
      const ids = Array.isArray(catalog?.value) ? catalog.value : [];
      if (!ids.includes(id)) {
        writes.push({ key: 'catalog', value: [...ids, id].sort(), etag: catalog?.etag });
      }
      return (await transact(client, STATESTORE, writes)) ? json(200, value) : undefined;
    }),
  );
}

async function reservations(ctx) {
  const { order, items: lines } = reservationRequest(ctx.json());
  return json(200, await reserve(order, lines));
}

/** A delivery of `order.cancelled`: the event's data is the order. */
async function cancelled(ctx) {
  const order = ctx.json()?.data;
  if (!order || typeof order.id !== 'string') return json(200, { status: 'DROP' });
  try {
    await release(order.id);
    return json(200, { status: 'SUCCESS' });
  } catch (err) {
    console.error(`inventory: releasing ${order.id}: ${err?.message ?? err}`);
    return json(200, { status: 'RETRY' });
  }
}

function subscriptions() {
  return json(200, [
    {
      pubsubname: PUBSUB,
      topic: TOPIC,
      routes: {
        rules: [{ match: 'event.type == "order.cancelled"', path: '/events/order-cancelled' }],
        default: '/events/other',
      },
    },
  ]);
}

/** Creates the built-in catalog and its stock unless they exist (one transaction, create only). */
async function seed() {
  const writes = [{ key: 'catalog', value: CATALOG.map((i) => i.id).sort() }];
  for (const i of CATALOG) writes.push({ key: stockKey(i.id), value: { ...i, available: INITIAL_STOCK } });
  const created = await transact(client, STATESTORE, writes);
  console.log(created ? 'inventory: seeded the catalog' : 'inventory: catalog already there');
}

serve({
  name: 'inventory',
  ready: () => ready,
  routes: [
    ['GET', /^\/dapr\/subscribe$/, subscriptions],
    ['GET', /^\/items$/, items],
    ['GET', /^\/items\/([^/]+)$/, item],
    ['PUT', /^\/items\/([^/]+)$/, setItem],
    ['POST', /^\/reservations$/, reservations],
    ['POST', /^\/events\/order-cancelled$/, cancelled],
    ['POST', /^\/events\/other$/, () => json(200, { status: 'SUCCESS' })],
  ],
});

client
  .start()
  .then(seed)
  .then(
    () => {
      ready = true;
    },
    (err) => {
      console.error(`inventory: start-up failed: ${err?.message ?? err}`);
      process.exit(1);
    },
  );
