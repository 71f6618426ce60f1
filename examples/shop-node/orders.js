// orders: takes orders (examples/shop/README.md is the specification).
//
// POST /orders records the order in the intake (`statestore`, buckets `intake-N`), asks
// inventory for a reservation (service invocation, idempotent per order), then creates
// `order-<id>` in `orderstore` in a transaction whose operation metadata names the event type:
// the store's outbox publishes the order to topic `orders` in the same commit. A sweeper
// finishes intake entries that stayed without an order (a crash between the steps), and may
// finish one whose request is still under way: the request that added the intake entry answers
// 201 whoever stored the order. Also the order list and lookups, cancelling, and the storefront
// page.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const { serve, json, limitOf, HttpError } = require('./lib/http');
const { connect, read, readOne, transact, invoke, retrying } = require('./lib/sidecar');
const { bucketKey, entries, firstFound, addOnce } = require('./lib/buckets');

const STATESTORE = 'statestore';
const ORDERSTORE = 'orderstore';
const MAX_LINES = 20;
const MAX_QUANTITY = 1000;
/** How often the sweeper runs, ms (`SHOP_SWEEP_EVERY_MS`; tests make it sweep sooner). */
const SWEEP_EVERY_MS = msFromEnv('SHOP_SWEEP_EVERY_MS', 2000);
/** How old an intake entry must be before the sweeper takes it on, ms (`SHOP_SWEEP_AFTER_MS`). */
const SWEEP_AFTER_MS = msFromEnv('SHOP_SWEEP_AFTER_MS', 10_000);
const PAGE = path.join(__dirname, '..', 'shop', 'web', 'index.html');

/** The integer number of milliseconds in environment variable `name`, or `fallback`. */
function msFromEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^[0-9]+$/.test(raw)) {
    console.error(`orders: ${name} must be a number of milliseconds, not ${raw}`);
    process.exit(2);
  }
  return Number(raw);
}

const client = connect();
let ready = false;
/** Intake ids known to have their order, so the sweeper does not look them up again. */
const finished = new Set();

const orderKey = (id) => `order-${id}`;
/** An order with its fields in the specification's order (the store keeps them sorted). */
const shaped = (o) => ({ id: o.id, status: o.status, items: o.items, reason: o.reason ?? null, created: o.created });

/** The lines of an order body, or a 400. */
function linesOf(body) {
  if (!body || typeof body !== 'object' || Array.isArray(body) || !Array.isArray(body.items)) {
    throw new HttpError(400, 'an order is {"items": [{"item", "quantity"}]}');
  }
  if (body.items.length === 0) throw new HttpError(400, 'an order needs at least one line');
  if (body.items.length > MAX_LINES) throw new HttpError(400, `at most ${MAX_LINES} lines`);
  return body.items.map((line) => {
    if (!line || typeof line !== 'object' || typeof line.item !== 'string' || line.item === '') {
      throw new HttpError(400, 'each line names an item');
    }
    const q = line.quantity;
    if (!Number.isInteger(q) || q < 1 || q > MAX_QUANTITY) {
      throw new HttpError(400, `quantity must be an integer in 1..=${MAX_QUANTITY}`);
    }
    return { item: line.item, quantity: q };
  });
}

/** The order id: `o-<Idempotency-Key>`, or `o-` and 16 random hex digits. */
function orderId(req) {
  const key = req.headers['idempotency-key'];
  if (key === undefined) return { id: `o-${crypto.randomBytes(8).toString('hex')}`, keyed: false };
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(key)) {
    throw new HttpError(400, 'Idempotency-Key is 1 to 64 of [A-Za-z0-9_-]');
  }
  return { id: `o-${key}`, keyed: true };
}

/**
 * Adds the order to its intake bucket (kept as it is when already there); resolves `{value,
 * added}`: the entry, and whether this call added it (false for a repeat of the id).
 */
function intake(id, items) {
  return addOnce(client, STATESTORE, bucketKey('intake', id), id, { items, created: Date.now() });
}

/** Inventory's reservation for the order (the same answer every time for one order). */
async function reserve(id, items, traceparent) {
  const r = await invoke(client, 'inventory', 'reservations', { order: id, items }, traceparent);
  if (!r || !['reserved', 'rejected', 'released'].includes(r.status)) {
    throw new Error(`inventory answered ${JSON.stringify(r)}`);
  }
  return r;
}

/**
 * Creates the order with its event (the outbox); when one is stored already, that one stays.
 * Resolves `{order, created}`: `created` false when it met an existing order.
 */
async function store(id, entry, reservation) {
  const rejected = reservation.status === 'rejected';
  const order = {
    id,
    status: rejected ? 'rejected' : 'accepted',
    items: entry.items,
    reason: rejected ? (reservation.reason ?? 'rejected') : null,
    created: entry.created,
  };
  const type = rejected ? 'order.rejected' : 'order.created';
  const created = await transact(client, ORDERSTORE, [
    { key: orderKey(id), value: order, metadata: { type } },
  ]);
  finished.add(id);
  if (created) return { order, created };
  const existing = await readOne(client, ORDERSTORE, orderKey(id));
  // A conflict means the order is stored: not finding it is the store's fault, said plainly.
  if (!existing) throw new Error(`orderstore refused ${id} as stored but holds no such order`);
  return { order: existing.value, created: false };
}

