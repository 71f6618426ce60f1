// bench/pubsub-app.js — the load and the subscriber of bench/pubsub.sh (P4) and bench/r4.sh (R4).
//
// Node.js 18+; the broker clients (amqplib, nats) are loaded only by the roles that need them, from
// NODE_PATH (the scripts install them under /tmp with npm). Usage: node pubsub-app.js <role>
//
// Every message is a 1 KB JSON object {run, seq, t, pad}: `run` names the measured run, `seq` its
// number within the run (0, 1, 2, ... in the order publishes start), `t` the send time in
// microseconds of CLOCK_MONOTONIC (process.hrtime, the same clock in every process of the machine),
// `pad` fills the JSON to MSG_BYTES. A subscriber computes end-to-end latency = its receive time −
// t, and keeps one counter per seq, so every message is counted: unique, duplicated, missing.
//
// Roles:
//   sub-http   herd's subscriber app (a `port = "auto"` service): every POST on $PORT is a
//              delivery (a CloudEvent whose `data` is the message), answered 200 after it is
//              counted. With RECORD_FILE it also appends "<run> <seq>\n" to that file (one write(2)
//              per delivery, before the answer, so a kill -9 of the app loses no answered
//              delivery) — R4's record. A bulk delivery (Dapr's bulk envelope) counts every
//              entry and answers {"statuses": [{entryId, status: "SUCCESS"}, ...]}.
//   sub-amqp   RabbitMQ consumer: QUEUE, prefetch SUB_IN_FLIGHT, manual acks (after counting).
//   sub-nats   JetStream consumer: STREAM / durable CONSUMER (created by `setup-nats`), pull
//              consume with max_messages SUB_IN_FLIGHT, explicit acks (after counting).
//              All three serve GET /stats?run=R on 127.0.0.1:$STATS_PORT:
//              {run, received, unique, duplicates, other, maxSeq, firstSend, lastRecv, rate,
//               p50, p99, max (ms)}; GET /missing?run=R&n=N lists seqs < N never received.
//   pub        publisher: TARGET=herd|amqp|nats, IN_FLIGHT publishes in flight, each acknowledged
//              before the next on that lane (herd: POST /v1.0/publish/{PUBSUB}/{TOPIC}, 204 =
//              acknowledged; amqp: a confirm channel, persistent message to QUEUE on the default
//              exchange, the broker's confirm; nats: js.publish to SUBJECT, the PubAck). Runs for
//              DURATION seconds, or until TOTAL publishes are acknowledged. A failed publish is
//              counted (and, with RETRY_MS, the lane waits that long before its next publish, which
//              gets a new seq: a Jepsen-style queue client, no retries under the same id).
//              PROGRESS_FILE: "<acked> <failed>" rewritten every 50 ms. ACKED_FILE: every
//              acknowledged seq, one per line, written at the end; FAILED_FILE likewise for the
//              failed ones. Prints one JSON line: {acked, failed, attempted, seconds, ackRate,
//              ackP50, ackP99 (ms), errors: {reason: count}}.
//   setup-amqp / cleanup-amqp    declare QUEUE (durable; x-queue-type QUEUE_TYPE) / delete the
//              queues in DELETE_QUEUES and exchanges in DELETE_EXCHANGES (space-separated).
//   setup-nats / cleanup-nats    add STREAM (file storage, subject SUBJECT) and its durable
//              CONSUMER (explicit acks, max_ack_pending SUB_IN_FLIGHT) / delete the streams in
//              DELETE_STREAMS.
//   r4-check   reads ACKED_FILE, FAILED_FILE and every RECORD_FILE* (RECORD_GLOB_DIR, names
//              starting with RECORD_PREFIX) and prints the total-queue check as JSON:
//              {acked, failedAttempts, delivered (unique ids), deliveries, lost, unexpected,
//               duplicated (ids delivered more than once), extraDeliveries, lostSample}.
"use strict";
const http = require("http");
const fs = require("fs");
const path = require("path");

const env = (k, d) => (process.env[k] === undefined || process.env[k] === "" ? d : process.env[k]);
const nowUs = () => Number(process.hrtime.bigint() / 1000n);
const MSG_BYTES = Number(env("MSG_BYTES", 1024));

function message(run, seq) {
  const t = nowUs();
  const pad = Math.max(0, MSG_BYTES - Buffer.byteLength(JSON.stringify({ run, seq, t, pad: "" })));
  return JSON.stringify({ run, seq, t, pad: "x".repeat(pad) });
}

