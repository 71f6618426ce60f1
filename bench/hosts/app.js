// bench/hosts/app.js — the app and the clients of bench/hosts.sh and crates/herd/tests/it/hosts.rs.
// Node.js 18+, no packages. Usage: node app.js <role>
//
// Roles:
//   serve    a service run by herd: answers every request 200 with JSON {host, service, instance}
//            (HOST_NAME, HERD_SERVICE, HERD_INSTANCE), so a caller sees where its call landed. A
//            POST with `id=N` in its query first appends "<host> <N>\n" to RECORD_FILE (one
//            write(2), before the answer: an answered call's side effect is on disk). Takes the
//            shared socket from fd 3 under cluster mode (LISTEN_FDS), else binds 127.0.0.1:$PORT.
//   probe    an open-loop client: RATE requests per second (METHOD, default GET) to URL, each with
//            `id=<seq>` added to the query, until STOP_FILE exists or DURATION seconds passed.
//            One line per request in OUT: "<sent, ms since the epoch> <status or 0> <latency ms>
//            <host that answered or -> <seq>", appended every 100 ms and at the end. TIMEOUT_MS
//            (default 5000) ends a request with status 0.
//   counter  a read-modify-write loop on one key of herd's state API (API, default
//            http://127.0.0.1:3500; STORE, KEY): read value and ETag, save value + 1 with that ETag
//            (first-write without one when the key is missing); a 204 appends the value it wrote to
//            ACKED_FILE (one write(2) each), a 409 reads again. Until STOP_FILE exists or DURATION
//            passed; PAUSE_MS between rounds. No lost update means: no value acknowledged twice,
//            and the final value at least the largest acknowledged.
"use strict";
const http = require("http");
const fs = require("fs");

const env = (k, d) => (process.env[k] === undefined || process.env[k] === "" ? d : process.env[k]);

function serve() {
  const host = env("HOST_NAME", "?");
  const record = process.env.RECORD_FILE ? fs.openSync(process.env.RECORD_FILE, "a") : null;
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      const id = /[?&]id=(\d+)/.exec(req.url);
      if (req.method === "POST" && id && record !== null) fs.writeSync(record, `${host} ${id[1]}\n`);
      res.setHeader("content-type", "application/json");
      const body = req.url === "/dapr/subscribe" ? [] : {
        host, service: process.env.HERD_SERVICE || null, instance: Number(env("HERD_INSTANCE", 0)),
      };
      res.end(JSON.stringify(body));
    });
  });
  server.keepAliveTimeout = 60000;
  if (process.env.LISTEN_FDS) server.listen({ fd: 3 });
  else server.listen(Number(env("PORT")), "127.0.0.1");
  process.on("SIGTERM", () => server.close(() => process.exit(0)));
}

function stopped(t0) {
  const stop = process.env.STOP_FILE;
  const duration = Number(env("DURATION", 0)) * 1000;
  return (stop && fs.existsSync(stop)) || (duration > 0 && Date.now() - t0 >= duration);
}

function request(agent, method, url, body, timeoutMs) {
  return new Promise((resolve) => {
    const started = process.hrtime.bigint();
    const headers = body === undefined ? {} : { "content-type": "application/json" };
    const req = http.request(url, { method, agent, headers }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers,
        body: Buffer.concat(chunks).toString(), ms: Number(process.hrtime.bigint() - started) / 1e6 }));
      res.on("error", () => resolve({ status: 0, ms: Number(process.hrtime.bigint() - started) / 1e6 }));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error("timeout")));
    req.on("error", () => resolve({ status: 0, ms: Number(process.hrtime.bigint() - started) / 1e6 }));
    req.end(body);
  });
}

async function probe() {
  const url = env("URL"), method = env("METHOD", "GET"), rate = Number(env("RATE", 50));
  const timeoutMs = Number(env("TIMEOUT_MS", 5000)), out = env("OUT");
  const agent = new http.Agent({ keepAlive: true });
  const sep = url.includes("?") ? "&" : "?";
  let lines = [], seq = 0, inFlight = 0;
  const flush = () => { if (lines.length) { fs.appendFileSync(out, lines.join("")); lines = []; } };
  const flusher = setInterval(flush, 100);
  const t0 = Date.now();
  await new Promise((done) => {
    const tick = () => {
      if (stopped(t0)) { const wait = () => (inFlight ? setTimeout(wait, 10) : done()); return wait(); }
      const n = seq++;
      const sent = Date.now();
      inFlight++;
      request(agent, method, `${url}${sep}id=${n}`, method === "GET" ? undefined : "{}", timeoutMs).then((r) => {
        inFlight--;
        let host = "-";
        try { host = JSON.parse(r.body).host || "-"; } catch (e) { /* not JSON */ }
        lines.push(`${sent} ${r.status} ${r.ms.toFixed(2)} ${host} ${n}\n`);
      });
      setTimeout(tick, Math.max(0, t0 + (seq * 1000) / rate - Date.now()));
    };
    tick();
  });
  clearInterval(flusher);
  flush();
  agent.destroy();
}

async function counter() {
  const api = env("API", "http://127.0.0.1:3500"), store = env("STORE", "statestore"), key = env("KEY");
  const acked = fs.openSync(env("ACKED_FILE"), "a"), pause = Number(env("PAUSE_MS", 0));
  const agent = new http.Agent({ keepAlive: true });
  const counts = { acked: 0, conflicts: 0, errors: 0 };
  const t0 = Date.now();
  while (!stopped(t0)) {
    const got = await request(agent, "GET", `${api}/v1.0/state/${store}/${key}`, undefined, 5000);
    if (got.status !== 200 && got.status !== 204) { counts.errors++; await sleep(50); continue; }
    const value = got.status === 200 ? Number(JSON.parse(got.body)) : 0;
    const item = { key, value: value + 1 };
    if (got.status === 200) item.etag = got.headers.etag;
    else item.options = { concurrency: "first-write" };
    const saved = await request(agent, "POST", `${api}/v1.0/state/${store}`, JSON.stringify([item]), 5000);
    if (saved.status === 204) { counts.acked++; fs.writeSync(acked, `${value + 1}\n`); }
    else if (saved.status === 409) counts.conflicts++;
    else { counts.errors++; await sleep(50); }
    if (pause) await sleep(pause);
  }
  agent.destroy();
  console.log(JSON.stringify(counts));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const roles = { serve, probe, counter };
const role = roles[process.argv[2]];
if (!role) { console.error("usage: node app.js serve|probe|counter"); process.exit(2); }
Promise.resolve().then(role).catch((e) => { console.error(e && e.stack || e); process.exit(1); });