async function place(ctx) {
  const items = linesOf(ctx.json());
  const { id, keyed } = orderId(ctx.req);
  if (keyed) {
    const existing = await readOne(client, ORDERSTORE, orderKey(id));
    if (existing) return json(200, shaped(existing.value));
  }
  const { value: entry, added } = await intake(id, items);
  let reservation;
  try {
    reservation = await reserve(id, entry.items, ctx.traceparent);
  } catch (err) {
    // The intake keeps the order; the sweeper finishes it once inventory answers again.
    console.error(`orders: reserving ${id}: ${err?.message ?? err}`);
    return json(503, { error: 'inventory is not available; the order will be completed', id });
  }
  const { order } = await store(id, entry, reservation);
  // 201 to the request that put the order in the intake, whoever stored it: the sweeper (a
  // request can outlast SWEEP_AFTER_MS on a loaded machine) or a concurrent repeat may have
  // stored it first. A repeat of the id answers 200.
  return json(added ? 201 : 200, shaped(order));
}

/** The intake's entries, newest first. */
async function newestFirst() {
  const all = await entries(client, STATESTORE, 'intake');
  all.sort(([a, x], [b, y]) => y.created - x.created || (a < b ? 1 : a > b ? -1 : 0));
  return all;
}

async function list(ctx) {
  const limit = limitOf(ctx.query);
  const ids = (await newestFirst()).map(([id]) => id);
  return json(200, (await firstFound(client, ORDERSTORE, ids, orderKey, limit)).map(shaped));
}

async function one(ctx) {
  const found = await readOne(client, ORDERSTORE, orderKey(ctx.params[0]));
  if (!found) throw new HttpError(404, 'no such order');
  return json(200, shaped(found.value));
}

async function cancel(ctx) {
  const key = orderKey(ctx.params[0]);
  return retrying(`cancelling ${key}`, async () => {
    const found = await readOne(client, ORDERSTORE, key);
    if (!found) throw new HttpError(404, 'no such order');
    const order = found.value;
    if (order.status === 'rejected') throw new HttpError(409, 'a rejected order cannot be cancelled');
    if (order.status === 'cancelled') return json(200, shaped(order));
    const next = { ...order, status: 'cancelled' };
    const write = { key, value: next, etag: found.etag, metadata: { type: 'order.cancelled' } };
    return (await transact(client, ORDERSTORE, [write])) ? json(200, shaped(next)) : undefined;
  });
}

function page() {
  let html;
  try {
    html = fs.readFileSync(PAGE, 'utf8');
  } catch {
    html = '<!doctype html><title>shop</title><p>The storefront page is examples/shop/web/index.html.</p>\n';
  }
  return { status: 200, body: html, headers: { 'content-type': 'text/html; charset=utf-8' } };
}

/** Finishes intake entries older than SWEEP_AFTER_MS that have no order yet. */
async function sweep() {
  const cutoff = Date.now() - SWEEP_AFTER_MS;
  const due = (await entries(client, STATESTORE, 'intake')).filter(
    ([id, e]) => !finished.has(id) && e && e.created < cutoff,
  );
  for (let i = 0; i < due.length; i += 100) {
    const chunk = due.slice(i, i + 100);
    const stored = await read(client, ORDERSTORE, chunk.map(([id]) => orderKey(id)));
    for (const [id, entry] of chunk) {
      if (stored.has(orderKey(id))) {
        finished.add(id);
        continue;
      }
      const reservation = await reserve(id, entry.items);
      const { order, created } = await store(id, entry, reservation);
      console.log(`orders: swept ${id}: ${created ? 'finished' : 'found finished'}, ${order.status}`);
    }
  }
}

function sweeping() {
  let running = null;
  const timer = setInterval(() => {
    if (running) return;
    running = sweep()
      .catch((err) => console.error(`orders: sweep: ${err?.message ?? err}`))
      .finally(() => {
        running = null;
      });
  }, SWEEP_EVERY_MS);
  return async () => {
    clearInterval(timer);
    await running;
  };
}

const server = serve({
  name: 'orders',
  ready: () => ready,
  routes: [
    ['GET', /^\/$/, page],
    ['POST', /^\/orders$/, place],
    ['GET', /^\/orders$/, list],
    ['GET', /^\/orders\/([^/]+)$/, one],
    ['POST', /^\/orders\/([^/]+)\/cancel$/, cancel],
  ],
});

client.start().then(
  () => {
    server.onStop(sweeping());
    ready = true;
  },
  (err) => {
    console.error(`orders: the sidecar API never answered: ${err?.message ?? err}`);
    process.exit(1);
  },
);