// --- counting (all subscribers) -----------------------------------------------------------
const runs = new Map(); // run -> state
function runState(run) {
  let s = runs.get(run);
  if (!s) {
    s = { seen: new Uint8Array(1 << 16), lat: new Float64Array(1 << 16), n: 0, received: 0,
          unique: 0, duplicates: 0, maxSeq: -1, firstSend: Infinity, lastRecv: 0 };
    runs.set(run, s);
  }
  return s;
}
let other = 0; // deliveries that are not benchmark messages
function count(msg) {
  if (!msg || typeof msg.run !== "string" || !Number.isInteger(msg.seq)) { other++; return; }
  const now = nowUs();
  const s = runState(msg.run);
  while (msg.seq >= s.seen.length) {
    const grown = new Uint8Array(s.seen.length * 2); grown.set(s.seen); s.seen = grown;
  }
  s.received++;
  if (s.seen[msg.seq] === 0) s.unique++; else s.duplicates++;
  if (s.seen[msg.seq] < 255) s.seen[msg.seq]++;
  if (msg.seq > s.maxSeq) s.maxSeq = msg.seq;
  if (msg.t < s.firstSend) s.firstSend = msg.t;
  if (now > s.lastRecv) s.lastRecv = now;
  if (s.n === s.lat.length) { const g = new Float64Array(s.lat.length * 2); g.set(s.lat); s.lat = g; }
  s.lat[s.n++] = (now - msg.t) / 1000;
}
function pct(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}
function stats(run) {
  const s = runs.get(run);
  if (!s) return { run, received: 0, unique: 0, duplicates: 0, other, maxSeq: -1 };
  const lat = s.lat.slice(0, s.n).sort();
  const secs = (s.lastRecv - s.firstSend) / 1e6;
  return { run, received: s.received, unique: s.unique, duplicates: s.duplicates, other,
           maxSeq: s.maxSeq, seconds: secs, rate: secs > 0 ? s.unique / secs : 0,
           p50: pct(lat, 50), p99: pct(lat, 99), max: lat.length ? lat[lat.length - 1] : null };
}
function statsServer() {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    const run = url.searchParams.get("run") || "";
    let body;
    if (url.pathname === "/stats") body = stats(run);
    else if (url.pathname === "/missing") {
      const n = Number(url.searchParams.get("n") || 0), s = runs.get(run), out = [];
      for (let i = 0; i < n && out.length < 1000; i++) if (!s || i >= s.seen.length || s.seen[i] === 0) out.push(i);
      body = out;
    } else if (url.pathname === "/forget") { runs.delete(run); body = {}; }
    else { res.statusCode = 404; res.end(); return; }
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify(body));
  });
  server.listen(Number(env("STATS_PORT")), "127.0.0.1");
  return server;
}

// --- sub-http: herd's subscriber app --------------------------------------------------------
function subHttp() {
  const recordFd = process.env.RECORD_FILE ? fs.openSync(process.env.RECORD_FILE, "a") : null;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      if (req.method !== "POST") {
        res.setHeader("content-type", "application/json");
        res.end(req.url === "/dapr/subscribe" ? "[]" : "ok");
        return;
      }
      let event = null;
      try { event = JSON.parse(Buffer.concat(chunks).toString()); } catch (e) { event = null; }
      if (event && event.type === "com.dapr.event.sent.bulk" && Array.isArray(event.entries)) {
        // A bulk delivery: every entry counted, each answered SUCCESS.
        const statuses = event.entries.map((entry) => {
          const msg = entry.event && entry.event.data;
          if (recordFd !== null && msg && msg.run !== undefined) fs.writeSync(recordFd, `${msg.run} ${msg.seq}\n`);
          count(msg);
          return { entryId: entry.entryId, status: "SUCCESS" };
        });
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify({ statuses }));
        return;
      }
      const msg = event && event.data;
      if (recordFd !== null && msg && msg.run !== undefined) fs.writeSync(recordFd, `${msg.run} ${msg.seq}\n`);
      count(msg);
      res.end();
    });
  });
  server.keepAliveTimeout = 60000;
  server.listen(Number(env("PORT")), "127.0.0.1");
  if (process.env.STATS_PORT) statsServer();
  process.on("SIGTERM", () => process.exit(0));
}

// --- broker clients -------------------------------------------------------------------------
function amqpUrl() { return env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672"); }
function natsServers() { return env("NATS_URL", "nats://127.0.0.1:4222"); }

async function subAmqp() {
  const amqp = require("amqplib");
  const conn = await amqp.connect(amqpUrl());
  const ch = await conn.createChannel();
  await ch.prefetch(Number(env("SUB_IN_FLIGHT", 64)));
  await ch.consume(env("QUEUE"), (m) => {
    if (!m) return;
    let msg = null;
    try { msg = JSON.parse(m.content.toString()); } catch (e) { msg = null; }
    count(msg);
    ch.ack(m);
  }, { noAck: false });
  statsServer();
  process.on("SIGTERM", async () => { try { await conn.close(); } catch (e) { /* closing */ } process.exit(0); });
}

async function subNats() {
  const { connect } = require("nats");
  const nc = await connect({ servers: natsServers() });
  const js = nc.jetstream();
  const consumer = await js.consumers.get(env("STREAM"), env("CONSUMER"));
  statsServer();
  process.on("SIGTERM", async () => { try { await nc.close(); } catch (e) { /* closing */ } process.exit(0); });
  const messages = await consumer.consume({ max_messages: Number(env("SUB_IN_FLIGHT", 64)) });
  for await (const m of messages) {
    let msg = null;
    try { msg = JSON.parse(Buffer.from(m.data).toString()); } catch (e) { msg = null; }
    count(msg);
    m.ack();
  }
}

// --- pub --------------------------------------------------------------------------------------
async function publisher() {
  const target = env("TARGET");
  const run = env("RUN");
  const inFlight = Number(env("IN_FLIGHT", 64));
  const duration = Number(env("DURATION", 0)) * 1e6;
  const total = Number(env("TOTAL", 0));
  const retryMs = Number(env("RETRY_MS", 0));
  let send, close = async () => {};
  if (target === "herd") {
    const agent = new http.Agent({ keepAlive: true, maxSockets: inFlight });
    const pathName = `/v1.0/publish/${env("PUBSUB")}/${env("TOPIC")}`;
    const port = Number(env("API_PORT"));
    send = (body) => new Promise((resolve) => {
      const req = http.request({ host: "127.0.0.1", port, path: pathName, method: "POST", agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode === 204 ? null : `status ${res.statusCode}`));
        res.on("error", (e) => resolve(e.code || String(e)));
      });
      req.setTimeout(30000, () => req.destroy(new Error("timeout")));
      req.on("error", (e) => resolve(e.code || e.message));
      req.end(body);
    });
    close = async () => agent.destroy();
  } else if (target === "amqp") {
    const amqp = require("amqplib");
    const conn = await amqp.connect(amqpUrl());
    const ch = await conn.createConfirmChannel();
    const queue = env("QUEUE");
    send = (body) => new Promise((resolve) => {
      ch.sendToQueue(queue, Buffer.from(body), { persistent: true, contentType: "application/json" },
        (err) => resolve(err ? String(err.message || err) : null));
    });
    close = async () => { await conn.close(); };
  } else if (target === "nats") {
    const { connect } = require("nats");
    const nc = await connect({ servers: natsServers() });
    const js = nc.jetstream();
    const subject = env("SUBJECT");
    send = (body) => js.publish(subject, Buffer.from(body)).then(() => null, (e) => String(e.code || e.message));
    close = async () => { await nc.close(); };
  } else {
    throw new Error(`TARGET=${target}: expected herd, amqp or nats`);
  }
  const ackedSeqs = [], failedSeqs = [], errors = {};
  const lat = [];
  let next = 0, acked = 0, failed = 0;
  const t0 = nowUs();
  const done = () => (total > 0 ? acked >= total : nowUs() - t0 >= duration);
  const progressFile = process.env.PROGRESS_FILE;
  let timer = null;
  if (progressFile) {
    const write = () => { fs.writeFileSync(`${progressFile}.tmp`, `${acked} ${failed}\n`); fs.renameSync(`${progressFile}.tmp`, progressFile); };
    timer = setInterval(write, 50);
  }
  const lane = async () => {
    while (!done()) {
      const seq = next++;
      const started = nowUs();
      const err = await send(message(run, seq));
      if (err === null) {
        acked++; ackedSeqs.push(seq); lat.push((nowUs() - started) / 1000);
      } else {
        failed++; failedSeqs.push(seq); errors[err] = (errors[err] || 0) + 1;
        if (retryMs > 0) await new Promise((r) => setTimeout(r, retryMs));
      }
    }
  };
  await Promise.all(Array.from({ length: inFlight }, lane));
  const seconds = (nowUs() - t0) / 1e6;
  if (timer) { clearInterval(timer); fs.writeFileSync(progressFile, `${acked} ${failed}\n`); }
  if (process.env.ACKED_FILE) fs.writeFileSync(process.env.ACKED_FILE, ackedSeqs.join("\n") + "\n");
  if (process.env.FAILED_FILE) fs.writeFileSync(process.env.FAILED_FILE, failedSeqs.length ? failedSeqs.join("\n") + "\n" : "");
  await close();
  lat.sort((a, b) => a - b);
  console.log(JSON.stringify({ acked, failed, attempted: next, seconds, ackRate: acked / seconds,
    ackP50: pct(lat, 50), ackP99: pct(lat, 99), errors }));
}

// --- broker topology ----------------------------------------------------------------------------
const words = (k) => env(k, "").split(/\s+/).filter(Boolean);

async function setupAmqp() {
  const amqp = require("amqplib");
  const conn = await amqp.connect(amqpUrl());
  const ch = await conn.createChannel();
  await ch.assertQueue(env("QUEUE"), { durable: true, arguments: { "x-queue-type": env("QUEUE_TYPE", "classic") } });
  await conn.close();
}
async function cleanupAmqp() {
  const amqp = require("amqplib");
  const conn = await amqp.connect(amqpUrl());
  let ch = await conn.createChannel();
  ch.on("error", () => {});
  const gone = [];
  for (const q of words("DELETE_QUEUES")) {
    try { await ch.deleteQueue(q); gone.push(`queue ${q}`); } catch (e) { ch = await conn.createChannel(); ch.on("error", () => {}); }
  }
  for (const x of words("DELETE_EXCHANGES")) {
    try { await ch.deleteExchange(x); gone.push(`exchange ${x}`); } catch (e) { ch = await conn.createChannel(); ch.on("error", () => {}); }
  }
  await conn.close();
  console.log(gone.join(", "));
}
async function setupNats() {
  const { connect, StorageType, AckPolicy } = require("nats");
  const nc = await connect({ servers: natsServers() });
  const jsm = await nc.jetstreamManager();
  await jsm.streams.add({ name: env("STREAM"), subjects: [env("SUBJECT")], storage: StorageType.File });
  await jsm.consumers.add(env("STREAM"), { durable_name: env("CONSUMER"), ack_policy: AckPolicy.Explicit,
    max_ack_pending: Number(env("SUB_IN_FLIGHT", 64)) });
  await nc.close();
}
async function cleanupNats() {
  const { connect } = require("nats");
  const nc = await connect({ servers: natsServers() });
  const jsm = await nc.jetstreamManager();
  const gone = [];
  for (const s of words("DELETE_STREAMS")) {
    try { await jsm.streams.delete(s); gone.push(`stream ${s}`); } catch (e) { /* not there */ }
  }
  await nc.close();
  console.log(gone.join(", "));
}

// --- r4-check -----------------------------------------------------------------------------------
function r4Check() {
  const ids = (file) => fs.readFileSync(file, "utf8").split("\n").filter(Boolean).map(Number);
  const acked = new Set(ids(env("ACKED_FILE")));
  const failedAttempts = ids(env("FAILED_FILE")).length;
  const run = env("RUN");
  const dir = env("RECORD_GLOB_DIR");
  const deliveries = new Map();
  let lines = 0, foreign = 0;
  for (const name of fs.readdirSync(dir)) {
    if (!name.startsWith(env("RECORD_PREFIX"))) continue;
    for (const line of fs.readFileSync(path.join(dir, name), "utf8").split("\n")) {
      if (!line) continue;
      const [r, s] = line.split(" ");
      if (r !== run) { foreign++; continue; }
      lines++;
      const seq = Number(s);
      deliveries.set(seq, (deliveries.get(seq) || 0) + 1);
    }
  }
  let lost = 0, unexpected = 0, duplicated = 0, extra = 0;
  const lostSample = [];
  for (const seq of acked) if (!deliveries.has(seq)) { lost++; if (lostSample.length < 20) lostSample.push(seq); }
  for (const [seq, n] of deliveries) {
    if (!acked.has(seq)) unexpected++;
    if (n > 1) { duplicated++; extra += n - 1; }
  }
  console.log(JSON.stringify({ acked: acked.size, failedAttempts, delivered: deliveries.size, deliveries: lines,
    lost, unexpected, duplicated, extraDeliveries: extra, foreign, lostSample }));
}

const roles = { "sub-http": subHttp, "sub-amqp": subAmqp, "sub-nats": subNats, pub: publisher,
  "setup-amqp": setupAmqp, "cleanup-amqp": cleanupAmqp, "setup-nats": setupNats,
  "cleanup-nats": cleanupNats, "r4-check": r4Check };
const role = roles[process.argv[2]];
if (!role) { console.error(`usage: node pubsub-app.js ${Object.keys(roles).join("|")}`); process.exit(2); }
Promise.resolve().then(role).catch((e) => { console.error(`${process.argv[2]}: ${e && e.stack || e}`); process.exit(1); });
